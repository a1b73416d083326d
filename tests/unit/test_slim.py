"""Slimming removes what nothing loads, keeps what something imports, strips only the allow-list."""
from __future__ import annotations

from pathlib import Path

from builder import slim
from tests.trees import write_tree
from tests.wheels import compile_library


def _left(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_rules_remove_tests_headers_archives_and_report_per_rule(tmp_path):
    tree = write_tree(tmp_path, {
        "pkg/__init__.py": "from . import core\n",
        "pkg/core.py": "X = 1\n",
        "pkg/tests/__init__.py": "",
        "pkg/tests/test_core.py": "import pkg\n" * 10,
        "pkg/include/pkg.h": "int x;\n",
        "pkg/lib/libpkg.a": b"!<arch>\n" + b"0" * 100,
        "pkg/share/cmake/PkgConfig.cmake": "set(x)\n",
        "pkg/core.pyi": "X: int\n",
        "tests/__init__.py": "",  # a top-level package named tests is somebody's real package
        "torch/testing/__init__.py": "",  # torch imports torch.testing at start-up
        "torch/bin/torch_shm_manager": b"\x7fELF-not-really",
        "torch/bin/protoc": b"binary",
    })
    report = slim.slim(tree)
    assert _left(tree) == {"pkg/__init__.py", "pkg/core.py", "tests/__init__.py", "torch/testing/__init__.py", "torch/bin/torch_shm_manager"}
    by_rule = {r.name: r for r in report.removed}
    assert by_rule["tests"].files == 2 and by_rule["tests"].bytes == len("import pkg\n" * 10)
    assert by_rule["headers"].files == 1 and by_rule["static-libs"].files == 1
    assert by_rule["build-files"].files == 1 and by_rule["type-stubs"].files == 1 and by_rule["build-tools"].files == 1
    assert report.files_removed == 7
    assert not (tree / "pkg" / "tests").exists()  # emptied folders go too


def test_import_guard_keeps_what_a_kept_module_imports(tmp_path):
    tree = write_tree(tmp_path, {
        "mp/__init__.py": "from .tests import runtests\n",
        "mp/tests/__init__.py": "from .runner import runtests\n",
        "mp/tests/runner.py": "def runtests(): pass\n",
        "other/__init__.py": "",
        "other/sub/__init__.py": "from other.sub.tests.data import TABLE\n",
        "other/sub/tests/__init__.py": "",
        "other/sub/tests/data.py": "TABLE = {}\n",
        "other/sub/tests/test_unused.py": "",
        "free/__init__.py": "",
        "free/tests/test_a.py": "",
    })
    report = slim.slim(tree)
    left = _left(tree)
    assert {"mp/tests/__init__.py", "mp/tests/runner.py"} <= left
    assert {"other/sub/tests/__init__.py", "other/sub/tests/data.py"} <= left
    assert "free/tests/test_a.py" not in left
    assert ("mp/tests", "mp/__init__.py") in report.guarded
    assert ("other/sub/tests", "other/sub/__init__.py") in report.guarded


def test_strip_follows_the_allow_list_and_never_touches_pillow(tmp_path):
    lib = compile_library(tmp_path / "build")
    data = lib.read_bytes()
    tree = write_tree(tmp_path / "tree", {
        "torch/lib/libc10.so": data,
        "PIL/_imaging.cpython-313-x86_64-linux-gnu.so": data,
        "pillow.libs/libjpeg-abc.so.62": data,
        "other/libother.so": data,
    })
    report = slim.slim(tree)
    assert report.stripped == 1 and report.strip_bytes > 0
    assert (tree / "torch/lib/libc10.so").stat().st_size < len(data)
    for untouched in ("PIL/_imaging.cpython-313-x86_64-linux-gnu.so", "pillow.libs/libjpeg-abc.so.62", "other/libother.so"):
        assert (tree / untouched).read_bytes() == data


def test_rules_file_is_consistent():
    rules = slim.load_rules()
    names = [r.name for r in rules.rules]
    assert len(names) == len(set(names))
    assert all(r.why and (r.dirs or r.files) for r in rules.rules)
    # nothing a Pillow or OpenCV wheel installs may be on the strip allow-list
    for path in ("PIL/_imaging.cpython-313-aarch64-linux-gnu.so", "pillow.libs/libpng16-1a2b.so.16", "cv2/cv2.abi3.so", "opencv_python.libs/libavcodec-1.so"):
        assert not rules.strip.wants(path), path
    for path in ("torch/lib/libtorch_cpu.so", "torch/_C.cpython-313-aarch64-linux-gnu.so", "torch.libs/libopenblasp-r0-121ca252.3.30.so"):
        assert rules.strip.wants(path), path
    # torch needs these at run time: no rule may pick them
    files = ["torch/bin/torch_shm_manager", "torch/testing/__init__.py", "torch/lib/libtorch_cpu.so", "numpy/testing/__init__.py"]
    assert slim.select(files, ["torch", "torch/bin", "torch/testing", "torch/lib", "numpy", "numpy/testing"], rules) == {}


def test_glob_semantics():
    assert slim.matches("a/b/tests", ["*/**/tests"]) and slim.matches("a/tests", ["*/**/tests"])
    assert not slim.matches("tests", ["*/**/tests"])
    assert slim.matches("x/y/z.h", ["**/*.h"]) and slim.matches("z.h", ["**/*.h"])
    assert not slim.matches("torch/lib/sub/libx.so", ["torch/lib/*.so*"])


# ------------------------------------------------------------ issue 13: guards, settings, aside


def test_a_stub_beside_a_lazy_loader_module_and_a_file_named_at_import_are_kept(tmp_path):
    tree = write_tree(tmp_path, {
        "skimage/__init__.py": "import lazy_loader as lazy\n__getattr__, __dir__, __all__ = lazy.attach_stub(__name__, __file__)\n",
        "skimage/__init__.pyi": "from . import filters\n",
        "skimage/filters.pyi": "def sobel(): ...\n",  # its module is not lazy: removed
        "skimage/filters.py": "def sobel():\n    pass\n",
        "pkg/__init__.py": "import os\nDATA = open(os.path.join(os.path.dirname(__file__), 'tests', 'table.txt')).read()\nH = 'api.h'\n",
        "pkg/tests/table.txt": "1 2 3\n",
        "pkg/tests/other.txt": "\n",
        "pkg/include/api.h": "\n",  # named too, but headers are read by compilers, never at import (literal_guard = false)
        "other/__init__.py": "NAME = 'other.txt'\n",  # names it, but from another package: no effect on pkg
    })
    report = slim.slim(tree)
    left = _left(tree)
    assert {"skimage/__init__.pyi", "pkg/tests/table.txt"} <= left
    assert not {"skimage/filters.pyi", "pkg/tests/other.txt", "pkg/include/api.h"} & left
    assert set(report.kept_beside) == {("skimage/__init__.pyi", "skimage/__init__.py"), ("pkg/tests/table.txt", "pkg/__init__.py")}


def test_settings_turn_rules_off_keep_globs_and_change_the_digest(tmp_path):
    from pipeline.config import SlimConfig

    rules = slim.load_rules()
    files = ["a/tests/t.py", "a/x.pyi", "b/include/b.h", "b/__init__.py"]
    dirs = ["a", "a/tests", "b", "b/include"]
    assert set(slim.select(files, dirs, rules)) == {"a/tests/t.py", "a/x.pyi", "b/include/b.h"}
    no_stubs = slim.configure(rules, SlimConfig(disable=("type-stubs",)), "efs")
    assert set(slim.select(files, dirs, no_stubs)) == {"a/tests/t.py", "b/include/b.h"}
    kept = slim.configure(rules, SlimConfig(keep=("a/tests/**",), set_keep={"layer": ("b/**",)}), "layer")
    assert set(slim.select(files, dirs, kept)) == {"a/x.pyi"}
    only_efs = slim.configure(rules, SlimConfig(set_keep={"layer": ("b/**",)}), "efs")
    assert "b/include/b.h" in slim.select(files, dirs, only_efs)
    by_package = slim.configure(rules, SlimConfig(package_keep={"bee": ("b/**",)}), "efs")
    assert set(slim.select(files, dirs, by_package, owner={"b/include/b.h": "bee"})) == {"a/tests/t.py", "a/x.pyi"}
    off = slim.configure(rules, SlimConfig(enabled=False), "efs")
    assert slim.select(files, dirs, off) == {} and not off.strip_enabled
    assert len({rules.digest, no_stubs.digest, kept.digest, only_efs.digest, by_package.digest, off.digest}) == 6


def test_an_unknown_rule_name_is_a_build_error_listing_the_rules():
    import pytest

    from pipeline.config import SlimConfig
    from pipeline.errors import BuildError

    with pytest.raises(BuildError) as err:
        slim.configure(slim.load_rules(), SlimConfig(disable=("stubs",)), "efs")
    assert "stubs" in err.value.what and "type-stubs" in (err.value.fix or "") and "slim.disable" in (err.value.where or "")


def test_removed_files_go_aside_and_come_back(tmp_path):
    tree = write_tree(tmp_path / "t", {"pkg/__init__.py": "", "pkg/tests/test_a.py": "x = 1\n", "pkg/a.pyi": "x: int\n"})
    aside = tmp_path / "aside"
    report = slim.slim(tree, aside=aside)
    assert _left(tree) == {"pkg/__init__.py"} and _left(aside) == {"pkg/tests/test_a.py", "pkg/a.pyi"}
    assert report.removed_files == {"(not in any RECORD)": {"tests": ["pkg/tests/test_a.py"], "type-stubs": ["pkg/a.pyi"]}}
    assert slim.restore(tree, aside, ["pkg/tests/test_a.py"]) == 1 and (tree / "pkg/tests/test_a.py").read_text() == "x = 1\n"
    slim.remove_again(tree, aside, ["pkg/tests/test_a.py"])
    assert _left(tree) == {"pkg/__init__.py"} and not (tree / "pkg" / "tests").exists()


def test_moved_aside_whole_folders_give_what_moving_each_file_gives(tmp_path):
    # GIVEN the same tree twice: a folder every file of which a rule picks (headers, nested), one with a kept file
    # among picked ones, and one that holds a symlinked folder beside its picked files
    files = {"pkg/__init__.py": "", "pkg/include/a.h": "int a;\n", "pkg/include/sub/b.h": "int bb;\n", "pkg/mixed/c.h": "int c;\n",
             "pkg/mixed/keep.py": "", "pkg/linked/d.h": "int d;\n", "elsewhere/e.py": ""}
    one, two = write_tree(tmp_path / "one", files), write_tree(tmp_path / "two", files)
    for tree in (one, two):
        (tree / "pkg" / "linked" / "shortcut").symlink_to(tree / "elsewhere", target_is_directory=True)
    # WHEN one is slimmed with its files moved aside and the other with them deleted
    moved, deleted = slim.slim(one, aside=tmp_path / "aside"), slim.slim(two)
    # THEN both trees and reports agree, the aside folder holds every removed file where a move of each puts it,
    # and the symlinked folder stayed in the tree
    assert _left(one) == _left(two) and moved.removed == deleted.removed and moved.removed_files == deleted.removed_files
    assert _left(tmp_path / "aside") == {"pkg/include/a.h", "pkg/include/sub/b.h", "pkg/mixed/c.h", "pkg/linked/d.h"}
    assert (one / "pkg" / "linked" / "shortcut").is_symlink() and not (one / "pkg" / "include").exists()
    assert slim.restore(one, tmp_path / "aside", ["pkg/include/sub/b.h"]) == 1 and (one / "pkg/include/sub/b.h").read_text() == "int bb;\n"
