"""The native builder: install a lock's wheels for the target into a fresh tree.

uv installs binary-only, hash-checked, with ``--python-platform`` so a tree for
arm64 is built on x86_64. Every wheel's WHEEL tags are then checked against the
tags the target loads: the tree never holds a wheel the target cannot load.
"""
from __future__ import annotations

from pathlib import Path

from pipeline import proc
from pipeline.dists import unloadable
from pipeline.errors import BuildError, CommandError
from pipeline.targets import Target

from .lock import DOCKER_HINT, LockFile


def install_native(lock: LockFile, target: Target, dest: Path, on_line=None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if not lock.packages:
        return
    cmd = [
        proc.uv_bin(), "pip", "install", "--no-config", "--no-python-downloads",
        "--target", str(dest), "--no-deps", "--require-hashes", "--only-binary", ":all:", "--no-index",
        # copies, not hard links into uv's cache: slimming strips files in place
        "--link-mode", "copy", "--no-compile",
        "--python-version", target.python,
    ]
    if target.uv_python_platform:
        cmd += ["--python-platform", target.uv_python_platform]
    cmd += ["-r", str(lock.path)]
    try:
        proc.run(cmd, what=f"installing {lock.path.name}", on_line=on_line)
    except CommandError as exc:
        raise BuildError(
            f"uv could not install {lock.path.name} for {target.describe()}\n  uv said:\n" + "\n".join("    " + x for x in exc.output_tail.splitlines()),
            where=str(lock.path),
            fix="if a download failed, check the network or the index named in the lock and run again; if a hash differs, the index changed the file: `invoke lock --force`",
        ) from None
    # uv's lock file for concurrent installs into the same target: not content
    (dest / ".lock").unlink(missing_ok=True)


def check_wheel_tags(tree: Path, target: Target, built_on_target: bool = False) -> None:
    """Fail if any installed wheel's tags do not include one the target loads."""
    bad = [f"{d.dist_info.name}: {', '.join(d.tags)}" for d in unloadable(tree, target, built_on_target)]
    if bad:
        raise BuildError(
            f"wheels the target cannot load: {'; '.join(bad)}",
            where=f"target {target.describe()}",
            fix="re-lock for this target (`invoke lock --force`); " + DOCKER_HINT,
        )
