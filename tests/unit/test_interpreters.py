"""Finding the target's CPython: shims that fail are rejected with a reason, never trusted."""
from __future__ import annotations

import os
import sys

import pytest

from pipeline import interpreters
from pipeline.errors import InterpreterNotFound

HERE = "{}.{}".format(*sys.version_info[:2])


def _script(folder, name, body):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """PATH holds only what the test puts there; no pyenv, no uv to fall back on."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(interpreters, "_uv_candidate", lambda version, search: None)
    for key in list(os.environ):
        if key.startswith("HOIST_PYTHON"):
            monkeypatch.delenv(key)
    return bin_dir


def test_a_failing_shim_is_skipped_for_a_working_interpreter(isolated):
    _script(isolated, f"python{HERE}", f"echo 'pyenv: python{HERE}: command not found' >&2; exit 127")
    _script(isolated, "python3", f'exec "{sys.executable}" "$@"')
    found = interpreters.find_python(HERE)
    assert found.version.startswith(HERE + ".") and os.path.samefile(found.path, sys.executable)


def test_nothing_found_lists_every_candidate_and_the_fix(isolated):
    _script(isolated, "python3.13", "echo 'pyenv: python3.13: command not found' >&2; exit 127")
    _script(isolated, "python3", f'exec "{sys.executable}" "$@"')
    with pytest.raises(InterpreterNotFound) as err:
        interpreters.find_python("3.13")
    text = str(err.value)
    assert "exit 127: pyenv: python3.13: command not found" in text
    assert f"is Python {HERE}" in text and "not 3.13" in text
    assert "pyenv: not on PATH" in text
    assert "HOIST_PYTHON3_13" in text and "fix:" in text


def test_environment_override_wins(isolated, monkeypatch):
    monkeypatch.setenv("HOIST_PYTHON" + HERE.replace(".", "_"), sys.executable)
    found = interpreters.find_python(HERE)
    assert found.found_by.startswith("HOIST_PYTHON")


def test_pyenv_versions_are_asked_by_prefix(isolated, tmp_path):
    prefix = tmp_path / "versions" / "9.99.1"
    _script(prefix / "bin", "python9.99", "echo 9.99.1; echo " + str(prefix / "bin" / "python9.99"))
    _script(isolated, "pyenv", f'case "$1" in versions) echo 3.11.7; echo 9.99.1; echo 9.99.1t;; prefix) echo "{prefix}";; esac')
    found = interpreters.find_python("9.99")
    assert found.found_by == "pyenv prefix" and found.version == "9.99.1"


def test_a_cached_identity_skips_the_probe_until_the_interpreter_or_the_search_changes(isolated, tmp_path, monkeypatch):
    # a copy of an interpreter-shaped script we can change: it answers the probe like CPython HERE
    fake = _script(tmp_path / "py", f"python{HERE}", f'echo "{HERE}.9"; echo "$0"')
    monkeypatch.setenv("HOIST_PYTHON" + HERE.replace(".", "_"), str(fake))
    cache = tmp_path / "cache" / "interpreters.json"
    first = interpreters.find_python(HERE, cache=cache)
    assert first.version == f"{HERE}.9" and cache.is_file()

    runs = []
    real_run = interpreters.capture
    monkeypatch.setattr(interpreters, "capture", lambda *a, **k: runs.append(a) or real_run(*a, **k))
    again = interpreters.find_python(HERE, cache=cache)
    assert runs == [] and again.path == first.path and again.version == first.version and "cached" in again.found_by

    fake.write_text(fake.read_text().replace(f"{HERE}.9", f"{HERE}.10"))  # the interpreter changed: probe again
    assert interpreters.find_python(HERE, cache=cache).version == f"{HERE}.10" and len(runs) == 1
    monkeypatch.setenv("PATH", str(isolated) + ":/nonexistent")  # where the search looks changed: probe again
    interpreters.find_python(HERE, cache=cache)
    assert len(runs) == 2
