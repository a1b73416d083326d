"""The one place the pipeline runs other programs (uv, compilers, rsync, ssh, docker).

Three ways, by what the caller needs of the program:

- ``run``: to the end, its output (stdout and stderr merged) streamed line by
  line to a callback (progress for the user) while the last lines are kept, so
  a failure says what the tool printed last; a failure raises CommandError
  unless ``check=False``.
- ``capture``: to the end, stdout and stderr kept apart for the caller to read
  (a probe, a query); never raises on the exit code, the caller decides what it means.
- ``start``: a long-running program (a function under test) whose merged output
  the caller reads while it runs; the caller owns the process.

Environment, the same for all three: ``env`` is laid over this process's
environment; with ``clean_env=True`` it is the whole environment instead (a
child that must not see ours). ``OSError`` (no such program) reaches the
caller of ``capture`` and ``start``, and ``TimeoutExpired`` of ``capture``
(``timeout``) is re-exported here, so callers need not import subprocess.
"""
from __future__ import annotations

import collections
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .errors import CommandError

TAIL_LINES = 25

TimeoutExpired = subprocess.TimeoutExpired
CompletedProcess = subprocess.CompletedProcess
Popen = subprocess.Popen
Argv = Sequence["str | os.PathLike[str]"]


def _argv(cmd: Argv) -> list[str]:
    return [os.fspath(c) for c in cmd]


def _environment(env: Mapping[str, str] | None, clean_env: bool) -> dict[str, str] | None:
    if clean_env:
        return dict(env or {})
    return None if env is None else {**os.environ, **env}


def capture(cmd: Argv, *, env: Mapping[str, str] | None = None, clean_env: bool = False, timeout: float | None = None,
            input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to the end; return its exit code, stdout and stderr (text). Never raises on the exit code."""
    return subprocess.run(_argv(cmd), input=input, capture_output=True, text=True, errors="replace", check=False, timeout=timeout,
                          env=_environment(env, clean_env), cwd=cwd)


def start(cmd: Argv, *, env: Mapping[str, str] | None = None, clean_env: bool = False, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start ``cmd`` with stdout and stderr merged into one text pipe (``.stdout``); the caller reads, waits and stops it."""
    return subprocess.Popen(_argv(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            env=_environment(env, clean_env), cwd=cwd)


def run(
    cmd: Argv,
    *,
    what: str,
    where: str | None = None,
    fix: str | None = None,
    env: Mapping[str, str] | None = None,
    clean_env: bool = False,
    cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    check: bool = True,
) -> tuple[int, str]:
    """Run ``cmd``; return (exit code, combined output). Raise CommandError on failure.

    Text mode reads ``\\r`` as a line end too, so a progress meter's updates arrive
    as lines. Interrupted (Ctrl-C, a signal turned into an exception), the program is
    killed before the exception goes on.
    """
    argv = _argv(cmd)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    lines: list[str] = []
    try:
        proc = start(argv, env=env, clean_env=clean_env, cwd=cwd)
    except FileNotFoundError:
        raise CommandError(f"{what}: program {argv[0]!r} not found", where=where, fix=fix or f"install {argv[0]} (python3 -m pip install -r requirements/tooling.txt)") from None
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            tail.append(line)
            if on_line:
                on_line(line)
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
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
