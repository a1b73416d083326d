"""pipeline/files.py: the file helpers every stage shares."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from pipeline import files


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    # GIVEN a file with old content
    target = tmp_path / "out.json"
    target.write_text("old")
    # WHEN it is written anew
    text = files.atomic_write_json(target, {"b": 1, "a": [1, 2]}, sort_keys=True)
    # THEN the new content is there, the text written is returned, and no temp file is left
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert text == target.read_text() and text.endswith("\n") and text.index('"a"') < text.index('"b"')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_write_json_compact(tmp_path: Path) -> None:
    files.atomic_write_json(tmp_path / "s.json", {"a": 1}, indent=None)
    assert (tmp_path / "s.json").read_text() == '{"a": 1}\n'


def test_atomic_write_bytes_sets_mode_before_the_rename(tmp_path: Path) -> None:
    target = tmp_path / "lib.so"
    files.atomic_write_bytes(target, b"\x7fELF...", mode=0o751)
    assert target.read_bytes() == b"\x7fELF..." and (target.stat().st_mode & 0o777) == 0o751


def test_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a rename that fails (a full disk, a read-only folder)
    target = tmp_path / "keep.txt"
    target.write_text("old")

    def boom(self: Path, other: Path) -> Path:
        raise OSError("no space left on device")

    monkeypatch.setattr(Path, "replace", boom)
    # WHEN a write is attempted, THEN the error reaches the caller, the old file stands and no temp is left behind
    with pytest.raises(OSError, match="no space"):
        files.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # larger than one read block
    (tmp_path / "blob").write_bytes(data)
    assert files.sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    assert files.sha256_file(str(tmp_path / "blob")) == hashlib.sha256(data).hexdigest()


def test_is_elf(tmp_path: Path) -> None:
    (tmp_path / "elf").write_bytes(b"\x7fELF\x02\x01\x01")
    (tmp_path / "text").write_text("#!/bin/sh\n")
    (tmp_path / "short").write_bytes(b"\x7fEL")
    assert files.is_elf(tmp_path / "elf")
    assert not files.is_elf(tmp_path / "text")
    assert not files.is_elf(tmp_path / "short")
    assert not files.is_elf(tmp_path / "missing")  # unreadable is not ELF


@pytest.mark.parametrize("version, tag", [("3.12.4", "cpython-312"), ("3.9", "cpython-39"), ((3, 13), "cpython-313"), ((3, 11, 2), "cpython-311")])
def test_bytecode_tag(version: str | tuple[int, ...], tag: str) -> None:
    assert files.bytecode_tag(version) == tag


def test_bytecode_tag_is_cpythons_cache_tag() -> None:
    assert files.bytecode_tag(sys.version_info[:2]) == sys.implementation.cache_tag


def test_digests_remember_a_file_until_it_is_replaced_or_written_into(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a file hashed once through a build's Digests
    path = tmp_path / "mod.py"
    path.write_text("x = 1\n")
    digests = files.Digests()
    assert digests.sha256(path) == hashlib.sha256(b"x = 1\n").hexdigest() and digests.hashed == 1
    # WHEN it is asked again, moved aside and back (slimming, the import check), or hard-linked: THEN it is not read again
    monkeypatch.setattr(files, "sha256_file", lambda p: pytest.fail(f"{p} was read again"))
    assert digests.sha256(path) == hashlib.sha256(b"x = 1\n").hexdigest()
    os.rename(path, tmp_path / "aside.py")
    os.link(tmp_path / "aside.py", path)
    assert digests.sha256(path) == digests.sha256(tmp_path / "aside.py") == hashlib.sha256(b"x = 1\n").hexdigest()
    monkeypatch.undo()
    # WHEN it is replaced by another file (an atomic write: a new inode) THEN the new bytes are read
    files.atomic_write_text(path, "x = 2\n")
    assert digests.sha256(path) == hashlib.sha256(b"x = 2\n").hexdigest()
    # WHEN it is written into (same inode; a later mtime, as a write gives) THEN it is read again too
    with open(path, "r+") as fh:
        fh.write("y")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert digests.sha256(path) == hashlib.sha256(b"y = 2\n").hexdigest()
    # AND many() answers in order, each as sha256 would
    other = tmp_path / "other.bin"
    other.write_bytes(b"\0" * 300_000)
    assert digests.many([other, path]) == [hashlib.sha256(b"\0" * 300_000).hexdigest(), hashlib.sha256(b"y = 2\n").hexdigest()]
