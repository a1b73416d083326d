"""The deployment's shape, decided once: the stages ask it, and never read ``[function] package`` themselves.

Two shapes (docs/design.md, "Shapes"):

- ``efs`` (the default): the heavy set is synced to EFS and put on sys.path by
  the handler; the light set is a layer; the function runs in a VPC with mount
  targets. SnapStart is excluded (Lambda refuses it with EFS).
- ``image``: every set, the handler and the model in one container image FROM
  the Lambda base image of the target; no VPC, EFS, mount target or sync. The
  function is ``PackageType: Image`` with SnapStart on published versions (off
  with ``snapstart = false``).

A shape is a frozen record of what each stage does differently; the rule for
picking it lives in ``shape_of`` only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Lambda's container image limit (lambda-facts.md, Limits): 10 GB, the uncompressed size of all layers
IMAGE_LIMIT_BYTES = 10 * 1024**3
# SnapStart's ceiling on ephemeral storage (lambda-facts.md, SnapStart)
SNAPSTART_EPHEMERAL_MB = 512

# where the image holds what the zips and EFS hold in the other shape (builder/image.py writes them, the handler reads
# them through the environment below): /opt/python is a layer's place, /var/task the function's (LAMBDA_TASK_ROOT)
IMAGE_PATHS = {"layer": "/opt/python", "efs": "/opt/hoist/efs", "model": "/opt/hoist/model", "handler": "/var/task"}


@dataclass(frozen=True)
class Shape:
    name: str  # "efs" | "image"
    artifact: str  # what build makes for the function: "zips" (function.zip, layer.zip, the EFS tree) or "image" (an OCI image)
    uses_efs: bool  # the heavy set lives on EFS: a file system, access points, mount targets, a sync
    needs_vpc: bool  # the function runs in a VPC (EFS needs it; an image only when the user asks)
    syncs: bool  # `invoke sync-efs` has something to do
    snapstart: bool  # SnapStart on published versions
    storage_first: str  # what deploy creates before the function can be: "file system" | "image repository"
    validates: str  # what validate's smoke test runs: "trees" (mounted beside a base image) | "image" (the image itself)
    serves: str  # what `invoke serve` runs: "tree" (the synced EFS tree on this machine's CPython) | "image" (the image, in Docker)

    def flow(self) -> tuple[str, ...]:
        """The steps from a lock to a live alias, in order (docs/design.md draws them)."""
        if self.artifact == "image":
            return ("lock", "build trees", "build image", "validate image (smoke, hooks)", "deploy: repository",
                    "push by digest", "deploy: function (PackageType Image, SnapStart)", "publish version", "alias")
        return ("lock", "build trees", "zips and archives", "validate trees (smoke)", "deploy: storage",
                "sync-efs", "deploy: function (zip, layer, EFS)", "publish version", "alias")

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "artifact": self.artifact, "uses_efs": self.uses_efs, "needs_vpc": self.needs_vpc,
                "syncs": self.syncs, "snapstart": self.snapstart}


def shape(package: str, snapstart: bool | None = None, vpc: bool = False) -> Shape:
    """The shape of ``package`` ("efs" | "image"); ``snapstart`` None takes the shape's default; ``vpc``: the user gave a VPC."""
    if package == "image":
        return Shape(name="image", artifact="image", uses_efs=False, needs_vpc=vpc, syncs=False, snapstart=snapstart is not False,
                     storage_first="image repository", validates="image", serves="image")
    if package == "efs":
        # config.py refuses snapstart = true with EFS before this is ever asked
        return Shape(name="efs", artifact="zips", uses_efs=True, needs_vpc=True, syncs=True, snapstart=False,
                     storage_first="file system", validates="trees", serves="tree")
    raise ValueError(f"unknown package {package!r}: efs or image")


def shape_of(config: Any) -> Shape:
    """The shape a loaded pipeline.toml (pipeline/config.py's Config) describes."""
    fn = config.function
    dcfg = getattr(config, "deploy", None)
    return shape(fn.package, fn.snapstart, vpc=bool(dcfg and dcfg.vpc_id))
