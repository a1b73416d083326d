"""linecache's reads of the hot set's sources answered from memory (handler/hoist_lambda/hotlines.py): tracebacks,
warnings and inspect see the lines the file system gives, cached with the file's own size and mtime, on every runtime
Hoist accepts that this machine has; the sources the hot set holds are never opened while it lasts; after release()
linecache and tokenize are as they were and read the files."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from builder.archives import write_archives
from tests.conftest import REPO
from tests.trees import ACTIVATE_OR_PLAIN, write_tree
from tests.unit.test_hotmeta import _runtimes

SOURCES: dict[str, str | bytes] = {
    "lib/__init__.py": "import traceback, warnings\nSTACK = traceback.extract_stack()\nwarnings.warn('from lib')\n",
    "lib/conf.py": "import inspect, sys\nX = 1  # a comment inspect keeps\nSELF = inspect.getsource(sys.modules[__name__])\n",
    "lib/latin.py": "# -*- coding: latin-1 -*-\nNAME = 'caf\xe9'\n".encode("latin-1"),
    "lib/bom.py": b"\xef\xbb\xbfX = 'bom'\n",
    "lib/crlf.py": b"A = 1\r\nB = 2\r\n",
    "lib/tail.py": "T = 1",  # no newline at the end: linecache adds one
    "lib/empty.py": "",
    "lib/cookie.py": "# coding: no-such-codec\nX = 1\n",  # detect_encoding refuses it: linecache's own answer, whichever it is
    "lib/cold.py": "C = 1\n",  # not held: read from the file system
}
HELD = [rel for rel in SOURCES if rel != "lib/cold.py"]

QUERIES = r"""
import json, linecache, os, sys, tokenize, warnings
handler, tree, mode, rels = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
opened = []
def note(event, args):
    if event == "open" and args and isinstance(args[0], str) and args[0].startswith(tree + os.sep) and args[0].endswith(".py"):  # sources, not bytecode
        opened.append(os.path.relpath(args[0], tree))
sys.addaudithook(note)
sys.dont_write_bytecode = True
""" + ACTIVATE_OR_PLAIN + r"""def attempt(f, *args):
    try:
        return ["ok", f(*args)]
    except Exception as exc:
        return ["raised", type(exc).__name__, str(exc)]
def answers():
    linecache.clearcache()
    out = {"lines": {rel: attempt(linecache.getlines, os.path.join(tree, rel)) for rel in rels}}
    out["cache"] = {rel: [list(e[:2]) + [e[3]] for e in [linecache.cache.get(os.path.join(tree, rel))] if e] for rel in rels}
    return out
start = len(opened)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import lib
    import lib.conf
shown = [warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught]
got = {"import": {"stack": [[os.path.relpath(f.filename, tree), f.lineno, f.line] for f in lib.STACK if f.filename.startswith(tree)],
                  "warned": [s.replace(tree, "TREE") for s in shown], "self": lib.conf.SELF}}
got["answers"] = answers()
got["opened"] = sorted(set(opened[start:]))
start = len(opened)
with tokenize.open(os.path.join(tree, "lib", "crlf.py")) as fh:  # not linecache: the file, even while the hot set lasts
    got["direct"] = fh.read()
got["opened_direct"] = sorted(set(opened[start:]))
if mode != "plain":
    from hoist_lambda import hotlines
    got["wrapped"] = hasattr(linecache.updatecache, "__hoist_real__") and hasattr(tokenize.open, "__hoist_real__")
    a.release()
    start = len(opened)
    got["after"] = answers()
    got["opened_after"] = sorted(set(opened[start:]))
    got["restored"] = linecache.updatecache.__code__.co_filename == linecache.__file__ and tokenize.open.__code__.co_filename == tokenize.__file__
    got["holds"] = hotlines._hot is not None
print(json.dumps(got))
"""


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "envs" / "v1" / "site-packages"
    write_tree(tree, SOURCES)
    write_archives(tree, tree.parent / "archives", opened=HELD)
    return tree


def _query(python: str, tree: Path, mode: str) -> dict:
    out = subprocess.run([python, "-I", "-S", "-c", QUERIES, str(REPO / "handler"), str(tree), mode, json.dumps(list(SOURCES))],
                         capture_output=True, text=True, timeout=120, env={"PATH": os.environ.get("PATH", "")})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("python", _runtimes(), ids=lambda p: Path(p).name)
def test_source_lines_are_the_file_systems_and_the_held_sources_are_not_opened(tmp_path, python):
    tree = _tree(tmp_path)
    plain = _query(python, tree, "plain")
    # the file system's own answers, as a reference: decoded by their cookie or BOM, newlines as universal newlines give them
    lines = {rel: got[1] for rel, got in plain["answers"]["lines"].items() if got[0] == "ok"}
    assert lines["lib/latin.py"][1] == "NAME = 'caf\xe9'\n" and lines["lib/bom.py"] == ["X = 'bom'\n"] and lines["lib/crlf.py"] == ["A = 1\n", "B = 2\n"]
    assert lines["lib/tail.py"] == ["T = 1\n"] and plain["import"]["stack"][-1][2] == "STACK = traceback.extract_stack()"
    assert "warnings.warn('from lib')" in plain["import"]["warned"][0] and "# a comment inspect keeps" in plain["import"]["self"]
    st = os.stat(tree / "lib" / "crlf.py")
    assert plain["answers"]["cache"]["lib/crlf.py"] == [[st.st_size, st.st_mtime, str(tree / "lib" / "crlf.py")]]
    hoist = _query(python, tree, "hoist")
    assert hoist["wrapped"] is True
    # the same lines, tracebacks, warnings and source, cached with the file's own size and mtime
    assert hoist["import"] == plain["import"] and hoist["answers"] == plain["answers"]
    # none of the held sources opened (the modules import from memory, linecache reads from it); the rest as without Hoist
    assert hoist["opened"] == ["lib/cold.py"] and plain["opened"] == sorted(SOURCES)
    assert hoist["direct"] == plain["direct"] == "A = 1\nB = 2\n" and hoist["opened_direct"] == ["lib/crlf.py"]  # tokenize.open itself: the file
    # after release: the file system again, linecache and tokenize as they were, nothing held
    assert hoist["after"] == plain["answers"] and hoist["opened_after"] == sorted(SOURCES)
    assert hoist["restored"] is True and hoist["holds"] is False
