"""Hydration: the handler unpacks the build's per-package archives into /tmp
and links shared libraries back to the EFS tree."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from builder.archives import unpack, write_archives
from tests.conftest import REPO


@pytest.fixture
def app(monkeypatch):
    """hoist_lambda.activate, the standard-library module any handler activates the tree with."""
    monkeypatch.delenv("HOIST_EFS_TREE", raising=False)
    monkeypatch.syspath_prepend(str(REPO / "handler"))
    return importlib.import_module("hoist_lambda.activate")


def _version(tmp_path):
    version = tmp_path / "envs" / "abc123"
    tree = version / "site-packages"
    (tree / "pkg" / "sub").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("from .sub import mod\n")
    (tree / "pkg" / "sub" / "mod.py").write_text("VALUE = 42\n")
    (tree / "pkg" / "tool.sh").write_text("#!/bin/sh\n")
    (tree / "pkg" / "tool.sh").chmod(0o755)
    (tree / "pkg" / "_native.so").write_bytes(b"\x7fELF" + b"\0" * 60)
    (tree / "pkg-1.0.dist-info").mkdir()
    (tree / "pkg-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n")
    (tree / "pkg-1.0.dist-info" / "RECORD").write_text("pkg/__init__.py,,\npkg/sub/mod.py,,\npkg/tool.sh,,\npkg/_native.so,,\npkg-1.0.dist-info/METADATA,,\npkg-1.0.dist-info/RECORD,,\n")
    index = write_archives(tree, version / "archives")
    return version, tree, index


def test_archives_are_per_package_deterministic_and_leave_libraries_out(tmp_path):
    version, tree, index = _version(tmp_path)
    assert [a["dist"] for a in index["archives"]] == ["pkg"] and index["elf"] == ["pkg/_native.so"]
    again = write_archives(tree, tmp_path / "again")
    assert again["archives"] == index["archives"]  # same tree, same bytes, same names
    names = [r[0] for r in unpack((version / "archives" / index["archives"][0]["name"]).read_bytes())]
    assert "pkg/_native.so" not in names and "pkg/sub/mod.py" in names and "pkg-1.0.dist-info/METADATA" in names


def test_hydrate_unpacks_links_libraries_and_is_done_once(app, tmp_path):
    version, tree, _ = _version(tmp_path)
    local = app.hydrate(str(tree), str(tmp_path / "tmp"))
    name = __import__("hashlib").sha256((version / "archives" / "index.json").read_bytes() + b"\0" + str(tree).encode()).hexdigest()[:16]
    assert local == str(tmp_path / "tmp" / name)  # named by content and by the tree its links point into
    assert Path(local, "pkg", "sub", "mod.py").read_text() == "VALUE = 42\n"
    assert os.stat(os.path.join(local, "pkg", "tool.sh")).st_mode & 0o777 == 0o755
    link = os.path.join(local, "pkg", "_native.so")
    assert os.path.islink(link) and os.readlink(link) == str(tree / "pkg" / "_native.so")
    os.remove(os.path.join(local, "pkg", "sub", "mod.py"))
    assert app.hydrate(str(tree), str(tmp_path / "tmp")) == local  # marked complete: not unpacked again
    assert not os.path.exists(os.path.join(local, "pkg", "sub", "mod.py"))


def test_no_archives_means_the_tree_itself_and_bad_paths_are_refused(app, tmp_path):
    plain = tmp_path / "v" / "site-packages"
    plain.mkdir(parents=True)
    assert app.hydrate(str(plain), str(tmp_path / "tmp")) is None
    import struct
    import zlib

    evil = zlib.compress(struct.pack("<I", 9) + b"../escape" + struct.pack("<IQ", 0o644, 1) + b"x")
    with pytest.raises(OSError, match="unsafe path"):
        app.unpack_into(evil, str(tmp_path / "out"))
    assert not (tmp_path / "escape").exists()


def test_a_large_distribution_is_cut_into_archives_that_hydrate_whole(app, tmp_path):
    """Several archives per distribution let the handler decompress on every CPU at once."""
    version, tree, _ = _version(tmp_path)
    index = write_archives(tree, version / "archives", chunk_bytes=16)
    assert len(index["archives"]) >= 3 and {a["dist"] for a in index["archives"]} == {"pkg"}
    assert sum(a["files"] for a in index["archives"]) == 5  # every non-ELF file, each in one archive
    local = app.hydrate(str(tree), str(tmp_path / "tmp"))
    assert Path(local, "pkg", "sub", "mod.py").read_text() == "VALUE = 42\n"
    assert Path(local, "pkg-1.0.dist-info", "METADATA").read_text().startswith("Metadata-Version")


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


def test_warm_reads_the_ranges_then_everything_else(app, tmp_path, monkeypatch):
    path = tmp_path / "lib.so"
    path.write_bytes(bytes(range(256)) * 64)  # 16 KB
    reads = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: reads.append((off, n)) or real(fd, n, off))
    app.warm(str(path), [[0, 100], [4096, 50]], chunk=1 << 20)
    assert reads == [(0, 100), (4096, 50)]
    reads.clear()
    app.warm(str(path), [[0, 100], [4096, 50]], rest=True, chunk=1 << 20)
    assert reads == [(100, 3996), (4146, 16384 - 4146)]
    reads.clear()
    app.warm(str(path), None, chunk=8192)
    assert [off for off, _ in reads] == [0, 8192, 16384]  # the whole file, until a read comes back empty


def test_the_same_version_at_another_path_is_hydrated_again_with_links_that_resolve(app, tmp_path):
    """A tree moved (another EFS mount, a test's temporary copy) must not reuse links into the old place."""
    import shutil

    version, tree, _ = _version(tmp_path / "a")
    first = app.hydrate(str(tree), str(tmp_path / "tmp"))
    moved = tmp_path / "b" / "envs" / "abc123"
    shutil.copytree(version, moved)
    shutil.rmtree(tmp_path / "a")
    second = app.hydrate(str(moved / "site-packages"), str(tmp_path / "tmp"))
    assert second != first
    assert os.path.exists(os.path.join(second, "pkg", "_native.so"))  # the link resolves into the tree that exists


def test_more_than_32_large_archives_hydrate_without_hanging(app, tmp_path, monkeypatch):
    """Whole-archive reads wait on their chunk reads: in one shared pool, 32 archives in
    flight would wait on chunks queued behind them and init would hang for good."""
    import json
    import random
    import threading

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
        archives.append({"name": f"pkg{i}.hz", "dist": f"pkg{i}", "bytes": len(blob), "sha256": "", "files": 1})
    (version / "archives" / "index.json").write_text(json.dumps({"version": 1, "archives": archives, "elf": [], "elf_ranges": {}}))
    monkeypatch.setattr(app, "CHUNK_WORKERS", 32)
    import time

    real_size = os.path.getsize
    # a round trip per stat, as on EFS: every archive read is in flight before any chunk is queued,
    # which made the shared-pool design hang every time (checked against the previous handler)
    monkeypatch.setattr(os.path, "getsize", lambda p: time.sleep(0.05) or real_size(p))
    result: list = []
    worker = threading.Thread(target=lambda: result.append(app.hydrate(str(tree), str(tmp_path / "tmp"), chunk=4 << 10)), daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "hydrate hung with 48 archives of 24 chunks each"
    local = result[0]
    for i in (0, 31, 47):
        assert Path(local, f"pkg{i}", "data.bin").read_bytes() == (tree / f"pkg{i}" / "data.bin").read_bytes()


@pytest.mark.parametrize("compression", ["none", "lzma"])
def test_archives_stored_otherwise_hydrate_too(app, tmp_path, compression):
    """The benchmark's compression variants: the index says how its archives are stored."""
    import json
    import lzma
    import zlib

    version, tree, index = _version(tmp_path)
    for a in index["archives"]:
        path = version / "archives" / a["name"]
        raw = zlib.decompress(path.read_bytes())
        path.write_bytes(lzma.compress(raw) if compression == "lzma" else raw)
    (version / "archives" / "index.json").write_text(json.dumps({**index, "compression": compression}))
    local = app.hydrate(str(tree), str(tmp_path / "tmp"))
    assert Path(local, "pkg", "sub", "mod.py").read_text() == "VALUE = 42\n"


def test_activate_appends_the_tree_after_the_runtime_once(app, tmp_path, monkeypatch):
    import sys

    _, tree, _ = _version(tmp_path)
    monkeypatch.setattr(app, "_done", None)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("HOIST_EFS_TREE", str(tree))
    monkeypatch.setenv("HOIST_HYDRATE_DIR", str(tmp_path / "tmp"))
    first = app.activate()
    assert first.hydrated and first.tree == str(tree) and sys.path[-1] == first.path and first.path.startswith(str(tmp_path / "tmp"))
    assert app.activate() is first and sys.path.count(first.path) == 1  # once per execution environment
    monkeypatch.setattr(app, "_done", None)
    monkeypatch.setenv("HOIST_HYDRATE", "0")
    plain = app.activate()
    assert not plain.hydrated and plain.path == str(tree) and sys.path[-1] == str(tree)


def test_the_read_ahead_takes_shared_libraries_only(app, tmp_path, monkeypatch):
    """torch ships test executables (torch/bin/test_api, 15 MB): no import maps them, so none is read ahead."""
    assert app.is_library("torch/lib/libtorch_cpu.so") and app.is_library("x/libgomp.so.1") and app.is_library("torch/_C.cpython-311-x86_64-linux-gnu.so")
    assert not app.is_library("torch/bin/test_api") and not app.is_library("torch/bin/torch_shm_manager")
    warmed = []
    monkeypatch.setattr(app, "warm", lambda path, ranges=None, rest=False: warmed.append((os.path.basename(path), rest)))
    index = {"elf": ["bin/test_api", "lib/liba.so"], "elf_ranges": {"bin/test_api": [[0, 10]], "lib/liba.so": [[0, 10]]}}
    for how, expected in (("loader", [("liba.so", False)]), ("ordered", [("liba.so", False), ("liba.so", True)]), ("all", [("liba.so", False)]), ("none", [])):
        warmed.clear()
        app._start_prefetch(str(tmp_path), index, how)
        import time

        deadline = time.time() + 10
        while len(warmed) < len(expected) and time.time() < deadline:
            time.sleep(0.01)
        assert sorted(warmed) == sorted(expected), how


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
