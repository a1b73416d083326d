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

    archives/index.json               {"version": 1, "archives": [...], "elf": [...], "elf_ranges": {...}}
    archives/<dist>-<sha256[:16]>.hz  one per distribution, or per ~12 MB of it (CHUNK_BYTES)

``elf_ranges`` lists, per shared library, the byte ranges the dynamic loader
reads while it maps and relocates the library (headers, symbol and string
tables, hash tables, relocations, read-only data, the data segment), not its
machine code or unwind tables: the handler reads those ranges ahead in the
background, and code pages come on demand as they run (docs/design.md, 7).

Python sources stay in the archives even where bytecode exists: torch reads
the sources of its own modules while it imports (``inspect.getsourcelines``
in decorators, ``inspect.getmodule`` over every module), so sources linked
back to EFS cost a round trip each (measured: slower, docs/design.md, 7).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline import handlerlib
from pipeline.dists import owner_of, owners
from pipeline.files import is_elf

from .manifest import content_mtime

INDEX_VERSION = 1
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


def write_archives(tree: Path, dest: Path, chunk_bytes: int = CHUNK_BYTES) -> dict:
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
            if is_elf(p):
                elf.append(rel)
            else:
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
    index = {"version": INDEX_VERSION, "archives": archives, "elf": sorted(elf), "elf_ranges": {rel: loader_ranges(tree / rel) for rel in sorted(elf)}}
    (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return index
