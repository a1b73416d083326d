"""Small file helpers every stage uses: defined once here.

- ``atomic_write_text`` / ``_bytes`` / ``_json``: write through a temp file in
  the same folder and a rename, so a reader sees the old file or the new one,
  never a half-written one (the guide's "write to a temp path and rename").
- ``sha256_file``: the hex sha256 of a file's bytes, read in blocks.
- ``Digests``: sha256_file remembered for one build, so the steps that each
  need every file's sha256 (the cache keys, RECORD, the manifest) read it once.
- ``is_elf``: whether a file starts with the ELF magic.
- ``bytecode_tag``: the ``cache_tag`` CPython ``X.Y`` gives its .pyc files.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ELF_MAGIC = b"\x7fELF"


def _temp_for(path: Path) -> Path:
    # same folder (a rename across file systems is not atomic), hidden, one per process
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename; ``mode`` sets the permission bits first."""
    tmp = _temp_for(path)
    try:
        tmp.write_bytes(data)
        if mode is not None:
            tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temp file and a rename."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, doc: Any, *, indent: int | None = 1, sort_keys: bool = False) -> str:
    """Write ``doc`` as JSON and a final newline through a temp file and a rename; return the text written."""
    text = json.dumps(doc, indent=indent, sort_keys=sort_keys) + "\n"
    atomic_write_text(path, text)
    return text


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of the file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class Digests:
    """``sha256_file`` remembered for one build, per file (device and inode: a file moved aside and back is
    the same file), while its size and mtime are the ones it had when hashed.

    A file replaced (a new inode) or written into (mtime) is hashed again. The steps that change a tree's
    files replace them (atomic writes, renames, the build cache's copies), never write into them: a tree's
    unchanged files are hard links to uv's cache (builder/install.py).
    """

    def __init__(self) -> None:
        self._known: dict[tuple[int, int], tuple[tuple[int, int], str]] = {}
        self.hashed = 0  # files read and hashed (the rest were remembered)

    def sha256(self, path: str | os.PathLike[str]) -> str:
        st = os.stat(path)
        known = self._known.get((st.st_dev, st.st_ino))
        if known is not None and known[0] == (st.st_size, st.st_mtime_ns):
            return known[1]
        digest = sha256_file(path)
        after = os.stat(path)
        if (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):  # not changed while read
            self._known[(st.st_dev, st.st_ino)] = ((st.st_size, st.st_mtime_ns), digest)
        self.hashed += 1
        return digest

    def many(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """The sha256 of each path, in order, hashed on every CPU (hashlib releases the GIL on large buffers)."""
        todo = list(paths)
        workers = max(1, min(os.cpu_count() or 1, len(todo)))
        found: list[str] = [""] * len(todo)

        def work(start: int) -> None:  # every workers-th path: one loop per thread, no future per file (a thread pool ignores chunksize)
            for i in range(start, len(todo), workers):
                found[i] = self.sha256(todo[i])

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done in [pool.submit(work, start) for start in range(workers)]:
                done.result()
        return found


def is_elf(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts with the ELF magic; a file that cannot be read is not ELF."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == ELF_MAGIC
    except OSError:
        return False


def bytecode_tag(version: str | tuple[int, ...]) -> str:
    """``sys.implementation.cache_tag`` of CPython ``version`` ("3.12.4" or (3, 12)): "cpython-312"."""
    parts = version.split(".") if isinstance(version, str) else [str(p) for p in version]
    return "cpython-" + "".join(parts[:2])
