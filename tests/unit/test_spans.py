"""handler/hoist_lambda/prefetch.py: what the handler reads ahead of a library, merged by the gap."""
from __future__ import annotations

import importlib

import pytest
from elftools.elf.elffile import ELFFile

from pipeline import handlerlib
from tests.wheels import compile_library


@pytest.fixture
def prefetch(monkeypatch):
    """hoist_lambda.prefetch, the handler's one reader of a library's loader ranges."""
    monkeypatch.syspath_prepend(str(handlerlib.LIBRARY))
    return importlib.import_module("hoist_lambda.prefetch")


def test_spans_closer_than_the_gap_are_read_as_one(prefetch) -> None:
    spans = prefetch
    gap = spans.MERGE_GAP
    # GIVEN the ELF header, two sections just apart and one far away, unsorted
    got = spans.merge_spans([(10 * gap, 10 * gap + 100), (0, 4096), (4096 + gap, 4096 + gap + 10), (50, 200)])
    # THEN sorted, the near ones merged ([offset, length]), the far one alone
    assert got == [[0, 4096 + gap + 10], [10 * gap, 100]]
    assert spans.merge_spans([]) == [] and spans.merge_spans([(0, 10), (30, 40)], gap=5) == [[0, 10], [30, 10]]


# a library with 320 KB of machine code (nops) between what the loader reads before and after it
BIG_CODE = 'int answer(int x) { return x + 42; }\nvoid padding(void) { __asm__(".skip 327680, 0x90"); }\nint counter = 1;\n'


def _sections(path) -> dict[str, tuple[int, int]]:
    """name -> (offset, end) of the sections the file holds bytes for, read by pyelftools."""
    with open(path, "rb") as fh:
        return {s.name: (s["sh_offset"], s["sh_offset"] + s["sh_size"]) for s in ELFFile(fh).iter_sections() if s["sh_type"] != "SHT_NOBITS" and s["sh_size"]}


def _covered(ranges: list[list[int]], start: int, end: int) -> bool:
    return any(offset <= start and end <= offset + length for offset, length in ranges)


def test_the_handler_reads_ahead_what_the_loader_reads_merged_by_the_gap(tmp_path, prefetch) -> None:
    # GIVEN a real shared library whose machine code is several times the merge gap
    lib = compile_library(tmp_path / "lib", source=BIG_CODE)
    sections = _sections(lib)
    gap = prefetch.MERGE_GAP
    text_start, text_end = sections[".text"]
    assert text_end - text_start > 3 * gap, "the library's code must be larger than the gap for this test to mean anything"
    # WHEN the handler finds the loader's ranges in its section headers (the `relocs` read-ahead)
    ranges = prefetch.relocation_ranges(str(lib))
    # THEN the headers and what the loader reads (symbols, dynamic section, relocations) are in them, on either side of the code
    assert ranges[0][0] == 0
    for name in (".dynsym", ".dynstr", ".dynamic", ".rela.dyn"):
        assert _covered(ranges, *sections[name]), (name, sections[name], ranges)
    # and the code is not, beyond what the gap merges in at its edges
    assert not any(offset < text_end - gap and offset + length > text_start + gap for offset, length in ranges), (sections[".text"], ranges)
    # and the ranges are sorted, and merged as the shared merge does: no two closer than the gap
    ends = [offset + length for offset, length in ranges]
    assert all(nxt - end > gap for end, (nxt, _) in zip(ends, ranges[1:], strict=False)), ranges


def test_a_file_that_is_not_a_64_bit_elf_library_is_not_read_ahead(tmp_path, prefetch) -> None:
    (tmp_path / "x.so").write_bytes(b"not elf")
    assert prefetch.relocation_ranges(str(tmp_path / "x.so")) is None
