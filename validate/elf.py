"""Read what the dynamic loader needs from an ELF file, with pyelftools.

Files are parsed, never loaded: a tree for arm64 is checked on x86_64.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

from pipeline.files import is_elf

_VERSION = re.compile(r"^(GLIBC|GLIBCXX|CXXABI)_(\d+(?:\.\d+)*)$")


@dataclass(frozen=True)
class ElfInfo:
    path: str  # relative to the tree
    machine: str  # "EM_X86_64", "EM_AARCH64"
    elf_type: str  # "ET_DYN", "ET_EXEC"
    needed: tuple[str, ...] = ()
    rpaths: tuple[str, ...] = ()  # DT_RPATH and DT_RUNPATH entries, unexpanded
    soname: str | None = None
    # highest version required per (family, library), e.g. ("GLIBC", "libc.so.6") -> (2, 28)
    versions: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)


# the dynamic tags whose value is a string, and the attribute pyelftools gives it
_STRING_TAGS = {"DT_NEEDED": "needed", "DT_RPATH": "rpath", "DT_RUNPATH": "runpath", "DT_SONAME": "soname"}


def read(path: Path, rel: str) -> ElfInfo:
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        needed, rpaths, soname = [], [], None
        versions: dict[tuple[str, str], tuple[int, ...]] = {}
        for section in elf.iter_sections():
            if isinstance(section, DynamicSection):
                for tag in section.iter_tags():
                    kind = tag.entry.d_tag
                    if kind not in _STRING_TAGS:
                        continue
                    value: str = getattr(tag, _STRING_TAGS[kind])  # pyelftools sets the string attributes per tag
                    if kind == "DT_NEEDED":
                        needed.append(value)
                    elif kind in ("DT_RPATH", "DT_RUNPATH"):
                        rpaths += value.split(":")
                    else:
                        soname = value
            elif isinstance(section, GNUVerNeedSection):
                for verneed, auxes in section.iter_versions():
                    for aux in auxes:
                        m = _VERSION.match(aux.name)
                        if m:
                            key = (m.group(1), verneed.name or "")  # the library that defines the version
                            number = tuple(int(x) for x in m.group(2).split("."))
                            versions[key] = max(versions.get(key, number), number)
        return ElfInfo(
            path=rel,
            machine=elf["e_machine"],
            elf_type=elf["e_type"],
            needed=tuple(needed),
            rpaths=tuple(p for p in rpaths if p),
            soname=soname,
            versions=versions,
        )


def scan(tree: Path) -> tuple[list[ElfInfo], list[tuple[str, str]]]:
    """Every ELF file below ``tree``; and the ones pyelftools could not parse, with why."""
    found, broken = [], []
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for f in sorted(files):
            p = Path(root) / f
            if p.is_symlink() or not is_elf(p):
                continue
            rel = p.relative_to(tree).as_posix()
            try:
                found.append(read(p, rel))
            except (ELFError, ValueError, OSError, KeyError) as exc:
                broken.append((rel, str(exc)))
    return found, broken
