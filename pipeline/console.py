"""Console output every stage shares: the progress interface the stages report to, and its rich drawing.

Stages report through ``Progress`` (a step begins, a tool printed a line, a
stack event arrived, a long wait begins) and never print; tasks.py passes a
``ConsoleProgress``, which puts the time since the task began on every step,
and a line every half minute while a long wait (``waiting``) lasts.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape


def clock(seconds: float) -> str:
    """Elapsed time as a person reads it: 0:07, 4:12, 1:02:05."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def counted(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the word for that many: "1 package", "2 packages", "3 stripped libraries" (``many``)."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


class Progress:
    """Where a stage reports its steps; tasks.py draws it with rich."""

    def step(self, text: str) -> None:  # a new phase begins
        pass

    def line(self, text: str) -> None:  # a line of a tool's own progress output
        pass

    def event(self, ev: dict[str, Any]) -> None:  # a CloudFormation stack event (deploy, teardown)
        pass

    @contextlib.contextmanager
    def waiting(self, text: str) -> Iterator[None]:  # a call that prints nothing for minutes runs inside (an import check under QEMU)
        yield


class ConsoleProgress(Progress):
    """Prints each step; tool output lines (downloads, strips) show dimmed."""

    def __init__(self, console: Console, verbose: bool = False, every_s: float = 30.0, now: Callable[[], float] = time.monotonic):
        self.console = console
        self.verbose = verbose
        self.every_s = every_s  # a waiting() block says it is still at it this often
        self.now = now
        self.started = now()

    def step(self, text: str) -> None:
        self.console.print(f"[bold cyan]==>[/] [dim]{clock(self.now() - self.started):>5}[/] {escape(text)}")

    @contextlib.contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        """A line every ``every_s`` while the block runs: how long this wait and the whole task have taken."""
        began, done = self.now(), threading.Event()

        def tick() -> None:
            while not done.wait(self.every_s):
                now = self.now()
                self.console.print(f"    [dim]{clock(now - self.started):>5}  still {escape(text)}: {clock(now - began)} so far[/]", highlight=False)

        ticker = threading.Thread(target=tick, daemon=True, name="progress")
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()

    def line(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        # uv's own progress (downloads) is always worth a line; the rest only when verbose
        if self.verbose or text.startswith(("Downloading", "Downloaded", "Prepared", "Installed", "warning", "error")):
            self.console.print(f"    [dim]{escape(text)}[/]", highlight=False)
