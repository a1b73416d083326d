"""Precompile bytecode for the target Python.

Lambda's /var/task and /opt are read-only and EFS is slow to write, so a
missing or stale .pyc is recompiled in memory at every cold start. We compile
with the target's own CPython version (bytecode differs per minor version) and
``--invalidation-mode unchecked-hash`` (PEP 552): the .pyc never goes stale
when timestamps are normalised, and the import system does not even stat the
source to check it.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pipeline import proc
from pipeline.files import Digests, bytecode_tag
from pipeline.interpreters import Interpreter
from pipeline.records import BytecodeReport

from . import cache

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


def compile_tree(tree: Path, interpreter: Interpreter | None, reason: str | None = None, on_line=None, store: cache.Store | None = None,
                 version: str = "", digests: Digests | None = None) -> BytecodeResult:
    """Compile every source of ``tree``. ``store``: the build cache (builder/cache.py) holds each .pyc by
    its source's sha256 and path, the interpreter's version and ``version`` (the builder's): only the
    sources it does not hold are compiled."""
    if interpreter is None:
        return BytecodeResult(compiled=False, python=None, files=0, failed=(), reason=reason or "no interpreter of the target version")
    tag = bytecode_tag(interpreter.version)
    cmd = [
        interpreter.path, "-I", "-m", "compileall", "-q", "-j", "0",
        "--invalidation-mode", "unchecked-hash",
        # record paths relative to the tree: the tree moves (staging dir, EFS
        # version dir) and the import system fixes co_filename on load anyway
        "-s", str(tree),
    ]
    missing: list[tuple[str, str]] = []  # (source, cache key) compiled here
    sha = (digests or Digests()).sha256
    if store is None:
        cmd.append(str(tree))
    else:
        for rel in _sources(tree):
            entry = cache.key("pyc", version, interpreter.version, rel, sha(tree / rel))
            pyc = tree / pyc_path(rel, tag)
            pyc.parent.mkdir(exist_ok=True)
            if not store.get_file("pyc", entry, pyc):
                missing.append((rel, entry))
    out = ""
    if store is None:
        _, out = _compileall(cmd, on_line)
    elif missing:
        # compileall compiles the files of a listing (-i) one after the other (-j parallelizes folders only):
        # one listing per CPU, compiled side by side
        parts = [missing[i::os.cpu_count() or 1] for i in range(min(os.cpu_count() or 1, len(missing)))]
        with contextlib.ExitStack() as stack:
            listings = []
            for part in parts:
                listing = stack.enter_context(tempfile.NamedTemporaryFile("w", prefix="hoist-compile-", suffix=".txt"))
                listing.write("".join(f"{tree / rel}\n" for rel, _ in part))
                listing.flush()
                listings.append(listing.name)
            with ThreadPoolExecutor(len(listings)) as pool:
                out = "\n".join(text for _, text in pool.map(lambda name: _compileall([*cmd, "-i", name], on_line), listings))
    if store is not None:
        for rel, entry in missing:
            pyc = tree / pyc_path(rel, tag)
            if pyc.is_file():
                store.put_file("pyc", entry, pyc)
        for folder in tree.rglob("__pycache__"):  # made for sources that did not compile
            with contextlib.suppress(OSError):
                folder.rmdir()
    written = sum(1 for _ in tree.rglob(f"*.{tag}.pyc"))
    return BytecodeResult(compiled=True, python=interpreter.version, files=written, failed=parse_failures(out, str(tree)))


def _compileall(cmd: list[str], on_line) -> tuple[int, str]:
    # PYTHONHASHSEED fixes the order of frozenset constants: byte-identical .pyc
    return proc.run(cmd, what="compileall", env={"PYTHONHASHSEED": "0"}, on_line=on_line, check=False)


def _sources(tree: Path) -> list[str]:
    """The .py files compileall compiles: every folder but symlinked ones, sorted."""
    found = []
    for root, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        rel = os.path.relpath(root, tree).replace(os.sep, "/")
        found += [f if rel == "." else f"{rel}/{f}" for f in sorted(files) if f.endswith(".py")]
    return found


def pyc_path(source: str, tag: str) -> str:
    """Where the import system looks for ``source``'s bytecode (PEP 3147)."""
    folder, _, name = source.rpartition("/")
    return f"{folder + '/' if folder else ''}__pycache__/{name[:-3]}.{tag}.pyc"


def parse_failures(output: str, root: str) -> tuple[str, ...]:
    """Sources compileall could not compile, relative to the tree."""
    failed = []
    for line in output.splitlines():
        m = _ERROR.search(line)
        if m:
            path = m.group(1)
            failed.append(path[len(root) + 1 :] if path.startswith(root) else path)
    return tuple(sorted(failed))
