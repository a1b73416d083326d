"""Put the EFS dependency tree on sys.path, once per execution environment.

Standard library only, so any handler can call it before importing torch:

    from hoist_lambda.activate import activate
    activate()          # the tree named by HOIST_EFS_TREE
    import torch

The tree goes on sys.path *after* the runtime's own entries (the runtime's
packages keep working, and stdlib imports never touch EFS). When the build
wrote archives beside the tree (``<version>/archives/index.json``), they are
read with large parallel reads into memory: they hold the hot set, what
importing the set's requirements opened at build time, and the listing of
every folder it lives in. hotimport.py then answers imports of those folders
from memory; everything else (shared libraries, modules not imported at init,
data files) is read from EFS where it is. Nothing is written to /tmp
(docs/design.md, 7).

Separate thread pools, never one: whole-archive reads each wait for their chunk
reads, so if both shared a pool, 32 archives in flight would wait on chunks
queued behind them and init would hang. Chunk reads wait on nothing.

Variables: HOIST_EFS_TREE (the tree), HOIST_HYDRATE=0 (import from EFS
directly), HOIST_PREFETCH (the libraries' read-ahead: touched, relocs, loader,
ordered, all or none; see DEFAULT_PREFETCH).
"""
from __future__ import annotations

import contextlib
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

from . import hotimport
from .log import log
from .spans import merge_spans

CHUNK_BYTES = 4 << 20  # one read of an archive: on EFS the round trips of several overlap
CHUNK_WORKERS = 32  # reads in flight
ARCHIVE_WORKERS = 8  # archives being assembled from their chunks
UNPACK_WORKERS = 4  # zlib releases the GIL: one per vCPU up to 4
PREFETCH_WORKERS = 16
PIECE_BYTES = 1 << 20  # one read-ahead task of a library
STAT_WORKERS = 16  # lookups in flight for the stat read-ahead
INDEX_VERSION = 2  # builder/archives.py's: the hot set and its folders' listings ("dirs")
# The read-ahead of the shared libraries after the archives arrived, chosen from
# `invoke bench coldstart`'s trade-off (README, "Cold start"):
# - "touched": the pages the build's import check saw mapped after importing the
#   set's requirements (index "touched_ranges"; "relocs" for a library without);
# - "relocs": what the dynamic loader itself reads (headers, dynamic symbols and
#   strings, hash tables, relocations and the data they patch), found in each
#   library's section headers here; code and read-only data come on demand;
# - "loader": the build's elf_ranges (the above plus .rodata and the unwind index);
# - "ordered": those ranges, then the rest of every library; "all": whole files;
# - "none": nothing, every page on demand.
DEFAULT_PREFETCH = "touched"
PREFETCH_MODES = ("touched", "relocs", "loader", "ordered", "all", "none")
# sections the loader reads while it maps, relocates and binds a library
LOADER_SECTIONS = {".dynsym", ".dynstr", ".gnu.hash", ".hash", ".gnu.version", ".gnu.version_r", ".gnu.version_d", ".rela.dyn", ".rela.plt",
                   ".rel.dyn", ".rel.plt", ".relr.dyn", ".dynamic", ".got", ".got.plt", ".data.rel.ro", ".data.rel.ro.local", ".data",
                   ".init_array", ".fini_array", ".tdata"}


@dataclass(frozen=True)
class Activation:
    tree: str | None  # the EFS tree named by HOIST_EFS_TREE, which goes on sys.path
    hydrated: bool  # its hot set is imported from memory
    ms: float
    hot_files: int = 0
    hot_bytes: int = 0
    prefetch: str | None = None  # the libraries' read-ahead in effect (HOIST_PREFETCH, or the default)

    @property
    def path(self) -> str | None:
        """What went on sys.path: the tree itself (handlers written when it was a copy in /tmp read this)."""
        return self.tree


_lock = threading.Lock()
_done: Activation | None = None


def activate(tree: str | None = None) -> Activation:
    """Put ``tree`` (default: $HOIST_EFS_TREE) on sys.path with its hot set in memory; the first call does the work."""
    global _done  # noqa: PLW0603 - once per execution environment, by design
    with _lock:
        if _done is not None:
            return _done
        t = time.perf_counter()
        tree = (tree if tree is not None else os.environ.get("HOIST_EFS_TREE", "")).rstrip("/")
        hot = None
        if tree and os.environ.get("HOIST_HYDRATE", "1") != "0":
            try:
                hot = hydrate(tree)
            except Exception as exc:  # an EFS hiccup or any damage to the archives: import from EFS directly, slower but working
                log("hydrate_failed", error=f"{type(exc).__name__}: {exc}")
        if hot is not None:
            hotimport.install(hot)
        if tree and tree not in sys.path:
            sys.path.append(tree)
        _done = Activation(tree=tree or None, hydrated=hot is not None, ms=round((time.perf_counter() - t) * 1000, 2),
                           hot_files=len(hot) if hot else 0, hot_bytes=hot.bytes if hot else 0, prefetch=hot.prefetch if hot else None)
        log("activate", efs_tree=_done.tree, hydrated=_done.hydrated, hot_files=_done.hot_files, hot_bytes=_done.hot_bytes, prefetch=_done.prefetch, ms=_done.ms)
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


def pieces(ranges: list[list[int]], piece: int) -> list[list[int]]:
    """``ranges`` cut into reads of at most ``piece`` bytes, each one task: a library's ranges are
    read by every prefetch thread at once, not one after the other by one."""
    out = []
    for start, length in ranges:
        for at in range(start, start + length, piece):
            out.append([at, min(piece, start + length - at)])
    return out


def _rest(path: str, ranges: list[list[int]]) -> list[list[int]]:
    """What of the file ``ranges`` leave out."""
    size, at, gaps = os.path.getsize(path), 0, []
    for offset, length in ranges:
        if offset > at:
            gaps.append([at, offset - at])
        at = max(at, offset + length)
    return gaps + ([[at, size - at]] if size > at else [])


class _Reader:
    """One library open once, read ahead in pieces by many threads; closed after its last piece."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY)
        self.left = 0
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.left += n

    def read(self, start: int, length: int) -> None:
        try:
            at, end = start, start + length
            while at < end and os.pread(self.fd, min(CHUNK_BYTES, end - at), at):
                at += CHUNK_BYTES
        except OSError:
            pass
        finally:
            with self.lock:
                self.left -= 1
                last = self.left == 0
            if last:
                os.close(self.fd)


def _start_prefetch(tree: str, index: dict, how: str, piece: int = PIECE_BYTES) -> None:
    """Read the libraries' pages ahead in the background, in ``piece``-sized reads on PREFETCH_WORKERS threads."""
    if how == "none":
        return
    recorded = index.get("elf_ranges", {})
    touched = index.get("touched_ranges") or {}
    libraries = [rel for rel in index["elf"] if is_library(rel)]  # executables (torch/bin/test_*) are never loaded by an import
    pool = ThreadPoolExecutor(PREFETCH_WORKERS, thread_name_prefix="hoist-prefetch")

    def ranges_of(path: str, rel: str) -> list[list[int]]:
        if how == "touched" and rel in touched:
            return touched[rel]
        if how in ("relocs", "touched"):  # touched: a library the build saw no page of (not loaded at init) gets the loader's
            return relocation_ranges(path) or []
        if how == "all":
            return [[0, os.path.getsize(path)]]
        return recorded.get(rel) or [[0, os.path.getsize(path)]]  # loader, ordered: the build's ranges first

    def plan(path: str, rel: str) -> None:  # a task: finding the ranges can read the library's headers
        try:
            ranges = pieces(ranges_of(path, rel), piece)
            if how == "ordered":
                ranges += pieces(_rest(path, recorded.get(rel) or []), piece)
            if not ranges:
                return
            reader = _Reader(path)
            reader.add(len(ranges))
            for start, length in ranges:
                pool.submit(reader.read, start, length)
        except (OSError, RuntimeError):  # a library gone, or the interpreter shutting down: nothing to read ahead
            return

    for rel in libraries:
        pool.submit(plan, os.path.join(tree, rel), rel)


def _start_stat_ahead(tree: str, dirs: dict[str, dict[str, str]]) -> None:
    """Look up every source file of the hot folders, in parallel, in the background.

    The modules imported from memory keep their EFS paths, and ``inspect``
    (torch calls ``inspect.getmodule``, which checks every loaded module's
    source with ``os.path.exists``) and linecache stat those paths: one round
    trip each, one after the other, about 700 for torch. Looked up ahead, the
    NFS client's attribute cache answers them, as the page cache answers the
    libraries' reads after their read-ahead.
    """
    paths = [f"{tree}/{folder}/{name}" if folder else f"{tree}/{name}" for folder, listing in dirs.items() for name, kind in listing.items()
             if kind == hotimport.FILE and name.endswith(".py")]

    def look(path: str) -> None:
        with contextlib.suppress(OSError):
            os.stat(path)

    pool = ThreadPoolExecutor(STAT_WORKERS, thread_name_prefix="hoist-stat")
    for path in paths:
        pool.submit(look, path)
    pool.shutdown(wait=False)


def hydrate(tree: str, chunk: int = CHUNK_BYTES) -> hotimport.HotSet | None:
    """Read the tree's archives (built beside it) into memory and start the libraries' read-ahead;
    the hot set, or None when there are no archives (or they are from a newer build)."""
    tree = tree.rstrip("/")
    version_dir = os.path.dirname(tree)
    index_path = os.path.join(version_dir, "archives", "index.json")
    if not os.path.exists(index_path):
        return None
    with open(index_path, "rb") as fh:
        index = json.loads(fh.read())
    if index.get("version") != INDEX_VERSION:  # another build's format: import from EFS, slower but right
        log("hydrate_skipped", reason=f"archive index version {index.get('version')}, this handler reads {INDEX_VERSION}")
        return None
    _start_stat_ahead(tree, index["dirs"])
    compression = index.get("compression", "zlib")
    how = os.environ.get("HOIST_PREFETCH", DEFAULT_PREFETCH)
    if how not in PREFETCH_MODES:
        log("prefetch_unknown", mode=how, using=DEFAULT_PREFETCH)
        how = DEFAULT_PREFETCH
    archives = os.path.join(version_dir, "archives")
    names = sorted(index["archives"], key=lambda a: -a["bytes"])  # largest first: the long ones start early
    files: dict[str, bytes] = {}
    with ThreadPoolExecutor(CHUNK_WORKERS, thread_name_prefix="hoist-chunk") as chunks, \
            ThreadPoolExecutor(ARCHIVE_WORKERS, thread_name_prefix="hoist-archive") as whole, \
            ThreadPoolExecutor(UNPACK_WORKERS, thread_name_prefix="hoist-unpack") as unpack:
        blobs = [whole.submit(read_file, os.path.join(archives, a["name"]), chunks, chunk) for a in names]

        def unpack_one(entry: dict, blob: Future[bytes]) -> list[tuple[str, bytes]]:
            data = blob.result()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:  # a torn or damaged copy on EFS
                raise OSError(f"archive {entry['name']} does not match its sha256 in the index")
            return list(hotimport.records(decompress(data, compression)))

        unpacked = [unpack.submit(unpack_one, a, f) for a, f in zip(names, blobs, strict=True)]
        for f in blobs:  # the archives have the bandwidth first; the libraries take it while they unpack
            f.result()
        _start_prefetch(tree, index, how)
        for done in unpacked:
            files.update((f"{tree}/{rel}", data) for rel, data in done.result())
    dirs = {(f"{tree}/{rel}" if rel else tree): listing for rel, listing in index["dirs"].items()}
    return hotimport.HotSet(tree, files, dirs, prefetch=how)
