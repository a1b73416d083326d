"""Remove symbol tables and debug info from an ELF file without moving what loads.

Why not `strip`: auditwheel's patchelf appends new loadable segments *after*
the symbol table (torch's libtorch_cpu.so on aarch64 carries a 4 MB .dynstr
there). GNU strip then truncates that segment and llvm-strip moves it to an
offset that breaks mmap alignment; either way the library no longer loads.

This cuts the bytes of non-allocated ``.symtab``/``.strtab``/``.debug*``
sections out of the file and shifts what follows by a multiple of the largest
alignment of the segments behind the cut, so every segment keeps its bytes,
its address and ``p_offset ≡ p_vaddr (mod p_align)``. Only offsets change;
``same_image`` proves the loader sees the same thing.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from pipeline.files import ELF_MAGIC, atomic_write_bytes

SHF_ALLOC = 0x2
SHT_NOBITS = 8
PT_LOAD = 1


@dataclass
class _Layout:
    endian: str
    is64: bool

    # (field offsets in the ELF header)
    @property
    def eh(self) -> dict[str, tuple[int, str]]:
        if self.is64:
            return {"phoff": (0x20, "Q"), "shoff": (0x28, "Q"), "phentsize": (0x36, "H"), "phnum": (0x38, "H"), "shentsize": (0x3A, "H"), "shnum": (0x3C, "H"), "shstrndx": (0x3E, "H")}
        return {"phoff": (0x1C, "I"), "shoff": (0x20, "I"), "phentsize": (0x2A, "H"), "phnum": (0x2C, "H"), "shentsize": (0x2E, "H"), "shnum": (0x30, "H"), "shstrndx": (0x32, "H")}

    @property
    def phdr(self) -> tuple[str, tuple[str, ...]]:
        if self.is64:
            return "IIQQQQQQ", ("type", "flags", "offset", "vaddr", "paddr", "filesz", "memsz", "align")
        return "IIIIIIII", ("type", "offset", "vaddr", "paddr", "filesz", "memsz", "flags", "align")

    @property
    def shdr(self) -> tuple[str, tuple[str, ...]]:
        if self.is64:
            return "IIQQQQIIQQ", ("name", "type", "flags", "addr", "offset", "size", "link", "info", "addralign", "entsize")
        return "IIIIIIIIII", ("name", "type", "flags", "addr", "offset", "size", "link", "info", "addralign", "entsize")


class NotElf(ValueError):
    pass


class _Elf:
    def __init__(self, data: bytearray):
        if data[:4] != ELF_MAGIC or data[4] not in (1, 2) or data[5] not in (1, 2):
            raise NotElf("not an ELF file")
        self.data = data
        self.lay = _Layout(endian="<" if data[5] == 1 else ">", is64=data[4] == 2)

    def get(self, field: str) -> int:
        off, fmt = self.lay.eh[field]
        return struct.unpack_from(self.lay.endian + fmt, self.data, off)[0]

    def put(self, field: str, value: int) -> None:
        off, fmt = self.lay.eh[field]
        struct.pack_into(self.lay.endian + fmt, self.data, off, value)

    def _table(self, kind: str) -> list[dict]:
        fmt, names = getattr(self.lay, kind)
        base = self.get("phoff" if kind == "phdr" else "shoff")
        size = self.get("phentsize" if kind == "phdr" else "shentsize")
        count = self.get("phnum" if kind == "phdr" else "shnum")
        out = []
        for i in range(count):
            vals = struct.unpack_from(self.lay.endian + fmt, self.data, base + i * size)
            out.append(dict(zip(names, vals, strict=False)) | {"_at": base + i * size})
        return out

    def phdrs(self) -> list[dict]:
        return self._table("phdr")

    def shdrs(self) -> list[dict]:
        return self._table("shdr") if self.get("shoff") else []

    def write(self, kind: str, entry: dict) -> None:
        fmt, names = getattr(self.lay, kind)
        struct.pack_into(self.lay.endian + fmt, self.data, entry["_at"], *(entry[n] for n in names))

    def section_name(self, shdrs: list[dict], sh: dict) -> str:
        strtab = shdrs[self.get("shstrndx")]
        start = strtab["offset"] + sh["name"]
        end = self.data.index(b"\0", start)
        return self.data[start:end].decode("ascii", "replace")


def _removable(name: str) -> bool:
    return name in (".symtab", ".strtab") or name.startswith((".debug", ".zdebug"))


def strip_bytes(original: bytes) -> bytes:
    """The stripped image of ``original`` (unchanged if nothing can be cut)."""
    elf = _Elf(bytearray(original))
    shdrs = elf.shdrs()
    if not shdrs:
        return original
    names = [elf.section_name(shdrs, sh) for sh in shdrs]
    phdrs = elf.phdrs()
    sh_table = (elf.get("shoff"), elf.get("shoff") + elf.get("shnum") * elf.get("shentsize"))
    if any(p["offset"] < sh_table[1] and sh_table[0] < p["offset"] + p["filesz"] for p in phdrs if p["filesz"]):
        return original  # newer patchelf maps the section headers: editing them would change a segment

    occupied = [(0, 0x40 if elf.lay.is64 else 0x34)]
    occupied.append((elf.get("phoff"), elf.get("phoff") + elf.get("phnum") * elf.get("phentsize")))
    occupied.append(sh_table)
    occupied += [(p["offset"], p["offset"] + p["filesz"]) for p in phdrs if p["filesz"]]
    victims = []
    for sh, name in zip(shdrs, names, strict=False):
        if sh["type"] == SHT_NOBITS or not sh["size"]:
            continue
        rng = (sh["offset"], sh["offset"] + sh["size"])
        if _removable(name) and not sh["flags"] & SHF_ALLOC:
            victims.append((sh, rng))
        else:
            occupied.append(rng)
    victims = [(sh, r) for sh, r in victims if not any(a < r[1] and r[0] < b for a, b in occupied)]
    if not victims:
        return original

    # merge victims separated only by padding that nothing occupies
    blocks: list[list[int]] = []
    for _, (a, b) in sorted(victims, key=lambda v: v[1]):
        if blocks and not any(x < a and blocks[-1][1] < y for x, y in occupied):
            blocks[-1][1] = max(blocks[-1][1], b)
        else:
            blocks.append([a, b])

    for sh, _ in victims:  # the sections stay listed, empty
        sh["size"] = 0
        elf.write("shdr", sh)

    data = elf.data
    for a, b in sorted(blocks, reverse=True):  # from the end: earlier offsets stay valid
        behind = [p["align"] for p in elf.phdrs() if p["type"] == PT_LOAD and p["offset"] >= b]
        align = max([1, *behind])
        delta = ((b - a) // align) * align
        data[a:b] = bytes(b - a)  # zero what cannot be cut (alignment remainder)
        if not delta:
            continue
        del data[a : a + delta]
        cut_end = a + delta
        for field in ("phoff", "shoff"):
            if elf.get(field) >= cut_end:
                elf.put(field, elf.get(field) - delta)
        for p in elf.phdrs():
            if p["offset"] >= cut_end:
                p["offset"] -= delta
                elf.write("phdr", p)
        for sh in elf.shdrs():
            if sh["offset"] >= cut_end:
                sh["offset"] -= delta
                elf.write("shdr", sh)
            elif a <= sh["offset"] < cut_end:
                sh["offset"] = a
                elf.write("shdr", sh)
    return bytes(data)


def loader_view(image: bytes) -> tuple:
    """What the dynamic loader reads: header, and each segment's address, sizes and bytes.

    File offsets are left out (they move) but must keep each PT_LOAD aligned;
    inside the mapped bytes, the section-header fields of the ELF header and
    the p_offset of each program header are masked for the same reason.
    """
    elf = _Elf(bytearray(image))
    phdrs = elf.phdrs()
    masked: list[tuple[int, int]] = []
    for field in ("shoff", "shentsize", "shnum", "shstrndx"):
        off, fmt = elf.lay.eh[field]
        masked.append((off, off + struct.calcsize(fmt)))
    fmt, names = elf.lay.phdr
    field_off = struct.calcsize(elf.lay.endian + fmt[: names.index("offset")])
    width = 8 if elf.lay.is64 else 4
    masked += [(p["_at"] + field_off, p["_at"] + field_off + width) for p in phdrs]

    header = bytearray(image[: 0x40 if elf.lay.is64 else 0x34])
    for a, b in masked:
        if b <= len(header):
            header[a:b] = bytes(b - a)
    view: list = [bytes(header)]
    for p in phdrs:
        if p["type"] == PT_LOAD and p["align"] > 1 and p["offset"] % p["align"] != p["vaddr"] % p["align"]:
            raise ValueError(f"segment at vaddr {p['vaddr']:#x} is misaligned")
        start, end = p["offset"], p["offset"] + p["filesz"]
        seg = bytearray(image[start:end])
        for a, b in masked:
            lo, hi = max(a, start), min(b, end)
            if lo < hi:
                seg[lo - start : hi - start] = bytes(hi - lo)
        view.append((p["type"], p["flags"], p["vaddr"], p["paddr"], p["filesz"], p["memsz"], p["align"], hashlib.sha256(seg).hexdigest()))
    return tuple(view)


def same_image(a: bytes, b: bytes) -> bool:
    try:
        return loader_view(a) == loader_view(b)
    except ValueError:
        return False


def strip_file(path: Path) -> int:
    """Strip ``path`` in place (temp file and rename) when the loader view is unchanged; bytes saved."""
    original = path.read_bytes()
    stripped = strip_bytes(original)
    if len(stripped) >= len(original):
        return 0
    if not same_image(original, stripped):
        raise ValueError("stripping would change what the loader maps")
    atomic_write_bytes(path, bytes(stripped), mode=path.stat().st_mode & 0o7777)
    return len(original) - len(stripped)
