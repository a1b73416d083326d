"""handler/hoist_lambda/spans.py: the read-ahead ranges' merge."""
from __future__ import annotations

from pipeline import handlerlib


def test_spans_closer_than_the_gap_are_read_as_one() -> None:
    spans = handlerlib.load("spans")
    gap = spans.MERGE_GAP
    # GIVEN the ELF header, two sections just apart and one far away, unsorted
    got = spans.merge_spans([(10 * gap, 10 * gap + 100), (0, 4096), (4096 + gap, 4096 + gap + 10), (50, 200)])
    # THEN sorted, the near ones merged ([offset, length]), the far one alone
    assert got == [[0, 4096 + gap + 10], [10 * gap, 100]]
    assert spans.merge_spans([]) == [] and spans.merge_spans([(0, 10), (30, 40)], gap=5) == [[0, 10], [30, 10]]
