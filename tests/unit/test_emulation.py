"""pipeline/emulation.py without running anything: which Pythons a Debian root gives, where it is cached, how it is run."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import emulation


def test_debian_gives_3_13_and_3_11_and_says_what_to_do_for_the_others():
    assert emulation.suite_for("3.13") == "trixie" and emulation.suite_for("3.11") == "bookworm"
    for version in ("3.10", "3.12", "3.14"):
        with pytest.raises(emulation.EmulationUnavailable) as err:
            emulation.suite_for(version)
        assert f"CPython {version}" in err.value.what and "level 2" in (err.value.fix or "")


def test_the_root_is_cached_outside_the_clone(monkeypatch, tmp_path):
    monkeypatch.delenv("HOIST_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert emulation.root_path("3.13", "aarch64") == tmp_path / "xdg" / "hoist" / "emulation" / f"debian-trixie-arm64-{emulation.ROOT_FORMAT}"
    monkeypatch.setenv("HOIST_CACHE", str(tmp_path / "own"))
    assert emulation.cache_dir() == tmp_path / "own"


def test_a_binfmt_entry_counts_only_when_enabled_with_the_fix_binary_flag(tmp_path):
    entry = tmp_path / "qemu-aarch64"
    entry.write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n")
    assert emulation._enabled(entry)
    entry.write_text("enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: P\n")  # opened at exec: fails inside a chroot or container
    assert not emulation._enabled(entry)
    entry.write_text("disabled\nflags: PF\n")
    assert not emulation._enabled(entry)


def test_finishing_a_root_gives_lambdas_folders_and_interpreter_path(tmp_path):
    emulation.finish_root(tmp_path, "3.13")
    assert all((tmp_path / d).is_dir() for d in emulation.LAMBDA_DIRS)
    assert (tmp_path / "var/lang/bin/python3.13").readlink() == Path("/usr/bin/python3.13")
    assert (tmp_path / "tmp").stat().st_mode & 0o1777 == 0o1777


def test_the_chroot_command_binds_read_only_in_a_private_namespace():
    cmd = emulation.chroot_command(Path("/r"), [(Path("/host/task"), "/var/task"), (Path("/host/efs"), "/mnt/x")], ["/var/lang/bin/python3.13", "-V"])
    assert cmd[:3] == ["env", "HOIST_BIND_0=/host/task", "HOIST_BIND_1=/host/efs"]
    assert cmd[3:10] == ["unshare", "--mount", "--propagation", "private", "--fork", "--kill-child", "sh"]
    script = cmd[11]
    assert 'mount -o remount,bind,ro "$R/var/task"' in script and 'mount --bind "$HOIST_BIND_1" "$R/mnt/x"' in script and "tmpfs" in script
    assert script.endswith('exec chroot "$R" "$@"') and cmd[-2:] == ["/var/lang/bin/python3.13", "-V"]
