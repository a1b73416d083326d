"""Put the EFS dependency tree on sys.path, once per execution environment.

Standard library only, so any handler can call it before importing torch:

    from hoist_lambda.activate import activate, release
    activate()          # the tree named by HOIST_EFS_TREE
    import torch
    ...                 # the rest of the init: load the model
    release()           # init is over: give the hot set's memory back

The tree goes on sys.path *after* the runtime's own entries (the runtime's
packages keep working, and stdlib imports never touch EFS). When the build
wrote archives beside the tree (``<version>/archives/index.json``), they are
read with large parallel reads into memory: they hold the hot set, what
importing the set's requirements opened at build time, and the listing of
every folder it lives in. hotimport.py then answers imports of those folders
from memory, hotmeta.py importlib.metadata's reads of their distributions'
files (entry_points.txt, METADATA) and hotlines.py linecache's of the sources
(tracebacks, inspect); everything else (shared libraries, modules not imported at init,
data files) is read from EFS where it is, and prefetch.py reads the libraries'
pages ahead. Nothing is written to /tmp (docs/design.md, 7).

Lambda sends no "init is over" signal, so ``release()`` is the handler's call:
at the end of its module's init, or first thing in its handler (a second call
does nothing). A snapshotting shape calls it before the snapshot.

Separate thread pools, never one: whole-archive reads each wait for their chunk
reads, so if both shared a pool, 32 archives in flight would wait on chunks
queued behind them and init would hang. Chunk reads wait on nothing.

Variables: HOIST_EFS_TREE (the tree), HOIST_HYDRATE=0 (import from EFS
directly), HOIST_PREFETCH (the libraries' read-ahead: touched or relocs,
prefetch.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from . import archive, hotimport, hotlines, hotmeta, prefetch
from .log import log

# Memory: an archive is read in pieces, each unpacked at once into a buffer of exactly the records' size (the
# index's "raw"), whose views the hot set keeps. So beside the hot set wait no more than ARCHIVE_WORKERS *
# (READS_AHEAD pieces of compressed bytes, one FEED_BYTES tail, one PIECE_BYTES output and zlib's 32 kB window),
# never whole archives; the background lookups and read-ahead hold no future per task (`invoke bench coldstart`
# measures the peak).
CHUNK_BYTES = 64 << 10  # one read of an archive: on EFS the round trips of several overlap
FEED_BYTES = 32 << 10  # what one unpacking step is given of a read piece
PIECE_BYTES = 32 << 10  # the most one unpacking step gives at a time (zlib's max_length)
READS_AHEAD = 2  # reads in flight per archive
CHUNK_WORKERS = 32  # reads in flight in all
ARCHIVE_WORKERS = 2  # archives being read and unpacked at once (zlib releases the GIL: one per vCPU)
STAT_WORKERS = 16  # lookups in flight for the stat read-ahead


@dataclass(frozen=True)
class Activation:
    tree: str | None  # the EFS tree named by HOIST_EFS_TREE, which goes on sys.path
    hydrated: bool  # its hot set is imported from memory
    ms: float
    hot_files: int = 0
    hot_bytes: int = 0  # the hot files' bytes, as imports read them
    prefetch: str | None = None  # the libraries' read-ahead in effect (HOIST_PREFETCH, or the default)
    why: str | None = None  # why it was not hydrated (None when it was, or when there is no tree)
    archives: bool = False  # the version has archives (so not being hydrated costs seconds)

    @property
    def path(self) -> str | None:
        """What went on sys.path: the tree itself (handlers written when it was a copy in /tmp read this)."""
        return self.tree


_lock = threading.Lock()
_done: Activation | None = None
_held = 0  # bytes the hot set held in memory during init
_released = False


class ActivationError(RuntimeError):
    """activate() asked for another tree than the one this environment already has on sys.path."""


def activate(tree: str | None = None) -> Activation:
    """Put ``tree`` (default: $HOIST_EFS_TREE) on sys.path with its hot set in memory; the first call does the work,
    later calls for the same tree return its Activation, a call for another tree is an ActivationError."""
    global _done, _held  # noqa: PLW0603 - once per execution environment, by design
    with _lock:
        wanted = (tree if tree is not None else os.environ.get("HOIST_EFS_TREE", "")).rstrip("/")
        if _done is not None:
            if wanted != (_done.tree or ""):
                raise ActivationError(f"activate({wanted!r}): this environment already activated {_done.tree!r}; one execution environment holds one tree "
                                      "(HOIST_EFS_TREE names it)")
            return _done
        t = time.perf_counter()
        hot, why, has_archives = None, None, False
        if wanted:
            has_archives = os.path.exists(os.path.join(os.path.dirname(wanted), "archives", "index.json"))
            if os.environ.get("HOIST_HYDRATE", "1") == "0":
                why = "HOIST_HYDRATE=0"
            elif not has_archives:
                why = "the version has no archives (archives/index.json)"
            else:
                try:
                    hot, why = hydrate(wanted)
                except Exception as exc:
                    why = f"hydration failed: {type(exc).__name__}: {exc}"
                    log("hydrate_failed", error=why)
        if hot is not None:
            hotimport.install(hot)
            hotmeta.install(hot)  # importlib.metadata's reads of the tree's distributions, from the same memory
            hotlines.install(hot)  # and linecache's of its sources (tracebacks, inspect)
            _held = hot.held
        if wanted and wanted not in sys.path:
            sys.path.append(wanted)
        _done = Activation(tree=wanted or None, hydrated=hot is not None, ms=round((time.perf_counter() - t) * 1000, 2),
                           hot_files=len(hot) if hot else 0, hot_bytes=hot.bytes if hot else 0, prefetch=hot.prefetch if hot else None,
                           why=why if wanted else None, archives=has_archives)
        log("activate", efs_tree=_done.tree, hydrated=_done.hydrated, hot_files=_done.hot_files, hot_bytes=_done.hot_bytes, held_bytes=_held,
            prefetch=_done.prefetch, why=_done.why, ms=_done.ms)
        return _done


def release() -> int:
    """Init is over: give the hot set's memory back (modules imported from it keep working). Returns the bytes freed;
    0 when there was nothing to give back or it was given already."""
    global _released  # noqa: PLW0603
    with _lock:
        hotmeta.release()
        hotlines.release()
        freed = hotimport.release()
        if freed and not _released:
            _released = True
            log("release", freed_bytes=freed)
        return freed


def report() -> dict | None:
    """What activation did, what the hot set held during init and holds now (validate's and deploy's smoke tests read it);
    None before activate()."""
    if _done is None:
        return None
    return {**asdict(_done), "held_bytes": _held, "released": _released, "held_now": 0 if _released else _held}


def unpack_file(path: str, entry: dict, compression: str, chunks: ThreadPoolExecutor, chunk: int = CHUNK_BYTES) -> bytearray:
    """An archive's records' stream: read in ``chunk`` pieces (READS_AHEAD in flight, in ``chunks``), each unpacked
    into a buffer of the stream's size and hashed as it arrives; an OSError when it does not match the index."""
    size, raw = entry["bytes"], entry["raw"]
    out = bytearray(raw)
    at = 0
    digest = hashlib.sha256()
    d = archive.decompressor(compression)
    fd = os.open(path, os.O_RDONLY)

    def fetch(offset: int) -> bytes:
        return os.pread(fd, min(chunk, size - offset), offset)

    try:
        pending: list = []
        offsets = iter(range(0, size, chunk))
        for offset in offsets:
            pending.append(chunks.submit(fetch, offset))
            if len(pending) < READS_AHEAD:
                continue
            at = _take(pending.pop(0).result(), d, digest, out, at, path)
        for f in pending:
            at = _take(f.result(), d, digest, out, at, path)
        if hasattr(d, "flush"):
            at = _put(d.flush(), out, at, path)
    finally:
        os.close(fd)
    if digest.hexdigest() != entry["sha256"]:  # a torn or damaged copy on EFS
        raise OSError(f"archive {entry['name']} does not match its sha256 in the index")
    if at != raw:
        raise OSError(f"archive {entry['name']} unpacks to {at} bytes, the index says {raw}")
    return out


def _take(data: bytes, d, digest, out: bytearray, at: int, path: str) -> int:
    digest.update(data)
    if not hasattr(d, "unconsumed_tail"):  # a decompressor the benchmark injected: its whole output at once
        return _put(d.decompress(data), out, at, path)
    # zlib: fed FEED_BYTES of the piece at a time (views, not copies), each giving at most PIECE_BYTES at a time, so
    # what waits beside the buffer is one small output and a tail of at most FEED_BYTES (zlib copies what it leaves)
    view = memoryview(data)
    for start in range(0, len(view), FEED_BYTES):
        at = _put(d.decompress(view[start : start + FEED_BYTES], PIECE_BYTES), out, at, path)
        while d.unconsumed_tail:
            at = _put(d.decompress(d.unconsumed_tail, PIECE_BYTES), out, at, path)
    return at


def _put(piece: bytes, out: bytearray, at: int, path: str) -> int:
    if at + len(piece) > len(out):
        raise OSError(f"{path}: unpacks to more bytes than the index says")
    out[at : at + len(piece)] = piece
    return at + len(piece)


def interleaved(groups: Iterable[tuple[str, list[str]]]) -> Iterator[str]:
    """``folder/name`` of each (folder, names), one of each folder in turn, the largest folders first: lookups in one
    folder may be served one at a time (a FUSE mount without parallel directory operations serializes them on the
    folder), so the lookups in flight spread over as many folders as there are workers, and the longest start first.
    Lazily: no list of the paths (the names are the listings' own strings)."""
    order = sorted((g for g in groups if g[1]), key=lambda g: len(g[1]), reverse=True)
    for i in range(len(order[0][1]) if order else 0):
        for folder, names in order:
            if i < len(names):
                yield f"{folder}/{names[i]}"


def _start_stat_ahead(dirs: dict[str, dict[str, str]]) -> None:
    """Look up every source file of the hot folders (``dirs``: absolute folder -> listing), in parallel, in the background.

    The modules imported from memory keep their EFS paths, and ``inspect``
    (torch calls ``inspect.getmodule``, which checks every loaded module's
    source with ``os.path.exists``) and linecache stat those paths: one round
    trip each, one after the other, about 700 for torch. Looked up ahead, the
    NFS client's attribute cache answers them, as the page cache answers the
    libraries' reads after their read-ahead.

    STAT_WORKERS threads take the paths from one shared generator, one folder
    after another in turn (``interleaved``): no list of paths and no future per lookup (a thousand queued futures were 1.8 MB,
    beside the hot set while the archives unpack).
    """
    paths = interleaved((folder, [name for name, kind in listing.items() if kind == hotimport.FILE and name.endswith(".py")])
                        for folder, listing in dirs.items())
    lock = threading.Lock()

    def walk() -> None:
        while True:
            with lock:  # a generator runs in one thread at a time
                path = next(paths, None)
            if path is None:
                return
            with contextlib.suppress(OSError):
                os.stat(path)

    for i in range(STAT_WORKERS):
        threading.Thread(target=walk, name=f"hoist-stat-{i}", daemon=True).start()


def hydrate(tree: str, chunk: int = CHUNK_BYTES) -> tuple[hotimport.HotSet | None, str | None]:
    """Read the tree's archives (built beside it) into memory and start the libraries' read-ahead:
    (the hot set, None), or (None, why not) when the index is of another format."""
    tree = tree.rstrip("/")
    version_dir = os.path.dirname(tree)
    with open(os.path.join(version_dir, "archives", "index.json"), "rb") as fh:
        index = json.loads(fh.read())
    if index.get("version") != archive.INDEX_VERSION:  # another build's format: import from EFS, slower but right
        why = f"archive index version {index.get('version')}, this handler reads {archive.INDEX_VERSION} (rebuild and sync the version)"
        log("hydrate_skipped", reason=why)
        return None, why
    # the listings and sizes by absolute path at once, before the buffers exist: the index's own copies are not kept
    dirs = {(f"{tree}/{rel}" if rel else tree): listing for rel, listing in index.pop("dirs").items()}
    sizes = {f"{tree}/{rel}": size for rel, size in (index.pop("sizes", None) or {}).items()}
    _start_stat_ahead(dirs)
    how = os.environ.get("HOIST_PREFETCH", prefetch.DEFAULT)
    if how not in prefetch.RANGES:
        log("prefetch_unknown", mode=how, using=prefetch.DEFAULT, choices=sorted(prefetch.RANGES))
        how = prefetch.DEFAULT
    archives = os.path.join(version_dir, "archives")
    compression = index.get("compression", archive.COMPRESSION)
    names = sorted(index["archives"], key=lambda a: -a["bytes"])  # largest first: the long ones start early
    files: dict[str, memoryview] = {}

    def load(entry: dict, chunks: ThreadPoolExecutor) -> None:
        stream = unpack_file(os.path.join(archives, entry["name"]), entry, compression, chunks, chunk)
        for rel, data in archive.records(stream):  # straight into the hot set (one dict item at a time, under the GIL)
            files[f"{tree}/{rel}"] = data

    # the libraries' read-ahead starts first, beside the archives (a few MB): started once `import torch` runs, its
    # threads wait for the GIL behind the import's own work while the import faults the same pages in one by one
    prefetch.start(tree, {"elf": index["elf"], "touched_ranges": index.get("touched_ranges") or {}}, how)  # not the listings
    del index
    with ThreadPoolExecutor(CHUNK_WORKERS, thread_name_prefix="hoist-chunk") as chunks, \
            ThreadPoolExecutor(ARCHIVE_WORKERS, thread_name_prefix="hoist-archive") as whole:
        done = [whole.submit(load, a, chunks) for a in names]
        for f in done:
            f.result()
    return hotimport.HotSet(tree, files, dirs, sizes=sizes, prefetch=how), None
