"""Precompile bytecode for the target Python.

Lambda's /var/task and /opt are read-only and EFS is slow to write, so a
missing or stale .pyc is recompiled in memory at every cold start. We compile
with the target's own CPython version (bytecode differs per minor version) and
``--invalidation-mode unchecked-hash`` (PEP 552): the .pyc never goes stale
when timestamps are normalised, and the import system does not even stat the
source to check it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline import proc
from pipeline.files import bytecode_tag
from pipeline.interpreters import Interpreter
from pipeline.records import BytecodeReport

_ERROR = re.compile(r"\*\*\* Error compiling '(.+?)'")


@dataclass(frozen=True)
class BytecodeResult:
    compiled: bool
    python: str | None  # full version of the compiling interpreter
    files: int  # .pyc written
    failed: tuple[str, ...]  # sources that do not compile (Python 2 leftovers, templates)
    reason: str | None = None  # why nothing was compiled

    def as_json(self) -> dict:
        return {
            "compiled": self.compiled,
            "python": self.python,
            "invalidation_mode": "unchecked-hash" if self.compiled else None,
            "files": self.files,
            "failed": list(self.failed),
            "reason": self.reason,
        }

    def as_report(self) -> BytecodeReport:
        """What the manifest records of it."""
        return BytecodeReport.from_json(self.as_json())


def compile_tree(tree: Path, interpreter: Interpreter | None, reason: str | None = None, on_line=None) -> BytecodeResult:
    if interpreter is None:
        return BytecodeResult(compiled=False, python=None, files=0, failed=(), reason=reason or "no interpreter of the target version")
    tag = bytecode_tag(interpreter.version)
    cmd = [
        interpreter.path, "-I", "-m", "compileall", "-q", "-j", "0",
        "--invalidation-mode", "unchecked-hash",
        # record paths relative to the tree: the tree moves (staging dir, EFS
        # version dir) and the import system fixes co_filename on load anyway
        "-s", str(tree),
        str(tree),
    ]
    # PYTHONHASHSEED fixes the order of frozenset constants: byte-identical .pyc
    _, out = proc.run(cmd, what="compileall", env={"PYTHONHASHSEED": "0"}, on_line=on_line, check=False)
    written = sum(1 for _ in tree.rglob(f"*.{tag}.pyc"))
    return BytecodeResult(compiled=True, python=interpreter.version, files=written, failed=parse_failures(out, str(tree)))


def parse_failures(output: str, root: str) -> tuple[str, ...]:
    """Sources compileall could not compile, relative to the tree."""
    failed = []
    for line in output.splitlines():
        m = _ERROR.search(line)
        if m:
            path = m.group(1)
            failed.append(path[len(root) + 1 :] if path.startswith(root) else path)
    return tuple(sorted(failed))
