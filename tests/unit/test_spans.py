"""handler/hoist_lambda/spans.py: the read-ahead ranges' merge the builder and the handler share."""
from __future__ import annotations

from builder import archives
from pipeline import handlerlib


def test_spans_closer_than_the_gap_are_read_as_one() -> None:
    spans = handlerlib.load("spans")
    gap = spans.MERGE_GAP
    # GIVEN the ELF header, two sections just apart and one far away, unsorted
    got = spans.merge_spans([(10 * gap, 10 * gap + 100), (0, 4096), (4096 + gap, 4096 + gap + 10), (50, 200)])
    # THEN sorted, the near ones merged ([offset, length]), the far one alone
    assert got == [[0, 4096 + gap + 10], [10 * gap, 100]]
    assert spans.merge_spans([]) == [] and spans.merge_spans([(0, 10), (30, 40)], gap=5) == [[0, 10], [30, 10]]


def test_the_builder_and_the_handler_use_the_same_merge(tmp_path) -> None:
    # a file that is not ELF: read whole, as before (the builder's fallback)
    (tmp_path / "x.so").write_bytes(b"not elf")
    assert archives.loader_ranges(tmp_path / "x.so") == [[0, 7]]
    import sys

    sys.path.insert(0, str(handlerlib.LIBRARY))
    try:
        from hoist_lambda import activate
    finally:
        sys.path.remove(str(handlerlib.LIBRARY))
    assert activate.merge_spans.__code__.co_code == handlerlib.load("spans").merge_spans.__code__.co_code
