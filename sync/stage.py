"""What the sync tasks call: which tree, which transport, which folder on EFS."""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Config, SyncConfig
from pipeline.errors import SyncError
from pipeline.layout import root_dir
from pipeline.records import changed_after_build, load_build_record, load_manifest, rebuild_fix, tree_differences

from . import record
from .efs import GcPlan, SyncPlan, SyncResult, apply_gc, apply_sync, list_versions, plan_gc, plan_sync, read_marker
from .shell import Remote

if TYPE_CHECKING:
    from .datasync import Clients, DataSyncPlan


METHODS = ("local", "bastion", "datasync")


def remote_for(config: Config, method: str | None = None) -> tuple[Remote, str]:
    """The transport and the folder on EFS that holds envs/ and models/, as that transport sees it
    (pipeline/layout.py: through an access point, its root is the client's /)."""
    sync = config.sync
    assert sync is not None
    method = method or sync.method
    if method == "local":  # the folder stands in for the file system's root
        return Remote(bwlimit_kbps=sync.bwlimit_kbps), root_dir(str(sync.local_path.resolve()), config.efs.root, through_access_point=False)
    if method == "bastion":
        if not sync.bastion:
            raise SyncError("sync method bastion needs [sync.bastion] in pipeline.toml", where="sync.bastion", fix="add host, user, identity_file, known_hosts and efs_path")
        b = sync.bastion
        return Remote(bastion=b, bwlimit_kbps=sync.bwlimit_kbps), root_dir(b.efs_path, config.efs.root, through_access_point=b.through_access_point)
    raise SyncError(f"method {method!r} has no shell transport", where="sync.method", fix="use local or bastion here; datasync goes through sync.datasync")


def _sync(config: Config) -> SyncConfig:
    assert config.sync is not None  # config.load always sets it
    return config.sync


def built_tree(config: Config, target_name: str | None) -> tuple[Path, Path]:
    """The EFS set's tree and manifest from the last build of the target."""
    tcfg = config.target(target_name)
    summary = config.build_json(tcfg.target.name)
    if not summary.is_file():
        raise SyncError(f"{summary} does not exist: nothing has been built", where=str(summary), fix=f"run `invoke build --target {tcfg.target.name}`")
    record = load_build_record(summary, config.root)
    if record.target_name != tcfg.target.name or "efs" not in record.sets:
        raise SyncError(f"the last build is for target {record.target_name!r}, not {tcfg.target.name!r}", where=str(summary), fix=f"run `invoke build --target {tcfg.target.name}`")
    s = record.sets["efs"]
    if s.tree.is_dir() and s.manifest.is_file() and (changed := tree_differences(s.tree, load_manifest(s.manifest))):
        raise SyncError(changed_after_build("efs", changed), where=str(s.tree), fix=rebuild_fix(tcfg.target.name))  # what is published is what was built
    return s.tree, s.manifest


def plan(config: Config, target_name: str | None = None, method: str | None = None) -> tuple[SyncPlan, Remote]:
    remote, root = remote_for(config, method)
    tree, manifest = built_tree(config, target_name)
    return plan_sync(remote, root, tree, manifest), remote


def apply(plan_: SyncPlan, remote: Remote, config: Config, on_line=None, s3=None) -> SyncResult:
    """Publish by rsync; then, when [sync.datasync] names the file system, put the same completeness record in
    the staging bucket (sync/record.py), so a later DataSync run finds the version complete there. A version
    already complete on EFS whose record is missing there gets it now. ``s3`` replaces the boto3 client (tests)."""
    where = record.shell_location(config, "bastion" if remote.bastion else "local")
    result = apply_sync(plan_, remote, stale_lock_s=_sync(config).stale_lock_s, on_line=on_line, location=where)
    if where is not None:
        dcfg = _sync(config).datasync
        assert dcfg is not None
        if s3 is None:
            from .datasync import clients

            s3 = clients(dcfg).s3
        if record.read(s3, dcfg.bucket, dcfg.prefix, where, plan_.version) is None:
            record.write(s3, dcfg.bucket, dcfg.prefix, where, plan_.version, read_marker(remote, plan_))
    return result


def gc_plan(config: Config, keep: int | None = None, protect: set[str] | None = None, method: str | None = None, aws=None) -> tuple[GcPlan, Remote | Clients]:
    """What efs-gc would remove. Through DataSync (no shell on EFS) the records in the staging bucket say which
    versions are complete there; ``aws`` replaces the boto3 clients (tests)."""
    sync = _sync(config)
    if (method or sync.method) == "datasync":
        from . import datasync

        dcfg = _datasync(config)
        c = aws or datasync.clients(dcfg)
        return datasync.plan_gc(c, dcfg, config.efs.root, keep or sync.keep, protect or set()), c
    remote, root = remote_for(config, method)
    return plan_gc(remote, root, keep or sync.keep, protect or set(), sync.stale_lock_s), remote


def _datasync(config: Config):
    dcfg = _sync(config).datasync
    if dcfg is None:
        raise SyncError("sync method datasync needs [sync.datasync] in pipeline.toml", where="sync.datasync",
                        fix="add bucket, region, file_system_arn, subnet_arn, security_group_arns and s3_role_arn")
    return dcfg


def gc_apply(plan_: GcPlan, remote: Remote | Clients, config: Config | None = None, s3=None, poll_s: float = 5.0) -> list[str]:
    """Remove the versions; their completeness records in the staging bucket go first (when [sync.datasync] names
    one), so no plan finds a collected version complete. ``s3`` replaces the boto3 client (tests)."""
    if not isinstance(remote, Remote):
        from . import datasync

        assert config is not None
        return datasync.apply_gc(plan_, remote, _datasync(config), config.efs.root, poll_s=poll_s, stale_lock_s=_sync(config).stale_lock_s)
    where = record.shell_location(config, "bastion" if remote.bastion else "local") if config is not None else None
    if where is not None:
        dcfg = _sync(config).datasync if config is not None else None
        assert dcfg is not None
        if s3 is None:
            from .datasync import clients

            s3 = clients(dcfg).s3
        for v in plan_.remove:
            record.delete(s3, dcfg.bucket, dcfg.prefix, where, v.name)
    return apply_gc(plan_, remote)


def datasync_plan(config: Config, target_name: str | None = None, aws=None):
    """Plan a DataSync sync of the built EFS tree; ``aws`` replaces the boto3 clients (tests)."""
    from .datasync import clients, plan_datasync

    if not _sync(config).datasync:
        raise SyncError("sync method datasync needs [sync.datasync] in pipeline.toml", where="sync.datasync", fix="add bucket, region, file_system_arn, subnet_arn, security_group_arns and s3_role_arn")
    tree, manifest = built_tree(config, target_name)
    dcfg = _sync(config).datasync
    assert dcfg is not None
    c = aws or clients(dcfg)
    return plan_datasync(c, dcfg, config.efs.root, tree, manifest), c


def datasync_apply(plan_, c, config: Config, on_line=None, poll_s: float = 5.0) -> SyncResult:
    from .datasync import apply_datasync

    sync = _sync(config)
    assert sync.datasync is not None
    return apply_datasync(plan_, c, sync.datasync, poll_s=poll_s, on_line=on_line, stale_lock_s=sync.stale_lock_s)


@dataclass(frozen=True)
class SyncJob:
    """One planned sync of the built EFS tree, whichever the method: its plan and the transport that applies it."""

    method: str  # local | bastion | datasync
    plan: SyncPlan | DataSyncPlan
    transport: Remote | Clients


def plan_job(config: Config, target_name: str | None = None, method: str | None = None, *, no_hot_set: bool = False) -> SyncJob:
    """Plan the sync of the target's built EFS tree by ``method`` (default sync.method): reads, writes nothing.
    A tree without its hot set is refused, with its cost, unless ``no_hot_set`` (the user said so)."""
    if method is not None and method not in METHODS:
        close = difflib.get_close_matches(method, METHODS, n=1)
        raise SyncError(f"unknown sync method {method!r}", where="--method",
                        fix=(f"did you mean --method {close[0]}? " if close else "") + f"use one of {', '.join(METHODS)} (sync.method in pipeline.toml sets the default)")
    if not no_hot_set:
        problem = load_manifest(built_tree(config, target_name)[1]).hot_set_cost()
        if problem:
            raise SyncError(problem, where=f"target {config.target(target_name).target.name}",
                            fix="build where the import check runs (`invoke build` prepares QEMU and its root for an arm64 target), "
                                "or accept the cost with --no-hot-set (invoke sync-efs --no-hot-set, invoke deploy --no-hot-set)")
    method = method or _sync(config).method
    if method == "datasync":
        dplan, c = datasync_plan(config, target_name)
        return SyncJob(method, dplan, c)
    splan, remote = plan(config, target_name, method)
    return SyncJob(method, splan, remote)


def apply_job(job: SyncJob, config: Config, on_line: Callable[[str], None] | None = None) -> SyncResult:
    """Apply a planned sync, whichever the method: what it did, as one SyncResult."""
    if job.method == "datasync":
        return datasync_apply(job.plan, job.transport, config, on_line=on_line)
    assert isinstance(job.plan, SyncPlan) and isinstance(job.transport, Remote)
    return apply(job.plan, job.transport, config, on_line=on_line)


def version_complete(config: Config, version: str, method: str | None = None) -> bool:
    """Whether the EFS version is complete where the sync method writes (the same record every method keeps):
    the staging bucket's record for datasync, the marker on the file system for local and bastion."""
    method = method or _sync(config).method
    if method == "datasync":
        from .datasync import clients

        dcfg = _sync(config).datasync
        assert dcfg is not None
        return record.read(clients(dcfg).s3, dcfg.bucket, dcfg.prefix, record.datasync_location(dcfg, config.efs.root), version) is not None
    remote, root = remote_for(config, method)
    return any(v.name == version and v.complete for v in list_versions(remote, f"{root.rstrip('/')}/envs"))
