"""The `datasync` transport: stage the whole version in S3, let AWS DataSync copy
it into the version folder on EFS, then copy the completion marker the same way.

1. The version is what the local and bastion methods publish: site-packages/,
   archives/ (the cold start reads these) and manifest.json. Only files the
   staging prefix does not hold yet are uploaded: a file already staged for
   this version (same key, ETag = its MD5) is skipped; one staged for another
   version with the same content is copied inside S3 (no bytes from here).
2. Every object carries DataSync's POSIX metadata (file-permissions,
   file-mtime), so modes survive the copy: a plain upload would arrive without
   its executable bit (lambda-facts.md). No owner is staged: the task ignores
   UID and GID, and files belong to the writer access point's POSIX user.
3. Before any task runs, the staged listing is checked against the manifest
   and the archive index (every key present, its MD5 as computed here).
4. A DataSync task from s3://bucket/<prefix>/envs/<hash>/ into the version's
   folder as DataSync sees it (pipeline/layout.py: through the writer access
   point its root is ``/``), VerifyMode POINT_IN_TIME_CONSISTENT; its
   execution is polled until SUCCESS or ERROR.
5. Only then the marker: a second task copies markers/<hash>/.hoist-complete
   into the same folder without deleting anything, and the staging side
   records completion, which the next plan reads.

Each run creates its own locations and tasks and waits for each task to be
AVAILABLE before starting it (an EFS task passes through CREATING, and on new
mount targets UNAVAILABLE, first). It never reuses one it finds: a location's
URI names neither its access point, role nor network, so a leftover could
write as another user. Whatever the run created is deleted when it ends, as it
ends (success, failure or interruption); an interrupted run cancels its
execution first.

A run holds ``<prefix>/locks/<hash>.lock`` in the staging bucket while it
works (a conditional put: If-None-Match to take it, If-Match on the ETag it
read to take over one whose holder is provably gone or that is older than
``stale_lock_s``), as the shell methods hold their lock folder.

List calls go through boto3's paginators; ARNs take the partition of the region.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import aws
from pipeline.config import DataSyncConfig
from pipeline.errors import SyncError
from pipeline.layout import version_dir
from pipeline.records import MANIFEST_NAME, Manifest, load_manifest

from .efs import MARKER, SyncResult, holder_gone, lock_owner
from .shell import interruptible

TERMINAL = {"SUCCESS", "ERROR"}


@dataclass(frozen=True)
class StagedFile:
    path: str  # under the version: site-packages/..., archives/...
    size: int
    mode: int
    md5: str
    sha256: str


@dataclass(frozen=True)
class DataSyncPlan:
    version: str
    tree: Path
    manifest: Path
    prefix: str  # s3 key prefix of this version: <prefix>/envs/<hash>/
    efs_dir: str  # <efs root>/envs/<hash>
    action: str  # up-to-date | transfer
    upload: tuple[StagedFile, ...] = ()
    copy: tuple[tuple[StagedFile, str], ...] = ()  # (file, key already holding its content)
    present: int = 0
    where: str = ""
    expected: tuple[tuple[str, str], ...] = ()  # (path under the version, md5) of every file the version holds

    @property
    def upload_bytes(self) -> int:
        return sum(f.size for f in self.upload)


@dataclass
class Clients:
    s3: Any
    datasync: Any
    calls: list = field(default_factory=list)


def clients(cfg: DataSyncConfig) -> Clients:
    sess = aws.session(cfg.region)
    return Clients(s3=aws.client(sess, "s3"), datasync=aws.client(sess, "datasync"))


def call(client, operation: str, **params):
    """One AWS call; AWS error codes become SyncErrors that say what to do."""
    return aws.call(client, operation, error=SyncError, context="datasync", default_fix="read the message; check the names and ARNs in [sync.datasync]", **params)


def _digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _listing(c: Clients, bucket: str, prefix: str) -> dict[str, tuple[str, int]]:
    return {obj["Key"]: (obj["ETag"].strip('"'), obj["Size"])
            for obj in aws.pages(c.s3, "list_objects_v2", "Contents", error=SyncError, context="datasync", Bucket=bucket, Prefix=prefix)}


def version_files(tree: Path, manifest: Manifest) -> list[tuple[str, Path, int, int]]:
    """(path under the version, local file, size, mode) of everything a version holds besides its manifest:
    the tree's files and the archives folder (archives and index.json), as rsync publishes them."""
    files = [(f"site-packages/{f.path}", tree / f.path, f.size, f.mode) for f in manifest.files]
    archives = tree.parent / "archives"
    if archives.is_dir():
        for path in sorted(p for p in archives.rglob("*") if p.is_file()):
            files.append((f"archives/{path.relative_to(archives).as_posix()}", path, path.stat().st_size, 0o644))
    return files


def plan_datasync(c: Clients, cfg: DataSyncConfig, efs_root: str, tree: Path, manifest: Path) -> DataSyncPlan:
    contents = load_manifest(manifest)
    version = contents.identity
    prefix = f"{cfg.prefix}/envs/{version}/"
    # DataSync mounts the writer access point when one is given: its root (efs.root) is DataSync's /
    efs_dir = version_dir("/", efs_root, version, through_access_point=bool(cfg.access_point_arn))
    where = f"s3://{cfg.bucket}/{prefix} -> {cfg.access_point_arn or cfg.file_system_arn}:{efs_dir}"
    staged = _listing(c, cfg.bucket, f"{cfg.prefix}/envs/")
    if prefix + MARKER in staged:
        return DataSyncPlan(version=version, tree=tree, manifest=manifest, prefix=prefix, efs_dir=efs_dir, action="up-to-date", where=where)
    by_content = {(etag, size): key for key, (etag, size) in staged.items() if "-" not in etag}
    upload, copy, present, expected = [], [], 0, []
    for rel, path, size, mode in version_files(tree, contents):
        md5, sha = _digests(path)
        expected.append((rel, md5))
        item = StagedFile(path=rel, size=size, mode=mode, md5=md5, sha256=sha)
        key = prefix + rel
        if staged.get(key, ("", -1))[0] == md5:
            present += 1
        elif (md5, size) in by_content:
            copy.append((item, by_content[(md5, size)]))
        else:
            upload.append(item)
    return DataSyncPlan(version=version, tree=tree, manifest=manifest, prefix=prefix, efs_dir=efs_dir, action="transfer", upload=tuple(upload), copy=tuple(copy),
                        present=present, where=where, expected=tuple(expected))


def verify_staged(c: Clients, cfg: DataSyncConfig, plan: DataSyncPlan) -> list[str]:
    """Differences between the staged version and what it must hold (empty: every file staged, same MD5)."""
    staged = _listing(c, cfg.bucket, plan.prefix)
    problems = [f"not staged: {rel}" for rel, _ in plan.expected if plan.prefix + rel not in staged]
    problems += [f"staged content differs: {rel}" for rel, md5 in plan.expected if plan.prefix + rel in staged and staged[plan.prefix + rel][0] != md5]
    if plan.prefix + MANIFEST_NAME not in staged:
        problems.append(f"not staged: {MANIFEST_NAME}")
    return problems


def posix_metadata(item: StagedFile) -> dict[str, str]:
    """DataSync's POSIX keys (verify the formats against a real task when one is at hand)."""
    return {
        "file-permissions": f"{0o100000 | item.mode:o}",
        "file-mtime": f"{946684800}000000000ns",
        "hoist-sha256": item.sha256,
    }


class Created:
    """The locations and tasks one run made: all of them are deleted when the run ends."""

    def __init__(self, c: Clients):
        self.c = c
        self.tasks: list[str] = []
        self.locations: list[str] = []

    def location(self, response: dict) -> str:
        self.locations.append(response["LocationArn"])
        return response["LocationArn"]

    def remove(self, strict: bool) -> int:
        """Delete tasks first (a location in use by a task cannot go), then locations."""
        removed = 0
        for what, arns, key in (("delete_task", self.tasks, "TaskArn"), ("delete_location", self.locations, "LocationArn")):
            for arn in arns:
                if strict:
                    call(self.c.datasync, what, **{key: arn})
                else:
                    with contextlib.suppress(Exception):  # best effort on the way out of a failed run
                        getattr(self.c.datasync, what)(**{key: arn})
                removed += 1
        return removed


def _s3_location(c: Clients, made: Created, cfg: DataSyncConfig, prefix: str) -> str:
    bucket_arn = f"arn:{aws.partition(cfg.region)}:s3:::{cfg.bucket}"
    return made.location(call(c.datasync, "create_location_s3", S3BucketArn=bucket_arn, Subdirectory=f"/{prefix}", S3Config={"BucketAccessRoleArn": cfg.s3_role_arn}))


def _efs_location(c: Clients, made: Created, cfg: DataSyncConfig, efs_dir: str) -> str:
    params = {
        "EfsFilesystemArn": cfg.file_system_arn,
        "Subdirectory": efs_dir,
        "Ec2Config": {"SubnetArn": cfg.subnet_arn, "SecurityGroupArns": list(cfg.security_group_arns)},
        "InTransitEncryption": "TLS1_2",  # the file system policy refuses clients without TLS
    }
    if cfg.access_point_arn:
        params["AccessPointArn"] = cfg.access_point_arn
    if cfg.file_system_role_arn:
        params["FileSystemAccessRoleArn"] = cfg.file_system_role_arn
    return made.location(call(c.datasync, "create_location_efs", **params))


# how long a new task may stay CREATING or UNAVAILABLE (new mount targets) before it is AVAILABLE
TASK_READY_S = 600.0


def _task(c: Clients, made: Created, name: str, source: str, dest: str, options: dict, poll_s: float) -> str:
    task = call(c.datasync, "create_task", SourceLocationArn=source, DestinationLocationArn=dest, Name=name, Options=options)["TaskArn"]
    made.tasks.append(task)
    deadline = time.monotonic() + TASK_READY_S
    while True:
        state = call(c.datasync, "describe_task", TaskArn=task)
        if state.get("Status", "AVAILABLE") == "AVAILABLE":
            return task
        if time.monotonic() > deadline:
            raise SyncError(
                f"DataSync task {name} is still {state.get('Status')} after {TASK_READY_S:.0f} s: {state.get('ErrorCode', '')} {state.get('ErrorDetail', '')}".rstrip(),
                where=task,
                fix="DataSync cannot mount the file system: check that the mount targets' security group admits sync.datasync.security_group_arns on "
                    "tcp 2049, and that sync.datasync.subnet_arn is in a zone with a mount target; then run sync-efs again",
            )
        time.sleep(poll_s)


def _run_task(c: Clients, task: str, what: str, poll_s: float, on_line) -> dict:
    execution = call(c.datasync, "start_task_execution", TaskArn=task)["TaskExecutionArn"]
    try:
        return _wait(c, execution, what, poll_s, on_line)
    except BaseException:
        # interrupted (or polling failed): stop the copy, so a rerun starts its own execution at once
        with contextlib.suppress(Exception):  # best effort: it may have ended meanwhile
            c.datasync.cancel_task_execution(TaskExecutionArn=execution)
        raise


def _wait(c: Clients, execution: str, what: str, poll_s: float, on_line) -> dict:
    last = None
    while True:
        state = call(c.datasync, "describe_task_execution", TaskExecutionArn=execution)
        status = state["Status"]
        if status != last and on_line:
            done, total = state.get("BytesTransferred"), state.get("EstimatedBytesToTransfer")
            on_line(f"DataSync {what}: {status}" + (f" ({done:,} of {total:,} bytes)" if done is not None and total else ""))
        last = status
        if status == "ERROR":
            result = state.get("Result", {})
            raise SyncError(
                f"DataSync {what} failed: execution {execution}: {result.get('ErrorCode', 'unknown')} {result.get('ErrorDetail', '')}".rstrip(),
                where=execution,
                fix="the error code and detail above are what DataSync reports (the task has no log group); nothing was marked complete, "
                    "run sync-efs again once it is fixed",
            )
        if status == "SUCCESS":
            return state
        time.sleep(poll_s)


DATA_OPTIONS = {
    "VerifyMode": "POINT_IN_TIME_CONSISTENT",
    "TransferMode": "CHANGED",
    "OverwriteMode": "ALWAYS",
    "PreserveDeletedFiles": "REMOVE",
    "PosixPermissions": "PRESERVE",
    "Mtime": "PRESERVE",
    "Atime": "BEST_EFFORT",
    # ownership is the writer access point's POSIX user, never copied from S3 (a non-root client cannot chown)
    "Uid": "NONE",
    "Gid": "NONE",
}
MARKER_OPTIONS = {**DATA_OPTIONS, "PreserveDeletedFiles": "PRESERVE", "VerifyMode": "ONLY_FILES_TRANSFERRED"}


def lock_key(cfg: DataSyncConfig, version: str) -> str:
    return f"{cfg.prefix}/locks/{version}.lock"


def _acquire(c: Clients, cfg: DataSyncConfig, plan: DataSyncPlan, stale_s: int) -> str:
    """Take the version's lock object; an existing one is taken over only when its holder is provably gone or it is stale."""
    key, owner = lock_key(cfg, plan.version), lock_owner()
    taken = aws.call(c.s3, "put_object", error=SyncError, context="datasync", absent=("PreconditionFailed", "ConditionalRequestConflict"), Bucket=cfg.bucket, Key=key,
                     Body=owner.encode(), IfNoneMatch="*")
    if taken is not None:
        return key
    held = aws.call(c.s3, "get_object", error=SyncError, context="datasync", absent=("NoSuchKey",), Bucket=cfg.bucket, Key=key)
    if held is None:  # released meanwhile
        return _acquire(c, cfg, plan, stale_s)
    holder = held["Body"].read().decode(errors="replace").strip()
    age = int(time.time() - held["LastModified"].timestamp())
    # If-Match on the ETag read: of two runs taking over at once, one put fails
    if (holder_gone(holder) or age > stale_s) and aws.call(
            c.s3, "put_object", error=SyncError, context="datasync", absent=("PreconditionFailed", "ConditionalRequestConflict"), Bucket=cfg.bucket, Key=key,
            Body=owner.encode(), IfMatch=held["ETag"]) is not None:
        return key
    raise SyncError(
        f"another sync of version {plan.version[:12]} holds s3://{cfg.bucket}/{key} (for {age} s, by {holder or 'unknown'})",
        where=plan.where,
        fix=f"wait for it (a lock whose process is gone from this host is taken over at once; one older than {stale_s} s is taken over as stale, "
            "sync.stale_lock_s); if its holder ran elsewhere and is gone, delete that object",
    )


def _result(plan: DataSyncPlan, started: float, uploaded: int = 0, copied: int = 0, bytes_sent: int = 0, removed: int = 0) -> SyncResult:
    contents = load_manifest(plan.manifest)
    return SyncResult(method="datasync", version=plan.version, action=plan.action, where=plan.where, files=contents.files_count, bytes=contents.bytes,
                      bytes_sent=bytes_sent, seconds=time.monotonic() - started, uploaded=uploaded, copied=copied, removed=removed)


def apply_datasync(plan: DataSyncPlan, c: Clients, cfg: DataSyncConfig, *, poll_s: float = 5.0, on_line=None, stale_lock_s: int = 3600) -> SyncResult:
    started = time.monotonic()
    if plan.action == "up-to-date":
        return _result(plan, started)
    with interruptible():
        key = _acquire(c, cfg, plan, stale_lock_s)
        try:
            if _listing(c, cfg.bucket, plan.prefix + MARKER):  # another run finished it meanwhile
                return _result(plan, started)
            removed = _apply(plan, c, cfg, poll_s, on_line)
            return _result(plan, started, uploaded=len(plan.upload), copied=len(plan.copy), bytes_sent=plan.upload_bytes, removed=removed)
        finally:
            with contextlib.suppress(SyncError):
                call(c.s3, "delete_object", Bucket=cfg.bucket, Key=key)


def _apply(plan: DataSyncPlan, c: Clients, cfg: DataSyncConfig, poll_s: float, on_line) -> int:
    """Stage, check, copy to EFS, mark; the number of tasks and locations removed afterwards."""
    source_of = {rel: path for rel, path, _, _ in version_files(plan.tree, load_manifest(plan.manifest))}

    def put(item: StagedFile):
        with open(source_of[item.path], "rb") as fh:
            call(c.s3, "put_object", Bucket=cfg.bucket, Key=plan.prefix + item.path, Body=fh, Metadata=posix_metadata(item))

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for i, _ in enumerate(pool.map(put, plan.upload), 1):
            if on_line and (i % 500 == 0 or i == len(plan.upload)):
                on_line(f"uploaded {i:,} of {len(plan.upload):,} files")
    for item, source in plan.copy:
        call(c.s3, "copy_object", Bucket=cfg.bucket, Key=plan.prefix + item.path, CopySource={"Bucket": cfg.bucket, "Key": source},
             MetadataDirective="REPLACE", Metadata=posix_metadata(item))
    call(c.s3, "put_object", Bucket=cfg.bucket, Key=plan.prefix + MANIFEST_NAME, Body=plan.manifest.read_bytes(),
         Metadata=posix_metadata(StagedFile(MANIFEST_NAME, plan.manifest.stat().st_size, 0o644, "", "")))
    problems = verify_staged(c, cfg, plan)
    if problems:
        raise SyncError(f"the staged version {plan.version[:12]} is incomplete ({len(problems)} problems): " + "; ".join(problems[:5]),
                        where=f"s3://{cfg.bucket}/{plan.prefix}", fix="run sync-efs again (what is staged is kept); nothing was copied to EFS")
    if on_line:
        on_line(f"staged and checked {len(plan.expected):,} files (site-packages, archives) and the manifest")

    short = plan.version[:12]
    made = Created(c)
    try:
        data_source, efs = _s3_location(c, made, cfg, plan.prefix), _efs_location(c, made, cfg, plan.efs_dir)
        data_task = _task(c, made, f"hoist-{short}", data_source, efs, DATA_OPTIONS, poll_s)
        _run_task(c, data_task, f"copy of {short}", poll_s, on_line)

        marker_prefix = f"{cfg.prefix}/markers/{plan.version}/"
        marker = json.dumps({"version": plan.version, "completed_at": int(time.time()), "by": "datasync"}).encode()
        call(c.s3, "put_object", Bucket=cfg.bucket, Key=marker_prefix + MARKER, Body=marker, Metadata=posix_metadata(StagedFile(MARKER, len(marker), 0o644, "", "")))
        marker_source = _s3_location(c, made, cfg, marker_prefix)
        marker_task = _task(c, made, f"hoist-marker-{short}", marker_source, efs, MARKER_OPTIONS, poll_s)
        _run_task(c, marker_task, f"marker of {short}", poll_s, on_line)
        call(c.s3, "put_object", Bucket=cfg.bucket, Key=plan.prefix + MARKER, Body=marker)  # what the next plan reads
    except BaseException:
        made.remove(strict=False)
        raise
    # each version would leave two tasks and three locations behind: remove them once the version is complete
    return made.remove(strict=True)
