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
            out.append(VersionInfo(version=v["Version"], efs_version=env.get("HOIST_EFS_VERSION", ""), description=v.get("Description", "")))
    return sorted(out, key=lambda v: int(v.version))


def plan_rollback(lam, function: str, to: str | None = None) -> AliasMove:
    """Where the alias would go: ``to``, or the newest version older than the live one."""
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
