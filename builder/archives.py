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
torchvision, not sympy: builder/importcheck.py), with the source of every
bytecode file among them (the loader reads the source's size before it reads
the .pyc, and torch reads some sources while it imports). Without a recorded
hot set (no import check ran) every non-ELF file is hot. ``dirs`` lists every
folder a hot file lives in, so the handler finds modules without listing a
folder on EFS.

Format (simple on purpose: the handler reads it with a few lines, fast):
zlib-compressed concatenation of records ``<u32 path length><path><u32
mode><u64 size><data>``.

    archives/index.json               {"version": 2, "archives": [...], "dirs": {...}, "hot": {...}, "elf": [...], "elf_ranges": {...}, "touched_ranges": {...}}
    archives/<dist>-<sha256[:16]>.hz  one per distribution, or per ~12 MB of it (CHUNK_BYTES)

``elf_ranges`` lists, per shared library, the byte ranges the dynamic loader
reads while it maps and relocates the library (headers, symbol and string
tables, hash tables, relocations, read-only data, the data segment), not its
machine code or unwind tables. ``touched_ranges`` lists the pages of each
library the import check saw mapped after importing the set's requirements
(its libraries dropped from the page cache before, so only what the imports
faulted in): code included, about 70 of torch's 370 MB. The handler reads one
of them ahead in the background, in parallel pieces (docs/design.md, 7).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline import handlerlib
from pipeline.dists import owner_of, owners
from pipeline.files import is_elf

from .manifest import content_mtime

INDEX_VERSION = 2  # 2: only the hot set is archived, with its folders' listings ("dirs"); the handler imports it from memory
# a large distribution (torch: 175 MB of sources and bytecode) is cut into archives of
# about this many uncompressed bytes, so the handler decompresses them on all CPUs at once
CHUNK_BYTES = 12 << 20
RECORD = struct.Struct("<IQ")  # mode, size (after the path)


def pack(tree: Path, paths: list[str]) -> bytes:
    out = bytearray()
    for rel in paths:
        name = rel.encode()
        data = (tree / rel).read_bytes()
        out += struct.pack("<I", len(name)) + name + RECORD.pack((tree / rel).stat().st_mode & 0o777, len(data)) + data
    return zlib.compress(bytes(out), 1)


def unpack(blob: bytes) -> list[tuple[str, bytes]]:
    """(path, data) of each record of one archive, read by the handler's own reader (hoist_lambda/hotimport.py)."""
    return list(handlerlib.load("hotimport").records(zlib.decompress(blob)))


# allocated sections the loader does not read at load time: code runs (and faults in) page by page,
# unwind tables are read when an exception passes through
NOT_PREFETCHED = {".text", ".init", ".fini", ".plt", ".plt.got", ".plt.sec", ".iplt", ".eh_frame", ".gcc_except_table"}
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4


def loader_ranges(path: Path) -> list[list[int]]:
    """[offset, length] ranges of ``path`` worth reading ahead (see the module docstring)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            head = elf["e_phoff"] + elf["e_phnum"] * elf["e_phentsize"]
            spans = [(0, max(head, 4096))]
            for sec in elf.iter_sections():
                flags, size = sec["sh_flags"], sec["sh_size"]
                if not flags & SHF_ALLOC or flags & SHF_EXECINSTR or sec.name in NOT_PREFETCHED or sec["sh_type"] == "SHT_NOBITS" or not size:
                    continue
                spans.append((sec["sh_offset"], sec["sh_offset"] + size))
    except (ELFError, OSError, ValueError):
        return [[0, path.stat().st_size]]  # unreadable: read it all, as before
    return handlerlib.load("spans").merge_spans(spans)  # the handler's own merge, so both read the same ranges


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


def hot_files(candidates: Iterable[str], opened: Iterable[str] | None) -> set[str]:
    """Of ``candidates`` (the tree's regular non-ELF files), those hydration copies: the ``opened``
    ones and the sources of opened bytecode; every candidate when nothing was recorded (None)."""
    pool = set(candidates)
    if opened is None:
        return pool
    hot = set()
    for rel in opened:
        hot.add(rel)
        source = source_of(rel)
        if source:
            hot.add(source)
    return hot & pool


def listings(tree: Path, hot: set[str]) -> dict[str, dict[str, str]]:
    """Each folder a hot file lives in (and the tree itself), with its entries: "f" a file, "d" a
    folder, "p" a folder with an __init__.py. The handler answers imports for these folders from
    them and reads no folder of EFS (handler/hoist_lambda/hotimport.py)."""
    folders = {""}
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
                   touched: dict[str, list[list[int]]] | None = None) -> dict:
    """Write ``dest/`` (index.json and the archives) for ``tree``; returns the index.

    ``opened``: the files the import check saw opened (the hot set); None archives every non-ELF file.
    ``touched``: the libraries' pages it saw mapped, which the handler reads ahead ("touched_ranges").
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
    hot = hot_files(regular, None if opened is None else list(opened))
    groups: dict[str, list[str]] = {}
    for rel in regular:
        if rel in hot:
            groups.setdefault(owner_of(owner, rel) or "_unowned", []).append(rel)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    archives = []
    jobs = [(name, part) for name in sorted(groups) for part in chunks(tree, sorted(groups[name]), chunk_bytes)]
    # zlib and file reads release the GIL: the archives compress on every CPU at once, in the same order
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        packed = pool.map(lambda job: pack(tree, job[1]), jobs)
        for (name, part), data in zip(jobs, packed, strict=True):
            digest = hashlib.sha256(data).hexdigest()
            filename = f"{name}-{digest[:16]}.hz"
            (tmp / filename).write_bytes(data)
            t = content_mtime(digest)  # same content, same time: sync's rsync links it to the previous version's copy
            os.utime(tmp / filename, (t, t))
            archives.append({"name": filename, "dist": name, "bytes": len(data), "sha256": digest, "files": len(part)})
    index = {"version": INDEX_VERSION, "archives": archives, "dirs": listings(tree, hot),
             "hot": {"recorded": opened is not None, "files": len(hot), "of": len(regular)},
             "elf": sorted(elf), "elf_ranges": {rel: loader_ranges(tree / rel) for rel in sorted(elf)},
             "touched_ranges": {rel: ranges for rel, ranges in sorted((touched or {}).items()) if rel in elf}}
    (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return index
