"""Byte-for-byte reproducible zips: the layer and the function.

Entries are sorted, every timestamp is 1980-01-01 (zip's epoch), modes are
0644/0755, compression is fixed. The same input gives the same bytes, so an
unchanged handler or layer is never uploaded again and never changes the
function.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

from pipeline.files import atomic_write_json, sha256_file
from pipeline.records import Artifact

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}


def _files(source: Path, skip_dirs: set[str]) -> list[str]:
    out = []
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs)
        for f in files:
            out.append(os.path.relpath(os.path.join(root, f), source).replace(os.sep, "/"))
    return sorted(out)


ZIP_FORMAT = 1  # bump when the layout above changes: a zip made by an older rule is made again


def source_key(source: Path, skip_dirs: set[str] | None = None) -> str:
    """What a zip of ``source`` depends on: each file's path, executable bit and content."""
    skip = SKIP_DIRS if skip_dirs is None else skip_dirs
    digest = hashlib.sha256()
    for rel in _files(source, skip):
        path = source / rel
        digest.update(f"{rel}\0{bool(os.stat(path).st_mode & 0o111)}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _stamp(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.json")


def _reusable(dest: Path, key: str) -> Artifact | None:
    """The zip already at ``dest`` when it was made from the same input and is untouched since."""
    try:
        doc = json.loads(_stamp(dest).read_text())
        st = dest.stat()
    except (OSError, ValueError):
        return None
    if doc.get("key") != key or doc.get("format") != ZIP_FORMAT or doc.get("size") != st.st_size or doc.get("mtime_ns") != st.st_mtime_ns:
        return None
    a = doc["artifact"]
    return Artifact(path=dest, sha256=a["sha256"], bytes=a["bytes"], unzipped_bytes=a["unzipped_bytes"], entries=a["entries"])


def make_zip(source: Path, dest: Path, prefix: str = "", skip_dirs: set[str] | None = None, key: str | None = None,
             on_made: Callable[[], None] | None = None) -> Artifact:
    """Zip ``source`` into ``dest``; an unchanged input (``key``, by default the files' contents) reuses the zip there.
    ``on_made``: called when the zip is written, not when it is reused (what a progress line says)."""
    skip = SKIP_DIRS if skip_dirs is None else skip_dirs
    key = f"{prefix}\0{key or source_key(source, skip)}"
    if reused := _reusable(dest, key):
        return reused
    if on_made:
        on_made()
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    unzipped = 0
    names = _files(source, skip)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for rel in names:
            path = source / rel
            mode = 0o755 if os.stat(path).st_mode & 0o111 else 0o644
            info = zipfile.ZipInfo(prefix + rel, date_time=FIXED_TIME)
            info.create_system = 3  # unix, so external_attr carries the mode
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            unzipped += len(data)
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    tmp.replace(dest)
    digest = sha256_file(dest)
    artifact = Artifact(path=dest, sha256=digest, bytes=dest.stat().st_size, unzipped_bytes=unzipped, entries=len(names))
    st = dest.stat()
    stamp = {"format": ZIP_FORMAT, "key": key, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
             "artifact": {"sha256": digest, "bytes": artifact.bytes, "unzipped_bytes": unzipped, "entries": len(names)}}
    atomic_write_json(_stamp(dest), stamp, indent=None)
    return artifact
