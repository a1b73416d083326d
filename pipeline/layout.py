"""Where a version lives on EFS, as each client sees it: the one place that says so.

On the file system a version is ``<efs.root>/envs/<hash>/`` (models: ``models/``).
A client that mounts through an access point whose root directory is
``efs.root`` sees that directory as its ``/`` (lambda-facts.md, "EFS for
Lambda"): for it the same version is ``/envs/<hash>``, and repeating the root
would write ``<efs.root><efs.root>/envs/<hash>``. The function (its access
point), the bastion mounted through the writer access point and DataSync with
an ``AccessPointArn`` are such clients; the local stand-in folder and a bastion
mounting the file system's root are not.
"""
from __future__ import annotations

import posixpath

KINDS = ("envs", "models")


def client_root(efs_root: str, *, through_access_point: bool) -> str:
    """The folder holding envs/ and models/, as the client sees it (absolute, from its ``/``)."""
    return "/" if through_access_point else "/" + efs_root.strip("/")


def _clean(path: str) -> str:
    # normpath keeps a leading "//" (POSIX lets it mean something else): one slash is meant
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("/") else norm


def root_dir(mount: str, efs_root: str, *, through_access_point: bool) -> str:
    """``<mount>/...``: the folder holding envs/ and models/ for a client that mounts at ``mount``."""
    return _clean(posixpath.join(mount, client_root(efs_root, through_access_point=through_access_point).lstrip("/")))


def kind_dir(mount: str, efs_root: str, kind: str = "envs", *, through_access_point: bool) -> str:
    """``<mount>/.../<kind>``: the folder holding every version of ``kind`` for a client that mounts at ``mount``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    return _clean(posixpath.join(root_dir(mount, efs_root, through_access_point=through_access_point), kind))


def version_dir(mount: str, efs_root: str, version: str, kind: str = "envs", *, through_access_point: bool) -> str:
    return _clean(posixpath.join(kind_dir(mount, efs_root, kind, through_access_point=through_access_point), version))
