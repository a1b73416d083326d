"""The command line: every pipeline task is listed, with help; user errors are one message and exit 1."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def invoke(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_list_shows_every_stage_with_help():
    out = invoke("--list").stdout
    for name in ("lock", "build", "validate", "sync-efs", "efs-gc", "deploy", "rollback", "teardown", "serve", "bench", "test"):
        assert f"  {name} " in out, name
    help_text = invoke("--help", "build").stdout
    assert "--force" in help_text and "--target" in help_text and "rebuild even if" in help_text


@pytest.mark.parametrize("task", ["deploy", "rollback", "teardown"])
def test_aws_tasks_without_a_deploy_section_say_what_to_add(task, project):
    result = invoke("-r", str(REPO), task, "--config", str(project / "pipeline.toml"))
    assert result.returncode == 1
    assert "no [deploy] section" in result.stderr and "stack_name" in result.stderr and "Traceback" not in result.stderr


def test_user_errors_exit_1_with_the_message_and_no_traceback(project):
    (project / "pipeline.toml").write_text((project / "pipeline.toml").read_text().replace('mount_path = "/mnt/test"', 'mount_path = "/efs"'))
    result = invoke("-r", str(REPO), "build", "--config", str(project / "pipeline.toml"))
    assert result.returncode == 1
    assert "efs.mount_path" in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_benchmark_is_named():
    result = invoke("bench", "nope")
    assert result.returncode == 1 and "no benchmark 'nope'" in result.stderr


def test_validate_exit_codes_and_json(tmp_path):
    from tests.wheels import compile_library

    good = tmp_path / "good"
    (good / "pkg").mkdir(parents=True)
    (good / "pkg" / "__init__.py").write_text("")
    ok = invoke("validate", "--tree", str(good), "--runtime", "python3.13", "--arch", "arm64", "--json", str(tmp_path / "ok.json"))
    assert ok.returncode == 0, ok.stderr
    assert "static checks passed" in ok.stdout and "smoke test not run" in ok.stdout

    bad = tmp_path / "bad"
    lib = compile_library(tmp_path / "b")
    (bad / "pkg").mkdir(parents=True)
    (bad / "pkg" / "libdemo.so").write_bytes(lib.read_bytes())
    failed = invoke("validate", "--tree", str(bad), "--runtime", "python3.13", "--arch", "arm64", "--json", str(tmp_path / "bad.json"))
    assert failed.returncode == 1
    assert "elf-machine" in failed.stdout and "FAILED" in failed.stdout
    import json

    assert json.loads((tmp_path / "bad.json").read_text())["ok"] is False

    missing = invoke("validate", "--tree", str(bad))
    assert missing.returncode == 1 and "--tree needs --runtime and --arch" in missing.stderr


def test_validate_without_a_build_says_to_build(project):
    result = invoke("validate", "--config", str(project / "pipeline.toml"))
    assert result.returncode == 1 and "invoke build --target local" in result.stderr


def test_serve_explains_a_target_that_cannot_run_here(project):
    import platform

    foreign = "arm" if platform.machine() == "x86_64" else "local"
    result = invoke("serve", "--config", str(project / "pipeline.toml"), "--target", foreign, "--port", "0")
    assert result.returncode == 1
    assert "cannot run here" in result.stderr and "--target local" in result.stderr and "--smoke 2" in result.stderr


def test_a_change_that_needs_confirmation_refuses_without_a_terminal_or_yes(monkeypatch):
    """CI has no terminal: deploy, rollback and teardown must be given --yes, not hang on input()."""
    import io

    from invoke import Exit

    monkeypatch.syspath_prepend(str(REPO))
    import tasks

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    with pytest.raises(Exit) as err:
        tasks._confirm("apply 3 change(s)?", yes=False)
    assert "--yes" in str(err.value.message) and err.value.code == 1
    tasks._confirm("apply 3 change(s)?", yes=True)  # no question asked


def test_build_checks_the_model_folder_first_and_names_the_file(project, wheelhouse):
    """A broken model folder stops `invoke build` before anything is installed, naming the file and the fix."""
    import json
    import shutil

    from tests.conftest import write_pipeline

    shutil.copytree(REPO / "model" / "artifacts", project / "mine")
    (project / "mine" / "preprocess.json").write_text(json.dumps({"center_crop": 56, "centre_crop": 56}))
    config = write_pipeline(project, wheelhouse, {"[api]": '[model]\ndir = "mine"\n\n[api]'})
    result = invoke("-r", str(REPO), "build", "--config", str(config))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "preprocess.json: centre_crop unknown key" in result.stderr and "did you mean 'center_crop'" in result.stderr
    assert not (project / "dist").exists()  # nothing built
