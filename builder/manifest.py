"""The manifest: what a tree holds, its content hash, and the identity that names its version.

The content hash covers every file's path, mode and sha256, nothing else (no
times, no build paths), so two builds of the same lock give the same hash. The
identity (``records.identity``) adds the archives' index, which names every
archive by its sha256: sync names an EFS version by it, so a rebuild that
changed only the archives (a hot set recorded at last, a new index format)
publishes a new version instead of passing for the old one.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from pipeline.dists import dists, owner_of, owners
from pipeline.records import SYMLINK_MODE, ArchiveEntry, BytecodeReport, FileEntry, Manifest, PackageEntry, SlimRecord, scan_tree


def normalize_modes(tree: Path) -> None:
    """0755 for anything executable, 0644 otherwise, whatever the umask was. A mode already right is left
    alone: a chmod changes the file's ctime, and Digests would read it again."""
    for root, dirs, files in os.walk(tree):
        for d in dirs:
            p = os.path.join(root, d)
            if stat.S_IMODE(os.lstat(p).st_mode) != 0o755 and not os.path.islink(p):
                os.chmod(p, 0o755)
        for f in files:
            p = os.path.join(root, f)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                continue
            want = 0o755 if st.st_mode & 0o111 else 0o644
            if stat.S_IMODE(st.st_mode) != want:
                os.chmod(p, want)


scan = scan_tree  # every file of a tree as its manifest lists it (pipeline/records.py: validate and sync compare trees with it too)


# 2000-01-01: content-derived times start here (any fixed base would do)
_MTIME_BASE = 946_684_800


def content_mtime(sha256: str) -> int:
    return _MTIME_BASE + int(sha256[:8], 16) % 100_000_000


def stamp_mtimes(tree: Path, files: list[FileEntry]) -> None:
    """Give every file an mtime derived from its content.

    rsync (sync-efs) compares size and mtime: with these times an unchanged
    file of a new build matches the previous version's copy and becomes a hard
    link instead of a transfer, while a changed file differs. Bytecode is
    unchecked-hash, so nothing reads these times as freshness.
    """
    for e in files:
        if e.mode != SYMLINK_MODE:
            t = content_mtime(e.sha256)
            os.utime(tree / e.path, (t, t), follow_symlinks=False)


def content_hash(files: list[FileEntry]) -> str:
    h = hashlib.sha256()
    for e in files:
        h.update(f"{e.path}\0{e.mode:o}\0{e.sha256}\n".encode())
    return h.hexdigest()


def read_packages(tree: Path, set_name: str) -> list[PackageEntry]:
    return [PackageEntry(name=d.name, version=d.version, tags=d.tags, set=set_name) for d in dists(tree)]


def package_sizes(tree: Path, files: list[FileEntry]) -> list[tuple[str, int, int]]:
    """(package, bytes, files), largest first; bytecode counts for its source's package."""
    owner = owners(tree)
    totals: dict[str, list[int]] = {}
    for e in files:
        name = owner_of(owner, e.path) or "(not in any RECORD)"
        t = totals.setdefault(name, [0, 0])
        t[0] += e.size
        t[1] += 1
    return sorted(((n, b, c) for n, (b, c) in totals.items()), key=lambda x: (-x[1], x[0]))


def manifest(*, set_name: str, target: dict[str, Any], build_key: str, build_inputs: dict[str, Any] | None = None, files: list[FileEntry], packages: list[PackageEntry], bytecode: BytecodeReport,
             slim: SlimRecord, builder: str, archives: list[dict[str, Any]], archive_index: str = "") -> Manifest:
    return Manifest(
        set=set_name,
        target=target,
        builder=builder,
        build_key=build_key,
        build_inputs=build_inputs or {},
        content_hash=content_hash(files),
        bytes=sum(e.size for e in files),
        files_count=len(files),
        bytecode=bytecode,
        slim=slim,
        packages=tuple(packages),
        files=tuple(files),
        archives=tuple(ArchiveEntry(a["name"], a["sha256"], a["bytes"], a["raw"]) for a in archives),
        archive_index=archive_index,
    )
