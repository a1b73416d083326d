"""Slimming removes what nothing loads, keeps what something imports, strips only the allow-list."""
from __future__ import annotations

from pathlib import Path

from builder import slim
from tests.wheels import compile_library


def _tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def _left(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_rules_remove_tests_headers_archives_and_report_per_rule(tmp_path):
    tree = _tree(tmp_path, {
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
    tree = _tree(tmp_path, {
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
    tree = _tree(tmp_path / "tree", {
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
