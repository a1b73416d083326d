"""The `datasync` transport: stage the whole version in S3, let AWS DataSync copy
it into the version folder on EFS, then copy the completion marker the same way.

1. The version is what the local and bastion methods publish: site-packages/,
   archives/ (the cold start reads these) and manifest.json. Only files the
   staging prefix does not hold yet are uploaded: a file already staged for
   this version (same key and size) is kept; one staged for another version
   at the same path with the same size is copied inside S3 (no bytes from
   here). Both are guesses that step 3 checks.
2. Every object carries DataSync's POSIX metadata (file-permissions,
   file-mtime), so modes survive the copy: a plain upload would arrive without
   its executable bit (lambda-facts.md). The mtime is the local file's, which
   is what rsync keeps (-a): a version either transport wrote has the same
   times, so TransferMode CHANGED finds nothing to copy. No owner is staged:
   the task ignores UID and GID, and files belong to the writer access
   point's POSIX user.
3. Before any task runs, every staged object is checked against the manifest
   and the archive index with S3's own SHA-256 checksum (put with
   ChecksumSHA256, read with HeadObject ChecksumMode=ENABLED), never the ETag:
   the ETag of an SSE-KMS object is not the MD5 of its data (S3 API
   reference, "Object", ETag). A multipart object's checksum is composite (the
   SHA-256 of its parts' SHA-256s, "-N"), compared with the same composite of
   the local file. What differs is uploaded again, once, and checked again.
4. A DataSync task from s3://bucket/<prefix>/envs/<hash>/ into the version's
   folder as DataSync sees it (pipeline/layout.py: through the writer access
   point its root is ``/``), VerifyMode POINT_IN_TIME_CONSISTENT; its
   execution is polled until SUCCESS or ERROR.
   Before any of this, a probe task (EFS -> S3, an include filter naming only
   the version's marker) tells whether EFS holds the version complete already:
   one a shell method published before the bucket kept records. Then its
   record is written and nothing is copied (``marker_on_efs``).
5. Only then the marker: a second task copies markers/<hash>/.hoist-complete
   into the same folder without deleting anything, and the completeness
   record (sync/record.py) is written in the staging bucket, keyed by where
   the version lives (file system, access point, root): what the next plan
   reads, whichever method wrote the version.

Each run creates its own locations and tasks, tagged ``hoist:staging`` (the
bucket and prefix) and ``hoist:version``, and waits for each task to be
AVAILABLE before starting it (an EFS task passes through CREATING, and on new
mount targets UNAVAILABLE, first). It never reuses one it finds: a location's
URI names neither its access point, role nor network, so a leftover could
write as another user. Whatever the run created is deleted when it ends, as it
ends (success, failure or interruption); an interrupted run cancels its
execution first. What a killed run left (SIGKILL) is swept by the next run
and by efs-gc: tagged with this staging prefix, for a version nobody holds
the lock of (``sweep``). The staged content expires by a lifecycle rule on
``<prefix>/envs/`` and ``<prefix>/markers/`` (``lifecycle_rules``), which
spares the records.

A run holds ``<prefix>/locks/<hash>.lock`` in the staging bucket while it
works (a conditional put: If-None-Match to take it, If-Match on the ETag it
read to take over one whose holder is provably gone or that is older than
``stale_lock_s``), as the shell methods hold their lock folder.

List calls go through boto3's paginators; ARNs take the partition of the region.
"""
from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import aws
from pipeline.config import DataSyncConfig
from pipeline.console import counted
from pipeline.errors import SyncError
from pipeline.layout import version_dir
from pipeline.records import MANIFEST_NAME, Manifest, load_manifest

from . import record
from .efs import MARKER, GcPlan, SyncResult, Version, holder_gone, lock_owner
from .record import Location
from .shell import interruptible

TERMINAL = {"SUCCESS", "ERROR"}


@dataclass(frozen=True)
class StagedFile:
    path: str  # under the version: site-packages/..., archives/...
    size: int
    mode: int
    sha256: str  # hex
    mtime_ns: int = 0  # the local file's: what rsync keeps


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
    expected: tuple[StagedFile, ...] = ()  # every file the version holds
    location: Location | None = None  # where the version lives: the completeness record's key

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


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def b64(hex_digest: str) -> str:
    """S3's form of a checksum: base64 of the digest's bytes."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def composite_sha256(path: Path, part_sizes: list[int]) -> str:
    """S3's composite checksum of a multipart object (S3 User Guide, "Checking object integrity", composite
    checksums): the SHA-256 of the concatenated SHA-256 digests of its parts, base64, then "-<parts>"."""
    digests = b""
    with open(path, "rb") as fh:
        for size in part_sizes:
            digests += hashlib.sha256(fh.read(size)).digest()
    return base64.b64encode(hashlib.sha256(digests).digest()).decode() + f"-{len(part_sizes)}"


def _listing(c: Clients, bucket: str, prefix: str) -> dict[str, tuple[str, int]]:
    """key -> (ETag, size). The ETag is never taken for a digest (it is not one for SSE-KMS or multipart objects)."""
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


def _staged_file(rel: str, path: Path, size: int, mode: int) -> StagedFile:
    return StagedFile(path=rel, size=size, mode=mode, sha256=_sha256(path), mtime_ns=path.stat().st_mtime_ns)


def plan_datasync(c: Clients, cfg: DataSyncConfig, efs_root: str, tree: Path, manifest: Path) -> DataSyncPlan:
    contents = load_manifest(manifest)
    version = contents.identity
    prefix = f"{cfg.prefix}/envs/{version}/"
    # DataSync mounts the writer access point when one is given: its root (efs.root) is DataSync's /
    efs_dir = version_dir("/", efs_root, version, through_access_point=bool(cfg.access_point_arn))
    where = f"s3://{cfg.bucket}/{prefix} -> {cfg.access_point_arn or cfg.file_system_arn}:{efs_dir}"
    location = record.datasync_location(cfg, efs_root)
    if record.read(c.s3, cfg.bucket, cfg.prefix, location, version) is not None:  # complete there, by whichever method
        return DataSyncPlan(version=version, tree=tree, manifest=manifest, prefix=prefix, efs_dir=efs_dir, action="up-to-date", where=where, location=location)
    staged = _listing(c, cfg.bucket, f"{cfg.prefix}/envs/")
    # the same path of another version with the same size: worth a copy inside S3 (checked by checksum before any task)
    elsewhere = {(key.split("/", 1)[1] if "/" in key else key, size): f"{cfg.prefix}/envs/{key}"
                 for key, (_, size) in ((k.removeprefix(f"{cfg.prefix}/envs/"), v) for k, v in staged.items()) if not key.startswith(version + "/")}
    upload, copy, present, expected = [], [], 0, []
    for rel, path, size, mode in version_files(tree, contents):
        item = _staged_file(rel, path, size, mode)
        expected.append(item)
        if staged.get(prefix + rel, ("", -1))[1] == size:
            present += 1
        elif (rel, size) in elsewhere:
            copy.append((item, elsewhere[(rel, size)]))
        else:
            upload.append(item)
    return DataSyncPlan(version=version, tree=tree, manifest=manifest, prefix=prefix, efs_dir=efs_dir, action="transfer", upload=tuple(upload), copy=tuple(copy),
                        present=present, where=where, expected=tuple(expected), location=location)


def _staged_checksum(c: Clients, bucket: str, key: str) -> tuple[str, list[int]] | None:
    """S3's SHA-256 checksum of an object (HeadObject, ChecksumMode ENABLED), and its part sizes when it is composite;
    None when there is no such object. "" when the object has no SHA-256 checksum (uploaded without one)."""
    head = aws.call(c.s3, "head_object", error=SyncError, context="datasync", absent=("404", "NoSuchKey"), Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    if head is None:
        return None
    value = head.get("ChecksumSHA256") or ""
    if head.get("ChecksumType") != "COMPOSITE" and "-" not in value:
        return value, []
    attrs = call(c.s3, "get_object_attributes", Bucket=bucket, Key=key, ObjectAttributes=["ObjectParts"], MaxParts=10000)
    return value, [p["Size"] for p in attrs.get("ObjectParts", {}).get("Parts", [])]


def _differs(c: Clients, bucket: str, key: str, item: StagedFile, local: Path) -> str | None:
    """Why the staged object is not the local file (None: same SHA-256, like compared with like)."""
    got = _staged_checksum(c, bucket, key)
    if got is None:
        return "not staged"
    value, parts = got
    if not value:
        return "staged without a SHA-256 checksum"
    if parts or "-" in value:
        if not parts:
            return "staged as a multipart object whose parts S3 did not list"
        want = composite_sha256(local, parts)
        return None if value.split("-")[0] == want.split("-")[0] else "staged content differs"
    return None if value == b64(item.sha256) else "staged content differs"


def verify_staged(c: Clients, cfg: DataSyncConfig, plan: DataSyncPlan, source_of: dict[str, Path] | None = None) -> list[tuple[StagedFile, str]]:
    """(file, why) for every staged object that is missing or whose SHA-256 is not the local file's (empty: all staged, same bytes)."""
    source_of = source_of or {rel: path for rel, path, _, _ in version_files(plan.tree, load_manifest(plan.manifest))}
    manifest_item = _staged_file(MANIFEST_NAME, plan.manifest, plan.manifest.stat().st_size, 0o644)
    items = [*plan.expected, manifest_item]
    paths = {**source_of, MANIFEST_NAME: plan.manifest}

    def check(item: StagedFile) -> tuple[StagedFile, str | None]:
        return item, (_differs(c, cfg.bucket, plan.prefix + item.path, item, paths[item.path]) if item.path in paths else "not staged")

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        return [(item, why) for item, why in pool.map(check, items) if why]


def posix_metadata(item: StagedFile) -> dict[str, str]:
    """DataSync's POSIX keys (verify the formats against a real task when one is at hand). The mtime is the
    local file's, as rsync keeps it: either transport leaves the same times, so CHANGED recopies nothing."""
    return {
        "file-permissions": f"{0o100000 | item.mode:o}",
        "file-mtime": f"{item.mtime_ns}ns",
        "hoist-sha256": item.sha256,
    }


STAGING_TAG, VERSION_TAG = "hoist:staging", "hoist:version"


def tags(cfg: DataSyncConfig, version: str) -> list[dict[str, str]]:
    """What every location and task a run creates carries: the sweep finds leftovers by them."""
    return [{"Key": STAGING_TAG, "Value": f"s3://{cfg.bucket}/{cfg.prefix}/"}, {"Key": VERSION_TAG, "Value": version}]


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


def _s3_location(c: Clients, made: Created, cfg: DataSyncConfig, prefix: str, version: str) -> str:
    bucket_arn = f"arn:{aws.partition(cfg.region)}:s3:::{cfg.bucket}"
    return made.location(call(c.datasync, "create_location_s3", S3BucketArn=bucket_arn, Subdirectory=f"/{prefix}", S3Config={"BucketAccessRoleArn": cfg.s3_role_arn},
                              Tags=tags(cfg, version)))


def _efs_location(c: Clients, made: Created, cfg: DataSyncConfig, efs_dir: str, version: str) -> str:
    params: dict[str, Any] = {
        "EfsFilesystemArn": cfg.file_system_arn,
        "Subdirectory": efs_dir,
        "Ec2Config": {"SubnetArn": cfg.subnet_arn, "SecurityGroupArns": list(cfg.security_group_arns)},
        "InTransitEncryption": "TLS1_2",  # the file system policy refuses clients without TLS
        "Tags": tags(cfg, version),
    }
    if cfg.access_point_arn:
        params["AccessPointArn"] = cfg.access_point_arn
    if cfg.file_system_role_arn:
        params["FileSystemAccessRoleArn"] = cfg.file_system_role_arn
    return made.location(call(c.datasync, "create_location_efs", **params))


# how long a new task may stay CREATING or UNAVAILABLE (new mount targets) before it is AVAILABLE
TASK_READY_S = 600.0


def _task(c: Clients, made: Created, name: str, source: str, dest: str, options: dict, poll_s: float, task_tags: list[dict[str, str]]) -> str:
    task = call(c.datasync, "create_task", SourceLocationArn=source, DestinationLocationArn=dest, Name=name, Options=options, Tags=task_tags)["TaskArn"]
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


def _run_task(c: Clients, task: str, what: str, poll_s: float, on_line, includes: list[dict] | None = None) -> dict:
    execution = call(c.datasync, "start_task_execution", TaskArn=task, **({"Includes": includes} if includes else {}))["TaskExecutionArn"]
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
# EFS -> S3, one file at most: copies what matches the include filter, deletes nothing, reads nothing at the destination
PROBE_OPTIONS = {"VerifyMode": "ONLY_FILES_TRANSFERRED", "TransferMode": "ALL", "OverwriteMode": "ALWAYS", "PreserveDeletedFiles": "PRESERVE",
                 "PosixPermissions": "NONE", "Uid": "NONE", "Gid": "NONE", "Mtime": "NONE", "Atime": "NONE"}


def probe_key(cfg: DataSyncConfig, plan: DataSyncPlan) -> str:
    """Where the probe puts the version's marker when EFS has one: its path under the EFS location's root, kept."""
    return f"{cfg.prefix}/probe/{plan.version}/{plan.efs_dir.strip('/')}/{MARKER}"


def marker_on_efs(c: Clients, cfg: DataSyncConfig, plan: DataSyncPlan, poll_s: float, on_line=None) -> bytes | None:
    """The version's marker on EFS, read the one way DataSync can (it runs no command there): a task from the EFS
    location's root to ``<prefix>/probe/<version>/`` that transfers only ``<version folder>/.hoist-complete`` (an
    include filter on StartTaskExecution; with one, DataSync lists only what matches at the source: DataSync User
    Guide, "Transferring specific files, objects, and folders by using filters", and TaskExecutionFilesListedDetail).
    Its text, or None when the folder has no marker (or no folder). A version published by another method before
    [sync.datasync] named the file system has no record in the bucket: this is what keeps DataSync from writing into
    it (PreserveDeletedFiles REMOVE would delete its marker)."""
    key = probe_key(cfg, plan)
    call(c.s3, "delete_object", Bucket=cfg.bucket, Key=key)  # an earlier probe's answer is not this one's
    made = Created(c)
    try:
        root = _efs_location(c, made, cfg, "/", plan.version)  # the writer access point's root (or the file system's): it exists
        dest = _s3_location(c, made, cfg, f"{cfg.prefix}/probe/{plan.version}/", plan.version)
        task = _task(c, made, f"hoist-probe-{plan.version[:12]}", root, dest, PROBE_OPTIONS, poll_s, tags(cfg, plan.version))
        _run_task(c, task, f"check for a marker of {plan.version[:12]} on EFS", poll_s, on_line,
                  includes=[{"FilterType": "SIMPLE_PATTERN", "Value": f"{plan.efs_dir}/{MARKER}"}])
        got = aws.call(c.s3, "get_object", error=SyncError, context="datasync", absent=("NoSuchKey", "404"), Bucket=cfg.bucket, Key=key)
    except BaseException:
        made.remove(strict=False)
        raise
    made.remove(strict=True)
    return None if got is None else got["Body"].read()


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


def lifecycle_rules(cfg: DataSyncConfig) -> list[dict]:
    """Hoist's rules on the staging bucket: staged versions, markers and the probes' answers expire after ``expire_staged_days``
    (a later version re-uploads what expired); locks and the completeness records (``<prefix>/complete/``) are
    under no rule, so no record a later plan reads expires."""
    return [{"ID": f"hoist-{cfg.prefix}-{part}", "Filter": {"Prefix": f"{cfg.prefix}/{part}/"}, "Status": "Enabled",
             "Expiration": {"Days": cfg.expire_staged_days}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}
            for part in ("envs", "markers", "probe")]


def ensure_lifecycle(c: Clients, cfg: DataSyncConfig) -> bool:
    """Put Hoist's rules into the bucket's lifecycle configuration, keeping every other rule: PutBucketLifecycleConfiguration
    replaces the whole configuration (S3 API reference), so the rules are read first. True when it changed anything."""
    got = aws.call(c.s3, "get_bucket_lifecycle_configuration", error=SyncError, context="datasync", absent=("NoSuchLifecycleConfiguration",), Bucket=cfg.bucket)
    current = (got or {}).get("Rules", [])
    ours = lifecycle_rules(cfg)
    ids = {r["ID"] for r in ours}
    kept = [r for r in current if r.get("ID") not in ids]
    if all(r in current for r in ours):
        return False
    call(c.s3, "put_bucket_lifecycle_configuration", Bucket=cfg.bucket, LifecycleConfiguration={"Rules": kept + ours})
    return True


def _held(c: Clients, cfg: DataSyncConfig, version: str, stale_s: int) -> bool:
    """Whether a run holds the version's lock now (a stale lock or one whose holder is provably gone does not count)."""
    held = aws.call(c.s3, "get_object", error=SyncError, context="datasync", absent=("NoSuchKey",), Bucket=cfg.bucket, Key=lock_key(cfg, version))
    if held is None:
        return False
    holder = held["Body"].read().decode(errors="replace").strip()
    return not holder_gone(holder) and time.time() - held["LastModified"].timestamp() <= stale_s


def _tags_of(c: Clients, arn: str) -> dict[str, str]:
    found: dict[str, str] = {}
    token = None
    while True:
        page = call(c.datasync, "list_tags_for_resource", ResourceArn=arn, **({"NextToken": token} if token else {}))
        found.update({t["Key"]: t.get("Value", "") for t in page.get("Tags", [])})
        token = page.get("NextToken")
        if not token:
            return found


def sweep(c: Clients, cfg: DataSyncConfig, keep_version: str | None = None, stale_s: int = 3600) -> list[str]:
    """Delete the tasks, then the locations, that runs against this staging prefix left behind (a SIGKILL skips the
    run's own clean-up): tagged ``hoist:staging`` with it, for a version no live run holds the lock of. ``keep_version``
    (the caller's own, whose lock it holds) is never swept."""
    ours = f"s3://{cfg.bucket}/{cfg.prefix}/"
    removed: list[str] = []
    for what, listing, key, delete in (("tasks", "list_tasks", "TaskArn", "delete_task"), ("locations", "list_locations", "LocationArn", "delete_location")):
        for item in aws.pages(c.datasync, listing, what.capitalize(), error=SyncError, context="datasync"):
            arn = item[key]
            found = _tags_of(c, arn)
            version = found.get(VERSION_TAG)
            if found.get(STAGING_TAG) != ours or not version or version == keep_version or _held(c, cfg, version, stale_s):
                continue
            call(c.datasync, delete, **{key: arn})
            removed.append(arn)
    return removed


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
            assert plan.location is not None
            if record.read(c.s3, cfg.bucket, cfg.prefix, plan.location, plan.version) is not None:  # another run finished it meanwhile
                return _result(plan, started)
            ensure_lifecycle(c, cfg)
            sweep(c, cfg, keep_version=plan.version, stale_s=stale_lock_s)
            found = marker_on_efs(c, cfg, plan, poll_s, on_line)
            if found is not None:  # complete on EFS, published by another method before the bucket kept records: never written into
                record.write(c.s3, cfg.bucket, cfg.prefix, plan.location, plan.version, found)
                if on_line:
                    on_line(f"version {plan.version[:12]} is complete on EFS already (its marker): recorded, nothing copied")
                return _result(dataclasses.replace(plan, action="up-to-date"), started)
            removed = _apply(plan, c, cfg, poll_s, on_line)
            return _result(plan, started, uploaded=len(plan.upload), copied=len(plan.copy), bytes_sent=plan.upload_bytes, removed=removed)
        finally:
            with contextlib.suppress(SyncError):
                call(c.s3, "delete_object", Bucket=cfg.bucket, Key=key)


def _apply(plan: DataSyncPlan, c: Clients, cfg: DataSyncConfig, poll_s: float, on_line) -> int:
    """Stage, check, copy to EFS, mark; the number of tasks and locations removed afterwards."""
    source_of = {rel: path for rel, path, _, _ in version_files(plan.tree, load_manifest(plan.manifest))}

    source_of[MANIFEST_NAME] = plan.manifest

    def put(item: StagedFile):
        # S3 checks the bytes against this SHA-256 on arrival and keeps it: what verify_staged compares
        with open(source_of[item.path], "rb") as fh:
            call(c.s3, "put_object", Bucket=cfg.bucket, Key=plan.prefix + item.path, Body=fh, Metadata=posix_metadata(item),
                 ChecksumAlgorithm="SHA256", ChecksumSHA256=b64(item.sha256))

    def put_all(items, what: str) -> None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            for i, _ in enumerate(pool.map(put, items), 1):
                if on_line and (i % 500 == 0 or i == len(items)):
                    on_line(f"{what} {i:,} of {len(items):,} files")

    put_all(plan.upload, "uploaded")
    for item, source in plan.copy:
        call(c.s3, "copy_object", Bucket=cfg.bucket, Key=plan.prefix + item.path, CopySource={"Bucket": cfg.bucket, "Key": source},
             MetadataDirective="REPLACE", Metadata=posix_metadata(item), ChecksumAlgorithm="SHA256")
    put(_staged_file(MANIFEST_NAME, plan.manifest, plan.manifest.stat().st_size, 0o644))
    problems = verify_staged(c, cfg, plan, source_of)
    if problems:  # a guess of the plan (same path and size, other bytes), or an object staged without a checksum: send those again
        put_all([item for item, _ in problems if item.path in source_of], "uploaded again")
        problems = verify_staged(c, cfg, plan, source_of)
    if problems:
        raise SyncError(f"the staged version {plan.version[:12]} is incomplete ({counted(len(problems), 'problem')}): " + "; ".join(f"{why}: {item.path}" for item, why in problems[:5]),
                        where=f"s3://{cfg.bucket}/{plan.prefix}", fix="run sync-efs again (what is staged is kept); nothing was copied to EFS")
    if on_line:
        on_line(f"staged and checked {len(plan.expected):,} files (site-packages, archives) and the manifest by SHA-256")

    short = plan.version[:12]
    made = Created(c)
    try:
        task_tags = tags(cfg, plan.version)
        data_source, efs = _s3_location(c, made, cfg, plan.prefix, plan.version), _efs_location(c, made, cfg, plan.efs_dir, plan.version)
        data_task = _task(c, made, f"hoist-{short}", data_source, efs, DATA_OPTIONS, poll_s, task_tags)
        _run_task(c, data_task, f"copy of {short}", poll_s, on_line)

        marker_prefix = f"{cfg.prefix}/markers/{plan.version}/"
        assert plan.location is not None
        marker = record.body(plan.location, plan.version, "datasync")
        call(c.s3, "put_object", Bucket=cfg.bucket, Key=marker_prefix + MARKER, Body=marker,
             Metadata=posix_metadata(StagedFile(MARKER, len(marker), 0o644, hashlib.sha256(marker).hexdigest(), time.time_ns())))
        marker_source = _s3_location(c, made, cfg, marker_prefix, plan.version)
        marker_task = _task(c, made, f"hoist-marker-{short}", marker_source, efs, MARKER_OPTIONS, poll_s, task_tags)
        _run_task(c, marker_task, f"marker of {short}", poll_s, on_line)
        record.write(c.s3, cfg.bucket, cfg.prefix, plan.location, plan.version, marker)  # what the next plan reads
    except BaseException:
        made.remove(strict=False)
        raise
    # each version would leave two tasks and three locations behind: remove them once the version is complete
    return made.remove(strict=True)


# -- garbage collection through DataSync (no shell on EFS) ------------------------------------------------------
def plan_gc(c: Clients, cfg: DataSyncConfig, efs_root: str, keep: int, protect: set[str]) -> GcPlan:
    """Versions complete where DataSync writes (their records in the bucket, newest first) that are neither among the
    newest ``keep`` nor protected (deployed). Reads only."""
    where = record.datasync_location(cfg, efs_root)
    found = sorted(record.listed(c.s3, cfg.bucket, cfg.prefix, where).items(), key=lambda kv: kv[1], reverse=True)
    versions = [Version(name, True, at, None) for name, at in found]
    kept = {v.name for v in versions[:keep]} | {v.name for v in versions if any(p and v.name.startswith(p) for p in protect)}
    base = version_dir("/", efs_root, "", through_access_point=bool(cfg.access_point_arn)).rstrip("/")
    return GcPlan(base=base, remove=tuple(v for v in versions if v.name not in kept), keep=tuple(v for v in versions if v.name in kept),
                  where=f"DataSync ({cfg.access_point_arn or cfg.file_system_arn})")


EMPTY = "gc-empty"  # <prefix>/gc-empty/: never written, the source that empties a version folder


def apply_gc(plan: GcPlan, c: Clients, cfg: DataSyncConfig, efs_root: str, *, poll_s: float = 5.0, on_line=None, stale_lock_s: int = 3600) -> list[str]:
    """Sweep what killed runs left, then empty each version: its record goes first (no plan finds it complete), then a
    task from an empty S3 prefix into the version's folder with PreserveDeletedFiles REMOVE deletes every file there
    (DataSync User Guide: REMOVE deletes destination files that are not in the source), the marker among them. The
    empty folder stays (DataSync deletes files, not its location's root). A version a run holds the lock of is skipped."""
    sweep(c, cfg, stale_s=stale_lock_s)
    where = record.datasync_location(cfg, efs_root)
    removed = []
    for v in plan.remove:
        if _held(c, cfg, v.name, stale_lock_s):
            continue
        record.delete(c.s3, cfg.bucket, cfg.prefix, where, v.name)
        made = Created(c)
        try:
            empty = _s3_location(c, made, cfg, f"{cfg.prefix}/{EMPTY}/", v.name)
            folder = _efs_location(c, made, cfg, version_dir("/", efs_root, v.name, through_access_point=bool(cfg.access_point_arn)), v.name)
            task = _task(c, made, f"hoist-gc-{v.name[:12]}", empty, folder, DATA_OPTIONS, poll_s, tags(cfg, v.name))
            _run_task(c, task, f"removal of {v.name[:12]}", poll_s, on_line)
        except BaseException:
            made.remove(strict=False)
            raise
        made.remove(strict=True)
        removed.append(v.name)
    return removed
