"""The cold-start instrument: a fresh FUSE mount that charges a round trip per
operation and counts what it served (needs /dev/fuse and libfuse2)."""
from __future__ import annotations

import json
import os
import time

import pytest

from bench.coldstart import _mounted, _unmount

pytestmark = [pytest.mark.slow]


def test_every_operation_waits_and_is_counted_and_a_new_mount_starts_cold(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("x = 1\n" * 1000)
    work = tmp_path / "work"
    work.mkdir()
    for _ in range(2):  # the second mount must not remember the first
        mnt, proc, stats = _mounted(src, 25.0, 0, work)
        try:
            started = time.perf_counter()
            data = (mnt / "pkg" / "mod.py").read_bytes()
            elapsed = time.perf_counter() - started
            os.stat(mnt / "pkg" / "mod.py")  # cached by the kernel, like an NFS client would
        finally:
            _unmount(mnt, proc)
        counts = json.loads(stats.read_text())
        assert data == b"x = 1\n" * 1000
        assert counts["ops"]["open"] == 1 and counts["ops"]["read"] >= 1 and counts["ops"]["getattr"] >= 2
        assert counts["bytes_read"] == 6000
        assert elapsed >= 3 * 0.025  # lookup(s), open and read each waited a round trip
