"""Hydration: the handler unpacks the build's per-package archives into /tmp
and links shared libraries back to the EFS tree."""
from __future__ import annotations

import importlib.util
import os

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
    index_hash = __import__("hashlib").sha256((version / "archives" / "index.json").read_bytes()).hexdigest()[:16]
    assert local == str(tmp_path / "tmp" / index_hash)  # named by content, not by the folder it came from
    assert open(os.path.join(local, "pkg", "sub", "mod.py")).read() == "VALUE = 42\n"
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
