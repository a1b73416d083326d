"""Hydration: the build archives a tree's hot set (what importing the set's
requirements opened) beside it; the handler reads the archives into memory and
answers imports of the hot folders from there, everything else from the tree
itself (handler/hoist_lambda/hotimport.py)."""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.archives import source_of, unpack, write_archives
from tests.conftest import REPO

TAG = sys.implementation.cache_tag


@pytest.fixture
def app(monkeypatch):
    """hoist_lambda.activate, the standard-library module any handler activates the tree with."""
    monkeypatch.delenv("HOIST_EFS_TREE", raising=False)
    monkeypatch.syspath_prepend(str(REPO / "handler"))
    return importlib.import_module("hoist_lambda.activate")


FILES = {
    "pkg/__init__.py": "from .sub import mod\n",
    "pkg/sub/__init__.py": "",
    "pkg/sub/mod.py": "VALUE = 42\n\ndef where():\n    return __file__\n",
    "pkg/nopyc.py": "HOT = True\n",  # hot, no bytecode: compiled from memory, nothing written
    "pkg/cold/__init__.py": "",
    "pkg/cold/c.py": "COLD = 1\n",  # never imported at build time: read from the tree
    "pkg/sub/other.py": "OTHER = 1\n",  # in a hot folder, not hot itself: read from the tree, while it is there
    "pkg/data.json": '{"k": 1}\n',
    "pkg/tool.sh": "#!/bin/sh\n",
    "ns/part.py": "PART = 3\n",  # a namespace package (no __init__.py)
    "pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n",
}
HOT_MODULES = ("pkg/__init__.py", "pkg/sub/__init__.py", "pkg/sub/mod.py", "ns/part.py")


def _version(tmp_path: Path, opened: list[str] | None = "hot", python: str | None = None, **kwargs):  # type: ignore[assignment]
    """A version folder: the tree (bytecode compiled by ``python``, default this one) and its archives."""
    version = tmp_path / "envs" / "abc123"
    tree = version / "site-packages"
    for rel, text in FILES.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    (tree / "pkg" / "tool.sh").chmod(0o755)
    (tree / "pkg" / "_native.so").write_bytes(b"\x7fELF" + b"\0" * 60)
    compiled = [str(tree / rel) for rel in (*HOT_MODULES, "pkg/cold/__init__.py", "pkg/cold/c.py", "pkg/sub/other.py")]
    script = ("import importlib.util, json, py_compile, sys\n"
              "for p in sys.argv[1:]:\n    py_compile.compile(p, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, doraise=True)\n"
              "print(json.dumps([importlib.util.cache_from_source(p) for p in sys.argv[1:]]))")
    out = subprocess.run([python or sys.executable, "-I", "-c", script, *compiled], capture_output=True, text=True, check=True)
    pycs = dict(zip(compiled, json.loads(out.stdout), strict=True))
    (tree / "pkg-1.0.dist-info" / "RECORD").write_text("\n".join(f"{rel},," for rel in [*FILES, "pkg/_native.so"]) + "\n")
    if opened == "hot":  # what an import check would have seen: the bytecode of the hot modules, the source it read, the metadata
        opened = [str(Path(pycs[str(tree / rel)]).relative_to(tree)) for rel in HOT_MODULES]
        opened += ["pkg/nopyc.py", "pkg-1.0.dist-info/METADATA"]
    index = write_archives(tree, version / "archives", opened=opened, **kwargs)
    return version, tree, index


def _archived(version: Path, index: dict) -> set[str]:
    return {rel for a in index["archives"] for rel, _ in unpack((version / "archives" / a["name"]).read_bytes())}


def test_the_archives_hold_what_was_opened_the_sizes_of_its_sources_and_list_its_folders(tmp_path):
    version, tree, index = _version(tmp_path)
    hot = _archived(version, index)
    # the bytecode in memory; its source as a size only (the loader stats it, never reads it); a source read itself, whole
    assert f"pkg/sub/__pycache__/mod.{TAG}.pyc" in hot and "pkg/sub/mod.py" not in hot and index["sizes"]["pkg/sub/mod.py"] == len(FILES["pkg/sub/mod.py"])
    assert "pkg/nopyc.py" in hot and "pkg/nopyc.py" not in index["sizes"]
    assert "pkg/cold/c.py" not in hot and "pkg/data.json" not in hot and "pkg/_native.so" not in hot
    held = sum((tree / rel).stat().st_size for rel in hot)
    assert index["hot"] == {"recorded": True, "files": len(hot), "of": len(FILES) + 8, "bytes": held, "sized": len(HOT_MODULES)}  # RECORD, 7 .pyc
    assert set(index["dirs"]) == {"", "pkg", "pkg/sub", "pkg/sub/__pycache__", "pkg/__pycache__", "ns", "ns/__pycache__", "pkg-1.0.dist-info"}
    assert index["dirs"]["pkg"]["cold"] == "p" and index["dirs"]["pkg"]["_native.so"] == "f" and index["dirs"][""]["ns"] == "d"
    assert index["elf"] == ["pkg/_native.so"] and [a["dist"] for a in index["archives"]] == ["pkg"] and "elf_ranges" not in index
    again = write_archives(tree, tmp_path / "again", opened=sorted(hot))
    assert again["archives"] == index["archives"]  # same tree and hot set, same bytes, same names
    assert source_of(f"a/__pycache__/m.{TAG}.opt-1.pyc") == "a/m.py" and source_of("a/m.py") is None


def test_every_distributions_metadata_folder_is_listed_hot_files_or_not(tmp_path):
    """importlib.metadata's entry_points() tries every distribution's entry_points.txt: the listing says which have none."""
    tree = tmp_path / "site-packages"
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: 1\n"
    for rel, text in (("a/__init__.py", ""), ("a-1.0.dist-info/METADATA", meta.format("a")), ("a-1.0.dist-info/entry_points.txt", "[g]\nx = a\n"),
                      ("B_c-2.dist-info/METADATA", meta.format("B_c")), ("old-1.egg-info/PKG-INFO", meta.format("old")),
                      ("lone.egg-info", meta.format("lone")), ("notes.dist-info.txt", "")):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    index = write_archives(tree, tmp_path / "archives", opened=["a/__init__.py", "a-1.0.dist-info/entry_points.txt"])
    assert set(index["dirs"]) == {"", "a", "a-1.0.dist-info", "B_c-2.dist-info", "old-1.egg-info"}  # not a file named like one
    assert index["dirs"]["B_c-2.dist-info"] == {"METADATA": "f"} and index["dirs"]["old-1.egg-info"] == {"PKG-INFO": "f"}
    assert _archived(tmp_path, index) == {"a/__init__.py", "a-1.0.dist-info/entry_points.txt"}  # listed, not archived


def test_without_a_recorded_hot_set_every_file_but_the_libraries_is_archived(tmp_path):
    version, tree, index = _version(tmp_path, opened=None)
    files = {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file() and p.name != "_native.so"}
    assert _archived(version, index) == files - set(index["sizes"]) and set(index["sizes"]) == {*HOT_MODULES, "pkg/cold/__init__.py", "pkg/cold/c.py", "pkg/sub/other.py"}
    assert index["hot"]["recorded"] is False


IMPORTS = r"""
import importlib, inspect, json, os, pkgutil, sys
sys.path.insert(0, sys.argv[1])
from hoist_lambda import activate as a
tree = sys.argv[2]
env = a.activate(tree)
for rel in ("pkg/sub/mod.py", "pkg/nopyc.py"):  # the tree changes on disk after activation: the hot set comes from memory
    with open(os.path.join(tree, rel), "w") as fh:
        fh.write("VALUE = 0\nHOT = False\ndef where():\n    return 'disk'\n")
for pyc in ("pkg/sub/__pycache__", "ns/__pycache__"):
    for name in os.listdir(os.path.join(tree, pyc)):
        if "other" not in name:
            os.remove(os.path.join(tree, pyc, name))
os.remove(os.path.join(tree, "pkg", "sub", "other.py"))  # listed by the build, gone from the tree (a partial copy, a collected version)
for name in os.listdir(os.path.join(tree, "pkg", "sub", "__pycache__")):
    os.remove(os.path.join(tree, "pkg", "sub", "__pycache__", name))
try:
    import pkg.sub.other
    missing = "imported"
except ImportError as exc:  # an optional dependency's guard catches it, as without Hoist
    missing = type(exc).__name__
import pkg, pkg.sub.mod, pkg.nopyc, pkg.cold.c, ns.part
def inspected():
    os.remove(os.path.join(tree, "pkg", "nopyc.py"))
    try:
        return inspect.getsource(pkg.nopyc)
    except OSError:
        return None
source = pkg.sub.mod.__loader__.get_source("pkg.sub.mod")
listed = sorted(name for _, name, _ in pkgutil.iter_modules(pkg.__path__))
listed_pkgs = sorted(name for _, name, ispkg in pkgutil.iter_modules(pkg.__path__) if ispkg)
inspected_source = inspected()
report = a.report()
freed = a.release()
print(json.dumps({
    "hydrated": env.hydrated, "hot_files": env.hot_files, "why": env.why, "last_on_path": sys.path[-1], "missing": missing,
    "value": pkg.sub.mod.VALUE, "hot": pkg.nopyc.HOT, "cold": pkg.cold.c.COLD, "part": ns.part.PART,
    "file": pkg.sub.mod.where(), "pkg_path": list(pkg.__path__), "ns_path": list(ns.__path__),
    "loaders": {m: type(sys.modules[m].__loader__).__name__ for m in ("pkg", "pkg.sub.mod", "pkg.cold.c")},
    "source": source,
    "inspected": inspected_source,
    "listed": listed, "listed_pkgs": listed_pkgs,
    "pyc_written": os.path.exists(os.path.join(tree, "pkg", "__pycache__", "nopyc." + sys.implementation.cache_tag + ".pyc")),
    "data": open(os.path.join(os.path.dirname(pkg.__file__), "data.json")).read(),
    "report": report, "freed": freed, "after": a.report(), "hooks_left": [h for h in sys.path_hooks if "hotimport" in getattr(h, "__module__", "")],
    "python": "%d.%d" % sys.version_info[:2],
}))
"""


def _run(tmp_path: Path, tree: Path, env: dict | None = None, python: str | None = None) -> dict:
    out = subprocess.run([python or sys.executable, "-I", "-c", IMPORTS, str(REPO / "handler"), str(tree)], capture_output=True, text=True, timeout=120,
                         env={"PATH": os.environ.get("PATH", ""), **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _runtimes() -> list[str]:
    """The oldest and the newest runtime Hoist accepts that this machine has a CPython of (pipeline/runtimes.json)."""
    from pipeline.errors import InterpreterNotFound
    from pipeline.interpreters import find_python

    accepted = json.loads((REPO / "pipeline" / "runtimes.json").read_text())["runtimes"]
    here = []
    for name in sorted(accepted, key=lambda n: tuple(int(x) for x in accepted[n]["python"].split("."))):
        try:
            here.append(str(find_python(accepted[name]["python"]).path))
        except InterpreterNotFound:
            continue
    assert len(here) >= 2, "this machine has fewer than two of the runtimes Hoist accepts (pyenv holds 3.9-3.13)"
    return [here[0], here[-1]]


@pytest.fixture(params=["oldest", "newest"])
def runtime_python(request):
    oldest, newest = _runtimes()
    return oldest if request.param == "oldest" else newest


def test_hot_modules_import_from_memory_under_their_own_paths_and_the_rest_from_the_tree(tmp_path, runtime_python):
    # GIVEN a version built for the runtime (its bytecode compiled by it), run by that runtime's CPython
    _, tree, index = _version(tmp_path, python=runtime_python)
    got = _run(tmp_path, tree, python=runtime_python)
    # THEN it hydrates, on the oldest runtime Hoist accepts as on the newest
    assert got["hydrated"] and got["why"] is None and got["hot_files"] == index["hot"]["files"] and got["last_on_path"] == str(tree)  # after the runtime's own entries
    assert got["value"] == 42 and got["hot"] is True  # memory, though the files on disk now say otherwise
    assert got["cold"] == 1 and got["part"] == 3 and got["ns_path"] == [str(tree / "ns")]
    assert got["missing"] == "ModuleNotFoundError"  # listed, gone from the tree: what Python says without Hoist
    assert got["file"] == str(tree / "pkg" / "sub" / "mod.py") and got["pkg_path"] == [str(tree / "pkg")]
    assert got["loaders"] == {"pkg": "HotSourceLoader", "pkg.sub.mod": "HotSourceLoader", "pkg.cold.c": "SourceFileLoader"}
    # a source only stat'ed is read from the tree, as linecache does anyway; a source the import check saw read is in memory
    assert got["source"].startswith("VALUE = 0") and got["inspected"] == FILES["pkg/nopyc.py"]
    assert got["listed"] == ["_native", "cold", "nopyc", "sub"] and got["listed_pkgs"] == ["cold", "sub"]
    assert got["pyc_written"] is False  # nothing is written into the tree, an immutable version
    assert got["data"] == '{"k": 1}\n'  # data beside a module: read from the tree
    # what it held, and that release gives it back (the hook gone, nothing held)
    assert got["report"]["held_bytes"] >= index["hot"]["bytes"] and got["report"]["released"] is False
    assert got["freed"] == got["report"]["held_bytes"] and got["after"]["held_now"] == 0 and got["report"]["held_now"] == got["report"]["held_bytes"] and got["after"]["released"] is True and got["hooks_left"] == []


def test_without_hydration_or_archives_every_module_comes_from_the_tree_and_says_why(tmp_path, app):
    _, tree, _ = _version(tmp_path)
    got = _run(tmp_path, tree, {"HOIST_HYDRATE": "0"})
    assert got["hydrated"] is False and got["why"] == "HOIST_HYDRATE=0" and got["value"] == 0 and got["loaders"]["pkg.sub.mod"] == "SourceFileLoader"
    _, tree, _ = _version(tmp_path / "again")
    plain = tmp_path / "v" / "site-packages"
    __import__("shutil").copytree(tree, plain)  # the same tree, no archives beside it
    got = _run(tmp_path, plain)
    assert got["hydrated"] is False and got["why"] == "the version has no archives (archives/index.json)"


def test_an_index_of_another_version_or_an_unsafe_path_is_not_used(app, tmp_path):
    version, tree, index = _version(tmp_path)
    (version / "archives" / "index.json").write_text(json.dumps({**index, "version": 99}))
    hot, why = app.hydrate(str(tree))
    assert hot is None and why == "archive index version 99, this handler reads 3 (rebuild and sync the version)"  # import from EFS, slower but right
    evil = app.archive.pack([("../escape", 0o644, b"x")])
    with pytest.raises(OSError, match="unsafe path"):
        list(app.archive.records(app.archive.unpack(evil)))


def test_a_truncated_record_is_refused_wherever_it_is_cut(app):
    """A stream cut inside the data of its last record, inside its header, or inside the path's length."""
    fmt = app.archive
    raw = fmt.unpack(fmt.pack([("a/b.py", 0o644, b"x = 1\n"), ("a/c.py", 0o644, b"y = 22\n")]))
    assert [(rel, bytes(data)) for rel, data in fmt.records(raw)] == [("a/b.py", b"x = 1\n"), ("a/c.py", b"y = 22\n")]
    for cut, match in ((len(raw) - 3, "a/c.py needs 7 bytes, 4 are left"), (len(raw) - 7 - 5, "inside a record's header"), (len(raw) - 7 - 12 - 6 - 2, "where a record starts")):
        with pytest.raises(OSError, match=match):
            list(fmt.records(raw[:cut]))


@pytest.mark.parametrize("damage", ["truncated", "index", "record"])
def test_a_damaged_archive_or_index_means_importing_from_the_tree_not_a_failed_init(app, tmp_path, monkeypatch, damage):
    """A torn copy on EFS must cost speed, never the cold start."""
    version, tree, index = _version(tmp_path)
    archive = version / "archives" / index["archives"][0]["name"]
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[:-20])
        with pytest.raises(OSError, match="does not match its sha256"):
            app.hydrate(str(tree))
    elif damage == "index":
        (version / "archives" / "index.json").write_text('{"version": 3, "archives": [')
    else:  # a record whose data run past the end of its stream, with an index that vouches for the archive
        good = app.archive.unpack(archive.read_bytes())
        bad = __import__("zlib").compress(good[:-5])
        archive.write_bytes(bad)
        entry = {**index["archives"][0], "sha256": hashlib.sha256(bad).hexdigest(), "raw": len(good) - 5}
        (version / "archives" / "index.json").write_text(json.dumps({**index, "archives": [entry]}))
        with pytest.raises(OSError, match="archive truncated"):
            app.hydrate(str(tree))
    monkeypatch.setattr(app, "_done", None)
    monkeypatch.setattr(sys, "path", list(sys.path))
    logged = []
    monkeypatch.setattr(app, "log", lambda event, **fields: logged.append((event, fields)))
    env = app.activate(str(tree))
    assert not env.hydrated and sys.path[-1] == str(tree) and env.why.startswith("hydration failed: ")  # the tree itself, as without archives
    assert logged[0][0] == "hydrate_failed" and logged[-1][0] == "activate"


def test_a_large_distribution_is_cut_into_archives_that_all_arrive(app, tmp_path):
    """Several archives per distribution let the handler unpack on every CPU at once."""
    version, tree, _ = _version(tmp_path, chunk_bytes=16)
    index = json.loads((version / "archives" / "index.json").read_text())
    assert len(index["archives"]) >= 3 and {a["dist"] for a in index["archives"]} == {"pkg"}
    hot, _ = app.hydrate(str(tree))
    assert len(hot) == index["hot"]["files"] == sum(a["files"] for a in index["archives"]) and hot.bytes == index["hot"]["bytes"]
    assert bytes(hot.files[str(tree / "pkg" / "nopyc.py")]) == FILES["pkg/nopyc.py"].encode()


def test_read_ahead_pieces(app):
    assert app.prefetch.pieces([[0, 10], [100, 25]], 10) == [[0, 10], [100, 10], [110, 10], [120, 5]]


def test_more_than_32_large_archives_hydrate_without_hanging(app, tmp_path, monkeypatch):
    """Whole-archive reads wait on their chunk reads: in one shared pool, 32 archives in
    flight would wait on chunks queued behind them and init would hang for good."""
    import random
    import threading
    import time

    from builder.archives import pack

    version = tmp_path / "envs" / "big"
    tree = version / "site-packages"
    tree.mkdir(parents=True)
    (version / "archives").mkdir()
    rng = random.Random(7)
    archives = []
    for i in range(48):  # more archives than chunk readers; each is many chunks
        (tree / f"pkg{i}").mkdir()
        (tree / f"pkg{i}" / "data.bin").write_bytes(rng.randbytes(96 << 10))  # incompressible
        blob = pack(tree, [f"pkg{i}/data.bin"])
        (version / "archives" / f"pkg{i}.hz").write_bytes(blob)
        archives.append({"name": f"pkg{i}.hz", "dist": f"pkg{i}", "bytes": len(blob), "raw": len(__import__("zlib").decompress(blob)),
                         "sha256": hashlib.sha256(blob).hexdigest(), "files": 1})
    dirs = {"": {f"pkg{i}": "d" for i in range(48)}, **{f"pkg{i}": {"data.bin": "f"} for i in range(48)}}
    (version / "archives" / "index.json").write_text(json.dumps({"version": 3, "archives": archives, "dirs": dirs, "sizes": {}, "elf": []}))
    monkeypatch.setattr(app, "CHUNK_WORKERS", 32)
    monkeypatch.setattr(app, "ARCHIVE_WORKERS", 48)
    real_size = os.path.getsize
    # a round trip per stat, as on EFS: every archive read is in flight before any chunk is queued,
    # which made the shared-pool design hang every time (checked against the previous handler)
    monkeypatch.setattr(os.path, "getsize", lambda p: time.sleep(0.05) or real_size(p))
    result: list = []
    worker = threading.Thread(target=lambda: result.append(app.hydrate(str(tree), chunk=4 << 10)), daemon=True)  # 24 reads per archive
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "hydrate hung with 48 archives of 24 chunks each"
    for i in (0, 31, 47):
        assert bytes(result[0][0].files[str(tree / f"pkg{i}" / "data.bin")]) == (tree / f"pkg{i}" / "data.bin").read_bytes()


@pytest.mark.parametrize("compression", ["none", "lzma"])
def test_archives_stored_otherwise_hydrate_only_where_the_handler_is_told_how(app, tmp_path, monkeypatch, compression):
    """The production handler reads what the build writes; the benchmark injects other compressions, as here."""
    import lzma
    import zlib

    version, tree, index = _version(tmp_path)
    for a in index["archives"]:
        path = version / "archives" / a["name"]
        raw = zlib.decompress(path.read_bytes())
        path.write_bytes(lzma.compress(raw) if compression == "lzma" else raw)
        a["sha256"], a["bytes"] = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size
    (version / "archives" / "index.json").write_text(json.dumps({**index, "compression": compression}))
    with pytest.raises(OSError, match=f"archive compression '{compression}' is not supported by this handler"):
        app.hydrate(str(tree))
    class Stored:
        def decompress(self, data):
            return data

    monkeypatch.setitem(app.archive.DECOMPRESS, compression, lzma.LZMADecompressor if compression == "lzma" else Stored)
    assert bytes(app.hydrate(str(tree))[0].files[str(tree / "pkg" / "nopyc.py")]) == FILES["pkg/nopyc.py"].encode()


def test_activate_appends_the_tree_after_the_runtime_once_and_refuses_another(app, tmp_path, monkeypatch):
    _, tree, _ = _version(tmp_path)
    monkeypatch.setattr(app, "_done", None)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "path_hooks", list(sys.path_hooks))
    monkeypatch.setattr(sys, "path_importer_cache", dict(sys.path_importer_cache))
    monkeypatch.setenv("HOIST_EFS_TREE", str(tree) + "/")
    first = app.activate()
    try:
        assert first.hydrated and first.tree == first.path == str(tree) and sys.path[-1] == str(tree) and first.hot_files > 0
        assert app.activate() is first and app.activate(str(tree)) is first and sys.path.count(str(tree)) == 1  # once per execution environment
        with pytest.raises(app.ActivationError, match="already activated"):
            app.activate(str(tmp_path / "elsewhere" / "site-packages"))
    finally:
        app.release()


def _reads(monkeypatch):
    import threading

    reads, lock = [], threading.Lock()
    real = os.preadv

    def preadv(fd, buffers, off):
        with lock:
            reads.append((os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1], off, sum(len(b) for b in buffers)))
        return real(fd, buffers, off)

    monkeypatch.setattr(os, "preadv", preadv)
    return reads


def _settle(reads: list, count: int) -> None:
    import time

    deadline = time.time() + 10
    while len(reads) < count and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)


def test_the_read_ahead_takes_touched_pages_and_shared_libraries_only(app, tmp_path, monkeypatch):
    """torch ships test executables (torch/bin/test_api, 15 MB): no import maps them, so none is read ahead.
    A library the build saw pages of gets those; one it saw none of, what the loader reads."""
    pf = app.prefetch
    assert pf.is_library("torch/lib/libtorch_cpu.so") and pf.is_library("x/libgomp.so.1") and pf.is_library("torch/_C.cpython-311-x86_64-linux-gnu.so")
    assert not pf.is_library("torch/bin/test_api") and not pf.is_library("torch/bin/torch_shm_manager")
    assert set(pf.RANGES) == {"touched", "relocs"} and pf.DEFAULT == "touched"  # what a user may choose; the benchmark adds its own
    for rel in ("bin/test_api", "lib/liba.so", "lib/libb.so"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"\0" * 5000)
    reads = _reads(monkeypatch)
    monkeypatch.setattr(pf, "relocation_ranges", lambda path: [[0, 64]])
    index = {"elf": ["bin/test_api", "lib/liba.so", "lib/libb.so"], "touched_ranges": {"lib/liba.so": [[0, 4096], [4096 * 3, 2000]]}}
    expect = {
        "touched": {("liba.so", 0, 2048), ("liba.so", 2048, 2048), ("liba.so", 12288, 2000), ("libb.so", 0, 64)},
        "relocs": {("liba.so", 0, 64), ("libb.so", 0, 64)},
    }
    for how, expected in expect.items():
        reads.clear()
        pf.start(str(tmp_path), index, how, piece=2048)
        _settle(reads, len(expected))
        assert set(reads) == expected, how


def test_the_read_ahead_reads_every_piece_of_a_library_planned_last_and_slowly(app, tmp_path, monkeypatch):
    """The threads share one list of work: one that finds it empty while another still plans a library (reading its
    headers on EFS) waits for that plan's reads instead of leaving them to the planner alone, or to nobody."""
    import threading
    import time

    pf = app.prefetch
    for rel in ("lib/liba.so", "lib/libslow.so"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"\0" * 8192)
    reads = _reads(monkeypatch)
    readers: set = set()

    def slow(path, rel, index):
        if rel.endswith("libslow.so"):
            time.sleep(0.3)  # the other threads have run out of work by now
        return [[0, 8192]]

    monkeypatch.setattr(pf, "WORKERS", 3)
    monkeypatch.setitem(pf.RANGES, "slow", slow)
    real_read = pf._Reader.read
    def read(self, at, length):
        if self.path.endswith("libslow.so"):
            readers.add(threading.current_thread().name)
            time.sleep(0.02)  # a round trip
        real_read(self, at, length)

    monkeypatch.setattr(pf._Reader, "read", read)
    pf.start(str(tmp_path), {"elf": ["lib/liba.so", "lib/libslow.so"]}, "slow", piece=1024)
    _settle(reads, 16)
    assert sorted(reads) == sorted([(name, at, 1024) for name in ("liba.so", "libslow.so") for at in range(0, 8192, 1024)])
    assert len(readers) > 1  # the slow library's eight pieces were not all left to the thread that planned it


def test_a_read_ahead_failure_of_any_kind_is_logged_once_and_never_fails_the_init(app, tmp_path, monkeypatch):
    pf = app.prefetch
    for rel in ("lib/liba.so", "lib/libb.so"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"\0" * 5000)
    logged = []
    monkeypatch.setattr(pf, "log", lambda event, **fields: logged.append((event, fields)))
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, off: (_ for _ in ()).throw(ValueError("not an OSError")))
    failed = pf.start(str(tmp_path), {"elf": ["lib/liba.so", "lib/libb.so"], "touched_ranges": {"lib/liba.so": [[0, 4096]], "lib/libb.so": [[0, 4096]]}}, "touched", piece=1024)
    _settle(logged, 1)
    import time

    deadline = time.time() + 10
    while failed.count < 8 and time.time() < deadline:
        time.sleep(0.01)
    assert failed.count == 8 and [event for event, _ in logged] == ["prefetch_failed"] and "ValueError: not an OSError" in logged[0][1]["error"]


def test_the_source_files_of_hot_folders_are_looked_up_ahead(app, tmp_path, monkeypatch):
    """inspect.getmodule checks every loaded module's source with os.path.exists: those lookups are made ahead, in parallel."""
    import threading
    import time

    seen, lock = [], threading.Lock()
    real = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: (lock.acquire(), seen.append(p), lock.release(), real(p, *a, **k))[-1])
    app._start_stat_ahead({"/t": {"a.py": "f", "pkg": "p", "b.txt": "f"}, "/t/pkg": {"__init__.py": "f", "m.pyc": "f"}})
    deadline = time.time() + 10
    while len(seen) < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert sorted(seen) == ["/t/a.py", "/t/pkg/__init__.py"]


def test_lookups_ahead_go_to_as_many_folders_at_once_as_there_are_workers_the_largest_first(app):
    """A FUSE mount without parallel directory operations serves one lookup per folder at a time: folder by folder,
    16 workers would wait on one folder; one path of each folder in turn keeps them on different folders."""
    groups = [("small", ["0", "1"]), ("big", [str(i) for i in range(5)]), ("none", []), ("mid", ["0", "1", "2"])]
    order = list(app.interleaved(iter(groups)))  # folders given lazily, as _start_stat_ahead gives them
    assert sorted(order) == sorted(f"{folder}/{name}" for folder, names in groups for name in names)  # each path once, none lost
    assert [p.split("/")[0] for p in order[:3]] == ["big", "mid", "small"]  # the first round: every folder, the largest first
    assert order[-2:] == ["big/3", "big/4"]  # the largest folder's tail is all that is left at the end
    assert list(app.interleaved([])) == []


def test_relocation_ranges_are_what_the_loader_reads_found_in_the_section_headers(app, tmp_path):
    """The fallback read-ahead: symbols, hash tables, relocations and the data they patch; not code, not .rodata."""
    from elftools.elf.elffile import ELFFile

    from tests.wheels import compile_library

    lib = compile_library(tmp_path / "lib", filler=8000)
    ranges = app.prefetch.relocation_ranges(str(lib))
    covered = lambda off: any(start <= off < start + length for start, length in ranges)  # noqa: E731
    with open(lib, "rb") as fh:
        sections = {s.name: (s["sh_offset"], s["sh_size"]) for s in ELFFile(fh).iter_sections()}
    assert ranges[0][0] == 0
    for name in (".dynsym", ".dynstr", ".rela.dyn", ".dynamic"):
        assert covered(sections[name][0]), name
    text_off, text_size = sections[".text"]
    assert not covered(text_off + text_size // 2)
    assert app.prefetch.relocation_ranges(str(tmp_path / "missing.so")) is None
    (tmp_path / "fake.so").write_bytes(b"\x7fELF" + b"\0" * 60)
    assert app.prefetch.relocation_ranges(str(tmp_path / "fake.so")) is None  # not a 64-bit little-endian ELF: no read-ahead
