"""What `invoke validate` checks: the last build of a target, or any folder.

The static checks always run. The smoke test (validate/smoke.py) runs after
them when they pass, at the level asked for; when it cannot run, the report
says why instead of claiming a pass.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pipeline.config import Config
from pipeline.errors import ValidationError
from pipeline.targets import facts, lambda_target

from .checks import ValidationReport, validate
from .smoke import SmokeInputs, smoke

DEFAULT_CACHE = Path(".hoist-cache")


def _with_smoke(report: ValidationReport, inputs: SmokeInputs, level: str, image: str | None) -> ValidationReport:
    if level != "none" and not report.ok:
        return dataclasses.replace(report, smoke={"run": False, "why": "not run: the static checks found errors, fix those first"})
    result, findings = smoke(inputs, report.target, level, image)
    return dataclasses.replace(report, findings=report.findings + tuple(findings), smoke=result)


def from_build(config: Config, target_name: str | None = None, *, smoke_level: str = "auto", image: str | None = None) -> ValidationReport:
    """Validate the trees and zips `invoke build` wrote for the target (dist/<target>/build.json)."""
    tcfg = config.target(target_name)
    path = config.build_json(tcfg.target.name)
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
    layer_set = "layer" if "layer" in trees else None
    report = validate(trees, tcfg.target, layer_set=layer_set, zips=zips, built_on_target=doc.get("builder") == "docker")
    inputs = SmokeInputs(
        handler_dir=config.build.handler_dir, handler=config.function.handler, trees=trees, layer_set=layer_set,
        mount_path=config.efs.mount_path, function_name=config.function.name, memory_mb=config.function.memory_mb,
        timeout_s=config.function.timeout_s, cache=config.root / DEFAULT_CACHE,
    )
    return _with_smoke(report, inputs, smoke_level, image)


def from_tree(tree: Path, runtime: str, arch: str, *, layer: bool = False, smoke_level: str = "none", image: str | None = None) -> ValidationReport:
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
    inputs = SmokeInputs(
        handler_dir=None, handler="app.handler", trees={name: tree.resolve()}, layer_set=name if layer else None,
        mount_path="/mnt/efs", function_name="hoist-validate", memory_mb=3008, timeout_s=120, cache=DEFAULT_CACHE.resolve(),
    )
    return _with_smoke(report, inputs, smoke_level, image)
