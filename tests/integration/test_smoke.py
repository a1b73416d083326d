"""The smoke test through the real awslambdaric client: level 1 with this
machine's pyenv interpreters, level 2 in a stand-in Lambda image under a real
Docker daemon. Needs PyPI once, for awslambdaric."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import config
from pipeline.interpreters import find_python
from runtime.function import runtime_client
from tests.conftest import lock_and_build, write_pipeline
from tests.schemas import assert_conforms
from validate.stage import from_build

pytestmark = [pytest.mark.network]

PY312 = '[targets.py312]\nkind = "lambda"\nruntime = "python3.12"\narch = "x86_64"\n\n[sets.efs]'


def _built(project, target=None):
    return lock_and_build(project, target=target)


def _body(report):
    return json.loads(report.smoke.handler_result["body"])


def test_level1_imports_every_module_and_invokes_the_handler(project):
    (project / "requirements" / "efs.in").write_text("nativepkg==1.0\n")
    cfg = _built(project)
    report = from_build(cfg, smoke_level="1")
    assert report.ok, [f.as_json() for f in report.errors]
    smoke = report.smoke
    assert smoke.run and smoke.level == 1 and smoke.ok and smoke.status == "ok"
    assert smoke.distance is None  # the local target is this machine: no distance from Lambda to tell
    assert {"nativepkg", "purepkg", "layerpkg"} <= set(smoke.modules) and set(smoke.import_ms) == set(smoke.modules)
    body = _body(report)
    assert body["efs_tree"] == str(project / "dist" / "local" / "efs" / "site-packages") and body["on_path"] is True
    assert body["hydrated"] is True and body["hot_files"] > 0  # the hot set read from the archives beside the tree
    # what activation did, as the smoke test saw it: hydrated, from the archives, and nothing held once init was over (the demo releases)
    a = smoke.activation
    assert a["hydrated"] is True and a["why"] is None and a["hot_files"] == body["hot_files"] and a["hot_bytes"] > 0 and a["prefetch"] == "touched"
    assert a["held_bytes"] >= a["hot_bytes"] and a["released"] is True and a["held_after_init"] == 0 and 0 < a["ms"] <= a["handler_ms"] <= smoke.init_ms
    assert smoke.report.startswith("REPORT RequestId: ") and "Init Duration: " in smoke.report and "Memory Size: 3008 MB" in smoke.report
    assert_conforms("validation-report", json.loads(json.dumps(report.as_json())))  # the report `invoke validate --json` writes


def test_a_version_with_archives_that_does_not_hydrate_fails_the_smoke_test_naming_the_cause(project):
    # GIVEN a build whose function is told not to hydrate ([function] environment reaches the smoke test as it reaches Lambda)
    text = (project / "pipeline.toml").read_text()
    (project / "pipeline.toml").write_text(text + '\n[function.environment]\nHOIST_HYDRATE = "0"\n' if "[function]" not in text else
                                           text.replace("[function]\n", '[function]\nenvironment = { HOIST_HYDRATE = "0" }\n', 1))
    cfg = _built(project)
    report = from_build(cfg, smoke_level="1")
    # THEN the function answers, but the smoke test fails and says why the archives went unread
    assert _body(report)["hydrated"] is False and report.smoke.status == "ok" and not report.smoke.ok
    [err] = report.errors
    assert err.rule == "smoke-hydrate" and err.message.endswith("instead of hydrating: HOIST_HYDRATE=0") and "[function] environment" in err.fix


def test_an_import_that_only_worked_on_a_laptop_is_caught(project):
    (project / "requirements" / "efs.in").write_text("brokenpkg==1.0\n")
    cfg = _built(project)
    report = from_build(cfg, smoke_level="1")
    assert [(f.rule, f.package) for f in report.errors] == [("smoke-import", "brokenpkg")]
    assert "undeclared_dependency_xyz" in report.errors[0].message
    assert report.smoke.run and not report.smoke.ok


def test_handler_errors_and_timeouts_are_reported(project, wheelhouse):
    app = project / "handler" / "app.py"
    setup = app.read_text()  # keeps the EFS tree on sys.path; the handler below replaces the real one
    app.write_text(setup + "\n\ndef handler(event, context):\n    raise ValueError('bad event')\n")
    cfg = _built(project)
    report = from_build(cfg, smoke_level="1")
    assert [f.rule for f in report.errors] == ["smoke-invoke"] and "bad event" in report.errors[0].message
    assert_conforms("validation-report", json.loads(json.dumps(report.as_json())))
    # what `invoke validate` prints: the fix points below, where the function's own log (the traceback) is
    from rich.console import Console

    from validate.report import print_report

    shown = Console(record=True, width=300)
    print_report(shown, report)
    text = shown.export_text()
    assert "fix: see the function's log printed below the findings" in text
    log = text[text.index("the function's log, from its error"):].splitlines()
    assert "[ERROR] ValueError: bad event" in log[1] and any("Traceback" in line for line in log[2:]), log  # the error first, then where

    app.write_text(setup + "\n\ndef handler(event, context):\n    time.sleep(30)\n")
    write_pipeline(project, wheelhouse, {'name = "test-fn"': 'name = "test-fn"\ntimeout_s = 2'})
    report = from_build(config.load(project / "pipeline.toml"), smoke_level="1")
    assert report.smoke.status == "timeout" and "Task timed out after 2.00 seconds" in report.errors[0].message
    assert_conforms("validation-report", json.loads(json.dumps(report.as_json())))


def test_level1_runs_a_pyenv_interpreter_of_the_runtime(project, wheelhouse):
    write_pipeline(project, wheelhouse, {"[sets.efs]": PY312})
    (project / "requirements" / "efs.in").write_text("purepkg\n")
    cfg = _built(project, "py312")
    report = from_build(cfg, "py312", smoke_level="1")
    assert report.ok and report.smoke.run and report.smoke.python.startswith("3.12.")


def test_a_level_that_cannot_run_says_why_and_never_passes(project, monkeypatch):
    (project / "requirements" / "efs.in").write_text("purepkg\n")
    cfg = _built(project, "arm")
    monkeypatch.setenv("PATH", "/nonexistent")  # no docker command either
    report = from_build(cfg, "arm", smoke_level="auto")
    assert report.ok  # static checks pass
    smoke = report.smoke
    assert smoke.run is False
    whys = {a.level: a.why for a in smoke.skipped_levels}
    assert "aarch64" in whys[1] and "x86_64" in whys[1]
    assert "install Docker" in whys[2]
    assert_conforms("validation-report", json.loads(json.dumps(report.as_json())))


@pytest.mark.docker
@pytest.mark.slow
def test_level2_runs_in_a_lambda_image_under_docker(project, wheelhouse, docker_daemon, tmp_path):
    from tests.docker_support import standin_image

    write_pipeline(project, wheelhouse, {"[sets.efs]": PY312})
    (project / "requirements" / "efs.in").write_text("purepkg\n")
    cfg = _built(project, "py312")
    python = find_python("3.12")
    ric = runtime_client(cfg.target("py312").target, project / ".hoist-cache")
    prefix = Path(python.path).resolve().parent.parent
    image = standin_image(prefix, "3.12", sorted(ric.rglob("*.so")), tmp_path)
    report = from_build(cfg, "py312", smoke_level="2", image=image)
    assert report.ok, [f.as_json() for f in report.errors] + [report.smoke.log_tail]
    assert report.smoke.level == 2 and report.smoke.image == image and report.smoke.ok
    body = _body(report)
    assert body["efs_tree"] == "/mnt/test/site-packages" and body["on_path"] is True  # the version at the configured mount path
    assert body["hydrated"] is True and body["hot_files"] > 0  # inside the Lambda image too
