"""Per-distribution archives of a tree's hot files, for a fast cold start.

On EFS every lookup, open and read is a round trip; `import torch` makes
about 5,000 of them. The handler instead reads these archives (a few large
parallel reads) into memory and imports the modules in them from there
(handler/hoist_lambda/hotimport.py); only the pages of the shared libraries,
and whatever is not imported at init, travel from EFS as they are needed. One
archive per distribution keeps sync incremental: a changed package changes
its own archive only, and unchanged archives keep their names
(content-addressed) and become hard links.

What goes into the archives is the *hot set*: the files the build's import
check saw opened while it imported the set's own requirements (torch and
torchvision, not sympy: builder/importcheck.py). The source of a hot bytecode
file travels as its size only (``sizes`` in the index): the loader stats it but
reads the unchecked-hash bytecode, and a source that torch reads while it
imports was seen opened, so it is in the archives itself. Without a recorded
hot set (no import check ran) every non-ELF file is hot. ``dirs`` lists every
folder a hot file lives in, so the handler finds modules without listing a
folder on EFS.

The format is the handler library's (handler/hoist_lambda/archive.py, loaded by
path: pipeline/handlerlib.py), so the build writes exactly what the handler
reads.

    archives/index.json               {"version": 3, "archives": [...], "dirs": {...}, "sizes": {...}, "hot": {...}, "elf": [...], "touched_ranges": {...}}
    archives/<dist>-<sha256[:16]>.hz  one per distribution, or per ~CHUNK_BYTES of it

``touched_ranges`` lists the pages of each library the import check saw mapped
after importing the set's requirements (its libraries dropped from the page
cache before, so only what the imports faulted in): code included, about 70 of
torch's 370 MB. The handler reads them ahead in the background, in parallel
pieces (handler/hoist_lambda/prefetch.py); a library without recorded pages
gets what the dynamic loader reads, found by the handler in its section headers.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline import handlerlib
from pipeline.dists import owner_of, owners
from pipeline.files import Digests, is_elf

from . import cache
from .manifest import content_mtime

INDEX_VERSION = handlerlib.load("archive").INDEX_VERSION  # the handler's (hoist_lambda/archive.py), defined once
# a large distribution is cut into archives of about this many uncompressed bytes: the handler unpacks
# several at once on all CPUs, and the fewer compressed bytes wait in memory beside the unpacked ones
CHUNK_BYTES = 4 << 20
# what an archive's bytes depend on besides its files: the format (the handler's archive.py) and the packing here
CODE_DIGEST = hashlib.sha256((handlerlib.LIBRARY / "hoist_lambda" / "archive.py").read_bytes() + Path(__file__).read_bytes()).hexdigest()
METADATA_FOLDERS = (".dist-info", ".egg-info")  # what importlib.metadata takes for a distribution's metadata folder


def _format():
    return handlerlib.load("archive")  # handler/hoist_lambda/archive.py: the format, defined once


def stream(tree: Path, paths: list[str]) -> bytes:
    """The records' stream of ``paths`` (uncompressed: the handler unpacks into a buffer of exactly this size)."""
    return _format().stream((rel, (tree / rel).stat().st_mode & 0o777, (tree / rel).read_bytes()) for rel in paths)


def pack(tree: Path, paths: list[str]) -> bytes:
    return _format().compress(stream(tree, paths))


def _packed(tree: Path, paths: list[str]) -> tuple[int, bytes]:
    """(the records' stream's size, the archive)."""
    raw = stream(tree, paths)
    return len(raw), _format().compress(raw)


def unpack(blob: bytes) -> list[tuple[str, bytes]]:
    """(path, data) of each record of one archive, read by the handler's own reader."""
    fmt = _format()
    return [(rel, bytes(data)) for rel, data in fmt.records(fmt.unpack(blob))]


def chunks(tree: Path, paths: list[str], limit: int = CHUNK_BYTES) -> list[list[str]]:
    """``paths`` (sorted) cut into runs of about ``limit`` uncompressed bytes."""
    out: list[list[str]] = [[]]
    size = 0
    for rel in paths:
        n = (tree / rel).stat().st_size
        if out[-1] and size + n > limit:
            out.append([])
            size = 0
        out[-1].append(rel)
        size += n
    return out


def source_of(rel: str) -> str | None:
    """The source a bytecode file was compiled from (``a/__pycache__/m.cpython-311.pyc`` -> ``a/m.py``)."""
    folder, sep, pyc = rel.rpartition("__pycache__/")
    if not sep or not pyc.endswith(".pyc"):
        return None
    return folder + pyc.split(".", 1)[0] + ".py"


def hot_files(candidates: Iterable[str], opened: Iterable[str] | None) -> tuple[set[str], set[str]]:
    """Of ``candidates`` (the tree's regular non-ELF files): (the files the archives hold, the sources they
    hold the size of). Held: the ``opened`` ones, or every candidate when nothing was recorded (None);
    sized: the source of held bytecode, unless it was opened itself."""
    pool = set(candidates)
    held = pool if opened is None else set(opened) & pool
    sized = {src for rel in held if (src := source_of(rel)) in pool} - (held if opened is not None else set())
    return held - sized, sized


def listings(tree: Path, hot: set[str]) -> dict[str, dict[str, str]]:
    """Each folder a hot file lives in, the tree itself and its distributions' metadata folders, with
    their entries: "f" a file, "d" a folder, "p" a folder with an __init__.py. The handler answers
    imports for these folders from them and reads no folder of EFS (handler/hoist_lambda/hotimport.py),
    and tells importlib.metadata that a distribution has no entry_points.txt without asking EFS
    (entry_points() tries every distribution's; handler/hoist_lambda/hotmeta.py)."""
    folders = {""}
    with os.scandir(tree) as it:
        folders.update(e.name for e in it if e.name.lower().endswith(METADATA_FOLDERS) and e.is_dir())
    for rel in hot:
        parts = rel.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    out: dict[str, dict[str, str]] = {}
    for folder in sorted(folders):
        listing = {}
        with os.scandir(tree / folder if folder else tree) as it:
            for entry in sorted(it, key=lambda e: e.name):
                if entry.is_dir():
                    listing[entry.name] = "p" if os.path.isfile(os.path.join(entry.path, "__init__.py")) else "d"
                else:
                    listing[entry.name] = "f"
        out[folder] = listing
    return out


def write_archives(tree: Path, dest: Path, chunk_bytes: int = CHUNK_BYTES, opened: Iterable[str] | None = None,
                   touched: dict[str, list[list[int]]] | None = None, store: cache.Store | None = None, version: str = "",
                   digests: Digests | None = None) -> dict:
    """Write ``dest/`` (index.json and the archives) for ``tree``; returns the index.

    ``opened``: the files the import check saw opened (the hot set); None archives every non-ELF file.
    ``touched``: the libraries' pages it saw mapped, which the handler reads ahead ("touched_ranges").
    ``store``: the build cache (builder/cache.py), which holds each archive by its files' paths, modes and
    sha256 (``digests``), the format's and packer's code and ``version`` (the builder's): an unchanged
    package's archives are copied, not compressed again.
    """
    owner = owners(tree)
    regular: list[str] = []
    elf: list[str] = []
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for f in sorted(files):
            p = Path(root) / f
            rel = p.relative_to(tree).as_posix()
            if p.is_symlink():
                continue
            if is_elf(p):
                elf.append(rel)
            else:
                regular.append(rel)
    held, sized = hot_files(regular, None if opened is None else list(opened))
    hot = held | sized
    groups: dict[str, list[str]] = {}
    for rel in regular:
        if rel in held:
            groups.setdefault(owner_of(owner, rel) or "_unowned", []).append(rel)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    archives = []
    jobs = [(name, part) for name in sorted(groups) for part in chunks(tree, sorted(groups[name]), chunk_bytes)]
    sha = (digests or Digests()).sha256

    def made(job: tuple[str, list[str]]) -> tuple[str, int, bytes | None, str]:
        """(cache key, raw size, the archive or None when the cache put it in place, its sha256)."""
        name, part = job
        entry = ""
        if store is not None:
            entry = cache.key("archive", version, CODE_DIGEST, *(f"{rel}\0{(tree / rel).stat().st_mode & 0o777:o}\0{sha(tree / rel)}" for rel in part))
            doc = store.get_json("archive", entry, count=False)
            if doc is None:
                store.counts.miss("archive")  # a hit or a miss of the file is counted by get_file
            elif store.get_file("archive", entry, tmp / f"{name}-{doc['sha256'][:16]}.hz"):
                return entry, doc["raw"], None, doc["sha256"]
        raw_bytes, data = _packed(tree, part)
        return entry, raw_bytes, data, hashlib.sha256(data).hexdigest()

    # zlib and file reads release the GIL: the archives compress on every CPU at once, in the same order
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for (name, part), (entry, raw_bytes, data, digest) in zip(jobs, pool.map(made, jobs), strict=True):
            filename = f"{name}-{digest[:16]}.hz"
            if data is not None:
                (tmp / filename).write_bytes(data)
                if store is not None:
                    store.put_file("archive", entry, tmp / filename)
                    store.put_json("archive", entry, {"raw": raw_bytes, "sha256": digest})
            t = content_mtime(digest)  # same content, same time: sync's rsync links it to the previous version's copy
            os.utime(tmp / filename, (t, t))
            archives.append({"name": filename, "dist": name, "bytes": (tmp / filename).stat().st_size, "raw": raw_bytes, "sha256": digest, "files": len(part)})
    index = {"version": INDEX_VERSION, "compression": _format().COMPRESSION, "archives": archives, "dirs": listings(tree, hot),
             "sizes": {rel: (tree / rel).stat().st_size for rel in sorted(sized)},
             "hot": {"recorded": opened is not None, "files": len(held), "of": len(regular), "bytes": sum((tree / rel).stat().st_size for rel in held),
                     "sized": len(sized)},
             "elf": sorted(elf),
             "touched_ranges": {rel: ranges for rel, ranges in sorted((touched or {}).items()) if rel in elf}}
    (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return index
