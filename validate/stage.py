"""What `invoke validate` checks: the last build of a target, or any folder.

The static checks always run, and so does the smoke test (validate/smoke.py)
at the level asked for, even when the static checks found errors: each static
error is shown beside what the smoke test saw (the import that failed, the
file it loaded, or that no import reached the file). When the smoke test cannot
run, the report says why instead of claiming a pass. Findings the user waived
in pipeline.toml ([validate] waive) become warnings that print their reason.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from pipeline import modelfolder
from pipeline.config import Config, Waiver, keep_line
from pipeline.dists import owner_of, owners
from pipeline.errors import ValidationError
from pipeline.globs import matches
from pipeline.records import BuildRecord, SlimRecord, changed_after_build, load_build_record, load_manifest, rebuild_fix, tree_differences
from pipeline.shapes import shape_of
from pipeline.targets import facts, lambda_target

from .checks import RULES, Finding, SmokeResult, ValidationReport, validate
from .smoke import SmokeInputs, check_level, smoke

DEFAULT_CACHE = Path(".hoist-cache")


def _module_package(trees: dict[str, Path], module: str) -> tuple[str | None, str | None]:
    """(set, distribution) that owns top-level ``module``."""
    for name, tree in trees.items():
        owner = owners(tree)
        for rel in (f"{module}/__init__.py", f"{module}.py"):
            if (tree / rel).exists():
                return name, owner_of(owner, rel)
        hits = [p.name for p in tree.glob(f"{module}.*.so")] + [p.name for p in tree.glob(f"{module}.so")]
        if hits:
            return name, owner_of(owner, hits[0])
    return None, None


def _import_fix(trees: dict[str, Path], slim_docs: dict[str, SlimRecord]):
    """fix_for(module, why): names the slimming rule that removed files of the module's package, and the line to add."""

    def fix_for(module: str, why: str) -> str:
        set_name, package = _module_package(trees, module)
        found = slim_docs.get(set_name or "")
        removed = (found.removed_files if found else {}).get(package or "", {})
        if removed:
            parts = []
            for rule, files in sorted(removed.items()):
                parts.append(f"rule {rule!r} removed {len(files)} file(s) of {package} (e.g. {files[0]}): keep them with `{keep_line(files)}` under [slim.packages.{package}], or `disable = [\"{rule}\"]` under [slim]")
            return "if slimming caused it: " + "; ".join(parts) + "; then `invoke build`. Otherwise install what the error names (add it to requirements/*.in, `invoke lock`, `invoke build`)"
        return "slimming removed nothing of that package: install what the error names (add it to requirements/*.in, then `invoke lock` and `invoke build`), or fix the package's static findings"

    return fix_for


def waive_line(finding: Finding) -> str:
    return f'waive = [{{ rule = "{finding.rule}", files = "{finding.file}", reason = "<why this never loads on Lambda>" }}]  (under [validate] in pipeline.toml)'


def _apply_waivers(report: ValidationReport, waivers: tuple[Waiver, ...], where: str) -> ValidationReport:
    unknown = sorted({w.rule for w in waivers} - set(RULES))
    if unknown:
        raise ValidationError(f"waiver for unknown rule(s) {', '.join(unknown)}", where=f"{where}: validate.waive", fix=f"rules are {', '.join(RULES)}")
    out = []
    for f in report.findings:
        waiver = next((w for w in waivers if f.severity == "error" and w.rule == f.rule and f.file and matches(f.file, [w.files], crossing=True)), None)
        if waiver:
            out.append(dataclasses.replace(f, severity="warning", message=f"waived in pipeline.toml ({waiver.reason}): {f.message}", fix=None))
        elif f.severity == "error" and f.rule in ("needed-libraries", "symbol-versions", "elf-machine", "python-abi") and f.file:
            out.append(dataclasses.replace(f, fix=f"{f.fix}; or, if nothing Lambda runs loads it, waive it: {waive_line(f)}"))
        else:
            out.append(f)
    return dataclasses.replace(report, findings=tuple(out))


def _smoke_saw(finding: Finding, result: SmokeResult) -> str:
    """What the smoke test saw of a static finding's file."""
    if not result.run:
        return "the smoke test did not run"
    rel = (finding.file or "").partition(":")[2]
    failed = result.failed_imports or {}
    top = rel.split("/", 1)[0].split(".", 1)[0]
    if top in failed:
        return f"the smoke test's `import {top}` failed: {failed[top]}"
    if any(path.endswith("/" + rel) for path in result.loaded):
        return f"the smoke test loaded this file at level {result.level} ({result.distance if result.distance is not None else ''}) and it worked there"
    if result.ok:
        return f"the smoke test imported every module at level {result.level} and no import loaded this file"
    return "the smoke test failed before it could tell (see its findings)"


def _with_smoke(report: ValidationReport, inputs: SmokeInputs, level: str, image: str | None, fix_for=None, on_line=None) -> ValidationReport:
    result, findings = smoke(inputs, report.target, level, image, fix_for=fix_for, on_line=on_line)
    seen = []
    for f in report.findings:
        shown = f
        if f.severity == "error" and f.file and level != "none":
            shown = dataclasses.replace(f, message=f"{f.message}\n    smoke test: {_smoke_saw(f, result)}")
        seen.append(shown)
    return dataclasses.replace(report, findings=tuple(seen) + tuple(findings), smoke=result)


def _slim_findings(slim_docs: dict[str, SlimRecord]) -> list[Finding]:
    out = []
    for name, doc in slim_docs.items():
        check = doc.import_check
        if not check:
            continue
        if not check.verified:
            why = check.why if check.why is not None else "no runtime for the target"
            out.append(Finding("warning", "slim-unverified", name, None, f"slimming of set {name} was not import-verified: {why}",
                               "let the build import-check it: where a runtime for the target runs (as root the build prepares QEMU's itself), without the "
                               "opt-out (build.import_check = false, --no-import-check), run `invoke build`: the changed check rebuilds the set"))
        for r in check.restored:
            out.append(Finding("info", "slim-restored", name, r.package, f"rule {r.rule!r} removed files `import {r.module}` needs; the build restored {r.files} file(s)", r.line or None))
    return out


def from_build(config: Config, target_name: str | None = None, *, smoke_level: str = "auto", image: str | None = None, on_line=None,
               events: tuple[bytes, ...] = ()) -> ValidationReport:
    """Validate the trees and zips `invoke build` wrote for the target (dist/<target>/build.json).

    ``events``: more events for the handler after the model folder's sample (their answers are in smoke.events).
    """
    check_level(smoke_level)
    tcfg = config.target(target_name)
    path = config.build_json(tcfg.target.name)
    if not path.is_file():
        raise ValidationError(f"{path} does not exist: nothing has been built", where=str(path), fix=f"run `invoke build --target {tcfg.target.name}` first, or validate any folder with --tree")
    record = load_build_record(path, config.root)
    if record.target_name != tcfg.target.name:
        raise ValidationError(
            f"{path.name} describes target {record.target_name!r}, not {tcfg.target.name!r}",
            where=str(path),
            fix=f"run `invoke build --target {tcfg.target.name}` first",
        )
    return from_record(config, record, smoke_level=smoke_level, image=image, on_line=on_line, events=events)


def from_record(config: Config, record: BuildRecord, *, smoke_level: str = "auto", image: str | None = None, on_line=None,
                events: tuple[bytes, ...] = ()) -> ValidationReport:
    """Validate the trees and zips of a build record (what `invoke build` returned or wrote).

    The smoke test's image: ``image`` (--image), else build.base_image, else the runtime's Lambda image."""
    image = image or config.build.base_image
    path = record.path or config.build_json(record.target_name)
    tcfg = config.target(record.target_name)
    for name, s in record.sets.items():  # a build older than its lock is not what the lock says: validating it would pass the wrong trees
        lock = config.lock_path(name, record.target_name)
        if s.lock_sha256 and (not lock.is_file() or hashlib.sha256(lock.read_bytes()).hexdigest() != s.lock_sha256):
            raise ValidationError(f"set {name} of target {record.target_name} was built from another {lock.name} than the one there now: "
                                  "the trees are not what the lock pins", where=str(lock),
                                  fix=f"run `invoke build --target {record.target_name}`, then validate")
    trees = {name: s.tree for name, s in record.sets.items()}
    for name, tree in trees.items():
        if not tree.is_dir():
            raise ValidationError(f"tree of set {name} is missing: {tree}", where=str(path), fix=f"run `invoke build --target {tcfg.target.name}` again")
        manifest = record.sets[name].manifest
        if manifest.is_file() and (changed := tree_differences(tree, load_manifest(manifest))):
            raise ValidationError(changed_after_build(name, changed), where=str(tree), fix=rebuild_fix(tcfg.target.name))
    zips = {name.replace("_", " "): a.as_json(config.root) for name, a in record.artifacts.items()}
    layer_set = "layer" if "layer" in trees else None
    if on_line:
        on_line(f"static checks of {', '.join(sorted(trees))}: ELF, glibc, libraries, ABI, sizes")
    report = validate(trees, tcfg.target, layer_set=layer_set, zips=zips, built_on_target=record.builder == "docker")
    if record.image is not None:  # the image shape: its trees travel in the image, not on EFS, so no EFS price is theirs
        report = dataclasses.replace(report, findings=tuple(f for f in report.findings if not (f.rule == "size" and f.message.startswith("EFS tree "))),
                                     sizes=dataclasses.replace(report.sizes, efs=()))
    report = _apply_waivers(report, config.waivers, config.path.name)
    slim_docs: dict[str, SlimRecord] = {}
    for name, s in record.sets.items():
        slim_docs[name] = load_manifest(s.manifest).slim if s.manifest.is_file() else SlimRecord()
    report = dataclasses.replace(report, findings=report.findings + tuple(_slim_findings(slim_docs)))
    model_dir = config.model_dir or config.root / "model" / "artifacts"
    try:  # the model folder's sample.json: the image the smoke test classifies and its label
        sample = modelfolder.sample(model_dir) if (model_dir / "model.pt").is_file() else None
    except modelfolder.ModelError:  # `invoke validate` reports the folder's problems on its own
        sample = None
    inputs = SmokeInputs(
        handler_dir=config.build.handler_dir, handler=config.function.handler, trees=trees, layer_set=layer_set,
        mount_path=config.efs.mount_path, function_name=config.function.name, memory_mb=config.function.memory_mb,
        timeout_s=config.function.timeout_s, cache=config.root / DEFAULT_CACHE,
        model_dir=model_dir if (model_dir / "model.pt").is_file() else None, environment=dict(config.function.environment),
    )
    expect = ""
    if inputs.model_dir and sample and sample[0].is_file():
        sample_image, expect = sample
        ctype = "image/jpeg" if sample_image.suffix.lower() in (".jpg", ".jpeg") else "image/png"
        inputs = dataclasses.replace(inputs, events=(classify_event(sample_image.read_bytes(), ctype), *events))
    else:
        inputs = dataclasses.replace(inputs, events=events)
    if shape_of(config).validates == "image":  # the image itself, not the trees beside a base image
        return _check_sample(_with_image_smoke(config, record, report, inputs, smoke_level, on_line), expect)
    report = _with_smoke(report, inputs, smoke_level, image, fix_for=_import_fix(trees, slim_docs), on_line=on_line)
    return _check_sample(report, expect)


def _with_image_smoke(config: Config, record: BuildRecord, report: ValidationReport, inputs: SmokeInputs, level: str, on_line=None) -> ValidationReport:
    """The image shape: the size Lambda allows, then the image run as Lambda publishes and restores it."""
    from .image import ImageSmokeInputs, size_findings, smoke_image

    if record.image is None:
        path = record.path or config.build_json(record.target_name)
        raise ValidationError(f"{path.name} names no image, and [function] package is \"image\"", where=str(path),
                              fix=f"run `invoke build --target {record.target_name}` (it builds the image for this shape)")
    findings = tuple(size_findings(record.image))
    if level == "none":
        return dataclasses.replace(report, findings=report.findings + findings)
    if on_line:
        on_line(f"smoke test of the image {record.image.tag} ({record.image.platform}), through its own runtime client")
    result, more = smoke_image(record.image, report.target,
                               ImageSmokeInputs(function_name=config.function.name, memory_mb=config.function.memory_mb, timeout_s=config.function.timeout_s,
                                                snapstart=shape_of(config).snapstart, events=inputs.events, environment=dict(config.function.environment)),
                               on_line=on_line)
    return dataclasses.replace(report, findings=report.findings + findings + tuple(more), smoke=result)


def classify_event(image: bytes, ctype: str = "image/png") -> bytes:
    """POST /classify with an image, as API Gateway (HTTP API) delivers it."""
    from runtime.gateway import http_api_event

    return json.dumps(http_api_event("POST", "/classify", {"content-type": ctype}, image, route="POST /classify")).encode()


def _check_sample(report: ValidationReport, expect: str) -> ValidationReport:
    """The model folder's sample must come back with its label."""
    answers = report.smoke.events if report.smoke else ()
    if not expect or not answers or answers[0].status != "ok" or report.smoke is None:
        return report
    try:
        body = json.loads((answers[0].result or {}).get("body") or "{}")
        label = body["predictions"][0]["label"]
    except (ValueError, KeyError, IndexError, TypeError):
        label = None
    smoke_doc = dataclasses.replace(report.smoke, sample_label=label, sample_expected=expect)
    extra: tuple[Finding, ...] = ()
    if label != expect:
        extra = (Finding("error", "smoke-classify", f"smoke level {report.smoke.level}", None, f"the model folder's sample came back as {label!r}, expected {expect!r} (sample.json): {answers[0].result}",
                         "check the model folder ([model] dir: model.pt, labels.json, preprocess.json, sample.json); torch and torchvision must be the versions the model was saved with"),)
    return dataclasses.replace(report, smoke=smoke_doc, findings=report.findings + extra)


def from_tree(tree: Path, runtime: str, arch: str, *, layer: bool = False, smoke_level: str = "none", image: str | None = None) -> ValidationReport:
    """Validate any site-packages folder, built by Hoist or not."""
    check_level(smoke_level)
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
