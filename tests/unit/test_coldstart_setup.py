"""bench/coldstart.py's set-up on a fresh machine: it locks and builds the `local` target itself, as `invoke serve`
does, and installs libfuse2 (root with apt-get) or says what to install, without a traceback (issue 22, item 7)."""
from __future__ import annotations

import ctypes.util

import pytest
from invoke import Exit, MockContext

import tasks
from bench import coldstart
from pipeline import config
from pipeline.errors import BenchError

FOUND = "libfuse.so.2"


def _no_libfuse(monkeypatch, *, root: bool, apt: bool = True, installs: bool = True) -> list[list[str]]:
    """This machine as a fresh one: no libfuse.so.2; apt-get (recorded, never run) installs it when ``installs``."""
    ran: list[list[str]] = []
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: FOUND if installs and any("install" in cmd for cmd in ran) else None)
    monkeypatch.setattr(coldstart.os, "geteuid", lambda: 0 if root else 1000)
    monkeypatch.setattr(coldstart.shutil, "which", lambda cmd: f"/usr/bin/{cmd}" if apt else None)
    monkeypatch.setattr(coldstart.proc, "run", lambda cmd, **kw: (ran.append(list(cmd)), (0, ""))[1])
    return ran


def test_without_libfuse_and_root_the_benchmark_says_what_to_install_and_stops_before_locking(project, monkeypatch):
    # GIVEN a fresh machine without libfuse2, a user that is not root, a project never locked
    ran = _no_libfuse(monkeypatch, root=False)
    # WHEN `invoke bench coldstart` runs
    with pytest.raises(Exit) as err:
        tasks.bench(MockContext(), "coldstart", config=str(project / "pipeline.toml"))
    # THEN it exits 1 with the stage, the cause and the command that fixes it (no traceback: an Exit, not the OSError fusepy raises)
    message = str(err.value.message)
    assert err.value.code == 1 and message.startswith("error: bench (invoke bench coldstart): ") and "libfuse.so.2" in message
    assert "fix: sudo apt-get install libfuse2 (then run again)" in message
    assert ran == [] and not (project / "requirements" / "efs.local.lock").exists()  # nothing installed, nothing locked yet


def test_as_root_with_apt_it_installs_libfuse2_and_says_so(monkeypatch):
    ran = _no_libfuse(monkeypatch, root=True)
    said: list[str] = []
    coldstart.prepare_machine(said.append)
    assert ran == [["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "libfuse2"]]
    assert said and "installing libfuse2" in said[0]


def test_an_install_that_does_not_bring_the_library_and_a_machine_without_apt_or_dev_fuse_are_errors_with_the_fix(monkeypatch, tmp_path):
    _no_libfuse(monkeypatch, root=True, installs=False)
    with pytest.raises(BenchError, match="still not found") as err:
        coldstart.prepare_machine(lambda line: None)
    assert "ldconfig -p" in (err.value.fix or "")
    ran = _no_libfuse(monkeypatch, root=True, apt=False)
    with pytest.raises(BenchError, match=r"needs libfuse\.so\.2"):
        coldstart.prepare_machine(lambda line: None)
    assert ran == []
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: FOUND)
    monkeypatch.setattr(coldstart, "FUSE_DEVICE", tmp_path / "fuse")
    with pytest.raises(BenchError, match=r"no .*fuse: the latency file system mounts through FUSE") as err:
        coldstart.prepare_machine(lambda line: None)
    assert "--device /dev/fuse" in (err.value.fix or "")


def test_a_project_never_locked_is_locked_and_built_before_the_runs(project, monkeypatch, tmp_path):
    # GIVEN a project with no locks, on a machine that has libfuse and /dev/fuse
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: FOUND)
    monkeypatch.setattr(coldstart, "FUSE_DEVICE", tmp_path)
    cfg = config.load(project / "pipeline.toml")
    assert not (project / "dist" / "local").exists()

    class Built(Exception):
        pass

    def stop(cfg, target):  # the benchmark's own build (reused when current) comes after the set-up: stop there
        raise Built(target)

    monkeypatch.setattr(coldstart, "build", stop)
    said: list[str] = []
    console = type("C", (), {"print": staticmethod(lambda text, *a, **k: said.append(str(text)))})()
    # WHEN the benchmark starts
    with pytest.raises(Built):
        coldstart.run(cfg, console=console)  # type: ignore[arg-type]
    # THEN it locked and built `local` itself, and said so
    from builder.lock import current_locks

    assert set(current_locks(cfg, cfg.target("local"))) == set(cfg.sets)
    assert (project / "dist" / "local" / "efs" / "manifest.json").is_file()
    assert any("running `invoke lock --target local`" in line for line in said), said


def test_the_snapstart_figure_is_the_median_restore_and_keeps_every_run():
    from bench import snapstart

    runs = [{"restore_to_first_answer_seconds": t, "snapshot_bytes": b} for t, b in ((0.9, 1), (0.7, 2), (0.8, 3))]
    doc = snapstart.median_run(runs)
    assert (doc["restore_to_first_answer_seconds"], doc["snapshot_bytes"]) == (0.8, 3)  # the middle run, its own figures with it
    assert doc["runs"] == 3 and doc["restore_to_first_answer_seconds_all"] == [0.9, 0.7, 0.8]
    with pytest.raises(BenchError):
        snapstart.median_run([])


def test_sam_gets_the_same_pins_once_each_and_a_python_uv_function_of_the_target():
    from bench import sam

    pins = [("torch", "2.9.1"), ("numpy", "2.5.5"), ("numpy", "2.5.5"), ("pillow", "13.0.0")]  # numpy in two sets
    assert sam.requirements(pins) == ["numpy==2.5.5", "pillow==13.0.0", "torch==2.9.1"]
    text = sam.TEMPLATE.format(runtime="python3.13", arch="arm64")
    assert "BuildMethod: python-uv" in text and "Runtime: python3.13" in text and "Architectures: [arm64]" in text
