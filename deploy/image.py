"""The image shape's push: the built image into the stack's ECR repository, pinned by the registry's digest.

Apply only (never while planning): ``docker load`` of the build's OCI layout
(skipped when the daemon has its image id already), ``docker tag`` as
``<repository>:<tag>``, ``docker push``. The tag is the build's, named after
the image's config digest, so an immutable repository never sees one tag for
two images and a re-push of the same image is a no-op. Docker sends only the
layers the registry lacks: a handler-only change sends the handler's layer,
the config and the manifest. ``docker push`` compresses the layers itself
(the layout is uncompressed), so the registry's manifest digest is not the
layout's: the function pins the registry's (``<repository>@sha256:...``), as
push reports it.

ECR's login: GetAuthorizationToken gives ``AWS:<password>`` in base64 and the
registry's address (Amazon ECR User Guide, "Private registry authentication");
``docker login --password-stdin`` takes it.
"""
from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline import aws, docker
from pipeline.errors import CommandError, DeployError
from pipeline.records import ImageRecord


@dataclass(frozen=True)
class ImagePush:
    """The plan's image step: the build's image, the repository, and the registry's digest when it holds the tag already."""

    record: ImageRecord
    repository: str  # <registry>/<name> ("" when the stack has no repository yet: a dry run)
    digest: str | None  # the registry's manifest digest; None: to push (apply pushes, then pins what the registry says)

    @property
    def tag(self) -> str:
        return self.record.tag.rsplit(":", 1)[1]


def registry_digest(ecr, repository_name: str, tag: str) -> str | None:
    """The digest ECR holds for ``tag`` (DescribeImages), or None when the tag is not there: the plan reads, never pushes."""
    got = aws.call(ecr, "describe_images", error=DeployError, context="ecr", absent=("ImageNotFoundException",),
                   repositoryName=repository_name, imageIds=[{"imageTag": tag}])
    details = (got or {}).get("imageDetails") or []
    return details[0]["imageDigest"] if details else None


@dataclass(frozen=True)
class Pushed:
    repository: str  # <registry>/<name>
    tag: str
    digest: str  # the registry's manifest digest: what the function pins

    @property
    def uri(self) -> str:
        return f"{self.repository}@{self.digest}"


def push(record: ImageRecord, repository: str, on_line: Callable[[str], None] | None = None) -> Pushed:
    """Push the build's image to ``repository`` (<registry>/<name>, logged in already); the registry's digest."""
    docker.load_layout(record.layout, record.config_digest)
    tag = record.tag.rsplit(":", 1)[1]
    ref = f"{repository}:{tag}"
    docker.tag(record.config_digest, ref)
    try:
        digest = docker.push(ref, on_line=on_line)
    except CommandError as exc:  # the daemon's words, with where and the fix
        raise DeployError(f"docker push {ref} failed: {exc}", where=repository,
                          fix="check the repository exists (deploy creates it first) and the login (aws ecr get-login-password)") from exc
    return Pushed(repository=repository, tag=tag, digest=digest)


def ecr_login(ecr, registry_id: str | None = None) -> str:
    """``docker login`` to the account's ECR registry with a token from GetAuthorizationToken; the registry's host."""
    kw: dict[str, Any] = {"registryIds": [registry_id]} if registry_id else {}
    got = aws.call(ecr, "get_authorization_token", error=DeployError, context="ecr", **kw)
    data = got["authorizationData"][0]
    user, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    host = data["proxyEndpoint"].removeprefix("https://")
    docker.login(host, user, password)
    return host
