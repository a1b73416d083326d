"""aarch64 on this x86_64 machine: qemu-user-static registered with binfmt_misc,
and the Debian root + stand-in image of pipeline/emulation.py, prepared once.

The root is cached outside the clone (``~/.cache/hoist``, or $HOIST_CACHE), so
a fresh clone in CI pays the ~8 minute debootstrap only when the cache is
empty. What cannot be had fails the test that needs it; nothing is skipped.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from pipeline import emulation

PACKAGES = {"qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support", "debootstrap": "debootstrap"}


def install_missing() -> None:
    """apt-get install what emulation needs, as root; otherwise say how."""
    missing = sorted({pkg for cmd, pkg in PACKAGES.items() if not (shutil.which(cmd) or os.path.exists(f"/usr/sbin/{cmd}"))})
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"the aarch64 tests need {' '.join(missing)}: apt-get install {' '.join(missing)} (as root)")
    subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq " + " ".join(missing), shell=True, check=True, capture_output=True)


def prepare() -> None:
    """What `invoke test` runs before pytest: the packages, binfmt and the root, with progress."""
    install_missing()
    found = emulation.emulated_python("3.13", "aarch64", on_line=lambda line: print("   ", line, flush=True))
    print(f"aarch64 CPython {found.python} ready in {found.root}", flush=True)


@pytest.fixture(scope="session")
def emulated_arm64() -> emulation.EmulatedPython:
    """CPython 3.13 for aarch64 (Debian trixie), run through qemu (in a chroot: the tests run as root)."""
    install_missing()
    return emulation.emulated_python("3.13", "aarch64")
