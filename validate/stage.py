"""What `invoke validate` checks: the last build of a target, or any folder.

The static checks always run. The smoke test through the real runtime client
(validate issue, second half) is not built yet; the report says so instead of
claiming a pass it did not run.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import ValidationError
from pipeline.targets import facts, lambda_target

from .checks import ValidationReport, validate

SMOKE_NOT_RUN = {"run": False, "why": "the import and invoke smoke test through awslambdaric is not built yet; only the static checks ran"}


def from_build(config: Config, target_name: str | None = None) -> ValidationReport:
    """Validate the trees and zips `invoke build` wrote for the target (dist/build.json)."""
    tcfg = config.target(target_name)
    path = config.build.output / "build.json"
    if not path.is_file():
        raise ValidationError(f"{path} does not exist: nothing has been built", where=str(path), fix=f"run `invoke build --target {tcfg.target.name}` first, or validate any folder with --tree")
    doc = json.loads(path.read_text())
    if doc["target"]["name"] != tcfg.target.name:
        raise ValidationError(
            f"{path.name} describes target {doc['target']['name']!r}, not {tcfg.target.name!r}",
            where=str(path),
            fix=f"run `invoke build --target {tcfg.target.name}` first",
        )
    trees = {name: config.root / s["tree"] for name, s in doc["sets"].items()}
    for name, tree in trees.items():
        if not tree.is_dir():
            raise ValidationError(f"tree of set {name} is missing: {tree}", where=str(path), fix=f"run `invoke build --target {tcfg.target.name}` again")
    zips = {name.replace("_", " "): a for name, a in doc.get("artifacts", {}).items()}
    report = validate(trees, tcfg.target, layer_set="layer" if "layer" in trees else None, zips=zips)
    return dataclasses.replace(report, smoke=SMOKE_NOT_RUN)


def from_tree(tree: Path, runtime: str, arch: str, *, layer: bool = False) -> ValidationReport:
    """Validate any site-packages folder, built by Hoist or not."""
    if runtime not in facts()["runtimes"]:
        raise ValidationError(f"unknown runtime {runtime!r}; known: {', '.join(facts()['runtimes'])}", where="--runtime", fix="pass e.g. --runtime python3.13")
    if arch not in facts()["architectures"]:
        raise ValidationError(f"unknown architecture {arch!r}", where="--arch", fix="pass --arch arm64 or --arch x86_64")
    tree = Path(tree)
    if not tree.is_dir():
        raise ValidationError(f"{tree} is not a folder", where="--tree", fix="pass the site-packages folder to check")
    target = lambda_target(f"{runtime}-{arch}", runtime, arch)
    name = "layer" if layer else tree.name
    report = validate({name: tree}, target, layer_set=name if layer else None)
    return dataclasses.replace(report, smoke=SMOKE_NOT_RUN)
