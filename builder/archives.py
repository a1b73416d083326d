"""Per-distribution archives of a tree's non-ELF files, for a fast cold start.

On EFS every lookup, open and read is a round trip; `import torch` makes
about 5,000 of them. The handler can instead read these archives (a few large
parallel reads), unpack them into /tmp, and link the shared libraries back to
their files on EFS: Python then imports from local disk, and only the
libraries' pages travel. One archive per distribution keeps sync incremental:
a changed package changes its own archive only, and unchanged archives keep
their names (content-addressed) and become hard links.

Format (simple on purpose: the handler unpacks it with a few lines, fast):
zlib-compressed concatenation of records ``<u32 path length><path><u32
mode><u64 size><data>``.

    archives/index.json               {"version": 1, "archives": [...], "elf": [...]}
    archives/<dist>-<sha256[:16]>.hz  one per distribution
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

from pipeline.dists import owner_of, owners

from .manifest import content_mtime

INDEX_VERSION = 1
RECORD = struct.Struct("<IQ")  # mode, size (after the path)


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"\x7fELF"


def pack(tree: Path, paths: list[str]) -> bytes:
    out = bytearray()
    for rel in paths:
        name = rel.encode()
        data = (tree / rel).read_bytes()
        out += struct.pack("<I", len(name)) + name + RECORD.pack((tree / rel).stat().st_mode & 0o777, len(data)) + data
    return zlib.compress(bytes(out), 1)


def unpack(blob: bytes) -> list[tuple[str, int, bytes]]:
    raw = zlib.decompress(blob)
    records, at = [], 0
    while at < len(raw):
        (n,) = struct.unpack_from("<I", raw, at)
        name = raw[at + 4 : at + 4 + n].decode()
        mode, size = RECORD.unpack_from(raw, at + 4 + n)
        start = at + 4 + n + RECORD.size
        records.append((name, mode, raw[start : start + size]))
        at = start + size
    return records


def write_archives(tree: Path, dest: Path) -> dict:
    """Write ``dest/`` (index.json and the archives) for ``tree``; returns the index."""
    owner = owners(tree)
    groups: dict[str, list[str]] = {}
    elf: list[str] = []
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for f in sorted(files):
            p = Path(root) / f
            rel = p.relative_to(tree).as_posix()
            if p.is_symlink():
                continue
            if _is_elf(p):
                elf.append(rel)
            else:
                groups.setdefault(owner_of(owner, rel) or "_unowned", []).append(rel)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    archives = []
    for name in sorted(groups):
        data = pack(tree, sorted(groups[name]))
        digest = hashlib.sha256(data).hexdigest()
        filename = f"{name}-{digest[:16]}.hz"
        (tmp / filename).write_bytes(data)
        t = content_mtime(digest)  # same content, same time: sync's rsync links it to the previous version's copy
        os.utime(tmp / filename, (t, t))
        archives.append({"name": filename, "dist": name, "bytes": len(data), "sha256": digest, "files": len(groups[name])})
    index = {"version": INDEX_VERSION, "archives": archives, "elf": sorted(elf)}
    (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return index
