"""Console output every stage shares: the progress interface the stages report to, and its rich drawing.

Stages report through ``Progress`` (a step begins, a tool printed a line, a
stack event arrived) and never print; tasks.py passes a ``ConsoleProgress``.
"""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape


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


class ConsoleProgress(Progress):
    """Prints each step; tool output lines (downloads, strips) show dimmed."""

    def __init__(self, console: Console, verbose: bool = False):
        self.console = console
        self.verbose = verbose

    def step(self, text: str) -> None:
        self.console.print(f"[bold cyan]==>[/] {escape(text)}")

    def line(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        # uv's own progress (downloads) is always worth a line; the rest only when verbose
        if self.verbose or text.startswith(("Downloading", "Downloaded", "Prepared", "Installed", "warning", "error")):
            self.console.print(f"    [dim]{escape(text)}[/]", highlight=False)
