"""Read the tree's shared libraries ahead, in the background (standard library only).

Once the archives have arrived, the pages of the libraries that importing the
set's requirements will fault in are read in parallel pieces, so the page
faults of ``import torch`` hit the page cache instead of EFS one round trip at
a time (docs/design.md, 7). Two read-aheads, the ones a user may choose with
HOIST_PREFETCH:

- ``touched`` (the default): the pages the build's import check saw mapped after
  importing the set's requirements (the index's ``touched_ranges``), and for a
  library it saw no page of, what ``relocs`` reads;
- ``relocs``: what the dynamic loader itself reads (headers, dynamic symbols and
  strings, hash tables, relocations and the data they patch), found in each
  library's section headers here; code and read-only data come on demand.

``RANGES`` maps each to the function that gives a library's ranges; the
benchmark adds its own there (bench/coldstart.py). The reads are best effort:
a failure is logged once and never fails the init.
"""
from __future__ import annotations

import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable

from .log import log

DEFAULT = "touched"
WORKERS = 16
PIECE_BYTES = 1 << 20  # one read-ahead task of a library
MERGE_GAP = 64 << 10  # a library's ranges closer than this are read as one
READ_BYTES = 128 << 10  # one read: into one scratch buffer all threads share (what is read is never looked at)
# sections the loader reads while it maps, relocates and binds a library
LOADER_SECTIONS = {".dynsym", ".dynstr", ".gnu.hash", ".hash", ".gnu.version", ".gnu.version_r", ".gnu.version_d", ".rela.dyn", ".rela.plt",
                   ".rel.dyn", ".rel.plt", ".relr.dyn", ".dynamic", ".got", ".got.plt", ".data.rel.ro", ".data.rel.ro.local", ".data",
                   ".init_array", ".fini_array", ".tdata"}


def is_library(rel: str) -> bool:
    """A shared library the loader maps at import (libx.so, libx.so.1, _C.cpython-311-x86_64-linux-gnu.so), not an executable."""
    name = rel.rsplit("/", 1)[-1]
    return name.endswith(".so") or ".so." in name


def merge_spans(spans: Iterable[tuple[int, int]], gap: int = MERGE_GAP) -> list[list[int]]:
    """[offset, length] of the (start, end) ``spans``, sorted, with those less than ``gap`` apart read as one."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [[start, end - start] for start, end in merged]


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


def _touched(path: str, rel: str, index: dict) -> list[list[int]]:
    touched = index.get("touched_ranges") or {}
    return touched[rel] if rel in touched else _relocs(path, rel, index)


def _relocs(path: str, rel: str, index: dict) -> list[list[int]]:
    return relocation_ranges(path) or []


# mode -> (library path, its path in the tree, the archive index) -> [offset, length] ranges to read
RANGES: dict[str, Callable[[str, str, dict], list[list[int]]]] = {"touched": _touched, "relocs": _relocs}


def pieces(ranges: list[list[int]], piece: int) -> list[list[int]]:
    """``ranges`` cut into reads of at most ``piece`` bytes, each one task: a library's ranges are
    read by every thread at once, not one after the other by one."""
    out = []
    for start, length in ranges:
        for at in range(start, start + length, piece):
            out.append([at, min(piece, start + length - at)])
    return out


class _Failures:
    """The first failure of the background reads is logged; the others are counted with it, never raised."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def __call__(self, what: str, exc: BaseException) -> None:
        with self.lock:
            self.count += 1
            first = self.count == 1
        if first:
            log("prefetch_failed", what=what, error=f"{type(exc).__name__}: {exc}", note="the read-ahead is best effort: the import reads these pages itself")


class _Reader:
    """One library open once, read ahead in pieces by many threads; closed after its last piece. The pages land in
    the page cache; the bytes land in ``scratch``, shared and overwritten, so reading ahead costs no memory of its own."""

    def __init__(self, path: str, pieces_left: int, failed: _Failures, scratch: bytearray):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.left = pieces_left
        self.lock = threading.Lock()
        self.failed = failed
        self.scratch = memoryview(scratch)

    def read(self, start: int, length: int) -> None:
        try:
            at, end = start, start + length
            while at < end and os.preadv(self.fd, [self.scratch[: min(READ_BYTES, end - at)]], at):
                at += READ_BYTES
        except Exception as exc:
            self.failed(self.path, exc)
        finally:
            with self.lock:
                self.left -= 1
                last = self.left == 0
            if last:
                os.close(self.fd)


def start(tree: str, index: dict, how: str, piece: int = PIECE_BYTES) -> _Failures:
    """Read the libraries' pages ahead in the background, in ``piece``-sized reads on WORKERS threads.

    The threads share one list of work: a library not planned yet (finding its ranges can read its headers) comes
    first, then its reads, each a small tuple; no future per read (a future is about 1.8 kB, and the reads of
    ``touched`` are a few hundred, queued while the archives unpack beside them)."""
    failed = _Failures()
    scratch = bytearray(READ_BYTES)
    ranges_of = RANGES[how]
    libraries = iter([rel for rel in index["elf"] if is_library(rel)])  # executables (torch/bin/test_*) are never loaded by an import
    reads: deque[tuple[_Reader, int, int]] = deque()
    work = threading.Condition()
    planning = [0]  # libraries being planned: their reads may still come

    def plan(path: str, rel: str) -> None:  # finding the ranges can read the library's headers
        try:
            ranges = pieces(ranges_of(path, rel, index), piece)
            if ranges:
                reader = _Reader(path, len(ranges), failed, scratch)
                with work:
                    reads.extend((reader, at, length) for at, length in ranges)
        except Exception as exc:
            failed(path, exc)
        finally:
            with work:
                planning[0] -= 1
                work.notify_all()

    def worker() -> None:
        while True:
            with work:
                while True:
                    rel = next(libraries, None)
                    if rel is not None:
                        planning[0] += 1
                        break
                    if reads:
                        reader, at, length = reads.popleft()
                        break
                    if not planning[0]:
                        return  # every library planned and read
                    work.wait()
            if rel is not None:
                plan(os.path.join(tree, rel), rel)
            else:
                reader.read(at, length)

    for i in range(WORKERS):
        threading.Thread(target=worker, name=f"hoist-prefetch-{i}", daemon=True).start()
    return failed
