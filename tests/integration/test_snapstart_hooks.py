"""hoist_lambda.snapstart under the real runtime client: awslambdaric 4.2.2 (with its snapshot_restore_py) on this
machine's CPython, against runtime/'s Runtime API with restore/next. With AWS_LAMBDA_INITIALIZATION_TYPE=snap-start the
client runs the before-snapshot hooks (the warm-up inference, release) after init, asks restore/next, runs the
after-restore hooks (reseed, fresh clients) once it is answered, and only then takes the first request. Seconds."""
from __future__ import annotations

import json
import sys
import time

import pytest

from pipeline.targets import local_target
from runtime.emulator import RuntimeAPI
from runtime.function import FunctionProcess, FunctionSpec, Layout, lambda_environment, local_command, runtime_client
from tests.conftest import REPO

pytestmark = [pytest.mark.network]  # awslambdaric comes from PyPI once per cache

OWN = '''
import json, random, sys, time
from hoist_lambda import snapstart

WARMED = []
random.seed(1234)  # as a snapshot would freeze it: every restored copy would draw the same numbers


def _warm():
    WARMED.append(time.monotonic())


WHERE = snapstart.prepare(warm=_warm)


def handler(event, context):
    return {"warmed": len(WARMED), "where": WHERE, "report": snapstart.report(), "draw": random.random(), "numpy": "numpy" in sys.modules}
'''

FAILING = '''
from hoist_lambda import snapstart


def _boom():
    raise RuntimeError("after restore failed")


snapstart.prepare(after_restore=(_boom,))


def handler(event, context):
    return {}
'''


def _function(tmp_path, source: str, api: RuntimeAPI, snap: bool = True) -> FunctionProcess:
    task = tmp_path / "task"
    task.mkdir()
    (task / "own.py").write_text(source)
    import shutil

    shutil.copytree(REPO / "handler" / "hoist_lambda", task / "hoist_lambda")
    target = local_target("local")
    ric = runtime_client(target, REPO / ".hoist-cache")
    spec = FunctionSpec(name="snap", runtime=f"python{target.python}", handler="own.handler", memory_mb=512, timeout_s=30)
    env = lambda_environment(spec, Layout(task_root=str(task), layer=None, efs_tree=None, runtime_dir=str(ric)), api.address)
    if snap:
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
    fn = FunctionProcess(local_command(sys.executable, spec.handler), env, api, spec, cwd=str(task))
    fn.start()
    return fn


def test_the_runtime_client_runs_the_hooks_before_the_snapshot_and_after_the_restore(tmp_path):
    with RuntimeAPI() as api:
        fn = _function(tmp_path, OWN, api)
        try:
            assert api.snapshot_ready.wait(60), fn.log_tail()  # the before-snapshot hooks ran, then restore/next
            assert not api.first_next.is_set()  # no request is taken before the restore
            time.sleep(0.2)
            assert not api.first_next.is_set()
            api.restore()
            inv = api.submit(b"{}", 30)
            assert inv.done.wait(30), fn.log_tail()
        finally:
            fn.stop()
    doc = json.loads(inv.payload)
    assert doc["where"] == "snapshot_restore_py"  # the runtime's module, not Hoist's fallback
    assert doc["warmed"] == 1 and doc["report"]["restores"] == 1 and doc["report"]["snapshotting"]
    assert doc["report"]["reseeded"] == ["random"] and doc["numpy"] is False  # numpy was not imported, so not reseeded nor imported
    import random

    random.seed(1234)
    assert doc["draw"] != random.random()  # the restored copy does not draw the snapshot's next number
    assert set(doc["report"]["ms"]) >= {"warm", "before_snapshot", "after_restore"}
    assert "after_restore" in "\n".join(fn.output) and "before_snapshot" in "\n".join(fn.output)  # one log line each


def test_a_failing_after_restore_hook_is_reported_to_restore_error(tmp_path):
    with RuntimeAPI() as api:
        fn = _function(tmp_path, FAILING, api)
        try:
            assert api.snapshot_ready.wait(60), fn.log_tail()
            api.restore()
            assert api.restore_error_event.wait(30), fn.log_tail()
            assert fn.proc is not None and fn.proc.wait(30) == 65  # awslambdaric's exit code for an after-restore failure
        finally:
            fn.stop()
    assert "after restore failed" in json.dumps(api.restore_error)


def test_without_snapstart_no_hook_runs_and_the_first_request_is_served(tmp_path):
    with RuntimeAPI() as api:
        fn = _function(tmp_path, OWN, api, snap=False)
        try:
            inv = api.submit(b"{}", 30)
            assert inv.done.wait(60), fn.log_tail()
        finally:
            fn.stop()
    doc = json.loads(inv.payload)
    assert doc["warmed"] == 0 and doc["report"]["restores"] == 0 and not api.snapshot_ready.is_set()
