"""hoist_lambda.snapstart's parts: the reseed touches numpy and torch only when imported; the fallback registry runs
the hooks in the runtime's order; clients are made anew after a restore. (The real runtime client: tests/integration/test_snapstart_hooks.py.)"""
from __future__ import annotations

import importlib
import random
import sys
import types

import pytest

from tests.conftest import REPO


@pytest.fixture
def snapstart(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "handler"))
    from hoist_lambda import snapstart as module

    module = importlib.reload(module)  # fresh registries per test
    monkeypatch.setattr(module, "runtime_hooks", lambda: None)
    return module


def test_reseed_reseeds_numpy_and_torch_only_when_already_imported(snapstart, monkeypatch):
    calls: list[str] = []
    monkeypatch.delitem(sys.modules, "numpy", raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert snapstart.reseed() == ["random"]
    assert "numpy" not in sys.modules and "torch" not in sys.modules  # never imported by the hook
    numpy = types.SimpleNamespace(random=types.SimpleNamespace(seed=lambda *a: calls.append(f"numpy{a}")))
    torch = types.SimpleNamespace(seed=lambda: calls.append("torch") or 7)
    monkeypatch.setitem(sys.modules, "numpy", numpy)
    monkeypatch.setitem(sys.modules, "torch", torch)
    assert snapstart.reseed() == ["random", "numpy", "torch"] and calls == ["numpy()", "torch"]  # numpy.random.seed(): from the OS's entropy


def test_reseed_breaks_a_frozen_sequence(snapstart):
    random.seed(42)
    frozen = [random.random() for _ in range(3)]
    random.seed(42)
    snapstart.reseed()
    assert [random.random() for _ in range(3)] != frozen


def test_hooks_run_in_the_runtimes_order_and_clients_are_made_anew(snapstart, monkeypatch):
    from hoist_lambda import activate, aws

    order: list[str] = []
    monkeypatch.setattr(activate, "release", lambda: order.append("release") or 0)
    cleared: list[bool] = []
    monkeypatch.setattr(aws.s3, "cache_clear", lambda: cleared.append(True))
    assert snapstart.prepare(warm=lambda: order.append("warm"), after_restore=(lambda: order.append("mine"),)) == "hoist"
    assert snapstart.prepare(warm=lambda: order.append("twice")) == "hoist"  # once per environment
    snapstart.run_before_snapshot()
    assert order == ["warm", "release"]  # one inference, then the hot set's memory goes
    snapstart.run_after_restore()
    assert order[2:] == ["mine"] and cleared == [True]
    report = snapstart.report()
    assert report["restores"] == 1 and report["registered_with"] == "hoist" and {"warm", "before_snapshot", "after_restore"} <= set(report["ms"])


def test_the_runtimes_module_gets_the_hooks_when_it_is_there(snapstart, monkeypatch):
    got: dict[str, list] = {"before": [], "after": []}
    fake = types.SimpleNamespace(register_before_snapshot=got["before"].append, register_after_restore=got["after"].append)
    monkeypatch.setattr(snapstart, "runtime_hooks", lambda: fake)
    assert snapstart.prepare() == "snapshot_restore_py"
    assert len(got["before"]) == 1 and len(got["after"]) == 1
    snapstart.run_before_snapshot()  # Hoist's own registry stays empty: the runtime runs them
    assert snapstart.report()["ms"] == {}
