"""The alias ``live`` and the published versions behind it: read, and point back.

Each published version carries its code, layer and the environment variable
that names its EFS tree, so moving the alias moves all three at once. The
stack keeps old versions (DeletionPolicy Retain) for this.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline import aws
from pipeline.errors import DeployError

from .template import ALIAS


@dataclass(frozen=True)
class VersionInfo:
    version: str
    efs_version: str  # from the version's HOIST_EFS_VERSION
    description: str
    access_point_arn: str = ""  # the access point it mounts (FileSystemConfigs), fixed in the version


@dataclass(frozen=True)
class AliasMove:
    function: str
    from_version: str
    to: VersionInfo


def _call(lam, op: str, **params):
    return aws.call(lam, op, error=DeployError, context="lambda-alias", **params)


def current(lam, function: str) -> str | None:
    """The version the alias points at; None when there is no alias (first deploy)."""
    got = aws.call(lam, "get_alias", error=DeployError, absent=("ResourceNotFoundException",), FunctionName=function, Name=ALIAS)
    return got["FunctionVersion"] if got else None


def versions(lam, function: str) -> list[VersionInfo]:
    out = []
    for v in aws.pages(lam, "list_versions_by_function", "Versions", error=DeployError, context="lambda-alias", FunctionName=function):
        if v["Version"] != "$LATEST":
            env = (v.get("Environment") or {}).get("Variables") or {}
            mounts = v.get("FileSystemConfigs") or [{}]
            out.append(VersionInfo(version=v["Version"], efs_version=env.get("HOIST_EFS_VERSION", ""), description=v.get("Description", ""),
                                   access_point_arn=mounts[0].get("Arn", "")))
    return sorted(out, key=lambda v: int(v.version))


def plan_rollback(lam, function: str, to: str | None = None, *, access_point_arn: str | None = None, efs_present=None) -> AliasMove:
    """Where the alias would go: ``to``, or the newest version older than the live one. Refused when that version
    mounts another access point than the stack's now (``access_point_arn``: a published version's FileSystemConfigs
    cannot change, and a replaced access point is gone), or when ``efs_present(efs version)`` says its EFS version
    was collected (False; None: unknown)."""
    move = _pick(lam, function, to)
    target = move.to
    if access_point_arn and target.access_point_arn and target.access_point_arn != access_point_arn:
        raise DeployError(f"version {target.version} mounts access point {target.access_point_arn}, which the stack has replaced by {access_point_arn}: "
                          "the function would fail to mount EFS", where=f"lambda {function}:{target.version}",
                          fix="roll back to a version published since the access point changed (--to N), or deploy the release you want again (invoke deploy)")
    if efs_present is not None and target.efs_version and efs_present(target.efs_version) is False:
        raise DeployError(f"version {target.version} needs EFS version {target.efs_version[:16]}, which is no longer on the file system (efs-gc collected it)",
                          where=f"lambda {function}:{target.version}",
                          fix="sync that version again (check out its commit, invoke build, invoke sync-efs), then roll back; or roll back to another (--to N)")
    return move


def _pick(lam, function: str, to: str | None) -> AliasMove:
    live = current(lam, function)
    if live is None:
        raise DeployError(f"{function} has no alias {ALIAS!r}", where=f"lambda {function}", fix="deploy first: invoke deploy")
    known = versions(lam, function)
    if to:
        match = [v for v in known if v.version == str(to)]
        if not match:
            raise DeployError(f"{function} has no version {to}", where=f"lambda {function}", fix=f"pick one of {', '.join(v.version for v in known)}")
        return AliasMove(function=function, from_version=live, to=match[0])
    older = [v for v in known if int(v.version) < int(live)]
    if not older:
        raise DeployError(f"version {live} is the oldest {function} has: there is nothing to roll back to", where=f"lambda {function}", fix="deploy a fixed release instead")
    return AliasMove(function=function, from_version=live, to=older[-1])


def point(lam, function: str, version: str) -> None:
    _call(lam, "update_alias", FunctionName=function, Name=ALIAS, FunctionVersion=str(version))
