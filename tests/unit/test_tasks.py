"""The tasks: every pipeline task is listed with help; user errors are one message and exit 1.

The tasks are called directly with invoke's MockContext (no shell runs); two tests keep
the real command line end to end (the listing, and a user error's exit code and stderr).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from invoke import Exit, MockContext, Result

import tasks
from tests.conftest import REPO


def invoke(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_list_shows_every_stage_with_help():
    out = invoke("--list").stdout
    for name in ("lock", "build", "validate", "sync-efs", "efs-gc", "deploy", "rollback", "teardown", "serve", "bench", "test"):
        assert f"  {name} " in out, name
    help_text = invoke("--help", "build").stdout
    assert "--force" in help_text and "--target" in help_text and "rebuild even if" in help_text


def test_user_errors_exit_1_with_the_message_and_no_traceback(project):
    (project / "pipeline.toml").write_text((project / "pipeline.toml").read_text().replace('mount_path = "/mnt/test"', 'mount_path = "/efs"'))
    result = invoke("-r", str(REPO), "build", "--config", str(project / "pipeline.toml"))
    assert result.returncode == 1
    assert "efs.mount_path" in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("task", [tasks.deploy, tasks.rollback, tasks.teardown], ids=["deploy", "rollback", "teardown"])
def test_aws_tasks_without_a_deploy_section_say_what_to_add(task, project):
    with pytest.raises(Exit) as err:
        task(MockContext(), config=str(project / "pipeline.toml"))
    assert err.value.code == 1
    assert "no [deploy] section" in str(err.value.message) and "stack_name" in str(err.value.message)


def test_every_flag_is_a_word_or_a_letter_and_a_dash_is_no_flag():
    """invoke picked the first free character of a long name as its short flag: the dash of --sync-method gave `--=STRING`."""
    for name in tasks.ns.task_names:
        for arg in tasks.ns[name].get_arguments():
            assert all(n.replace("-", "").replace("_", "").isalnum() for n in arg.names), (name, arg.names)
            assert not [n for n in arg.names if len(n) == 1 and not n.isalpha()], (name, arg.names)
    out = invoke("--help", "deploy").stdout
    assert "--=" not in out and "-m STRING, --sync-method=STRING" in out
    refused = invoke("deploy", "--=local")
    assert refused.returncode == 1 and "No idea what" in refused.stderr


def test_a_task_with_a_positional_argument_shows_its_help_after_its_name():
    """`invoke bench --help` as `invoke --help bench`: invoke gives the missing positional the next word, even --help."""
    for argv in (["bench", "--help"], ["bench", "-h"]):
        result = invoke(*argv)
        assert result.returncode == 0 and "no benchmark" not in result.stderr, result.stderr
        assert result.stdout == invoke("--help", "bench").stdout and "Usage: inv[oke] [--core-opts] bench" in result.stdout


def test_unknown_benchmark_is_named():
    with pytest.raises(Exit) as err:
        tasks.bench(MockContext(), "nope")
    assert err.value.code == 1 and "no benchmark 'nope'" in str(err.value.message)


def test_validate_exit_codes_and_json(tmp_path, capsys):
    from tests.wheels import compile_library

    good = tmp_path / "good"
    (good / "pkg").mkdir(parents=True)
    (good / "pkg" / "__init__.py").write_text("")
    tasks.validate(MockContext(), tree=str(good), runtime="python3.13", arch="arm64", json=str(tmp_path / "ok.json"))
    out = capsys.readouterr().out
    assert "static checks passed" in out and "smoke test not run" in out
    assert json.loads((tmp_path / "ok.json").read_text())["ok"] is True

    bad = tmp_path / "bad"
    lib = compile_library(tmp_path / "b")
    (bad / "pkg").mkdir(parents=True)
    (bad / "pkg" / "libdemo.so").write_bytes(lib.read_bytes())
    with pytest.raises(Exit) as failed:
        tasks.validate(MockContext(), tree=str(bad), runtime="python3.13", arch="arm64", json=str(tmp_path / "bad.json"))
    out = capsys.readouterr().out
    assert failed.value.code == 1
    assert "elf-machine" in out and "FAILED" in out
    assert json.loads((tmp_path / "bad.json").read_text())["ok"] is False

    with pytest.raises(Exit) as missing:
        tasks.validate(MockContext(), tree=str(bad))
    assert missing.value.code == 1 and "--tree needs --runtime and --arch" in str(missing.value.message)


def test_an_unknown_smoke_level_is_refused_before_any_check_and_a_level_from_the_fix_runs(tmp_path, capsys):
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("")
    with pytest.raises(Exit) as err:
        tasks.validate(MockContext(), tree=str(tree), runtime="python3.13", arch="arm64", smoke="4")
    out = capsys.readouterr()
    text = str(err.value.message) + out.out + out.err
    assert err.value.code == 1 and "--smoke '4' is not a smoke test level" in text and "use one of auto, 1, 2, 3, none" in text
    assert "static checks" not in text and "Traceback" not in text
    tasks.validate(MockContext(), tree=str(tree), runtime="python3.13", arch="arm64", smoke="none")  # a level the fix names
    assert "static checks passed" in capsys.readouterr().out


def test_validate_without_a_build_says_to_build(project):
    with pytest.raises(Exit) as err:
        tasks.validate(MockContext(), config=str(project / "pipeline.toml"))
    assert err.value.code == 1 and "invoke build --target local" in str(err.value.message)


def test_serve_explains_a_target_that_cannot_run_here(project):
    import platform

    foreign = "arm" if platform.machine() == "x86_64" else "local"
    with pytest.raises(Exit) as err:
        tasks.serve(MockContext(), config=str(project / "pipeline.toml"), target=foreign, port=0)
    message = str(err.value.message)
    assert err.value.code == 1
    assert "cannot run here" in message and "--target local" in message and "--smoke 2" in message


def test_a_change_that_needs_confirmation_refuses_without_a_terminal_or_yes(monkeypatch):
    """CI has no terminal: deploy, rollback and teardown must be given --yes, not hang on input()."""
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    with pytest.raises(Exit) as err:
        tasks._confirm("apply 3 change(s)?", yes=False)
    assert "--yes" in str(err.value.message) and err.value.code == 1
    tasks._confirm("apply 3 change(s)?", yes=True)  # no question asked


def test_the_test_task_runs_ruff_mypy_the_strict_docs_build_and_pytest_with_coverage_and_the_slowest_tests(monkeypatch):
    seen: list[str] = []

    class Ctx(MockContext):
        def run(self, command, **kw):
            seen.append(command)
            return Result(command=command, exited=0)

    monkeypatch.setattr(tasks, "_missing_system_packages", lambda: [])
    monkeypatch.delenv("HOIST_CI_SKIP", raising=False)
    tasks.test(Ctx())
    ruff, mypy, docs, root, pytest_cmd = seen
    assert "-m ruff check" in ruff and "-m mypy" in mypy and "emulation_support import prepare" in root
    assert "-m mkdocs build --strict" in docs  # a broken link or a missing page fails `invoke test`, here and in CI
    assert "-m pytest" in pytest_cmd and "--durations=10" in pytest_cmd
    assert "--cov" in pytest_cmd and "--cov-fail-under=85" in pytest_cmd

    seen.clear()
    tasks.test(Ctx(), markers="not slow", no_system=True)
    assert "-m 'not slow'" in seen[-1] and "--cov-fail-under" not in seen[-1]  # a subset is not held to the floor
    assert not any("prepare" in command for command in seen)  # --no-system: nothing installed or prepared
    assert any("-m mkdocs build --strict" in command for command in seen)  # CI's `invoke test --no-system` builds the site too

    seen.clear()
    monkeypatch.setenv("HOIST_CI_SKIP", "emulated: needs root")
    tasks.test(Ctx(), no_system=True)
    assert "-m pytest" in seen[-1] and "--cov-fail-under" not in seen[-1] and " -m '" not in seen[-1]  # skipped tests are not held to the floor either


def test_the_test_task_fails_naming_every_step_that_failed(monkeypatch):
    class Ctx(MockContext):
        def run(self, command, **kw):
            return Result(command=command, exited=1 if ("ruff" in command or "pytest" in command) else 0)

    monkeypatch.setattr(tasks, "_missing_system_packages", lambda: [])
    with pytest.raises(Exit) as err:
        tasks.test(Ctx())
    assert err.value.code == 1 and "ruff" in str(err.value.message) and "pytest" in str(err.value.message) and "mypy" not in str(err.value.message)


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


def test_serve_on_a_busy_port_says_so_before_any_work(project):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(Exit) as err:
            tasks.serve(MockContext(), config=str(project / "pipeline.toml"), target="local", port=port)
    message = str(err.value.message)
    assert err.value.code == 1 and f"port {port} on 127.0.0.1 is not free" in message and "--port 0" in message
    assert not (project / "dist").exists()  # nothing locked, built or started


def test_validate_says_a_broken_model_folder_before_anything_else(project):
    import shutil

    shutil.copytree(REPO / "model" / "artifacts", project / "model" / "artifacts")
    (project / "model" / "artifacts" / "labels.json").unlink()
    with pytest.raises(Exit) as err:  # no build either: the model folder is said first, not after a smoke test
        tasks.validate(MockContext(), config=str(project / "pipeline.toml"))
    assert err.value.code == 1 and "labels.json" in str(err.value.message)


def test_a_stage_error_in_any_task_is_its_message_and_exit_1_and_a_signal_is_128_plus_its_number():
    import inspect
    import signal

    from pipeline.errors import BuildError, SyncInterrupted

    @tasks._stage
    def body(c, config=None, dry_run=False):
        raise config

    assert list(inspect.signature(body).parameters) == ["c", "config", "dry_run"]  # what invoke turns into flags
    with pytest.raises(Exit) as err:
        body(MockContext(), config=BuildError("it broke", where="set efs", fix="do this"))
    assert err.value.code == 1 and str(err.value.message) == "error: build (set efs): it broke\n  fix: do this"
    with pytest.raises(Exit) as err:
        body(MockContext(), config=SyncInterrupted(signal.SIGTERM))
    assert err.value.code == 128 + signal.SIGTERM and "interrupted by SIGTERM" in str(err.value.message)
    with pytest.raises(ValueError):  # not a user error: the traceback shows
        body(MockContext(), config=ValueError("bug"))


def test_every_question_refuses_cleanly_without_a_terminal_and_says_what_was_not_done(monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # not a terminal, even with an answer waiting
    with pytest.raises(Exit) as err:
        tasks._confirm("remove 2 version(s)?", yes=False, refused="nothing removed")
    assert err.value.code == 1 and "stdin is not a terminal; pass --yes" in str(err.value.message)
    tasks._confirm("remove 2 version(s)?", yes=True)  # --yes: nothing is asked

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    monkeypatch.setattr("builtins.input", lambda prompt: sys.stdin.readline())
    with pytest.raises(Exit) as err:
        tasks._confirm("remove 2 version(s)?", yes=False, refused="nothing removed")
    assert err.value.code == 1 and err.value.message == "nothing removed"


def test_sync_efs_of_an_image_target_says_there_is_nothing_to_sync(project):
    path = project / "pipeline.toml"
    path.write_text(path.read_text().replace('name = "test-fn"', 'name = "test-fn"\npackage = "image"'))
    with pytest.raises(Exit) as err:
        tasks.sync_efs(MockContext(), config=str(path))
    assert err.value.code == 1 and "nothing to sync" in str(err.value.message) and "invoke deploy" in str(err.value.message)


def test_cache_prune_takes_a_number_of_days_and_says_what_it_removed(tmp_path, monkeypatch, capsys):
    from builder import cache

    monkeypatch.setenv("HOIST_BUILD_CACHE", str(tmp_path / "c"))
    store = cache.Store()
    store.put_json("check", "1" * 64, {"a": 1})
    for bad in ("abc", "-1"):
        with pytest.raises(Exit) as err:
            tasks.cache(MockContext(), prune=bad)
        assert err.value.code == 1 and "--prune" in str(err.value.message) and "invoke cache --prune 30" in str(err.value.message)
    with pytest.raises(Exit) as both:
        tasks.cache(MockContext(), prune="30", clear=True)
    assert both.value.code == 1 and "give one of them" in str(both.value.message)
    assert cache.usage().entries["check"] == 1  # nothing removed
    tasks.cache(MockContext(), prune="30")  # the fix's command: the entry was made now, so it stays
    out = " ".join(capsys.readouterr().out.split())
    assert "pruned the build cache" in out and "0 entries unused for 30 days" in out and "left in 1 entry" in out
    tasks.cache(MockContext())
    assert "`invoke cache --prune 30` removes what no build used for 30 days" in " ".join(capsys.readouterr().out.split())
