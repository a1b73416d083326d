"""SnapStart: what runs before the snapshot and after each restore (standard library only at import).

One call at the end of a handler module's init, after its imports and its model load:

    from hoist_lambda import snapstart
    snapstart.prepare(warm=lambda: classify(SAMPLE))   # warm: one inference on a known input

Before the snapshot (the module's init has imported torch and loaded the model by then):

1. ``warm()``: one inference, so the lazy kernels and allocator pools are in the snapshot;
2. ``activate.release()``: the hot set's memory, if any, is not snapshotted.

After each restore, in this order:

1. reseed Python's ``random``, and numpy's and torch's generators when those are
   already imported (never imported here): every environment restored from one
   snapshot would otherwise draw the same numbers. The kernel's RNG is reseeded
   by Lambda itself (lambda-facts.md, SnapStart);
2. drop cached clients (``aws.s3``): a connection made before the snapshot is
   not one after the restore; the next request makes a fresh client;
3. the caller's own ``after_restore`` callables.

The hooks are registered with the runtime's ``snapshot_restore_py``
(``register_before_snapshot``, ``register_after_restore``) when the runtime
provides it: AWS's runtime client (awslambdaric) runs the before-snapshot
callables after init when AWS_LAMBDA_INITIALIZATION_TYPE is ``snap-start``, in
reverse order of registration, then waits on ``/runtime/restore/next`` and runs
the after-restore callables in order. Without that module (a local run, a
runtime without SnapStart) they are kept here and ``run_before_snapshot`` /
``run_after_restore`` run them, as the runtime would. Each hook's duration is
kept for ``report()``: restore plus after-restore hooks must end within 10 s.
"""
from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from . import activate, aws
from .log import log

INIT_TYPE = "AWS_LAMBDA_INITIALIZATION_TYPE"  # "snap-start" when the version's init is being snapshotted

_before: list[Callable[[], Any]] = []  # kept here when the runtime has no snapshot_restore_py
_after: list[Callable[[], Any]] = []
_timings: dict[str, float] = {}
_state: dict[str, Any] = {"registered_with": None, "restores": 0, "reseeded": []}


def runtime_hooks() -> Any:
    """The runtime's snapshot_restore_py module, or None where the runtime does not provide it."""
    try:
        import snapshot_restore_py  # type: ignore[import-not-found]  # the runtime's own (PyPI snapshot-restore-py)
    except ImportError:
        return None
    return snapshot_restore_py


def snapshotting() -> bool:
    """This init is being snapshotted (SnapStart publishing a version)."""
    return os.environ.get(INIT_TYPE) == "snap-start"


def reseed() -> list[str]:
    """Fresh seeds for the generators a restored environment shares with its siblings; the names reseeded."""
    done = ["random"]
    random.seed()  # from os.urandom, which the restored kernel reseeded
    numpy = sys.modules.get("numpy")
    if numpy is not None and hasattr(numpy, "random"):
        numpy.random.seed()  # the legacy global generator, from the OS's entropy
        done.append("numpy")
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "seed"):
        torch.seed()  # a non-deterministic seed for every device
        done.append("torch")
    return done


def recreate_clients() -> None:
    """Cached clients hold connections made before the snapshot: the next use creates them anew."""
    aws.s3.cache_clear()


def _timed(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    def hook() -> Any:
        t = time.perf_counter()
        try:
            return fn()
        finally:
            _timings[name] = round(_timings.get(name, 0.0) + (time.perf_counter() - t) * 1000, 2)

    hook.__name__ = f"hoist_{name}"
    return hook


def _before_snapshot(warm: Callable[[], Any] | None) -> Callable[[], Any]:
    def run() -> None:
        if warm is not None:
            _timed("warm", warm)()
        activate.release()
        log("before_snapshot", ms=_timings)

    return run


def _after_restore(extra: tuple[Callable[[], Any], ...]) -> Callable[[], Any]:
    def run() -> None:
        _state["reseeded"] = reseed()
        recreate_clients()
        for fn in extra:
            fn()
        _state["restores"] += 1
        log("after_restore", reseeded=_state["reseeded"], restores=_state["restores"])

    return run


def prepare(warm: Callable[[], Any] | None = None, after_restore: tuple[Callable[[], Any], ...] = ()) -> str:
    """Register Hoist's before-snapshot and after-restore hooks, once per environment; where they went:
    "snapshot_restore_py" (the runtime runs them) or "hoist" (``run_before_snapshot``/``run_after_restore`` do)."""
    if _state["registered_with"]:
        return str(_state["registered_with"])
    before = _timed("before_snapshot", _before_snapshot(warm))
    after = _timed("after_restore", _after_restore(tuple(after_restore)))
    hooks = runtime_hooks()
    if hooks is not None:
        hooks.register_before_snapshot(before)
        hooks.register_after_restore(after)
        _state["registered_with"] = "snapshot_restore_py"
    else:
        _before.append(before)
        _after.append(after)
        _state["registered_with"] = "hoist"
    return str(_state["registered_with"])


def run_before_snapshot() -> None:
    """Run the kept before-snapshot hooks as the runtime would (reverse order of registration)."""
    for fn in reversed(_before):
        fn()


def run_after_restore() -> None:
    """Run the kept after-restore hooks as the runtime would (in order)."""
    for fn in _after:
        fn()


def report() -> dict[str, Any]:
    """What the hooks did and how long they took (ms); the smoke test and the benchmark read it."""
    return {"registered_with": _state["registered_with"], "snapshotting": snapshotting(), "restores": _state["restores"],
            "reseeded": list(_state["reseeded"]), "ms": dict(_timings)}
