"""pipeline/proc.py: the one way programs are run."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from pipeline import proc
from pipeline.errors import CommandError

PY = sys.executable


def test_run_streams_lines_and_returns_the_output() -> None:
    seen: list[str] = []
    code, out = proc.run([PY, "-c", "import sys; print('one'); print('two', file=sys.stderr); print('three')"], what="printing", on_line=seen.append)
    assert code == 0 and sorted(seen) == ["one", "three", "two"]
    assert out.splitlines() == seen


def test_run_reads_carriage_returns_as_line_ends() -> None:
    # rsync's progress meter rewrites one line with \r: each update is a line
    seen: list[str] = []
    proc.run([PY, "-c", "import sys; sys.stdout.write('10%\\r50%\\r100%\\ndone\\n')"], what="progress", on_line=seen.append)
    assert seen == ["10%", "50%", "100%", "done"]


def test_run_failure_says_what_and_the_last_output() -> None:
    with pytest.raises(CommandError) as err:
        proc.run([PY, "-c", "print('the reason'); raise SystemExit(3)"], what="the step", where="here", fix="do this")
    text = str(err.value)
    assert err.value.returncode == 3 and "the step failed (exit 3)" in text and "the reason" in text and "fix: do this" in text
    code, out = proc.run([PY, "-c", "raise SystemExit(3)"], what="tolerated", check=False)
    assert code == 3 and out == ""


def test_run_of_a_missing_program_names_it_and_the_fix() -> None:
    with pytest.raises(CommandError, match="program 'no-such-tool-hoist' not found") as err:
        proc.run(["no-such-tool-hoist"], what="a tool", fix="apt-get install it")
    assert err.value.fix == "apt-get install it"


def test_env_is_laid_over_ours_unless_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOIST_TEST_OURS", "inherited")
    script = "import os; print(os.environ.get('HOIST_TEST_OURS'), os.environ.get('HOIST_TEST_GIVEN'))"
    assert proc.capture([PY, "-c", script], env={"HOIST_TEST_GIVEN": "given"}).stdout.split() == ["inherited", "given"]
    assert proc.capture([PY, "-c", script], env={"HOIST_TEST_GIVEN": "given"}, clean_env=True).stdout.split() == ["None", "given"]
    _, out = proc.run([PY, "-c", script], what="env", env={"HOIST_TEST_GIVEN": "given"})
    assert out.split() == ["inherited", "given"]


def test_capture_keeps_streams_apart_takes_input_and_never_raises_on_the_exit_code(tmp_path: Path) -> None:
    out = proc.capture([PY, "-c", "import sys; d = sys.stdin.read(); print(d.upper()); print('err', file=sys.stderr); raise SystemExit(5)"], input="abc", cwd=tmp_path)
    assert (out.returncode, out.stdout.strip(), out.stderr.strip()) == (5, "ABC", "err")
    assert proc.capture([PY, "-c", "import os; print(os.getcwd())"], cwd=tmp_path).stdout.strip() == str(tmp_path)


def test_capture_timeout_and_missing_program_reach_the_caller() -> None:
    with pytest.raises(proc.TimeoutExpired):
        proc.capture([PY, "-c", "import time; time.sleep(30)"], timeout=0.5)
    with pytest.raises(OSError):
        proc.capture(["no-such-tool-hoist"])


def test_start_merges_output_for_a_reader() -> None:
    p = proc.start([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
    assert p.stdout is not None
    lines = sorted(line.strip() for line in p.stdout)
    assert p.wait() == 0 and lines == ["err", "out"]


def test_interrupted_run_kills_the_program(tmp_path: Path) -> None:
    # GIVEN a long program that writes its pid, and a callback that is interrupted while it runs
    pidfile = tmp_path / "pid"

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    # WHEN the run is interrupted, THEN the program is gone before the exception reaches us
    with pytest.raises(KeyboardInterrupt):
        proc.run([PY, "-c", f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); print('started', flush=True); time.sleep(60)"],
                 what="long", on_line=interrupt)
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the interrupted program still runs")
