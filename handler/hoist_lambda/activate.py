"""Put the EFS dependency tree on sys.path, once per execution environment.

Standard library only, so any handler can call it before importing torch:

    from hoist_lambda.activate import activate
    activate()          # the tree named by HOIST_EFS_TREE
    import torch

The tree goes on sys.path *after* the runtime's own entries (the runtime's
packages keep working, and stdlib imports never touch EFS). When the build
wrote archives beside the tree (``<version>/archives/index.json``), they are
read with large parallel reads, unpacked into /tmp and the shared libraries
linked back to EFS; Python then imports from local disk (docs/design.md, 7).

Three thread pools, never one: whole-archive reads each wait for their chunk
reads, so if both shared a pool, 32 archives in flight would wait on chunks
queued behind them and init would hang. Chunk reads wait on nothing.

Variables: HOIST_EFS_TREE (the tree), HOIST_HYDRATE=0 (import from EFS
directly), HOIST_HYDRATE_DIR (default /tmp/hoist-env), HOIST_PREFETCH (the
libraries' read-ahead: loader, ordered, all or none; see DEFAULT_PREFETCH).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .log import log
from .spans import merge_spans

CHUNK_BYTES = 4 << 20  # one read of an archive: on EFS the round trips of several overlap
CHUNK_WORKERS = 32  # reads in flight
ARCHIVE_WORKERS = 8  # archives being assembled from their chunks
UNPACK_WORKERS = 4  # zlib and the writes release the GIL: one per vCPU up to 4
PREFETCH_WORKERS = 16
# The read-ahead of the shared libraries after the archives arrived, chosen from
# `invoke bench coldstart`'s trade-off (README, "Cold start"):
# - "relocs": what the dynamic loader itself reads (headers, dynamic symbols and
#   strings, hash tables, relocations and the data they patch), found in each
#   library's section headers here; code and read-only data come on demand;
# - "loader": the build's elf_ranges (the above plus .rodata and the unwind index);
# - "ordered": those ranges, then the rest of every library; "all": whole files;
# - "none": nothing, every page on demand.
DEFAULT_PREFETCH = "relocs"
PREFETCH_MODES = ("relocs", "loader", "ordered", "all", "none")
# sections the loader reads while it maps, relocates and binds a library
LOADER_SECTIONS = {".dynsym", ".dynstr", ".gnu.hash", ".hash", ".gnu.version", ".gnu.version_r", ".gnu.version_d", ".rela.dyn", ".rela.plt",
                   ".rel.dyn", ".rel.plt", ".relr.dyn", ".dynamic", ".got", ".got.plt", ".data.rel.ro", ".data.rel.ro.local", ".data",
                   ".init_array", ".fini_array", ".tdata"}


@dataclass(frozen=True)
class Activation:
    tree: str | None  # the EFS tree named by HOIST_EFS_TREE
    path: str | None  # what went on sys.path: the hydrated copy, or the tree itself
    hydrated: bool
    ms: float


_lock = threading.Lock()
_done: Activation | None = None


def activate(tree: str | None = None, *, hydrate_dir: str | None = None) -> Activation:
    """Put ``tree`` (default: $HOIST_EFS_TREE) on sys.path; the first call does the work."""
    global _done  # noqa: PLW0603 - once per execution environment, by design
    with _lock:
        if _done is not None:
            return _done
        t = time.perf_counter()
        tree = tree if tree is not None else os.environ.get("HOIST_EFS_TREE", "")
        path, hydrated = tree, False
        if tree and os.environ.get("HOIST_HYDRATE", "1") != "0":
            try:
                local = hydrate(tree, hydrate_dir or os.environ.get("HOIST_HYDRATE_DIR", "/tmp/hoist-env"))
            except OSError as exc:  # /tmp full or an EFS hiccup: import from EFS directly, slower but working
                log("hydrate_failed", error=str(exc))
                local = None
            path, hydrated = (local, True) if local else (tree, False)
        if path and path not in sys.path:
            sys.path.append(path)
        _done = Activation(tree=tree or None, path=path or None, hydrated=hydrated, ms=round((time.perf_counter() - t) * 1000, 2))
        log("activate", efs_tree=_done.tree, imported_from=_done.path, hydrated=hydrated, ms=_done.ms)
        return _done


def read_file(path: str, chunks: ThreadPoolExecutor, chunk: int = CHUNK_BYTES) -> bytes:
    """A whole file with concurrent reads in ``chunks``, a pool whose tasks never wait on others."""
    size = os.path.getsize(path)
    buf = bytearray(size)
    fd = os.open(path, os.O_RDONLY)

    def fetch(offset: int) -> None:
        data = os.pread(fd, min(chunk, size - offset), offset)
        buf[offset : offset + len(data)] = data

    try:
        for f in [chunks.submit(fetch, offset) for offset in range(0, max(size, 1), chunk)]:
            f.result()
    finally:
        os.close(fd)
    return bytes(buf)


def warm(path: str, ranges: list[list[int]] | None = None, rest: bool = False, chunk: int = CHUNK_BYTES) -> None:
    """Read ``ranges`` ([offset, length]; all of the file when None) into the page cache;
    with ``rest``, read everything else of the file instead."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        if ranges is None:
            ranges = [[0, 1 << 62]]
        elif rest:
            size, at, gaps = os.fstat(fd).st_size, 0, []
            for offset, length in ranges:
                if offset > at:
                    gaps.append([at, offset - at])
                at = max(at, offset + length)
            ranges = gaps + ([[at, size - at]] if size > at else [])
        for start, length in ranges:
            at, end = start, start + length
            while at < end and os.pread(fd, min(chunk, end - at), at):
                at += chunk
    finally:
        os.close(fd)


def decompress(blob: bytes, compression: str) -> bytes:
    """zlib (what the build writes), lzma or none: all in the standard library."""
    if compression == "zlib":
        return zlib.decompress(blob)
    if compression == "lzma":
        import lzma

        return lzma.decompress(blob)
    if compression == "none":
        return blob
    raise OSError(f"archive compression {compression!r} is not supported by this handler (zlib, lzma, none)")


def is_library(rel: str) -> bool:
    """A shared library the loader maps at import (libx.so, libx.so.1, _C.cpython-311-x86_64-linux-gnu.so), not an executable."""
    name = rel.rsplit("/", 1)[-1]
    return name.endswith(".so") or ".so." in name


def unpack_into(blob: bytes, root: str, compression: str = "zlib") -> None:
    """Unpack one archive (builder/archives.py's format: records <u32 n><path><u32 mode><u64 size><data>)."""
    raw = decompress(blob, compression)
    at, made = 0, set()
    while at < len(raw):
        (n,) = struct.unpack_from("<I", raw, at)
        rel = raw[at + 4 : at + 4 + n].decode()
        mode, size = struct.unpack_from("<IQ", raw, at + 4 + n)
        start = at + 4 + n + 12
        if rel.startswith("/") or ".." in rel.split("/"):
            raise OSError(f"unsafe path in archive: {rel}")
        path = os.path.join(root, rel)
        folder = os.path.dirname(path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, raw[start : start + size])
        finally:
            os.close(fd)
        at = start + size


def relocation_ranges(path: str) -> list[list[int]] | None:
    """[offset, length] of the ELF and program headers and LOADER_SECTIONS of a 64-bit
    little-endian library (x86_64, aarch64), from its section headers; None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        head = os.pread(fd, 64, 0)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return None
        phoff, shoff = struct.unpack_from("<QQ", head, 32)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", head, 54)
        table = os.pread(fd, shentsize * shnum, shoff)
        if shnum == 0 or len(table) < shentsize * shnum or shstrndx >= shnum:
            return None
        sections = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]  # name, type, flags, addr, offset, size
        names = os.pread(fd, sections[shstrndx][5], sections[shstrndx][4])
    except (OSError, struct.error):
        return None
    finally:
        os.close(fd)
    spans = [(0, max(phoff + phentsize * phnum, 4096))]
    for name_at, kind, _flags, _addr, offset, size in sections:
        name = names[name_at : names.find(b"\0", name_at)].decode(errors="replace")
        if name in LOADER_SECTIONS and kind != 8 and size:  # 8: SHT_NOBITS, nothing in the file
            spans.append((offset, offset + size))
    return merge_spans(spans)


def _warm_relocations(path: str) -> None:
    ranges = relocation_ranges(path)
    if ranges:
        warm(path, ranges)


def _start_prefetch(tree: str, index: dict, how: str) -> None:
    if how == "none":
        return
    ranges = index.get("elf_ranges", {}) if how in ("ordered", "loader") else {}
    libraries = [rel for rel in index["elf"] if is_library(rel)]  # executables (torch/bin/test_*) are never loaded by an import
    pool = ThreadPoolExecutor(PREFETCH_WORKERS, thread_name_prefix="hoist-prefetch")
    for rel in libraries:
        if how == "relocs":
            pool.submit(_warm_relocations, os.path.join(tree, rel))
        else:
            pool.submit(warm, os.path.join(tree, rel), ranges.get(rel))
    if how == "ordered" and ranges:
        for rel in libraries:
            pool.submit(warm, os.path.join(tree, rel), ranges.get(rel), True)
    pool.shutdown(wait=False)


def hydrate(tree: str, dest_root: str = "/tmp/hoist-env", chunk: int = CHUNK_BYTES) -> str | None:
    """Unpack the tree's per-package archives (built beside it) into /tmp and link its
    shared libraries back to EFS; the local tree, or None when there are no archives."""
    version_dir = os.path.dirname(tree.rstrip("/"))
    index_path = os.path.join(version_dir, "archives", "index.json")
    if not os.path.exists(index_path):
        return None
    with open(index_path, "rb") as fh:
        raw_index = fh.read()
    # named by content and by where the tree is: another version never reuses it, and
    # neither does the same version at another path (its library links point into the tree)
    local = os.path.join(dest_root, hashlib.sha256(raw_index + b"\0" + os.path.abspath(tree).encode()).hexdigest()[:16])
    if os.path.exists(os.path.join(local, ".complete")):
        return local
    index = json.loads(raw_index)
    compression = index.get("compression", "zlib")
    how = os.environ.get("HOIST_PREFETCH", DEFAULT_PREFETCH)
    if how not in PREFETCH_MODES:
        log("prefetch_unknown", mode=how, using=DEFAULT_PREFETCH)
        how = DEFAULT_PREFETCH
    staging = f"{local}.partial-{os.getpid()}"
    os.makedirs(staging, exist_ok=True)
    archives = os.path.join(version_dir, "archives")
    names = sorted(index["archives"], key=lambda a: -a["bytes"])  # largest first: the long ones start early
    with ThreadPoolExecutor(CHUNK_WORKERS, thread_name_prefix="hoist-chunk") as chunks, \
            ThreadPoolExecutor(ARCHIVE_WORKERS, thread_name_prefix="hoist-archive") as whole, \
            ThreadPoolExecutor(UNPACK_WORKERS, thread_name_prefix="hoist-unpack") as unpack:
        blobs = [whole.submit(read_file, os.path.join(archives, a["name"]), chunks, chunk) for a in names]

        def unpack_one(blob: Future[bytes]) -> None:
            unpack_into(blob.result(), staging, compression)

        unpacked = [unpack.submit(unpack_one, f) for f in blobs]
        for f in blobs:  # the archives have the bandwidth first; the libraries take it while they unpack
            f.result()
        _start_prefetch(tree, index, how)
        for done in unpacked:
            done.result()
    for rel in index["elf"]:  # libraries stay on EFS: only the pages the loader touches travel
        link = os.path.join(staging, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.join(tree, rel), link)
    open(os.path.join(staging, ".complete"), "w").close()
    os.rename(staging, local)
    return local
