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
    monkeypatch.delenv("HOIST_EFS_TREE", raising=False)
    spec = importlib.util.spec_from_file_location("hoist_handler_hydrate", REPO / "handler" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        app._unpack_into(evil, str(tmp_path / "out"))
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
    app._warm(str(path), [[0, 100], [4096, 50]], chunk=1 << 20)
    assert reads == [(0, 100), (4096, 50)]
    reads.clear()
    app._warm(str(path), [[0, 100], [4096, 50]], rest=True, chunk=1 << 20)
    assert reads == [(100, 3996), (4146, 16384 - 4146)]
    reads.clear()
    app._warm(str(path), None, chunk=8192)
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
