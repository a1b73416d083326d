"""The hot set as the build records it: the import check imports the set's own
requirements first, in a real interpreter, and notes the files of the tree
they open and the pages of its libraries they map (builder/importcheck.py);
the archives then hold those files (builder/archives.py)."""
from __future__ import annotations

import hashlib
import json
import os
import py_compile
from pathlib import Path

import pytest

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
    # the folders of the hot files, and every metadata folder (entry_points() tries each one's entry_points.txt)
    assert set(index["dirs"]) == {"", "hotpkg", "hotpkg/__pycache__", "hotpkg-1.0.dist-info", "coldpkg-1.0.dist-info"} and index["dirs"][""]["coldpkg"] == "p"
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


TORCHY = """\
import sys
import importlib.metadata
sys.path.append(OUTSIDE)  # a folder outside the checked paths
if sys.version_info >= (3, 10):
    FOUND = importlib.metadata.entry_points(group="x.plugins")
else:  # 3.9's takes no selection: a dict of groups
    FOUND = importlib.metadata.entry_points().get("x.plugins", ())
PLUGINS = {ep.name: ep.load() for ep in FOUND}
"""
VERS = """\
from importlib.metadata import PackageNotFoundError, version
try:
    V = version("foo")
except PackageNotFoundError:
    V = None
"""


@pytest.mark.parametrize("python", ["3.9", "3.11", "3.13"])  # importlib.metadata's search and entry_points() differ from 3.9 to 3.10
def test_importlib_metadata_queries_rerun_a_run_only_for_what_they_can_see_and_new_modules_run_alone(tmp_path, python):
    """torch's import calls entry_points(group=...): a distribution added without entry points in that group does
    not rerun it; one with some, or one that can hide another's of its name, does. version("foo") reruns when foo appears;
    a module listing the folder itself, on any addition. A module added to the others' run: only it is imported."""
    from builder import cache

    tree = tmp_path / "site-packages"

    def add(files: dict[str, str]) -> None:
        for rel, text in files.items():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_text(text)

    outside = tmp_path / "outside"  # a distribution with entry points in torchy's group, seen through a path outside the checked ones
    (outside / "shadow-1.0.dist-info").mkdir(parents=True)
    (outside / "shadow-1.0.dist-info" / "entry_points.txt").write_text("[x.plugins]\ns = leafa\n")
    add({"torchy/__init__.py": TORCHY.replace("OUTSIDE", repr(str(outside))), "vers/__init__.py": VERS, "lister/__init__.py": "import os\nL = os.listdir(os.path.dirname(os.path.dirname(__file__)))\n",
         "leafa/__init__.py": "", "torchy-2.0.dist-info/METADATA": "Name: torchy\nVersion: 2.0\n"})
    calls: list[list[str]] = []

    class Counting(importcheck.Runner):
        def imports_noting(self, paths, modules, hot):
            calls.append(list(modules))
            return super().imports_noting(paths, modules, hot)

    runner = Counting("native", f"CPython {python} here", python=find_python(python).path, identity=f"native test {python}")
    store = cache.Store(tmp_path / "cache")

    said: list[str] = []

    def runs(hot: list[str], others: list[str]) -> tuple[int, list[list[str]]]:
        """The runs reused from the cache, and the modules of each run made."""
        calls.clear()
        said.clear()
        before = store.counts.hits.get("unit", 0)
        noted = importcheck._runs([tree], sorted(hot + others), hot, runner, store, "test", said.append)
        assert noted.failed == {}
        return store.counts.hits.get("unit", 0) - before, sorted(calls)

    assert runs(["torchy"], ["leafa"]) == (0, [["leafa"], ["torchy"]])
    assert runs(["vers"], []) == (0, [["vers"]]) and runs(["lister"], []) == (0, [["lister"]])
    assert runs(["torchy"], ["leafa"]) == (2, [])

    add({"plain-1.0.dist-info/METADATA": "Name: plain\nVersion: 1.0\n", "plain/__init__.py": ""})  # a leaf package, no entry points
    assert runs(["torchy"], ["leafa", "plain"]) == (2, [["plain"]])  # the hot run as it was; the others' too, and plain alone
    assert runs(["torchy"], ["leafa", "plain"]) == (2, [])
    assert runs(["vers"], []) == (1, [])  # version("foo") finds no plain
    assert runs(["lister"], []) == (0, [["lister"]])  # a listing of its own: anything added reruns it
    assert said == [f"the hot modules' run again: the listing of {tmp_path.name} changed"]  # and the build says so
    add({"cli-1.0.dist-info/METADATA": "Name: cli\nVersion: 1.0\n", "cli-1.0.dist-info/entry_points.txt": "[console_scripts]\ncli = leafa:main\n"})
    if python == "3.9":  # entry_points() takes no group: every group counts
        assert runs(["torchy"], ["leafa", "plain"]) == (1, [["torchy"]])
    else:  # entry points in another group than the one torchy asked for
        assert runs(["torchy"], ["leafa", "plain"]) == (2, [])

    add({"foo-1.0.dist-info/METADATA": "Name: foo\nVersion: 1.0\n"})
    assert runs(["vers"], []) == (0, [["vers"]])
    assert runs(["torchy"], ["leafa", "plain"]) == (2, [])

    add({"plug-1.0.dist-info/METADATA": "Name: plug\nVersion: 1.0\n", "plug-1.0.dist-info/entry_points.txt": "[x.plugins]\np = leafa\n"})
    assert runs(["torchy"], ["leafa", "plain"]) == (1, [["torchy"]])  # entry points in torchy's group
    group = "ep" if python == "3.9" else "ep:x.plugins"
    assert f"the hot modules' run again: importlib.metadata's {group} query of {tmp_path.name}" in said[-1]
    (tree / "plug-1.0.dist-info" / "entry_points.txt").write_text("[x.plugins]\np = plain\n")
    assert runs(["torchy"], ["leafa", "plain"]) == (1, [["torchy"]])  # a file the hot run read

    add({"Plug-0.5.dist-info/METADATA": "Name: Plug\nVersion: 0.5\n"})  # no entry points, plug's name
    if python == "3.9":  # every distribution's entry points, duplicates too: one without adds none
        assert runs(["torchy"], ["leafa", "plain"]) == (2, [])
    else:  # entry_points() keeps the first distribution of a name: this one can hide plug's
        assert runs(["torchy"], ["leafa", "plain"]) == (1, [["torchy"]])

    add({"shadow-0.1.dist-info/METADATA": "Name: shadow\nVersion: 0.1\n"})  # no entry points, on the path before the outside one
    if python == "3.9":
        assert runs(["torchy"], ["leafa", "plain"]) == (2, [])
    else:  # it hides the outside one's
        assert runs(["torchy"], ["leafa", "plain"]) == (1, [["torchy"]])

    # a module that fails alone, not after leafa: the others are imported again with it, as with the cache empty
    add({"needy/__init__.py": "import sys\nassert 'leafa' in sys.modules, 'leafa first'\n"})
    assert runs(["torchy"], ["leafa", "needy", "plain"]) == (1, [["leafa", "needy", "plain"], ["needy"]])
    # a module gone: the others' run that imported it tells nothing of the rest's imports without it, so it is not
    # used; an older run of its kind that never imported it is (the latest few are kept), and leafb runs alone
    (tree / "needy" / "__init__.py").unlink()
    (tree / "needy").rmdir()
    add({"leafb/__init__.py": ""})
    assert runs(["torchy"], ["leafa", "leafb", "plain"]) == (2, [["leafb"]])
    # with no such older run (the family holds only the run that imported a module now gone), all are imported again
    from builder.importcheck import _family_key

    family = _family_key("test", runner, hashlib.sha256(importcheck.SCRIPT.encode()).hexdigest(), ["torchy"], False)
    add({"needy/__init__.py": "import sys\nassert 'leafa' in sys.modules, 'leafa first'\n"})
    assert runs(["torchy"], ["leafa", "leafb", "needy", "plain"])[1] == [["leafa", "leafb", "needy", "plain"], ["needy"]]
    store.put_json("unit", family, {"recent": store.get_json("unit", family, count=False)["recent"][:1]})  # only that run left
    (tree / "needy" / "__init__.py").unlink()
    (tree / "needy").rmdir()
    add({"leafc/__init__.py": ""})
    assert runs(["torchy"], ["leafa", "leafb", "leafc", "plain"]) == (1, [["leafa", "leafb", "leafc", "plain"]])
    assert "the other modules' run again: a module it imported is gone" in said[-1]

    # a package named in the set's requirements: a hot module. The hot run is reused and the new one imported alone,
    # noting what it opens; the hot set is what one run of them all notes
    add({"hotter/__init__.py": "from . import data\n", "hotter/data.py": "X = 1\n"})
    calls.clear()
    modules = ["hotter", "leafa", "leafb", "leafc", "plain", "torchy"]
    noted = importcheck._runs([tree], modules, ["hotter", "torchy"], runner, store, "test", lambda line: None)
    assert sorted(calls) == [["hotter"]] and noted.failed == {}  # the others' run: the same modules, nothing it saw changed
    fresh = importcheck._runs([tree], modules, ["hotter", "torchy"], runner, None, "test", lambda line: None)  # no cache
    assert noted == fresh and "hotter/data.py" in (noted.opened or ()) and "torchy/__init__.py" in (noted.opened or ())
    # entry_points() read every distribution's entry_points.txt: those of the tree, not those the reused run saw
    assert {"plug-1.0.dist-info/entry_points.txt", "cli-1.0.dist-info/entry_points.txt"} <= set(noted.opened or ())


SELECTS = """\
import importlib.metadata
EPS = importlib.metadata.entry_points()
FOUND = EPS.select(group="x.plugins")
PLUGINS = sorted(ep.name for ep in FOUND)
assert PLUGINS == sorted(ep.name for ep in importlib.metadata.entry_points(group="x.plugins"))
"""
ITERATES = """\
import importlib.metadata, sys
EPS = importlib.metadata.entry_points()
ALL = sorted(ep.name for ep in (EPS if sys.version_info >= (3, 12) else (ep for group in EPS.values() for ep in group)))
"""
# what the check's watched result must answer as entry_points()'s own does (a plain EntryPoints of the same entry points)
AGREES = """\
import importlib.metadata as md, sys
if sys.version_info >= (3, 12):
    E, P = md.entry_points(), md.EntryPoints(tuple(md.entry_points()))
    assert type(E).__name__ == "EntryPoints" and repr(E) == repr(P) and str(E) == str(P) and E == P and hash(E) == hash(P)
    assert len(E) == len(P) and list(E) == list(P) and E.names == P.names and E.groups == P.groups and E["h"] == P["h"]
    assert list(E.select(name="h")) == list(P.select(name="h")) and isinstance(E, tuple) and tuple(E)[0] in E
"""


@pytest.mark.parametrize("python", ["3.11", "3.13"])
def test_entry_points_without_a_group_then_select_reruns_only_for_the_group_it_selected(tmp_path, python):
    """fsspec calls entry_points() and then select(group=...) on the result. From 3.12 on that sees what
    entry_points(group=...) sees: a distribution added with entry points in another group reruns nothing. A result
    used otherwise (iterated) still counts every group, and on 3.10-3.11 (a dict of groups) every group counts."""
    from builder import cache

    tree = tmp_path / "site-packages"

    def add(files: dict[str, str]) -> None:
        for rel, text in files.items():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_text(text)

    add({"selects/__init__.py": SELECTS, "iterates/__init__.py": ITERATES, "agrees/__init__.py": AGREES, "host-1.0.dist-info/METADATA": "Name: host\nVersion: 1.0\n",
         "host-1.0.dist-info/entry_points.txt": "[x.plugins]\nh = selects\n"})
    runner = importcheck.Runner("native", f"CPython {python} here", python=find_python(python).path, identity=f"native test {python}")
    store = cache.Store(tmp_path / "cache")

    def reused(hot: list[str]) -> int:
        before = store.counts.hits.get("unit", 0)
        noted = importcheck._runs([tree], hot, hot, runner, store, "test", lambda line: None)
        assert noted.failed == {}
        return store.counts.hits.get("unit", 0) - before

    assert reused(["selects"]) == 0 and reused(["iterates"]) == 0 and reused(["agrees"]) == 0
    assert reused(["selects"]) == 1 and reused(["iterates"]) == 1  # nothing changed
    # a leaf package with console scripts: entry points in another group
    add({"cli-1.0.dist-info/METADATA": "Name: cli\nVersion: 1.0\n", "cli-1.0.dist-info/entry_points.txt": "[console_scripts]\ncli = selects:main\n"})
    assert reused(["selects"]) == (1 if python == "3.13" else 0)
    assert reused(["iterates"]) == 0  # it saw every group
    assert reused(["selects"]) == 1 and reused(["iterates"]) == 1
    # entry points in the group it selected: it runs again on every Python
    add({"plug-1.0.dist-info/METADATA": "Name: plug\nVersion: 1.0\n", "plug-1.0.dist-info/entry_points.txt": "[x.plugins]\np = iterates\n"})
    assert reused(["selects"]) == 0
