"""A wrapper put over a standard-library function or method while the hot set lasts, and taken off at release
(standard library only): hotmeta.py's over ``PathDistribution.read_text``, hotlines.py's over ``tokenize.open`` and
``linecache.updatecache``.

The wrapper keeps the real function as ``__hoist_real__`` and its name, doc and module (``functools.update_wrapper``).
A function wrapped already is not wrapped again; one that another library put over ours is left alone at release
(ours, still under it, then falls through to the real function, as its own code says)."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def _current(owner: Any, name: str) -> Any:
    # a class's own attribute, not one it inherits: the method this wraps is the class's
    return vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name, None)


def wrap(owner: Any, name: str, make: Callable[[Any], Any]) -> bool:
    """Put ``make(real)`` over ``owner.name``; False when there is nothing of that name to wrap."""
    real = _current(owner, name)
    if real is None:
        return False
    if not hasattr(real, "__hoist_real__"):
        ours: Any = functools.update_wrapper(make(real), real)
        ours.__hoist_real__ = real
        setattr(owner, name, ours)
    return True


def unwrap(owner: Any, name: str) -> None:
    """Put the real ``owner.name`` back when ours is what is there."""
    ours = _current(owner, name)
    if ours is not None and hasattr(ours, "__hoist_real__"):
        setattr(owner, name, ours.__hoist_real__)
