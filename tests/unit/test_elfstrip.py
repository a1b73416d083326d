"""elfstrip: symbol tables go, what the loader maps stays, including patchelf'd layouts."""
from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from builder import elfstrip
from tests.wheels import compile_library


def _sections(path):
    with open(path, "rb") as fh:
        return {s.name: s["sh_size"] for s in ELFFile(fh).iter_sections()}


def _search_paths(path):
    with open(path, "rb") as fh:
        tags = ELFFile(fh).get_section_by_name(".dynamic").iter_tags()
        return [getattr(t, "runpath", None) or getattr(t, "rpath", None) for t in tags if t.entry.d_tag in ("DT_RPATH", "DT_RUNPATH")]


def _load_and_call(path):
    lib = ctypes.CDLL(str(path))
    return lib.answer(), lib.triple(5)


@pytest.fixture
def patched_library(tmp_path):
    """A library rewritten the way auditwheel rewrites torch's: patchelf appends
    a new loadable segment (a grown .dynstr) behind the symbol table."""
    lib = compile_library(tmp_path / "build", filler=3000)
    patchelf = shutil.which("patchelf")
    assert patchelf, "patchelf (requirements/tooling.txt) is needed to reproduce auditwheel's layout"
    subprocess.run([patchelf, "--set-rpath", "$ORIGIN/" + "x" * 3000, str(lib)], check=True)
    with open(lib, "rb") as fh:
        elf = ELFFile(fh)
        symtab_end = max(s["sh_offset"] + s["sh_size"] for s in elf.iter_sections() if s.name in (".symtab", ".strtab"))
        behind = [seg for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD" and seg["p_offset"] >= symtab_end]
    assert behind, "patchelf did not put a segment behind the symbol table; the fixture no longer reproduces torch's layout"
    return lib


def test_plain_library_loses_its_symbol_table_and_still_works(tmp_path):
    lib = compile_library(tmp_path)
    before = lib.stat().st_size
    assert _sections(lib)[".symtab"] > 0 and any(n.startswith(".debug") for n in _sections(lib))
    saved = elfstrip.strip_file(lib)
    assert saved > 0 and lib.stat().st_size == before - saved
    sections = _sections(lib)
    assert sections[".symtab"] == 0 and all(size == 0 for name, size in sections.items() if name.startswith(".debug"))
    assert _load_and_call(lib) == (42, 15)


def test_patchelf_layout_keeps_segments_aligned_and_loads(patched_library):
    original = patched_library.read_bytes()
    stripped = elfstrip.strip_bytes(original)
    assert len(stripped) < len(original)
    assert elfstrip.same_image(original, stripped)
    rpath_before = _search_paths(patched_library)
    assert rpath_before and "x" * 3000 in rpath_before[0]
    elfstrip.strip_file(patched_library)
    with open(patched_library, "rb") as fh:
        for seg in ELFFile(fh).iter_segments():
            if seg["p_type"] == "PT_LOAD":
                assert seg["p_offset"] % seg["p_align"] == seg["p_vaddr"] % seg["p_align"]
    assert _search_paths(patched_library) == rpath_before
    assert _load_and_call(patched_library) == (42, 15)


def test_same_image_sees_a_changed_byte_and_a_misaligned_segment(tmp_path):
    lib = compile_library(tmp_path)
    original = lib.read_bytes()
    with open(lib, "rb") as fh:
        text = ELFFile(fh).get_section_by_name(".text")
        at = text["sh_offset"] + 4
    changed = bytearray(original)
    changed[at] ^= 0xFF
    assert not elfstrip.same_image(original, bytes(changed))

    # move the second PT_LOAD's p_offset by 8: still the same bytes elsewhere, but mmap would fail
    elf = elfstrip._Elf(bytearray(original))
    loads = [p for p in elf.phdrs() if p["type"] == elfstrip.PT_LOAD]
    loads[1]["offset"] += 8
    elf.write("phdr", loads[1])
    assert not elfstrip.same_image(original, bytes(elf.data))


def test_not_elf_and_nothing_to_cut(tmp_path):
    with pytest.raises(elfstrip.NotElf):
        elfstrip.strip_bytes(b"#!/bin/sh\n")
    lib = compile_library(tmp_path)
    once = elfstrip.strip_bytes(lib.read_bytes())
    assert elfstrip.strip_bytes(once) == once  # idempotent: a stripped file is left alone
    assert struct.unpack_from("<H", once, 0x12)[0] in (0x3E, 0xB7)  # still x86-64 / aarch64
