"""Answer importlib.metadata's reads of the tree's distributions from the hot set (standard library only).

``import torch`` asks importlib.metadata for its backends' entry points, and
that opens the ``entry_points.txt`` of every distribution on sys.path, one
after the other: on EFS a lookup of the folder, a lookup of the file, an open
and a read for each, about 35 ms for the demo tree at 1 ms a round trip. The
build's import check saw those files read, so the hot set holds them, with
the listing of their folders (builder/archives.py).

``install`` replaces ``importlib.metadata.PathDistribution.read_text`` with a
wrapper (once importlib.metadata is imported: importing it costs about 20 ms,
which a handler that never asks should not pay). For a file of a distribution
folder the hot set knows it answers what the file system would: the text,
decoded as ``pathlib.Path.read_text(encoding="utf-8")`` decodes it, or None
for a name the folder's recorded listing does not have or names as a folder
(read_text's own answer to FileNotFoundError and IsADirectoryError).
Everything else goes to the real method, on EFS: a file the hot set does not
hold, a folder it has no listing of, a name with a ``/``.

What is *not* answered from memory: the listings of sys.path's folders
(``FastPath.children``, one readdir each per process). The recorded listing is
sorted, a real one comes in the file system's order, and importlib.metadata
gives distributions in that order (and ``entry_points()`` keeps the first of
two with one name), so the answers stay the file system's, in its order.

``release`` (activate.release, at the end of init) puts the real method back
and keeps no reference to the hot set: a call after it reads the file system,
as without Hoist (a wrapper someone else installed over ours is left alone,
and ours then falls through to the real method).
"""
from __future__ import annotations

import contextlib
import io
import sys
import threading
from pathlib import PurePath
from types import ModuleType
from typing import Any

from . import wrapping
from .hotimport import FILE, HotSet

MODULE = "importlib.metadata"
_lock = threading.Lock()
_hot: HotSet | None = None  # the hot set, from install to release


def text(data: bytes | bytearray | memoryview) -> str:
    """A file's bytes as ``pathlib.Path.read_text(encoding="utf-8")`` gives them: universal newlines, and a byte
    that is not UTF-8 raises the same UnicodeDecodeError."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8").read()


def answer(hot: HotSet, folder: str, filename: Any) -> tuple[bool, str | None]:
    """(True, what ``PathDistribution.read_text(filename)`` returns for the distribution folder ``folder``) when the
    hot set knows it; (False, None) when only the file system does."""
    if not isinstance(filename, str) or filename in ("", ".", "..") or "/" in filename or "\0" in filename:
        return False, None  # the folder itself, a path below it, a name open() refuses: the real method's business
    data = hot.files.get(f"{folder}/{filename}")
    if data is not None:
        return True, text(data)
    listing = hot.dirs.get(folder)
    if listing is None or listing.get(filename) == FILE:
        return False, None  # a folder it has no listing of, or a file it does not hold
    return True, None  # not in the folder (FileNotFoundError), or a folder (IsADirectoryError): read_text says None


def _read_text(real: Any) -> Any:
    def read_text(self, filename):
        hot, path = _hot, getattr(self, "_path", None)
        if hot is not None and isinstance(path, PurePath):  # zipfile.Path (a zipped sys.path entry): the real method
            known, got = answer(hot, str(path), filename)
            if known:
                return got
        return real(self, filename)

    return read_text


def _patch(md: ModuleType) -> None:
    cls = getattr(md, "PathDistribution", None)
    if isinstance(cls, type):  # else not the importlib.metadata this knows
        wrapping.wrap(cls, "read_text", _read_text)


def _unpatch(md: ModuleType) -> None:
    cls = getattr(md, "PathDistribution", None)
    if isinstance(cls, type):
        wrapping.unwrap(cls, "read_text")


class _Watch:
    """On sys.meta_path (first) until importlib.metadata is imported: patches it as soon as it has run, then leaves."""

    @classmethod
    def find_spec(cls, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != MODULE:
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is cls or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        real = getattr(loader, "exec_module", None)
        if real is None or isinstance(loader, type):  # a loader shared by every module (frozen, built-in): left alone
            return spec

        def exec_module(module: ModuleType) -> None:
            try:
                real(module)
            finally:
                vars(loader).pop("exec_module", None)  # the loader as it was
            with _lock:
                if _hot is not None:
                    _patch(module)
                _unwatch()

        with contextlib.suppress(AttributeError):  # a loader without instance attributes: left alone
            loader.exec_module = exec_module
        return spec


def _unwatch() -> None:
    while _Watch in sys.meta_path:
        sys.meta_path.remove(_Watch)


def install(hot: HotSet) -> None:
    """Answer importlib.metadata's reads of ``hot``'s distribution folders from it, from now until ``release``."""
    global _hot  # noqa: PLW0603 - one hot set per execution environment
    with _lock:
        _hot = hot
        md = sys.modules.get(MODULE)
        if md is not None and hasattr(md, "PathDistribution"):
            _patch(md)
        elif _Watch not in sys.meta_path:
            sys.meta_path.insert(0, _Watch)


def release() -> None:
    """importlib.metadata reads the file system again, and nothing here holds the hot set."""
    global _hot  # noqa: PLW0603
    with _lock:
        _hot = None
        _unwatch()
        md = sys.modules.get(MODULE)
        if md is not None:
            _unpatch(md)
