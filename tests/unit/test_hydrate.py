"""Hydration: the build archives a tree's hot set (what importing the set's
requirements opened) beside it; the handler reads the archives into memory and
answers imports of the hot folders from there, everything else from the tree
itself (handler/hoist_lambda/hotimport.py)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import py_compile
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
    "pkg/data.json": '{"k": 1}\n',
    "pkg/tool.sh": "#!/bin/sh\n",
    "ns/part.py": "PART = 3\n",  # a namespace package (no __init__.py)
    "pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n",
}
HOT_MODULES = ("pkg/__init__.py", "pkg/sub/__init__.py", "pkg/sub/mod.py", "ns/part.py")


def _version(tmp_path: Path, opened: list[str] | None = "hot", **kwargs):  # type: ignore[assignment]
    version = tmp_path / "envs" / "abc123"
    tree = version / "site-packages"
    for rel, text in FILES.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    (tree / "pkg" / "tool.sh").chmod(0o755)
    (tree / "pkg" / "_native.so").write_bytes(b"\x7fELF" + b"\0" * 60)
    for rel in (*HOT_MODULES, "pkg/cold/__init__.py", "pkg/cold/c.py"):
        py_compile.compile(str(tree / rel), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, doraise=True)
    (tree / "pkg-1.0.dist-info" / "RECORD").write_text("\n".join(f"{rel},," for rel in [*FILES, "pkg/_native.so"]) + "\n")
    if opened == "hot":  # what an import check would have seen: the bytecode of the hot modules, and the metadata
        opened = [str(Path(importlib.util.cache_from_source(str(tree / rel))).relative_to(tree)) for rel in HOT_MODULES]
        opened += ["pkg/nopyc.py", "pkg-1.0.dist-info/METADATA"]
    index = write_archives(tree, version / "archives", opened=opened, **kwargs)
    return version, tree, index


def _archived(version: Path, index: dict) -> set[str]:
    return {rel for a in index["archives"] for rel, _ in unpack((version / "archives" / a["name"]).read_bytes())}


def test_the_archives_hold_the_hot_set_with_its_sources_and_list_its_folders(tmp_path):
    version, tree, index = _version(tmp_path)
    hot = _archived(version, index)
    assert "pkg/sub/mod.py" in hot and f"pkg/sub/__pycache__/mod.{TAG}.pyc" in hot  # the source with its bytecode: the loader stats it
    assert "pkg/cold/c.py" not in hot and "pkg/data.json" not in hot and "pkg/_native.so" not in hot
    assert index["hot"] == {"recorded": True, "files": len(hot), "of": len(FILES) + 7}  # RECORD and 6 .pyc
    assert set(index["dirs"]) == {"", "pkg", "pkg/sub", "pkg/sub/__pycache__", "pkg/__pycache__", "ns", "ns/__pycache__", "pkg-1.0.dist-info"}
    assert index["dirs"]["pkg"]["cold"] == "p" and index["dirs"]["pkg"]["_native.so"] == "f" and index["dirs"][""]["ns"] == "d"
    assert index["elf"] == ["pkg/_native.so"] and [a["dist"] for a in index["archives"]] == ["pkg"]
    again = write_archives(tree, tmp_path / "again", opened=sorted(hot))
    assert again["archives"] == index["archives"]  # same tree and hot set, same bytes, same names
    assert source_of(f"a/__pycache__/m.{TAG}.opt-1.pyc") == "a/m.py" and source_of("a/m.py") is None


def test_without_a_recorded_hot_set_every_file_but_the_libraries_is_archived(tmp_path):
    version, tree, index = _version(tmp_path, opened=None)
    assert _archived(version, index) == {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file() and p.name != "_native.so"}
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
        os.remove(os.path.join(tree, pyc, name))
import pkg, pkg.sub.mod, pkg.nopyc, pkg.cold.c, ns.part
def inspected():
    os.remove(os.path.join(tree, "pkg", "nopyc.py"))
    try:
        return inspect.getsource(pkg.nopyc)
    except OSError:
        return None
print(json.dumps({
    "hydrated": env.hydrated, "hot_files": env.hot_files, "last_on_path": sys.path[-1],
    "value": pkg.sub.mod.VALUE, "hot": pkg.nopyc.HOT, "cold": pkg.cold.c.COLD, "part": ns.part.PART,
    "file": pkg.sub.mod.where(), "pkg_path": list(pkg.__path__), "ns_path": list(ns.__path__),
    "loaders": {m: type(sys.modules[m].__loader__).__name__ for m in ("pkg", "pkg.sub.mod", "pkg.cold.c")},
    "source": pkg.sub.mod.__loader__.get_source("pkg.sub.mod"),
    "inspected": inspected(),
    "listed": sorted(name for _, name, _ in pkgutil.iter_modules(pkg.__path__)),
    "listed_pkgs": sorted(name for _, name, ispkg in pkgutil.iter_modules(pkg.__path__) if ispkg),
    "pyc_written": os.path.exists(os.path.join(tree, "pkg", "__pycache__", "nopyc." + sys.implementation.cache_tag + ".pyc")),
    "data": open(os.path.join(os.path.dirname(pkg.__file__), "data.json")).read(),
}))
"""


def _run(tmp_path: Path, tree: Path, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-I", "-c", IMPORTS, str(REPO / "handler"), str(tree)], capture_output=True, text=True, timeout=120,
                         env={"PATH": os.environ.get("PATH", ""), **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_hot_modules_import_from_memory_under_their_own_paths_and_the_rest_from_the_tree(tmp_path):
    _, tree, _ = _version(tmp_path)
    got = _run(tmp_path, tree)
    assert got["hydrated"] and got["hot_files"] > 0 and got["last_on_path"] == str(tree)  # after the runtime's own entries
    assert got["value"] == 42 and got["hot"] is True  # memory, though the files on disk now say otherwise
    assert got["cold"] == 1 and got["part"] == 3 and got["ns_path"] == [str(tree / "ns")]
    assert got["file"] == str(tree / "pkg" / "sub" / "mod.py") and got["pkg_path"] == [str(tree / "pkg")]
    assert got["loaders"] == {"pkg": "HotSourceLoader", "pkg.sub.mod": "HotSourceLoader", "pkg.cold.c": "SourceFileLoader"}
    assert got["source"] == FILES["pkg/sub/mod.py"] and got["inspected"] == FILES["pkg/nopyc.py"]  # inspect, tracebacks: from memory too
    assert got["listed"] == ["_native", "cold", "nopyc", "sub"] and got["listed_pkgs"] == ["cold", "sub"]
    assert got["pyc_written"] is False  # nothing is written into the tree, an immutable version
    assert got["data"] == '{"k": 1}\n'  # data beside a module: read from the tree


def test_without_hydration_or_archives_every_module_comes_from_the_tree(tmp_path, app):
    _, tree, _ = _version(tmp_path)
    got = _run(tmp_path, tree, {"HOIST_HYDRATE": "0"})
    assert got["hydrated"] is False and got["value"] == 0 and got["loaders"]["pkg.sub.mod"] == "SourceFileLoader" and got["inspected"] is None
    plain = tmp_path / "v" / "site-packages"
    plain.mkdir(parents=True)
    assert app.hydrate(str(plain)) is None


def test_an_index_of_another_version_or_an_unsafe_path_is_not_used(app, tmp_path):
    version, tree, index = _version(tmp_path)
    (version / "archives" / "index.json").write_text(json.dumps({**index, "version": 99}))
    assert app.hydrate(str(tree)) is None  # a newer build than this handler: import from EFS, slower but right
    import struct
    import zlib

    evil = zlib.compress(struct.pack("<I", 9) + b"../escape" + struct.pack("<IQ", 0o644, 1) + b"x")
    with pytest.raises(OSError, match="unsafe path"):
        list(app.hotimport.records(zlib.decompress(evil)))


@pytest.mark.parametrize("damage", ["truncated", "index", "record"])
def test_a_damaged_archive_or_index_means_importing_from_the_tree_not_a_failed_init(app, tmp_path, monkeypatch, damage):
    """A torn copy on EFS must cost speed, never the cold start."""
    import struct
    import zlib

    version, tree, index = _version(tmp_path)
    archive = version / "archives" / index["archives"][0]["name"]
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[:-20])
        with pytest.raises(OSError, match="does not match its sha256"):
            app.hydrate(str(tree))
    elif damage == "index":
        (version / "archives" / "index.json").write_text('{"version": 2, "archives": [')
    else:  # a record whose length runs past the end, with an index that vouches for it
        bad = zlib.compress(struct.pack("<I", 3) + b"a/b")
        archive.write_bytes(bad)
        (version / "archives" / "index.json").write_text(json.dumps({**index, "archives": [{**index["archives"][0], "sha256": hashlib.sha256(bad).hexdigest()}]}))
    monkeypatch.setattr(app, "_done", None)
    monkeypatch.setattr(sys, "path", list(sys.path))
    logged = []
    monkeypatch.setattr(app, "log", lambda event, **fields: logged.append((event, fields)))
    env = app.activate(str(tree))
    assert not env.hydrated and sys.path[-1] == str(tree)  # the tree itself, as without archives
    assert logged[0][0] == "hydrate_failed" and logged[-1][0] == "activate"


def test_a_large_distribution_is_cut_into_archives_that_all_arrive(app, tmp_path):
    """Several archives per distribution let the handler decompress on every CPU at once."""
    version, tree, _ = _version(tmp_path, chunk_bytes=16)
    index = json.loads((version / "archives" / "index.json").read_text())
    assert len(index["archives"]) >= 3 and {a["dist"] for a in index["archives"]} == {"pkg"}
    hot = app.hydrate(str(tree))
    assert len(hot) == index["hot"]["files"] == sum(a["files"] for a in index["archives"])
    assert hot.files[str(tree / "pkg" / "sub" / "mod.py")] == FILES["pkg/sub/mod.py"].encode()


def test_loader_ranges_cover_what_the_loader_reads_and_leave_the_code(tmp_path):
    from elftools.elf.elffile import ELFFile

    from builder.archives import loader_ranges
    from tests.wheels import compile_library

    lib = compile_library(tmp_path / "lib", filler=8000)  # a .text of some size
    ranges = loader_ranges(lib)
    covered = lambda off: any(start <= off < start + length for start, length in ranges)  # noqa: E731
    with open(lib, "rb") as fh:
        sections = {s.name: (s["sh_offset"], s["sh_size"]) for s in ELFFile(fh).iter_sections()}
    assert ranges[0][0] == 0  # the ELF and program headers
    for name in (".dynsym", ".dynstr", ".rela.dyn"):
        assert covered(sections[name][0]), name
    text_off, text_size = sections[".text"]
    assert text_size > 64 << 10 and not covered(text_off + text_size // 2)
    assert sum(length for _, length in ranges) < lib.stat().st_size
    not_elf = tmp_path / "fake.so"
    not_elf.write_bytes(b"\x7fELF" + b"\0" * 60)
    assert loader_ranges(not_elf) == [[0, 64]]  # unreadable as ELF: read it whole


def test_read_ahead_pieces_and_the_rest_of_a_file(app, tmp_path):
    assert app.pieces([[0, 10], [100, 25]], 10) == [[0, 10], [100, 10], [110, 10], [120, 5]]
    path = tmp_path / "lib.so"
    path.write_bytes(b"x" * 1000)
    assert app._rest(str(path), [[0, 100], [500, 50]]) == [[100, 400], [550, 450]]


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
        archives.append({"name": f"pkg{i}.hz", "dist": f"pkg{i}", "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(), "files": 1})
    dirs = {"": {f"pkg{i}": "d" for i in range(48)}, **{f"pkg{i}": {"data.bin": "f"} for i in range(48)}}
    (version / "archives" / "index.json").write_text(json.dumps({"version": 2, "archives": archives, "dirs": dirs, "elf": [], "elf_ranges": {}}))
    monkeypatch.setattr(app, "CHUNK_WORKERS", 32)
    real_size = os.path.getsize
    # a round trip per stat, as on EFS: every archive read is in flight before any chunk is queued,
    # which made the shared-pool design hang every time (checked against the previous handler)
    monkeypatch.setattr(os.path, "getsize", lambda p: time.sleep(0.05) or real_size(p))
    result: list = []
    worker = threading.Thread(target=lambda: result.append(app.hydrate(str(tree), chunk=4 << 10)), daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "hydrate hung with 48 archives of 24 chunks each"
    for i in (0, 31, 47):
        assert result[0].files[str(tree / f"pkg{i}" / "data.bin")] == (tree / f"pkg{i}" / "data.bin").read_bytes()


@pytest.mark.parametrize("compression", ["none", "lzma"])
def test_archives_stored_otherwise_hydrate_too(app, tmp_path, compression):
    """The benchmark's compression variants: the index says how its archives are stored."""
    import lzma
    import zlib

    version, tree, index = _version(tmp_path)
    for a in index["archives"]:
        path = version / "archives" / a["name"]
        raw = zlib.decompress(path.read_bytes())
        path.write_bytes(lzma.compress(raw) if compression == "lzma" else raw)
        a["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (version / "archives" / "index.json").write_text(json.dumps({**index, "compression": compression}))
    assert app.hydrate(str(tree)).files[str(tree / "pkg" / "sub" / "mod.py")] == FILES["pkg/sub/mod.py"].encode()


def test_activate_appends_the_tree_after_the_runtime_once(app, tmp_path, monkeypatch):
    _, tree, _ = _version(tmp_path)
    monkeypatch.setattr(app, "_done", None)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "path_hooks", list(sys.path_hooks))
    monkeypatch.setattr(sys, "path_importer_cache", dict(sys.path_importer_cache))
    monkeypatch.setenv("HOIST_EFS_TREE", str(tree) + "/")
    first = app.activate()
    assert first.hydrated and first.tree == first.path == str(tree) and sys.path[-1] == str(tree) and first.hot_files > 0
    assert app.activate() is first and sys.path.count(str(tree)) == 1  # once per execution environment


def test_the_read_ahead_takes_touched_pages_and_shared_libraries_only(app, tmp_path, monkeypatch):
    """torch ships test executables (torch/bin/test_api, 15 MB): no import maps them, so none is read ahead.
    A library the build saw pages of gets those; one it saw none of, what the loader reads."""
    import threading
    import time

    assert app.is_library("torch/lib/libtorch_cpu.so") and app.is_library("x/libgomp.so.1") and app.is_library("torch/_C.cpython-311-x86_64-linux-gnu.so")
    assert not app.is_library("torch/bin/test_api") and not app.is_library("torch/bin/torch_shm_manager")
    for rel in ("bin/test_api", "lib/liba.so", "lib/libb.so"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"\0" * 5000)
    reads, lock = [], threading.Lock()
    real = os.pread

    def pread(fd, n, off):
        with lock:
            reads.append((os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1], off, n))
        return real(fd, n, off)

    monkeypatch.setattr(os, "pread", pread)
    monkeypatch.setattr(app, "relocation_ranges", lambda path: [[0, 64]])
    index = {"elf": ["bin/test_api", "lib/liba.so", "lib/libb.so"], "elf_ranges": {"bin/test_api": [[0, 10]], "lib/liba.so": [[0, 100]], "lib/libb.so": [[0, 200]]},
             "touched_ranges": {"lib/liba.so": [[0, 4096], [4096 * 3, 2000]]}}
    expect = {
        "touched": {("liba.so", 0, 2048), ("liba.so", 2048, 2048), ("liba.so", 12288, 2000), ("libb.so", 0, 64)},
        "relocs": {("liba.so", 0, 64), ("libb.so", 0, 64)},
        "loader": {("liba.so", 0, 100), ("libb.so", 0, 200)},
        "ordered": {("liba.so", 0, 100), ("liba.so", 100, 2048), ("liba.so", 2148, 2048), ("liba.so", 4196, 804), ("libb.so", 0, 200),
                    ("libb.so", 200, 2048), ("libb.so", 2248, 2048), ("libb.so", 4296, 704)},
        "none": set(),
    }
    for how, expected in expect.items():
        reads.clear()
        app._start_prefetch(str(tmp_path), index, how, piece=2048)
        deadline = time.time() + 10
        while len(reads) < len(expected) and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert set(reads) == expected, how


def test_the_source_files_of_hot_folders_are_looked_up_ahead(app, tmp_path, monkeypatch):
    """inspect.getmodule checks every loaded module's source with os.path.exists: those lookups are made ahead, in parallel."""
    import threading
    import time

    seen, lock = [], threading.Lock()
    real = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: (lock.acquire(), seen.append(p), lock.release(), real(p, *a, **k))[-1])
    app._start_stat_ahead("/t", {"": {"a.py": "f", "pkg": "p", "b.txt": "f"}, "pkg": {"__init__.py": "f", "m.pyc": "f"}})
    deadline = time.time() + 10
    while len(seen) < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert sorted(seen) == ["/t/a.py", "/t/pkg/__init__.py"]


def test_relocation_ranges_are_what_the_loader_reads_found_in_the_section_headers(app, tmp_path):
    """The default read-ahead: symbols, hash tables, relocations and the data they patch; not code, not .rodata."""
    from elftools.elf.elffile import ELFFile

    from tests.wheels import compile_library

    lib = compile_library(tmp_path / "lib", filler=8000)
    ranges = app.relocation_ranges(str(lib))
    covered = lambda off: any(start <= off < start + length for start, length in ranges)  # noqa: E731
    with open(lib, "rb") as fh:
        sections = {s.name: (s["sh_offset"], s["sh_size"]) for s in ELFFile(fh).iter_sections()}
    assert ranges[0][0] == 0
    for name in (".dynsym", ".dynstr", ".rela.dyn", ".dynamic"):
        assert covered(sections[name][0]), name
    text_off, text_size = sections[".text"]
    assert not covered(text_off + text_size // 2)
    assert app.relocation_ranges(str(tmp_path / "missing.so")) is None
    (tmp_path / "fake.so").write_bytes(b"\x7fELF" + b"\0" * 60)
    assert app.relocation_ranges(str(tmp_path / "fake.so")) is None  # not a 64-bit little-endian ELF: no read-ahead
