"""importlib.metadata's reads of the tree's distributions answered from the hot set (handler/hoist_lambda/hotmeta.py):
the same distributions, in the same order, with the same answers as the file system gives, on every runtime Hoist
accepts that this machine has; the files the hot set holds, and the names its listings say are absent, never opened;
and after release() everything from the file system again, importlib.metadata as it was."""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.archives import write_archives
from tests.conftest import REPO
from tests.trees import ACTIVATE_OR_PLAIN, write_tree

# distributions of this machine's test tools (requirements/tooling.txt), their metadata folders copied as they are
REAL = ("pytest", "invoke", "pytest-timeout", "packaging", "pluggy", "coverage")
# and the cases a real tree may hold that those do not
MADE = {
    "crlf-1.0.dist-info/METADATA": "Metadata-Version: 2.1\r\nName: crlf\r\nVersion: 1.0\r\nRequires-Dist: pluggy\r\n",
    "crlf-1.0.dist-info/entry_points.txt": "[console_scripts]\r\ncrlf = crlf:main\r\n\r\n[hoist.test]\r\nfirst = crlf:one\r\n",
    "crlf-1.0.dist-info/top_level.txt": "\ufeffcrlf\n",  # a byte order mark: kept, as utf-8 (not utf-8-sig) keeps it
    "crlf-1.0.dist-info/bad.txt": b"ok\xff\xfe",  # not UTF-8: read_text raises, from memory as from the file
    "crlf-1.0.dist-info/RECORD": "crlf/__init__.py,,\ncrlf-1.0.dist-info/METADATA,,\n",
    "dup-2.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: dup\nVersion: 2.0\n",
    "dup-2.0.dist-info/entry_points.txt": "[hoist.test]\nsecond = dup2:two\n",
    "dup-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: dup\nVersion: 1.0\n",  # one name twice: the first listed wins
    "dup-1.0.dist-info/entry_points.txt": "[hoist.test]\nsecond = dup1:two\n",
    "folder-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: folder\nVersion: 1.0\n",
    "folder-1.0.dist-info/entry_points.txt/README": "a folder where a file is expected\n",
    "legacy-0.1.egg-info/PKG-INFO": "Metadata-Version: 1.1\nName: legacy\nVersion: 0.1\n",
    "legacy-0.1.egg-info/entry_points.txt": "[hoist.test]\nthird = legacy:three\n",
    "legacy-0.1.egg-info/requires.txt": "packaging\n",
    "cold-3.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: cold\nVersion: 3.0\n",  # nothing hot, and no listing (an older build)
    "cold-3.0.dist-info/entry_points.txt": "[hoist.test]\nfourth = cold:four\n",
}
# what the import check would have seen read: entry_points() read every entry_points.txt; version() some METADATA
OPENED = ["crlf-1.0.dist-info/entry_points.txt", "crlf-1.0.dist-info/METADATA", "crlf-1.0.dist-info/bad.txt", "dup-2.0.dist-info/entry_points.txt",
          "dup-1.0.dist-info/entry_points.txt", "legacy-0.1.egg-info/entry_points.txt", "legacy-0.1.egg-info/PKG-INFO", "crlf-1.0.dist-info/top_level.txt"]
NAMES = ["METADATA", "PKG-INFO", "entry_points.txt", "RECORD", "top_level.txt", "requires.txt", "bad.txt", "missing.txt", "licenses", "", ".",
         "../METADATA", "licenses/LICENSE", "nul\0.txt"]
GROUPS = ["console_scripts", "pytest11", "hoist.test", "none.such"]

QUERIES = r"""
import json, os, sys
handler, tree, mode, names, groups = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5])
opened = []
def note(event, args):
    if event == "open" and args and isinstance(args[0], str) and args[0].startswith(tree + os.sep):
        opened.append(os.path.relpath(args[0], tree))
sys.addaudithook(note)
if mode == "early":  # imported before activation: patched at once
    import importlib.metadata
""" + ACTIVATE_OR_PLAIN + r"""    assert ("importlib.metadata" in sys.modules) == (mode == "early")  # activation itself does not import it
import importlib.metadata as md
def attempt(f, *args):
    try:
        got = f(*args)
        return ["ok", list(got) if isinstance(got, (list, tuple)) else got]
    except Exception as exc:
        return ["raised", type(exc).__name__, str(exc)]
def where(d):
    return os.path.relpath(str(d._path), tree) if str(d._path).startswith(tree + os.sep) else str(d._path)
def eps(d):
    return [[ep.group, ep.name, ep.value] for ep in d.entry_points]
def group(g):
    found = md.entry_points(group=g) if sys.version_info >= (3, 10) else md.entry_points().get(g, ())
    return [[ep.name, ep.value] for ep in found]
def answers():
    dists = list(md.distributions())
    mine = [d for d in dists if where(d) != str(d._path)]
    out = {"order": [where(d) for d in mine],
           "dists": {where(d): {"name": attempt(lambda: d.metadata["Name"]), "version": attempt(lambda: d.version), "eps": attempt(eps, d),
                                "requires": attempt(lambda: d.requires), "files": attempt(lambda: [str(f) for f in d.files or ()])} for d in mine},
           "reads": {where(d): {n: attempt(d.read_text, n) for n in names} for d in mine},
           "groups": {g: attempt(group, g) for g in groups}}
    for name in sorted({d.metadata["Name"] for d in mine} | {"absent"}):
        out.setdefault("by_name", {})[name] = [attempt(md.version, name), attempt(lambda: md.metadata(name)["Name"]), attempt(md.requires, name)]
    if sys.version_info >= (3, 10):
        out["packages"] = attempt(lambda: {k: sorted(v) for k, v in md.packages_distributions().items()})
    return out
patched = hasattr(md.PathDistribution.read_text, "__hoist_real__")
before = len(opened)
got = {"answers": answers(), "patched": patched, "python": list(sys.version_info[:2])}
got["opened"], before = sorted(set(opened[before:])), len(opened)
if mode != "plain":
    from hoist_lambda import hotmeta
    a.release()
    got["after"] = answers()
    got["opened_after"] = sorted(set(opened[before:]))
    got["restored"] = md.PathDistribution.read_text.__code__.co_filename == md.__file__ and not hasattr(md.PathDistribution.read_text, "__hoist_real__")
    got["watching"] = any(getattr(f, "__module__", "") == "hoist_lambda.hotmeta" for f in sys.meta_path)
    got["holds"] = hotmeta._hot is not None
print(json.dumps(got))
"""


def _tree(tmp_path: Path) -> tuple[Path, dict]:
    """A version: a tree of real and made distribution folders, its archives of OPENED, and the index without the
    listing of ``cold``'s folder (as an index written before the build listed every distribution's folder)."""
    tree = tmp_path / "envs" / "v1" / "site-packages"
    tree.mkdir(parents=True)
    for name in REAL:  # installed with the test tools: their metadata folders are real ones (RECORD, licenses/, entry points or none)
        src = Path(str(importlib.metadata.distribution(name)._path))  # type: ignore[attr-defined]
        shutil.copytree(src, tree / src.name)
    write_tree(tree, MADE)
    index = write_archives(tree, tree.parent / "archives", opened=OPENED)
    assert "cold-3.0.dist-info" in index["dirs"] and "pytest" in str(sorted(index["dirs"]))  # every distribution's folder is listed
    del index["dirs"]["cold-3.0.dist-info"]
    (tree.parent / "archives" / "index.json").write_text(json.dumps(index))
    return tree, index


def _runtimes() -> list[str]:
    """A CPython of each runtime Hoist accepts (pipeline/runtimes.json) that this machine has."""
    from pipeline.errors import InterpreterNotFound
    from pipeline.interpreters import find_python

    accepted = json.loads((REPO / "pipeline" / "runtimes.json").read_text())["runtimes"]
    here = []
    for name in accepted:
        try:
            here.append(str(find_python(accepted[name]["python"]).path))
        except InterpreterNotFound:
            continue
    assert len(here) >= 2, "this machine has fewer than two of the runtimes Hoist accepts (pyenv holds 3.9-3.13)"
    return here


def _query(python: str, tree: Path, mode: str) -> dict:
    out = subprocess.run([python, "-I", "-S", "-c", QUERIES, str(REPO / "handler"), str(tree), mode, json.dumps(NAMES), json.dumps(GROUPS)],
                         capture_output=True, text=True, timeout=120, env={"PATH": os.environ.get("PATH", "")})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fs_order(listed: list[str], python: list[int]) -> list[str]:
    """The order importlib.metadata gives the distributions of a folder listed in ``listed``'s order: 3.9's is the
    listing's; from 3.10 on (``Lookup``) by name, each name where it is first listed (the folders of one name together)."""
    if python < [3, 10]:
        return listed
    groups: dict[str, list[str]] = {}
    for n in listed:
        groups.setdefault(n.lower().partition("-")[0], []).append(n)
    return [n for names in groups.values() for n in names]


def _served(index: dict, rel: str) -> bool:
    """Whether the hot set answers a read of ``rel`` (folder/name): it holds the file, or the folder's listing lacks
    the name or names a folder. From the index the build wrote, not from the handler."""
    folder, _, name = rel.rpartition("/")
    listing = index["dirs"].get(folder) if folder.endswith(("dist-info", "egg-info")) else None  # a distribution's own folder
    return rel in OPENED or (listing is not None and listing.get(name) != "f")


@pytest.mark.parametrize("python", _runtimes(), ids=lambda p: Path(p).name)
def test_metadata_answers_are_the_file_systems_in_its_order_and_the_hot_set_opens_nothing(tmp_path, python):
    tree, index = _tree(tmp_path)
    listed = [n for n in os.listdir(tree) if n.endswith("-info")]
    assert listed != sorted(listed), "this file system lists the folders sorted: the order would not be tested"
    plain = _query(python, tree, "plain")
    # the file system's own answers, as a reference: the order is its listing's, entry_points() keeps the first "dup"
    assert plain["answers"]["order"] == _fs_order(listed, plain["python"]) and plain["patched"] is False
    first_dup = next(n for n in listed if n.startswith("dup-"))
    assert plain["answers"]["reads"]["crlf-1.0.dist-info"]["entry_points.txt"] == ["ok", MADE["crlf-1.0.dist-info/entry_points.txt"].replace("\r\n", "\n")]
    assert plain["answers"]["reads"]["crlf-1.0.dist-info"]["bad.txt"][:2] == ["raised", "UnicodeDecodeError"]
    assert plain["answers"]["reads"]["folder-1.0.dist-info"]["entry_points.txt"] == ["ok", None]
    assert plain["answers"]["reads"]["crlf-1.0.dist-info"]["nul\0.txt"][:2] == ["raised", "ValueError"]
    if plain["python"] >= [3, 10]:
        assert ["second", "dup2:two" if first_dup.startswith("dup-2") else "dup1:two"] in plain["answers"]["groups"]["hoist.test"][1]
    for mode in ("early", "late"):  # importlib.metadata imported before activation, or after it (when torch imports it)
        hoist = _query(python, tree, mode)
        assert hoist["patched"] is True
        assert hoist["answers"] == plain["answers"]  # the same distributions, order and answers, every read and query
        # nothing the hot set answers was opened; everything else was, as without Hoist (cold's folder: no listing)
        assert hoist["opened"] == sorted(rel for rel in plain["opened"] if not _served(index, rel))
        eps_opened = {rel.partition("-")[0] for rel in hoist["opened"] if rel.endswith("/entry_points.txt")}
        assert eps_opened == {"cold", "pytest", "pytest_timeout", "invoke", "coverage"}  # no listing; or there, not held (the import check did not read it)
        # not opened: held (crlf, dup, legacy), absent from the listing (packaging, pluggy), a folder there (folder)
        # after release: the file system's answers again, from the file system, importlib.metadata as it was, nothing held
        assert hoist["after"] == plain["answers"] and hoist["opened_after"] == plain["opened"]
        assert hoist["restored"] is True and hoist["watching"] is False and hoist["holds"] is False


def test_a_read_the_hot_set_does_not_know_goes_to_the_file_system(tmp_path, monkeypatch):
    """answer(): in memory, absent from a listed folder or a folder there: known; a listed file not in memory, an
    unlisted folder, a name with a path or a NUL in it: the file system's (the real method's) business."""
    monkeypatch.syspath_prepend(str(REPO / "handler"))
    from hoist_lambda.hotimport import HotSet
    from hoist_lambda.hotmeta import answer

    hot = HotSet("/t", {"/t/a-1.dist-info/entry_points.txt": memoryview(b"[g]\r\nx = y\r\n")},
                 {"/t/a-1.dist-info": {"entry_points.txt": "f", "METADATA": "f", "licenses": "d"}})
    assert answer(hot, "/t/a-1.dist-info", "entry_points.txt") == (True, "[g]\nx = y\n")
    assert answer(hot, "/t/a-1.dist-info", "top_level.txt") == (True, None) and answer(hot, "/t/a-1.dist-info", "licenses") == (True, None)
    for folder, name in (("/t/a-1.dist-info", "METADATA"), ("/t/b-1.dist-info", "entry_points.txt"), ("/t/a-1.dist-info", ""),
                         ("/t/a-1.dist-info", "licenses/LICENSE"), ("/t/a-1.dist-info", "nul\0"), ("/t/a-1.dist-info", Path("entry_points.txt"))):
        assert answer(hot, folder, name) == (False, None), (folder, name)
    hot.clear()  # released
    assert answer(hot, "/t/a-1.dist-info", "entry_points.txt") == (False, None)
