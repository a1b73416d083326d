"""The `datasync` transport: stage the tree in S3, let AWS DataSync copy it into
the version folder on EFS, then copy the completion marker the same way.

1. Only files the staging prefix does not hold yet are uploaded. Objects are
   content-addressed through the manifest: a file already staged for this
   version (same key, ETag = its MD5) is skipped; one staged for another
   version with the same content is copied inside S3 (no bytes from here).
2. Every object carries DataSync's POSIX metadata (file-permissions,
   file-owner, file-group, file-mtime), so modes survive the copy: a plain
   upload would arrive without its executable bit (lambda-facts.md).
3. A DataSync task from s3://bucket/<prefix>/envs/<hash>/ into
   <efs root>/envs/<hash>/ (VerifyMode POINT_IN_TIME_CONSISTENT, TransferMode
   CHANGED), created or reused by name with its locations; its execution is
   polled until SUCCESS or ERROR.
4. Only then the marker: a second task copies markers/<hash>/.hoist-complete
   into the same folder without deleting anything, and the staging side
   records completion, which the next plan reads.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import aws
from pipeline.config import DataSyncConfig

from .efs import MARKER
from .shell import SyncError

TERMINAL = {"SUCCESS", "ERROR"}
# stage-specific fixes on top of pipeline.aws.ERRORS
AWS_ERRORS = {
    "AccessDenied": ("AWS refused the request", "grant the caller s3:PutObject/GetObject/ListBucket on the staging prefix and datasync:* on its tasks and locations"),
    "AccessDeniedException": ("AWS refused the request", "grant the caller datasync:CreateTask/StartTaskExecution/Describe* and iam:PassRole for the DataSync roles"),
    "NoSuchBucket": ("the staging bucket does not exist", "create it, or fix sync.datasync.bucket"),
}


@dataclass(frozen=True)
class StagedFile:
    path: str
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

    @property
    def upload_bytes(self) -> int:
        return sum(f.size for f in self.upload)


@dataclass
class Clients:
    s3: object
    datasync: object
    calls: list = field(default_factory=list)


def clients(cfg: DataSyncConfig) -> Clients:
    sess = aws.session(cfg.region)
    return Clients(s3=aws.client(sess, "s3"), datasync=aws.client(sess, "datasync"))


def call(client, operation: str, **params):
    """One AWS call; AWS error codes become SyncErrors that say what to do."""
    return aws.call(client, operation, error=SyncError, errors=AWS_ERRORS, default_fix="read the message; check the names and ARNs in [sync.datasync]", **params)


def _digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _listing(c: Clients, bucket: str, prefix: str) -> dict[str, tuple[str, int]]:
    out = {}
    token = None
    while True:
        page = call(c.s3, "list_objects_v2", Bucket=bucket, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
        for obj in page.get("Contents", []):
            out[obj["Key"]] = (obj["ETag"].strip('"'), obj["Size"])
        if not page.get("IsTruncated"):
            return out
        token = page["NextContinuationToken"]


def plan_datasync(c: Clients, cfg: DataSyncConfig, efs_root: str, tree: Path, manifest: Path) -> DataSyncPlan:
    doc = json.loads(manifest.read_text())
    version = doc["content_hash"]
    prefix = f"{cfg.prefix}/envs/{version}/"
    efs_dir = f"{efs_root.rstrip('/')}/envs/{version}"
    where = f"s3://{cfg.bucket}/{prefix} -> {cfg.file_system_arn}:{efs_dir}"
    staged = _listing(c, cfg.bucket, f"{cfg.prefix}/envs/")
    if prefix + MARKER in staged:
        return DataSyncPlan(version=version, tree=tree, manifest=manifest, prefix=prefix, efs_dir=efs_dir, action="up-to-date", where=where)
    by_content = {(etag, size): key for key, (etag, size) in staged.items() if "-" not in etag}
    upload, copy, present = [], [], 0
    for f in doc["files"]:
        md5, sha = _digests(tree / f["path"])
        item = StagedFile(path=f["path"], size=f["size"], mode=int(f["mode"], 8), md5=md5, sha256=sha)
        key = prefix + "site-packages/" + f["path"]
        if staged.get(key, ("", -1))[0] == md5:
            present += 1
        elif (md5, f["size"]) in by_content:
            copy.append((item, by_content[(md5, f["size"])]))
        else:
            upload.append(item)
    return DataSyncPlan(version=version, tree=tree, manifest=manifest, prefix=prefix, efs_dir=efs_dir, action="transfer", upload=tuple(upload), copy=tuple(copy), present=present, where=where)


def posix_metadata(item: StagedFile) -> dict[str, str]:
    """DataSync's POSIX keys (verify the formats against a real task when one is at hand)."""
    return {
        "file-permissions": f"{0o100000 | item.mode:o}",
        "file-owner": "0",
        "file-group": "0",
        "file-mtime": f"{946684800}000000000ns",
        "hoist-sha256": item.sha256,
    }


def _slashes(text: str) -> str:
    return re.sub("/+", "/", text).rstrip("/")


def _find_or_create_location(c: Clients, scheme: str, uri_suffix: str, create) -> str:
    """Reuse a location whose URI ends with the same path (AWS writes s3://bucket/dir/)."""
    for loc in call(c.datasync, "list_locations").get("Locations", []):
        uri = loc["LocationUri"]
        if uri.startswith(scheme + "://") and _slashes(uri).endswith(_slashes(uri_suffix)):
            return loc["LocationArn"]
    return create()["LocationArn"]


def _s3_location(c: Clients, cfg: DataSyncConfig, prefix: str) -> str:
    return _find_or_create_location(
        c, "s3", f"{cfg.bucket}/{prefix}",
        lambda: call(c.datasync, "create_location_s3", S3BucketArn=f"arn:aws:s3:::{cfg.bucket}", Subdirectory=f"/{prefix}", S3Config={"BucketAccessRoleArn": cfg.s3_role_arn}),
    )


def _efs_location(c: Clients, cfg: DataSyncConfig, efs_dir: str) -> str:
    params = {
        "EfsFilesystemArn": cfg.file_system_arn,
        "Subdirectory": efs_dir,
        "Ec2Config": {"SubnetArn": cfg.subnet_arn, "SecurityGroupArns": list(cfg.security_group_arns)},
        "InTransitEncryption": "TLS1_2",
    }
    if cfg.access_point_arn:
        params["AccessPointArn"] = cfg.access_point_arn
    if cfg.file_system_role_arn:
        params["FileSystemAccessRoleArn"] = cfg.file_system_role_arn
    return _find_or_create_location(c, "efs", efs_dir, lambda: call(c.datasync, "create_location_efs", **params))


def _task(c: Clients, name: str, source: str, dest: str, options: dict) -> str:
    for task in call(c.datasync, "list_tasks").get("Tasks", []):
        if task.get("Name") == name:
            return task["TaskArn"]
    return call(c.datasync, "create_task", SourceLocationArn=source, DestinationLocationArn=dest, Name=name, Options=options)["TaskArn"]


def _run_task(c: Clients, task: str, what: str, poll_s: float, on_line) -> dict:
    execution = call(c.datasync, "start_task_execution", TaskArn=task)["TaskExecutionArn"]
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
                fix="read the error detail (and the task's CloudWatch log); nothing was marked complete, run sync-efs again once it is fixed",
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
}
MARKER_OPTIONS = {**DATA_OPTIONS, "PreserveDeletedFiles": "PRESERVE", "VerifyMode": "ONLY_FILES_TRANSFERRED"}


def apply_datasync(plan: DataSyncPlan, c: Clients, cfg: DataSyncConfig, *, poll_s: float = 5.0, on_line=None) -> dict:
    if plan.action == "up-to-date":
        return {"uploaded": 0, "copied": 0, "bytes": 0}

    def put(item: StagedFile):
        with open(plan.tree / item.path, "rb") as fh:
            call(c.s3, "put_object", Bucket=cfg.bucket, Key=plan.prefix + "site-packages/" + item.path, Body=fh, Metadata=posix_metadata(item))

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for i, _ in enumerate(pool.map(put, plan.upload), 1):
            if on_line and (i % 500 == 0 or i == len(plan.upload)):
                on_line(f"uploaded {i:,} of {len(plan.upload):,} files")
    for item, source in plan.copy:
        call(c.s3, "copy_object", Bucket=cfg.bucket, Key=plan.prefix + "site-packages/" + item.path, CopySource={"Bucket": cfg.bucket, "Key": source},
             MetadataDirective="REPLACE", Metadata=posix_metadata(item))
    call(c.s3, "put_object", Bucket=cfg.bucket, Key=plan.prefix + "manifest.json", Body=plan.manifest.read_bytes(),
         Metadata=posix_metadata(StagedFile("manifest.json", plan.manifest.stat().st_size, 0o644, "", "")))

    short = plan.version[:12]
    data_task = _task(c, f"hoist-{short}", _s3_location(c, cfg, plan.prefix), _efs_location(c, cfg, plan.efs_dir), DATA_OPTIONS)
    _run_task(c, data_task, f"copy of {short}", poll_s, on_line)

    marker_prefix = f"{cfg.prefix}/markers/{plan.version}/"
    marker = json.dumps({"content_hash": plan.version, "completed_at": int(time.time()), "by": "datasync"}).encode()
    call(c.s3, "put_object", Bucket=cfg.bucket, Key=marker_prefix + MARKER, Body=marker, Metadata=posix_metadata(StagedFile(MARKER, len(marker), 0o644, "", "")))
    marker_task = _task(c, f"hoist-marker-{short}", _s3_location(c, cfg, marker_prefix), _efs_location(c, cfg, plan.efs_dir), MARKER_OPTIONS)
    _run_task(c, marker_task, f"marker of {short}", poll_s, on_line)
    call(c.s3, "put_object", Bucket=cfg.bucket, Key=plan.prefix + MARKER, Body=marker)  # what the next plan reads
    return {"uploaded": len(plan.upload), "copied": len(plan.copy), "bytes": plan.upload_bytes}
