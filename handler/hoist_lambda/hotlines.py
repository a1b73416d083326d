"""Answer linecache's reads of the hot set's sources from memory (standard library only).

Torch reads some of its own sources while it imports: it captures tracebacks
with their lines (``traceback.extract_stack``), ``warnings`` shows the line
that warned, and its config modules read themselves with ``inspect.getsource``.
All of them go through ``linecache``, which opens the file whenever it exists,
though the hot set holds it (the build's import check saw it read): for the
demo, 13 files, 42 round trips one after the other, about 50 ms at 1 ms.

``install`` wraps ``linecache.updatecache`` and ``tokenize.open``: while
updatecache runs on a thread, ``tokenize.open`` of a file the hot set holds
gives a text stream over its bytes in memory, made as tokenize.open makes one
(the encoding from the coding cookie or the BOM, line buffering, mode "r").
Everything else is linecache's own: it still stats the file (the lookups
ahead have put it in the attribute cache), so its cache holds the file's own
size and mtime, and a file the hot set does not hold, or a call of
``tokenize.open`` from anywhere but updatecache, reads the file system.

``release`` (activate.release, at the end of init) puts both functions back
unless another wrapper was put over one of them (ours then falls through),
and keeps no reference to the hot set.
"""
from __future__ import annotations

import io
import linecache
import threading
import tokenize
from typing import Any

from . import wrapping
from .hotimport import HotSet

_lock = threading.Lock()
_hot: HotSet | None = None  # the hot set, from install to release
_inside = threading.local()  # .depth: updatecache calls running on this thread


def source(data: bytes | bytearray | memoryview, filename: str) -> io.TextIOWrapper:
    """A source's bytes as ``tokenize.open(filename)`` gives them (a SyntaxError for a bad coding cookie, naming the file)."""
    buffer = io.BytesIO(data)
    buffer.name = filename  # detect_encoding names the file in its errors, as with a real one
    encoding, _ = tokenize.detect_encoding(buffer.readline)
    buffer.seek(0)
    text = io.TextIOWrapper(buffer, encoding, line_buffering=True)
    text.mode = "r"  # type: ignore[misc]  # as tokenize.open sets it
    return text


def _updatecache(real: Any) -> Any:
    def updatecache(filename, module_globals=None):
        _inside.depth = getattr(_inside, "depth", 0) + 1
        try:
            return real(filename, module_globals)
        finally:
            _inside.depth -= 1

    return updatecache


def _open(real: Any) -> Any:
    def open(filename):  # tokenize.open's own name
        hot, depth = _hot, getattr(_inside, "depth", 0)
        if hot is not None and depth > 0 and isinstance(filename, str):
            data = hot.files.get(filename)
            if data is not None:
                return source(data, filename)
        return real(filename)

    return open


def install(hot: HotSet) -> None:
    """Answer linecache's reads of the files ``hot`` holds from it, from now until ``release``."""
    global _hot  # noqa: PLW0603 - one hot set per execution environment
    with _lock:
        _hot = hot
        wrapping.wrap(tokenize, "open", _open)
        wrapping.wrap(linecache, "updatecache", _updatecache)


def release() -> None:
    """linecache reads the file system again, and nothing here holds the hot set."""
    global _hot  # noqa: PLW0603
    with _lock:
        _hot = None
        wrapping.unwrap(linecache, "updatecache")
        wrapping.unwrap(tokenize, "open")
