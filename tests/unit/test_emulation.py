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


# debootstrap's own lines (the info messages of /usr/share/debootstrap/functions, printed as "I: ..."), abridged:
# the stages once each, and a line per package within them
DEBOOTSTRAP = """I: Retrieving InRelease
I: Checking Release signature
I: Valid Release signature (key id 4CB50190207B4758A3F73A796ED0E7B82643E131)
I: Retrieving Packages
I: Validating Packages
I: Resolving dependencies of required packages...
I: Resolving dependencies of base packages...
I: Checking component main on http://deb.debian.org/debian...
I: Retrieving adduser 3.152
I: Validating adduser 3.152
I: Retrieving apt 3.0.3
I: Validating apt 3.0.3
W: an example warning
I: Chosen extractor for .deb packages: dpkg-deb
I: Extracting adduser...
I: Extracting apt...
I: Installing core packages...
I: Unpacking required packages...
I: Unpacking adduser...
I: Configuring required packages...
I: Configuring apt...
I: Configuring libc-bin...
I: Unpacking the base system...
I: Configuring the base system...
I: Configuring python3.13...
I: Base system installed successfully.
"""


def test_debootstrap_shows_a_line_per_stage_with_the_time_so_far_and_one_per_half_minute_within_a_stage():
    said: list[str] = []
    now = [100.0]
    progress = emulation.DebootstrapProgress(said.append, every_s=30, now=lambda: now[0])
    for line in DEBOOTSTRAP.splitlines():
        now[0] += 40 if "python3.13" in line else 4  # python3.13's configuration under QEMU: the long wait of the last stage
        progress(line)
    assert said[0] == "debootstrap 0:04: retrieving InRelease"
    assert "debootstrap 0:36: downloading the packages" in said and "debootstrap 0:52: W: an example warning" in said
    assert [s.split(": ", 1)[1] for s in said] == [
        "retrieving InRelease", "resolving dependencies of required packages", "resolving dependencies of base packages",
        "checking component main on http://deb.debian.org/debian", "downloading the packages", "W: an example warning",
        "installing core packages", "unpacking required packages", "configuring required packages", "unpacking the base system",
        "configuring the base system", "configuring the base system, at: Configuring python3.13", "base system installed successfully"]
    # the per-package lines (Retrieving adduser, Extracting apt, ...) are not said: only the one at the half minute


def test_an_image_on_a_foreign_cpu_is_told_which_cpu_qemu_emulates_as_the_efs_runs_are():
    """binfmt's QEMU reads QEMU_CPU from the emulated process's environment: the image's container gets the same CPU
    model as the import check and the EFS smoke test (neoverse-n1, Lambda's arm64), not QEMU's default "max"."""
    import platform

    from runtime.function import FunctionSpec, container_environment

    spec = FunctionSpec(name="fn", runtime="python3.13", handler="app.handler", memory_mb=1024, timeout_s=30)
    foreign = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    emulated = container_environment(spec, "127.0.0.1:9001", {"MODEL": "m"}, machine=foreign)
    native = container_environment(spec, "127.0.0.1:9001", {"MODEL": "m"}, machine=platform.machine())
    if foreign == "aarch64":
        assert emulated["QEMU_CPU"] == "neoverse-n1"
    assert "QEMU_CPU" not in native
    assert {k: v for k, v in emulated.items() if k != "QEMU_CPU"} == native  # nothing else differs
