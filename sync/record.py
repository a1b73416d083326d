"""The completeness record: that a version is complete, and where it lives.

A version is complete *in a place*: a file system, reached through an access
point (or none), under a root. The same version name is not complete on a file
system created after a teardown, behind a replaced access point, or under
another ``efs.root``; a record keyed by the version alone would say it is, and
the function would point at an empty folder.

So the record names the place, and every sync method writes the same record:

- in the version's folder on EFS, ``.hoist-complete`` (written last, after
  verification): what the shell methods (local, bastion) read, since they see
  the folder itself;
- in the staging bucket at ``<prefix>/complete/<file system>/<access point>/
  <root>/<version>.json``, whenever ``[sync.datasync]`` names one: what
  DataSync reads (it cannot look at EFS), and what the shell methods write too,
  so a version the bastion wrote is up to date for a later DataSync run.

The records live outside ``<prefix>/envs/`` and ``<prefix>/markers/``, which a
lifecycle rule expires (sync/datasync.py, ``lifecycle_rules``): no rule covers
``<prefix>/complete/``, so no record a later plan reads ever expires.

The version name itself is whatever the manifest calls it (its content hash);
this module does not decide what the name covers.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from pipeline import aws
from pipeline.config import Config, DataSyncConfig
from pipeline.errors import SyncError

RECORDS = "complete"  # <prefix>/complete/...: never under a lifecycle rule
NO_ACCESS_POINT = "no-access-point"


def arn_id(arn: str | None) -> str | None:
    """``fs-...`` or ``fsap-...`` from an EFS ARN (the text after the last slash); None stays None."""
    return arn.rsplit("/", 1)[-1] if arn else None


@dataclass(frozen=True)
class Location:
    """Where a version lives: the file system, the access point its writer went through (None: the file system's root), and efs.root."""

    file_system_id: str
    access_point_id: str | None
    root: str

    def describe(self) -> str:
        return f"{self.file_system_id}" + (f" via {self.access_point_id}" if self.access_point_id else " (no access point)") + f", root {self.root}"


def key(prefix: str, where: Location, version: str) -> str:
    root = "~" + where.root.strip("/").replace("/", "~")  # /hoist -> ~hoist, /a/b -> ~a~b; "/" -> ~ (no "/" inside a key segment)
    return f"{prefix.strip('/')}/{RECORDS}/{where.file_system_id}/{where.access_point_id or NO_ACCESS_POINT}/{root}/{version}.json"


def body(where: Location, version: str, by: str, **extra) -> bytes:
    """The record's text: the same document on EFS and in S3."""
    return json.dumps({"version": version, "file_system_id": where.file_system_id, "access_point_id": where.access_point_id, "root": where.root,
                       "completed_at": int(time.time()), "by": by, **extra}, sort_keys=True).encode()


def datasync_location(cfg: DataSyncConfig, efs_root: str) -> Location:
    fs = arn_id(cfg.file_system_arn)
    assert fs is not None
    return Location(fs, arn_id(cfg.access_point_arn), efs_root)


def shell_location(config: Config, method: str) -> Location | None:
    """Where a shell method's version lives, when [sync.datasync] names the file system (and so a bucket for the
    records); None otherwise (the record on EFS is then the only one). A bastion through the writer access point
    writes where DataSync's access_point_arn writes; the local folder and a bastion on the root use none."""
    assert config.sync is not None
    ds = config.sync.datasync
    if ds is None:
        return None
    through = method == "bastion" and config.sync.bastion is not None and config.sync.bastion.through_access_point
    fs = arn_id(ds.file_system_arn)
    assert fs is not None
    return Location(fs, arn_id(ds.access_point_arn) if through else None, config.efs.root)


def listed(s3, bucket: str, prefix: str, where: Location) -> dict[str, int]:
    """version -> when its record was written (epoch seconds), for every version complete in ``where``: what DataSync's
    garbage collection knows of the versions on EFS (it cannot list the file system)."""
    folder = key(prefix, where, "x").rsplit("/", 1)[0] + "/"
    return {obj["Key"][len(folder):].removesuffix(".json"): int(obj["LastModified"].timestamp())
            for obj in aws.pages(s3, "list_objects_v2", "Contents", error=SyncError, context="datasync", Bucket=bucket, Prefix=folder)
            if obj["Key"].endswith(".json") and "/" not in obj["Key"][len(folder):]}


def read(s3, bucket: str, prefix: str, where: Location, version: str) -> dict | None:
    got = aws.call(s3, "get_object", error=SyncError, context="datasync", absent=("NoSuchKey", "404"), Bucket=bucket, Key=key(prefix, where, version))
    return None if got is None else json.loads(got["Body"].read())


def write(s3, bucket: str, prefix: str, where: Location, version: str, text: bytes) -> None:
    aws.call(s3, "put_object", error=SyncError, context="datasync", Bucket=bucket, Key=key(prefix, where, version), Body=text, ContentType="application/json")


def delete(s3, bucket: str, prefix: str, where: Location, version: str) -> None:
    aws.call(s3, "delete_object", error=SyncError, context="datasync", Bucket=bucket, Key=key(prefix, where, version))
