"""The archive format of a version's hot set, defined once (standard library only, imports nothing).

The build writes the archives with ``pack`` (builder/archives.py loads this file
by path, pipeline/handlerlib.py); the handler reads them with ``records``.
An archive is a zlib stream of records ``<u32 path length><path><u32 mode><u64
size><data>``: simple on purpose, so that reading one is a few lines and fast.
A record cut short, or a path that leaves the tree, is refused (OSError): the
handler then imports from the tree itself instead (activate.py).
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator

# the archive index's format (archives/index.json): 3: sources of hot bytecode as sizes only ("sizes"), no "elf_ranges"
# (the handler finds the loader's ranges itself); 2: only the hot set is archived, with its folders' listings ("dirs")
INDEX_VERSION = 3
COMPRESSION = "zlib"  # what the build writes and the handler reads; the benchmark injects others (bench/coldstart.py)
LEVEL = 1  # zlib's fastest: unpacking speed is what matters at init
NAME = struct.Struct("<I")  # the path's length
RECORD = struct.Struct("<IQ")  # mode, size (after the path)
# how an archive's bytes become its records' stream, piece by piece: {compression: a factory of objects
# whose .decompress(piece) returns the stream's next bytes}; a name the index gives that is not here is an
# archive this handler cannot read (an OSError). The benchmark adds others (bench/coldstart.py).
DECOMPRESS = {COMPRESSION: zlib.decompressobj}


def stream(items: Iterable[tuple[str, int, bytes]]) -> bytes:
    """The records' stream of ``(path, mode, data)`` items, in their order (what ``records`` reads)."""
    out = bytearray()
    for rel, mode, data in items:
        name = rel.encode()
        out += NAME.pack(len(name)) + name + RECORD.pack(mode, len(data)) + data
    return bytes(out)


def compress(raw: bytes) -> bytes:
    return zlib.compress(raw, LEVEL)


def pack(items: Iterable[tuple[str, int, bytes]]) -> bytes:
    """One archive of ``(path, mode, data)`` items, in their order."""
    return compress(stream(items))


def decompressor(compression: str = COMPRESSION):
    """An object whose ``decompress(piece)`` gives the records' stream of an archive read piece by piece."""
    try:
        return DECOMPRESS[compression]()
    except KeyError:
        raise OSError(f"archive compression {compression!r} is not supported by this handler ({', '.join(DECOMPRESS)})") from None


def unpack(blob: bytes | bytearray | memoryview, compression: str = COMPRESSION) -> bytes:
    """The records' stream of one whole archive."""
    d = decompressor(compression)
    return d.decompress(blob) + (d.flush() if hasattr(d, "flush") else b"")


def records(raw: bytes | bytearray | memoryview) -> Iterator[tuple[str, memoryview]]:
    """(path, data) of each record of a records' stream; the data are views into ``raw``, not copies."""
    view = memoryview(raw)
    at, end = 0, len(view)
    while at < end:
        if at + NAME.size > end:
            raise OSError(f"archive truncated: {end - at} bytes where a record starts")
        (n,) = NAME.unpack_from(view, at)
        start = at + NAME.size + n + RECORD.size
        if start > end:
            raise OSError(f"archive truncated inside a record's header at byte {at}")
        rel = bytes(view[at + NAME.size : at + NAME.size + n]).decode()
        _mode, size = RECORD.unpack_from(view, at + NAME.size + n)
        if start + size > end:
            raise OSError(f"archive truncated: {rel} needs {size} bytes, {end - start} are left")
        if rel.startswith("/") or ".." in rel.split("/"):
            raise OSError(f"unsafe path in archive: {rel}")
        yield rel, view[start : start + size]
        at = start + size
