"""Immutable, content-addressed versions on EFS: plan, then apply.

Layout under ``<mount>/<efs root>/``::

    envs/<identity>/site-packages/...   the tree
    envs/<identity>/archives/...        its hot set's archives and their index.json
    envs/<identity>/manifest.json       its manifest
    envs/<identity>/.hoist-complete     written last, after verification
    envs/.<identity>.lock/              held while a sync writes that version
    models/<hash>/...                       model artifacts, the same scheme

The identity (the manifest's, ``records.identity``) covers the tree and the
archives' index, so whatever the handler reads from a version changes its
name. A version without the marker is never used; the next sync resumes it. A
version with the marker is never written again; rollback is pointing the
function back to one that is still there (the deploy's job).
"""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.console import counted
from pipeline.errors import SyncError
from pipeline.records import MANIFEST_NAME, load_manifest

from . import record
from .record import Location
from .shell import Remote, interruptible

MARKER = ".hoist-complete"
KINDS = ("envs", "models")
MAX_LINK_DESTS = 5


@dataclass(frozen=True)
class Version:
    name: str
    complete: bool
    completed_at: int | None  # marker mtime (epoch seconds)
    lock_age_s: int | None  # None: not locked


@dataclass(frozen=True)
class SyncPlan:
    kind: str
    version: str
    source: Path  # the local tree
    manifest: Path
    base: str  # remote folder holding the versions of this kind
    action: str  # up-to-date | transfer | resume
    link_dests: tuple[str, ...]  # complete versions, newest first, whose identical files become hard links
    files: int
    bytes: int
    where: str

    @property
    def dest(self) -> str:
        return f"{self.base}/{self.version}"


@dataclass(frozen=True)
class SyncResult:
    """What applying a sync did, whichever the method (local, bastion, DataSync): sync/stage.py's apply_job returns it."""

    method: str  # local | bastion | datasync
    version: str  # the manifest's identity: the version's folder name
    action: str  # the plan's: up-to-date | transfer | resume
    where: str  # the version's folder, as the plan names it
    files: int  # what the version holds (the manifest's tree)
    bytes: int
    bytes_sent: int  # rsync's "Total bytes sent"; DataSync: the bytes uploaded to S3
    seconds: float
    repaired: int = 0  # rsync: files a checksum pass had to fix
    uploaded: int = 0  # DataSync: files put in S3 (the rest were staged already, or copied inside S3)
    copied: int = 0  # DataSync: files copied inside S3 from a key already holding their content
    removed: int = 0  # DataSync: tasks and locations removed once the version was complete


def _result(plan: SyncPlan, remote: Remote, bytes_sent: int, seconds: float, repaired: int) -> SyncResult:
    return SyncResult(method="bastion" if remote.bastion else "local", version=plan.version, action=plan.action, where=f"{plan.where}:{plan.dest}",
                      files=plan.files, bytes=plan.bytes, bytes_sent=bytes_sent, seconds=seconds, repaired=repaired)


@dataclass(frozen=True)
class GcPlan:
    base: str
    remove: tuple[Version, ...]
    keep: tuple[Version, ...]
    where: str


def _q(path: str) -> str:
    return shlex.quote(path)


def list_versions(remote: Remote, base: str) -> list[Version]:
    script = f"""
cd {_q(base)} 2>/dev/null || exit 0
now=$(date +%s)
for d in * .*.lock; do
  case "$d" in '*'|'.*.lock'|.trash-*) continue;; esac
  if [ -d "$d" ] && [ "${{d#.}}" = "$d" ]; then
    m=0; t=""; [ -f "$d/{MARKER}" ] && m=1 && t=$(stat -c %Y "$d/{MARKER}")
    l=""; [ -d ".$d.lock" ] && l=$(( now - $(stat -c %Y ".$d.lock") ))
    echo "v|$d|$m|$t|$l"
  elif [ -d "$d" ]; then
    v=${{d#.}}; v=${{v%.lock}}; [ -d "$v" ] || echo "v|$v|0||$(( now - $(stat -c %Y "$d") ))"
  fi
done
"""
    out = remote.run(script).stdout
    versions = []
    for line in out.splitlines():
        if not line.startswith("v|"):
            continue
        _, name, marker, at, lock = line.split("|")
        versions.append(Version(name=name, complete=marker == "1", completed_at=int(at) if at else None, lock_age_s=int(lock) if lock else None))
    return sorted(versions, key=lambda v: v.name)


def plan_sync(remote: Remote, efs_root: str, tree: Path, manifest_path: Path, kind: str = "envs") -> SyncPlan:
    if kind not in KINDS:
        raise SyncError(f"unknown kind {kind!r}", fix=f"use one of {KINDS}")
    if not manifest_path.is_file() or not tree.is_dir():
        raise SyncError(f"no built tree at {tree} (or no manifest)", where=str(tree), fix="run `invoke build` first")
    manifest = load_manifest(manifest_path)
    version = manifest.identity
    base = f"{efs_root.rstrip('/')}/{kind}"
    versions = {v.name: v for v in list_versions(remote, base)}
    current = versions.get(version)
    if current and current.complete:
        action = "up-to-date"
    elif current:
        action = "resume"
    else:
        action = "transfer"
    done = sorted((v for v in versions.values() if v.complete and v.name != version), key=lambda v: v.completed_at or 0, reverse=True)
    # rsync takes up to 20 --link-dest folders; the newest few cover upgrades and rollbacks
    link_dests = tuple(f"{base}/{v.name}/site-packages" for v in done[:MAX_LINK_DESTS])
    return SyncPlan(kind=kind, version=version, source=tree, manifest=manifest_path, base=base, action=action, link_dests=link_dests,
                    files=manifest.files_count, bytes=manifest.bytes, where=remote.label)


def lock_owner() -> str:
    """Who holds a lock: ``host:pid:epoch`` of this process (the host is where the sync runs, not the EFS side)."""
    return f"{platform.node()}:{os.getpid()}:{int(time.time())}"


def _process_started(pid: int) -> float | None:
    """When process ``pid`` of this machine started (epoch seconds); None when unknown (no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def holder_gone(owner: str) -> bool:
    """True only when the lock's holder provably no longer runs: it ran on this host, and no process has its
    pid, or the process with that pid started after the lock was taken (the pid was reused)."""
    host, _, rest = owner.strip().partition(":")
    pid_text, _, since_text = rest.partition(":")
    if host != platform.node() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # this process: another thread of it holds the lock
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, as another user
    started = _process_started(pid)
    return started is not None and since_text.isdigit() and started > int(since_text) + 1


def _acquire(remote: Remote, plan: SyncPlan, stale_s: int) -> str:
    owner = lock_owner()
    lock = f"{plan.base}/.{plan.version}.lock"
    script = f"""
mkdir -p {_q(plan.base)} || exit 3
if mkdir {_q(lock)} 2>/dev/null; then echo {_q(owner)} > {_q(lock)}/owner; echo acquired; exit 0; fi
age=$(( $(date +%s) - $(stat -c %Y {_q(lock)}) ))
if [ "$age" -gt {int(stale_s)} ]; then
  rm -rf {_q(lock)} && mkdir {_q(lock)} && echo {_q(owner)} > {_q(lock)}/owner && echo "acquired stale $age" && exit 0
fi
echo "held $age $(cat {_q(lock)}/owner 2>/dev/null)"
"""
    ran = remote.run(script, check=False)
    if ran.returncode == 3:
        who = remote.bastion.user if remote.bastion else "this user"
        raise SyncError(
            f"{who} cannot create {plan.base}: {ran.stderr.strip() or 'permission denied'}",
            where=plan.where,
            fix="a new file system's root belongs to root (mode 755): mount it through the writer access point and set "
                "sync.bastion.through_access_point = true (docs/deploy.md, First deploy on AWS), or create the folder once: "
                "sudo install -d -o <writer uid> -g <writer gid> <efs_path>/<efs.root>",
        )
    if ran.returncode != 0:
        raise remote._error(ran.returncode, ran.stderr or ran.stdout, f"taking the lock on {remote.label}")
    out = ran.stdout.strip().splitlines()[-1]
    if out.startswith("held"):
        _, age, *holder_words = out.split()
        holder = " ".join(holder_words)
        if holder and holder_gone(holder):
            # rename, then make: of two runs taking over at once, one rename fails and that run finds the lock held
            trash = f"{plan.base}/.trash-lock-{plan.version}-{os.getpid()}"
            takeover = f"""
[ "$(cat {_q(lock)}/owner 2>/dev/null)" = {_q(holder)} ] || {{ echo "held changed"; exit 0; }}
mv {_q(lock)} {_q(trash)} 2>/dev/null || {{ echo "held raced"; exit 0; }}
rm -rf {_q(trash)}
mkdir {_q(lock)} 2>/dev/null && echo {_q(owner)} > {_q(lock)}/owner && echo "acquired gone" || echo "held raced"
"""
            if remote.run(takeover).stdout.strip().endswith("acquired gone"):
                return lock
        raise SyncError(
            f"another sync of version {plan.version[:12]} holds {lock} (for {age} s, by {holder or 'unknown'})",
            where=plan.where,
            fix=f"wait for it (a lock whose process is gone from this host is taken over at once; one older than {stale_s} s is taken over as stale, "
                "sync.stale_lock_s); if its holder ran elsewhere and is gone, remove the lock folder",
        )
    return lock


def _remote_checksums(remote: Remote, dest: str) -> dict[str, tuple[str, str]]:
    """path -> (sha256, octal mode) of every file of the version's tree, computed on the EFS side."""
    script = f"""
cd {_q(dest)}/site-packages || exit 4
find . -type f ! -path './.rsync-partial/*' -printf '%m %P\\n'
echo ---
find . -type f ! -path './.rsync-partial/*' -print0 | xargs -0 -r sha256sum
"""
    out = remote.run(script).stdout
    modes_part, _, sums_part = out.partition("---\n")
    modes = {}
    for line in modes_part.splitlines():
        mode, _, path = line.partition(" ")
        modes[path] = mode
    found = {}
    for line in sums_part.splitlines():
        digest, _, path = line.partition("  ")
        path = path.removeprefix("./")
        found[path] = (digest, modes.get(path, "?"))
    return found


def verify(remote: Remote, plan: SyncPlan) -> list[str]:
    """Differences between the version on EFS and the manifest (empty: identical)."""
    manifest = load_manifest(plan.manifest)
    want = {f.path: (f.sha256, f"{f.mode & 0o777:o}") for f in manifest.files}
    have = _remote_checksums(remote, plan.dest)
    problems = []
    for path, (digest, mode) in sorted(want.items()):
        got = have.get(path)
        if got is None:
            problems.append(f"missing {path}")
        elif got[0] != digest:
            problems.append(f"content differs: {path}")
        elif got[1] != mode:
            problems.append(f"mode {got[1]} instead of {mode}: {path}")
    problems += [f"not in the manifest: {p}" for p in sorted(set(have) - set(want))]
    if manifest.archive_index:  # the index names what the handler reads: it is part of the version as much as the archives
        names = [*(a.name for a in manifest.archives), "index.json"]
        out = remote.run(f"cd {_q(plan.dest)}/archives && sha256sum {' '.join(_q(n) for n in names)}", check=False).stdout
        archived = {line.split("  ", 1)[1]: line.split()[0] for line in out.splitlines() if "  " in line}
        problems += [f"archive differs or is missing: {a.name}" for a in manifest.archives if archived.get(a.name) != a.sha256]
        if archived.get("index.json") != manifest.archive_index:
            problems.append("archive index differs or is missing: archives/index.json")
    return problems


def _stats_bytes(output: str) -> int:
    for line in output.splitlines():
        if line.strip().startswith("Total bytes sent:"):
            return int(line.split(":", 1)[1].strip().replace(",", "").split()[0])
    return 0


_PROGRESS = re.compile(r"^\s*[\d,]+\s+\d+%\s")  # a line of rsync's --info=progress2: "  409,854,084  94%  375.82MB/s  0:00:01 (xfr#6276, ...)"
PROGRESS_EVERY_S = 2.0


def progress_every(on_line, seconds: float = PROGRESS_EVERY_S):
    """``on_line`` with rsync's progress lines thinned to one per ``seconds`` (its --stats follow at the end): rsync
    rewrites its progress line in place many times a second, and each rewrite had become a line of its own
    (7,460 lines for one demo sync). The first comes ``seconds`` after the start: a transfer done sooner shows none
    (a trial saw a lone "10,981 0% 0.00kB/s" for the manifest's copy). Every other line passes as it is."""
    if on_line is None:
        return None
    last = [time.monotonic()]

    def line(text: str) -> None:
        if _PROGRESS.match(text):
            now = time.monotonic()
            if now - last[0] < seconds:
                return
            last[0] = now
        on_line(text)

    return line


def _rsync_tree(remote: Remote, plan: SyncPlan, on_line, checksum: bool = False) -> int:
    on_line = progress_every(on_line)
    remote.run(f"mkdir -p {_q(plan.dest)}/site-packages")  # not --mkpath: AL2 bastions have rsync 3.1
    # files arrive owned by the writer (its access point's user); never writable by group or others, so the function reads only
    args = ["-a", "--no-owner", "--no-group", "--chmod=go-w", "--delete", "--partial", "--partial-dir=.rsync-partial", "--omit-dir-times",
            "--stats", "--info=progress2"]
    if checksum:
        args.append("--checksum")
    args += [f"--link-dest={d}" for d in plan.link_dests]
    sent = _stats_bytes(remote.rsync(args + [f"{plan.source}/", remote.path_arg(f"{plan.dest}/site-packages/")], on_line))
    archives = plan.source.parent / "archives"
    if archives.is_dir():  # unchanged archives keep their names: hard links too
        remote.run(f"mkdir -p {_q(plan.dest)}/archives")
        arch_args = [a for a in args if not a.startswith("--link-dest=")] + [f"--link-dest={d.rsplit('/', 1)[0]}/archives" for d in plan.link_dests]
        sent += _stats_bytes(remote.rsync(arch_args + [f"{archives}/", remote.path_arg(f"{plan.dest}/archives/")], on_line))
    sent += _stats_bytes(remote.rsync(["-a", "--no-owner", "--no-group", "--stats", str(plan.manifest), remote.path_arg(f"{plan.dest}/{MANIFEST_NAME}")], on_line))
    return sent


def apply_sync(plan: SyncPlan, remote: Remote, *, stale_lock_s: int = 3600, on_line=None, location: Location | None = None) -> SyncResult:
    """Publish the version; its marker is the completeness record (sync/record.py), naming ``location`` when known."""
    started = time.monotonic()
    if plan.action == "up-to-date":
        return _result(plan, remote, 0, 0.0, 0)
    with interruptible():
        return _locked_sync(plan, remote, stale_lock_s, on_line, started, location)


def read_marker(remote: Remote, plan: SyncPlan) -> bytes:
    """The version's marker as written on EFS: the text of its completeness record."""
    return remote.run(f"cat {_q(plan.dest)}/{MARKER}").stdout.encode()


def _locked_sync(plan: SyncPlan, remote: Remote, stale_lock_s: int, on_line, started: float, location: Location | None = None) -> SyncResult:
    lock = _acquire(remote, plan, stale_lock_s)
    try:
        # a sync that waited on the lock may find the version finished meanwhile
        if any(v.name == plan.version and v.complete for v in list_versions(remote, plan.base)):
            return _result(plan, remote, 0, time.monotonic() - started, 0)
        sent = _rsync_tree(remote, plan, on_line)
        remote.run(f"touch {_q(lock)}")  # still ours: a long transfer must not look stale to another sync
        problems = verify(remote, plan)
        repaired = 0
        if problems:  # same size and time but other bytes, or a damaged file: compare contents
            repaired = len(problems)
            if on_line:
                on_line(f"{counted(len(problems), 'file differs', 'files differ')} from the manifest; transferring {'it' if len(problems) == 1 else 'them'} by checksum")
            sent += _rsync_tree(remote, plan, on_line, checksum=True)
            problems = verify(remote, plan)
        if problems:
            raise SyncError(
                f"version {plan.version[:12]} on EFS does not match its manifest ({counted(len(problems), 'problem')}): " + "; ".join(problems[:5]),
                where=f"{plan.where}:{plan.dest}",
                fix="run sync-efs again; if it persists, check the EFS side (disk full, permissions)",
            )
        by = f"{'bastion' if remote.bastion else 'local'} {platform.node()}"
        if location is not None:
            marker = record.body(location, plan.version, by, files=plan.files, bytes=plan.bytes).decode()
        else:
            marker = json.dumps({"version": plan.version, "files": plan.files, "bytes": plan.bytes, "completed_at": int(time.time()), "by": by}, sort_keys=True)
        remote.run(f"cat > {_q(plan.dest)}/{MARKER}.tmp && mv {_q(plan.dest)}/{MARKER}.tmp {_q(plan.dest)}/{MARKER}", stdin=marker)
        return _result(plan, remote, sent, time.monotonic() - started, repaired)
    finally:
        remote.run(f"rm -rf {_q(lock)}", check=False)


def plan_gc(remote: Remote, efs_root: str, keep: int, protect: set[str], stale_lock_s: int = 3600, kind: str = "envs") -> GcPlan:
    """Versions neither among the newest ``keep`` nor protected (deployed); stale unfinished ones."""
    base = f"{efs_root.rstrip('/')}/{kind}"
    versions = list_versions(remote, base)
    complete = sorted((v for v in versions if v.complete), key=lambda v: v.completed_at or 0, reverse=True)
    kept = {v.name for v in complete[:keep]} | {v.name for v in versions if any(p and v.name.startswith(p) for p in protect)}
    remove = []
    for v in versions:
        if v.name in kept:
            continue
        if v.complete or v.lock_age_s is None or v.lock_age_s > stale_lock_s:
            remove.append(v)
        else:
            kept.add(v.name)  # being written right now
    return GcPlan(base=base, remove=tuple(remove), keep=tuple(v for v in versions if v.name in kept), where=remote.label)


def apply_gc(plan: GcPlan, remote: Remote) -> list[str]:
    removed = []
    for v in plan.remove:
        # renamed first: a half-deleted version is never mistaken for one
        trash = f"{plan.base}/.trash-{v.name}-{os.getpid()}"
        remote.run(f"mv {_q(plan.base)}/{_q(v.name)} {_q(trash)} 2>/dev/null; rm -rf {_q(trash)} {_q(plan.base)}/.{_q(v.name)}.lock")
        removed.append(v.name)
    return removed
