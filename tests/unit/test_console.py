"""The console's progress: the time since the task began on every step, and a line every so often during a long wait."""
from __future__ import annotations

import io
import time

from rich.console import Console

from pipeline.console import ConsoleProgress, Progress, clock


def test_elapsed_time_reads_as_minutes_and_seconds():
    assert [clock(s) for s in (0, 7.9, 65, 600, 3725)] == ["0:00", "0:07", "1:05", "10:00", "1:02:05"]


def test_every_step_says_how_long_the_task_has_taken():
    out = io.StringIO()
    now = [1000.0]
    progress = ConsoleProgress(Console(file=out, width=200), now=lambda: now[0])
    progress.step("[efs] installing 12 packages")
    now[0] += 252
    progress.step("[efs] importing every top-level module")
    assert out.getvalue().splitlines() == ["==>  0:00 [efs] installing 12 packages", "==>  4:12 [efs] importing every top-level module"]


def test_a_long_wait_says_it_is_still_at_it_until_it_ends():
    out = io.StringIO()
    progress = ConsoleProgress(Console(file=out, width=200), every_s=0.05)
    with progress.waiting("importing the efs set's modules in Debian trixie's CPython 3.13 on aarch64"):
        deadline = time.monotonic() + 30
        while out.getvalue().count("still importing") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    said = out.getvalue().splitlines()
    assert len(said) >= 2 and all("still importing the efs set's modules in Debian trixie's CPython 3.13 on aarch64: 0:0" in line for line in said), said
    time.sleep(0.2)  # four periods: the ticker stopped with the block
    assert out.getvalue().splitlines() == said
    with Progress().waiting("anything"):  # a stage's default progress says nothing
        pass
