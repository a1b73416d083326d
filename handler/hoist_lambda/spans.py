"""Byte ranges of a file to read ahead, merged (prefetch.py reads a library's
loader sections as one range where they lie close). Standard library only and
imports nothing.
"""
from __future__ import annotations

from collections.abc import Iterable

MERGE_GAP = 64 << 10  # ranges closer than this are read as one


def merge_spans(spans: Iterable[tuple[int, int]], gap: int = MERGE_GAP) -> list[list[int]]:
    """[offset, length] of the (start, end) ``spans``, sorted, with those less than ``gap`` apart read as one."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1] + gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [[start, end - start] for start, end in merged]
