"""Hoist's build cache: a step whose inputs did not change is not done again.

It lives in the user's cache folder (``$HOIST_BUILD_CACHE``, else
``$HOIST_CACHE/build``, else ``$XDG_CACHE_HOME/hoist/build``, else
``~/.cache/hoist/build``), beside the
emulation roots, so a fresh clone or a new output folder reuses it; ``invoke
cache`` shows where it is and how big, ``invoke cache --clear`` empties it.

Five kinds of entries, each keyed by everything that could change it
(docs/design.md, 3.15):

- ``pyc``: one source's bytecode. Key: the source's sha256, its path in the
  tree (the .pyc records it), the compiling CPython's full version,
  ``BUILDER_VERSION``.
- ``strip``: one shared library with its symbol tables cut, or why it was
  left alone. Key: the library's sha256, builder/elfstrip.py's own sha256,
  ``BUILDER_VERSION``.
- ``check``: the import check of one set (builder/importcheck.py). Key: every
  file of the checked tree and of the files slimming put aside (path, mode,
  sha256), the other sets' content hashes (on the path after it), the modules
  and the hot modules, the runtime's identity, the import script,
  ``BUILDER_VERSION``. Any change to the set reruns it: a new package can turn
  a failed optional import into a success, a changed file can change what an
  import opens.
- ``unit``: one import run of a check (the hot modules, or the others). Key:
  its modules and hot modules, the runtime's identity, the import script,
  ``BUILDER_VERSION``; the entry holds what the run depended on and is used
  only while that is unchanged (its signature). The latest four runs of each
  kind are also remembered, newest first, under the same key without the
  modules (the others': with the hot modules' names): when modules were only
  added, the newest usable one is reused and the new ones imported in a run
  of their own (hot ones noting their hot set). A module's import can depend on what was
  imported before it in the process; a new module that fails alone reruns
  the whole run (as with the cache empty), and a pair that fails only
  together is left unseen, as between the two runs (builder/importcheck.py,
  ``_runs``).

- ``archive``: one archive of an efs tree's hot files (builder/archives.py).
  Key: each file's path, mode and sha256, in order, the sha256 of the
  format's code (the handler's archive.py) and of the packer's,
  ``BUILDER_VERSION``.

Every file entry has a sidecar with its sha256, checked as it is copied out
(copies, never links: nothing the build does to a tree reaches the cache); a
JSON entry carries the sha256 of its body. A damaged entry is removed and the
step done again, never used. Entries are written to a temporary name and
renamed, so an interrupted build leaves none half-written. An entry a build
uses gets its mtime set to now: ``invoke cache --prune DAYS`` removes those no
build has used for that long (nothing trims the cache by itself).
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.emulation import cache_dir

FORMAT = "1"  # the cache's own layout: a new format starts a new folder
KINDS = ("pyc", "strip", "check", "unit", "archive")
_names = itertools.count()  # temporary names of entries being written


def root() -> Path:
    """$HOIST_BUILD_CACHE, else the build folder of Hoist's cache (pipeline/emulation.py's cache_dir)."""
    base = Path(os.environ["HOIST_BUILD_CACHE"]) if os.environ.get("HOIST_BUILD_CACHE") else cache_dir() / "build"
    return base / f"v{FORMAT}"


def key(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()


@dataclass
class Counts:
    """What a build found in the cache, per kind: hits, misses, damaged entries (removed and redone)."""

    hits: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)

    def hit(self, kind: str) -> None:
        self.hits[kind] = self.hits.get(kind, 0) + 1

    def miss(self, kind: str) -> None:
        self.misses[kind] = self.misses.get(kind, 0) + 1


class Store:
    """The cache folder: files and JSON documents by (kind, key)."""

    def __init__(self, where: Path | None = None, on_line: Callable[[str], None] | None = None):
        self.root = where or root()
        self.counts = Counts()
        self.say = on_line or (lambda line: None)

    def _path(self, kind: str, k: str) -> Path:
        return self.root / kind / k[:2] / k

    def _damaged(self, kind: str, k: str, why: str) -> None:
        self.counts.damaged.append(f"{kind}/{k[:16]}: {why}")
        self.say(f"cache entry {kind}/{k[:16]} is damaged ({why}): removed, done again")
        for suffix in ("", ".sha256", ".json"):
            Path(str(self._path(kind, k)) + suffix).unlink(missing_ok=True)

    def _write(self, path: Path, write: Callable[[Path], object]) -> None:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        # a name no other writer uses (this process and thread, a counter): tempfile.mkstemp's random names had been
        # half the time of storing a cold build's 4,000 .pyc
        tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{next(_names)}")
        try:
            write(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # ---------------------------------------------------------------- files

    def get_file(self, kind: str, k: str, dest: Path) -> bool:
        """Copy the entry to ``dest`` (checked against its sha256 on the way); False when absent or damaged."""
        src = self._path(kind, k)
        try:
            want = Path(str(src) + ".sha256").read_text().strip()
        except OSError:
            self.counts.miss(kind)
            return False
        digest = hashlib.sha256()
        tmp = dest.with_name(f".{dest.name}.cache-{os.getpid()}")
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while block := fin.read(1 << 20):
                    digest.update(block)
                    fout.write(block)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._damaged(kind, k, f"unreadable: {exc}")
            self.counts.miss(kind)
            return False
        if digest.hexdigest() != want:
            tmp.unlink(missing_ok=True)
            self._damaged(kind, k, "content differs from its recorded sha256")
            self.counts.miss(kind)
            return False
        if dest.exists():  # a file replaced in place (a stripped library) keeps its mode
            os.chmod(tmp, stat.S_IMODE(dest.stat().st_mode))
        os.replace(tmp, dest)
        _used(src)
        self.counts.hit(kind)
        return True

    def put_file(self, kind: str, k: str, src: Path) -> None:
        path = self._path(kind, k)
        digest = hashlib.sha256()

        def copy(tmp: Path) -> None:  # the sidecar's sha256 is of the bytes written, taken as they are written
            with open(src, "rb") as fin, open(tmp, "xb") as fout:
                while block := fin.read(1 << 20):
                    digest.update(block)
                    fout.write(block)

        self._write(path, copy)
        self._write(Path(str(path) + ".sha256"), lambda tmp: tmp.write_text(digest.hexdigest() + "\n"))

    # ---------------------------------------------------------------- documents

    def get_json(self, kind: str, k: str, count: bool = True) -> Any | None:
        """The document, or None when absent or damaged; ``count``: a hit or miss in ``counts`` (else the caller counts)."""
        path = Path(str(self._path(kind, k)) + ".json")
        tally = self.counts.miss if count else (lambda kind: None)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            tally(kind)
            return None
        except (OSError, ValueError) as exc:
            self._damaged(kind, k, f"not JSON: {exc}")
            tally(kind)
            return None
        body = json.dumps(doc.get("body") if isinstance(doc, dict) else None)  # in its own order: what it holds goes into manifests as it is
        if not isinstance(doc, dict) or doc.get("sha256") != hashlib.sha256(body.encode()).hexdigest():
            self._damaged(kind, k, "body differs from its recorded sha256")
            tally(kind)
            return None
        _used(path)
        if count:
            self.counts.hit(kind)
        return doc["body"]

    def put_json(self, kind: str, k: str, body: Any) -> None:
        text = json.dumps(body)
        doc = {"sha256": hashlib.sha256(text.encode()).hexdigest(), "body": body}
        self._write(Path(str(self._path(kind, k)) + ".json"), lambda tmp: tmp.write_text(json.dumps(doc)))


@dataclass(frozen=True)
class Usage:
    """What ``invoke cache`` shows: where the cache is, and per kind its entries and bytes."""

    root: Path
    entries: dict[str, int]
    bytes: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


def _entries(base: Path) -> Iterator[tuple[str, list[tuple[Path, os.stat_result]]]]:
    """Each entry of the cache at ``base``: its kind and its files (its key's file, sha256 sidecar, JSON document);
    files being written (``.tmp-*``) belong to none."""
    for kind in KINDS:
        for folder, _, files in os.walk(base / kind):
            groups: dict[str, list[tuple[Path, os.stat_result]]] = {}
            for name in files:
                if not name.startswith(".tmp-"):
                    path = Path(folder, name)
                    groups.setdefault(name.split(".", 1)[0], []).append((path, path.lstat()))
            for members in groups.values():
                yield kind, members


def usage(where: Path | None = None) -> Usage:
    base = where or root()
    entries = {k: 0 for k in KINDS}
    sizes = {k: 0 for k in KINDS}
    for kind, members in _entries(base):
        entries[kind] += 1
        sizes[kind] += sum(st.st_size for _, st in members)
    return Usage(base, entries, sizes)


def _used(path: Path) -> None:
    """Mark an entry used now (its mtime): what ``prune`` keeps. A cache on a read-only medium is used as it is."""
    with contextlib.suppress(OSError):
        os.utime(path)


def prune(days: float, where: Path | None = None, now: float | None = None) -> Usage:
    """Remove the entries no build has used (or made) in the last ``days``; what was removed. A build that then
    misses one does that step again."""
    base = where or root()
    cutoff = (time.time() if now is None else now) - days * 86400
    entries = {k: 0 for k in KINDS}
    sizes = {k: 0 for k in KINDS}
    for kind, members in _entries(base):
        if max(st.st_mtime for _, st in members) >= cutoff:
            continue
        for path, st in members:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                sizes[kind] += st.st_size
        entries[kind] += 1
    return Usage(base, entries, sizes)


def clear(where: Path | None = None) -> Usage:
    """Empty the cache; what it held."""
    held = usage(where)
    shutil.rmtree(where or root(), ignore_errors=True)
    return held
