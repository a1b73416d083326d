"""The native builder: install a lock's wheels for the target into a fresh tree.

uv installs binary-only, hash-checked, with ``--python-platform`` so a tree for
arm64 is built on x86_64. Every wheel's WHEEL tags are then checked against the
tags the target loads: the tree never holds a wheel the target cannot load.

The build installs by hard links into uv's cache (uv's own default on Linux):
a tree of 660 MB is linked in under a second where copying it took three. So
nothing may write into a tree's files: every step replaces a file it changes
(pipeline/files.py, ``Digests``). What uv's cache holds is checked on every
install against each wheel's RECORD (``check_records``): a file changed in
place, in the cache or in a tree, stops the build with the command that
clears it from uv's cache.
"""
from __future__ import annotations

import base64
from pathlib import Path

from pipeline import proc
from pipeline.dists import dists, record_rows, unloadable
from pipeline.errors import BuildError, CommandError
from pipeline.files import Digests
from pipeline.targets import Target

from .lock import DOCKER_HINT, LockFile


def install_native(lock: LockFile, target: Target, dest: Path, on_line=None, link_mode: str = "copy") -> None:
    """``link_mode``: uv's --link-mode; "hardlink" only for a tree whose files are replaced, never written into."""
    dest.mkdir(parents=True, exist_ok=True)
    if not lock.packages:
        return
    cmd = [
        proc.uv_bin(), "pip", "install", "--no-config", "--no-python-downloads",
        "--target", str(dest), "--no-deps", "--require-hashes", "--only-binary", ":all:", "--no-index",
        "--link-mode", link_mode, "--no-compile",
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


def check_records(tree: Path, digests: Digests, rebuild: str = "invoke build --force") -> int:
    """Every installed file against the sha256 its wheel's RECORD gives (PEP 376/627); how many were checked.

    The tree's files are hard links into uv's cache: a file changed in place there (or in an earlier tree,
    which is the same file) would otherwise reach the build unseen, while the wheel's own hash still matched.
    """
    rows: list[tuple[str, str, Path]] = []  # (distribution, path in the tree, RECORD's sha256 as hex)
    for dist in dists(tree):
        for rel, digest in record_rows(dist):
            if digest.startswith("sha256=") and not rel.startswith("..") and (tree / rel).is_file():
                rows.append((f"{dist.name} {dist.version}", base64.urlsafe_b64decode(digest[len("sha256="):] + "==").hex(), tree / rel))
    got = digests.many(path for _, _, path in rows)
    bad: dict[str, list[str]] = {}
    for (dist_name, want, path), digest in zip(rows, got, strict=True):
        if digest != want:
            bad.setdefault(dist_name, []).append(path.relative_to(tree).as_posix())
    if bad:
        names = " ".join(name.split(" ")[0] for name in bad)
        raise BuildError(
            "installed files differ from their wheel's RECORD: "
            + "; ".join(f"{name}: {', '.join(files[:3])}{f' and {len(files) - 3} more' if len(files) > 3 else ''}" for name, files in bad.items())
            + "\n  uv's cache holds these files changed after the wheel was unpacked (a tree's files are hard links into it: "
            "something wrote into a built tree or into the cache)",
            where="uv's cache (`python3 -m uv cache dir`)",
            fix=f"remove them from uv's cache with `python3 -m uv cache clean {names}`, then `{rebuild}`; treat built trees as read-only "
                "(if the same files differ again after that, the wheel's own RECORD is wrong: pin another version of it)",
        )
    return len(rows)
