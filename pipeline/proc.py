"""The one place the pipeline runs other programs (uv, compilers, strip).

Output is streamed line by line to a callback (progress for the user) and the
last lines are kept, so a failure says what the tool printed last.
"""
from __future__ import annotations

import collections
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import CommandError

TAIL_LINES = 25


def run(
    cmd: Sequence[str | os.PathLike],
    *,
    what: str,
    where: str | None = None,
    fix: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    check: bool = True,
) -> tuple[int, str]:
    """Run ``cmd``; return (exit code, combined output). Raise CommandError on failure."""
    argv = [str(c) for c in cmd]
    full_env = None if env is None else {**os.environ, **env}
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    lines: list[str] = []
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, cwd=cwd, text=True, errors="replace")
    except FileNotFoundError:
        raise CommandError(f"{what}: program {argv[0]!r} not found", where=where, fix=fix or f"install {argv[0]} (python3 -m pip install -r requirements/tooling.txt)") from None
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        lines.append(line)
        tail.append(line)
        if on_line:
            on_line(line)
    code = proc.wait()
    if check and code != 0:
        raise CommandError(f"{what} failed (exit {code}): {' '.join(argv[:6])}{' ...' if len(argv) > 6 else ''}", output_tail="\n".join(tail), returncode=code, where=where, fix=fix)
    return code, "\n".join(lines)


def uv_bin() -> str:
    """The uv pinned in requirements/tooling.txt (its wheel ships the binary)."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise CommandError("uv is not installed", fix="python3 -m pip install -r requirements/tooling.txt") from None
        return found
