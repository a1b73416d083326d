"""Canonical install metadata: the same tree whichever installer wrote it.

uv and pip leave their own traces in each *.dist-info (INSTALLER, REQUESTED,
direct_url.json in their own formatting, RECORD in their own order), and the
RECORD of a slimmed tree lists files that are gone. This step drops the
installer's traces and rewrites RECORD from what the tree really holds
(PEP 376/627: RECORD lists the installed files with their hashes), so the
native and Docker builders give the same content hash for the same wheels,
and `importlib.metadata.files()` tells the truth after slimming.
"""
from __future__ import annotations

import base64
import csv
import io
import os
from pathlib import Path

from pipeline.dists import dists, record_rows
from pipeline.files import Digests, atomic_write_text

INSTALLER_TRACES = ("INSTALLER", "REQUESTED", "direct_url.json", "uv_cache.json")


def _record_hash(path: Path, digests: Digests) -> str:
    digest = bytes.fromhex(digests.sha256(path))
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _pycs(tree: Path, cache: str, listed: dict[str, list[str]]) -> list[str]:
    """The .pyc names in ``tree``/``cache``, listed once per call of canonicalize (``listed``)."""
    if cache not in listed:
        try:
            listed[cache] = sorted(n for n in os.listdir(tree / cache) if n.endswith(".pyc"))
        except OSError:
            listed[cache] = []
    return listed[cache]


def canonicalize(tree: Path, digests: Digests | None = None) -> int:
    """Rewrite every distribution's metadata; returns how many were rewritten. RECORD is replaced, never
    written into: the one uv installed is a hard link into its cache (builder/install.py)."""
    digests = digests or Digests()
    count = 0
    pycaches: dict[str, list[str]] = {}  # __pycache__ folder -> its .pyc
    for dist in dists(tree):
        info = dist.dist_info
        for name in INSTALLER_TRACES:
            (info / name).unlink(missing_ok=True)
        record = info / "RECORD"
        listed = {rel for rel, _ in record_rows(dist)}
        kept = {p for p in listed if (tree / p).is_file() and not p.startswith("..")}
        for p in list(kept):  # bytecode compiled for a listed source belongs to it too
            if p.endswith(".py"):
                folder, _, name = p.rpartition("/")
                cache = f"{folder}/__pycache__" if folder else "__pycache__"
                stem = name[:-3] + "."  # glob's "<stem>.*.pyc"
                kept.update(f"{cache}/{pyc}" for pyc in _pycs(tree, cache, pycaches) if pyc.startswith(stem) and len(pyc) >= len(stem) + 4)
        rel_record = record.relative_to(tree).as_posix()
        kept.discard(rel_record)
        kept |= {f.relative_to(tree).as_posix() for f in info.iterdir() if f.is_file() and f.name != "RECORD"}
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for p in sorted(kept):
            writer.writerow([p, _record_hash(tree / p, digests), (tree / p).stat().st_size])
        writer.writerow([rel_record, "", ""])
        owner = record.stat() if record.is_file() else None
        atomic_write_text(record, out.getvalue())
        if owner is not None and os.geteuid() == 0:  # the new file keeps the old one's owner (the Docker builder's files are the sudo caller's)
            os.chown(record, owner.st_uid, owner.st_gid)
        count += 1
    return count
