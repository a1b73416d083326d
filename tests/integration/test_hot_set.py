"""The hot set as the build records it: the import check imports the set's own
requirements first, in a real interpreter, and notes the files of the tree
they open and the pages of its libraries they map (builder/importcheck.py);
the archives then hold those files (builder/archives.py)."""
from __future__ import annotations

import json
import os
import py_compile
from pathlib import Path

from builder import importcheck
from builder.archives import write_archives
from pipeline.interpreters import find_python
from tests.wheels import compile_library

HOT_INIT = """\
import ctypes, os
from . import helper
LIB = ctypes.CDLL(os.path.join(os.path.dirname(__file__), "libhot.so"))
"""


def _tree(root: Path) -> Path:
    tree = root / "site-packages"
    files = {
        "hotpkg/__init__.py": HOT_INIT,
        "hotpkg/helper.py": "X = 1\n",
        "hotpkg/unused.py": "Y = 2\n",
        "coldpkg/__init__.py": "import hotpkg\nZ = 3\n",  # a dependency's module: imported by the check, not by the handler
    }
    for rel, text in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
        py_compile.compile(str(tree / rel), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, doraise=True)
    lib = compile_library(root / "lib", filler=3000)
    os.replace(lib, tree / "hotpkg" / "libhot.so")
    for dist, prefix in (("hotpkg", "hotpkg/"), ("coldpkg", "coldpkg/")):
        info = tree / f"{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "RECORD").write_text("".join(f"{p.relative_to(tree).as_posix()},,\n" for p in tree.rglob("*") if p.is_file() and p.relative_to(tree).as_posix().startswith(prefix)))
    return tree


def test_the_hot_set_is_what_the_requirements_open_and_map_in_a_real_interpreter(tmp_path):
    tree = _tree(tmp_path)
    assert importcheck.hot_modules(tree, ["hotpkg>=1", "# a comment"]) == ["hotpkg"]  # the set's own requirements, not coldpkg
    runner = importcheck.Runner("native", "CPython here", python=find_python("3.11").path)
    noted = runner.imports_noting([tree], ["coldpkg", "hotpkg"], ["hotpkg"])
    assert noted.failed == {}
    tag = "cpython-311"
    # not coldpkg's, not unused's; ctypes opens the library too (the archives leave libraries out)
    assert set(noted.opened or ()) - {"hotpkg/libhot.so"} == {f"hotpkg/__pycache__/__init__.{tag}.pyc", f"hotpkg/__pycache__/helper.{tag}.pyc"}
    touched = noted.touched or {}
    assert set(touched) == {"hotpkg/libhot.so"}  # mapped by ctypes at import: its pages, found in /proc/self/pagemap
    size = (tree / "hotpkg" / "libhot.so").stat().st_size
    assert touched["hotpkg/libhot.so"][0][0] == 0 and all(start % 4096 == 0 and start + length <= size + 4095 for start, length in touched["hotpkg/libhot.so"])
    assert runner.imports([tree], ["hotpkg"]) == {}

    index = write_archives(tree, tmp_path / "archives", opened=noted.opened, touched=noted.touched)
    assert (index["hot"]["files"], index["hot"]["sized"]) == (2, 2) and index["touched_ranges"] == touched  # the two .pyc; their sources as sizes
    assert set(index["dirs"]) == {"", "hotpkg", "hotpkg/__pycache__"} and index["dirs"][""]["coldpkg"] == "p"
    json.dumps(index)


def test_an_import_run_is_reused_only_while_nothing_it_depended_on_changed(tmp_path):
    """Each run's record: the files it opened, the names it tried (a failed optional import too), the paths it probed."""
    from builder import cache

    tree = tmp_path / "site-packages"
    files = {
        "hotmod/__init__.py": "import importlib.util\nfrom . import data\nPLUGIN = importlib.util.find_spec('hotmod.plugin')\n",
        "hotmod/data.py": "X = 1\n",
        "opt/__init__.py": "try:\n    from . import extra\nexcept ImportError:\n    extra = None\n",
        "probe/__init__.py": "import pathlib\nHAS = (pathlib.Path(__file__).parent / 'plugin.cfg').exists()\n",
    }
    for rel, text in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    runner = importcheck.Runner("native", "CPython here", python=find_python("3.11").path, identity="native test")
    store = cache.Store(tmp_path / "cache")

    def reused():
        before = store.counts.hits.get("unit", 0)
        noted = importcheck._runs([tree], ["hotmod", "opt", "probe"], ["hotmod"], runner, store, "test", lambda line: None)
        assert noted.failed == {} and noted.opened is not None and "hotmod/data.py" in noted.opened
        return store.counts.hits.get("unit", 0) - before

    assert reused() == 0 and store.counts.misses["unit"] == 2  # two runs: the hot modules, the others
    assert reused() == 2  # nothing changed
    (tree / "opt" / "extra.py").write_text("")  # what opt's optional import looked for: the run that tried it runs again
    assert reused() == 1
    (tree / "hotmod" / "data.py").write_text("X = 2\n")  # a file the hot run opened
    assert reused() == 1
    (tree / "hotmod" / "plugin.py").write_text("")  # what the hot run looked up with find_spec, without importing it
    assert reused() == 1
    (tree / "probe" / "plugin.cfg").write_text("")  # a path a run stat'ed
    assert reused() == 1
    (tree / "NOTES.txt").write_text("")  # nothing any run looked at
    assert reused() == 2
