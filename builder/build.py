"""invoke build: lock -> tree -> slim -> bytecode -> manifest -> zips -> dist/<target>/build.json.

Each set is built in a staging folder beside its final place and renamed into
place only when its manifest is written, so an interrupted build never leaves a
tree that looks complete. A set whose build key (lock, target, slim rules,
bytecode interpreter, builder version, the import check's runtime or the
opt-out) has not changed is not rebuilt; a set that is rebuilt takes from the
build cache (builder/cache.py) every step whose own inputs did not change.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.config import Config, TargetConfig
from pipeline.console import Progress, counted
from pipeline.errors import BuildError, InterpreterNotFound
from pipeline.files import Digests, sha256_file
from pipeline.interpreters import Interpreter, find_python
from pipeline.records import (
    SYMLINK_MODE,
    BuildRecord,
    BytecodeReport,
    Manifest,
    RecordError,
    SetRecord,
    SlimRecord,
    load_manifest,
    manifest_path,
    write_build_record,
    write_manifest,
)
from pipeline.targets import Target

from . import cache, importcheck, metadata
from . import manifest as mf
from .archives import write_archives
from .bytecode import BytecodeResult, compile_tree
from .install import check_records, check_wheel_tags, install_native
from .lock import LockFile, current_locks, set_requirements, version_changes
from .package import Artifact, make_zip
from .slim import Rules, SlimReport, configure, forget, load_rules, slim

BUILDER_VERSION = "11"  # bump when a change to the steps changes trees
# Lambda: function + layers unzipped (lambda-facts.md, "Limits")
LAMBDA_UNZIPPED_LIMIT = 262_144_000


@dataclass(frozen=True)
class SetBuild:
    name: str
    tree: Path
    manifest: Path
    content_hash: str
    identity: str  # the published version's name: the tree and its archives (records.identity)
    bytes: int
    files: int
    bytecode: BytecodeReport
    packages: tuple[tuple[str, int, int], ...]  # (package, bytes, files), largest first
    slim: SlimRecord
    rebuilt: bool
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each step (install, slim, ...): the benchmark's breakdown


class _Laps:
    """Wall time per step of one build, summed by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._at = time.perf_counter()

    def lap(self, step: str) -> None:
        """The time since the last lap was spent on ``step``."""
        now = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + now - self._at
        self._at = now


@dataclass(frozen=True)
class BuildResult:
    target: Target
    builder: str
    sets: dict[str, SetBuild]
    layer_zip: Artifact | None
    function_zip: Artifact
    build_json: Path
    warnings: tuple[str, ...]
    record: BuildRecord  # what build_json holds, as every later stage reads it
    seconds: dict[str, float] = field(default_factory=dict)  # steps outside the sets (the check's runtime, the zips)
    cache: cache.Counts = field(default_factory=cache.Counts)  # what the build cache held (builder/cache.py)


class NativeInstaller:
    """Cross-platform wheels with uv; bytecode by a local interpreter of the target version."""

    name = "native"
    built_on_target = False

    def __init__(self, interpreter: Interpreter | None, why_not: str | None):
        self.interpreter = interpreter
        self.why_not = why_not

    @property
    def identity(self) -> str:
        return f"native:{self.interpreter.version if self.interpreter else None}"

    def install(self, lock: LockFile, target: Target, dest: Path, on_line=None) -> None:
        sdists = [p.filename for p in lock.packages if p.is_sdist]
        if sdists:
            raise BuildError(
                f"{', '.join(sdists)}: source distributions; the native builder installs wheels only",
                where=str(lock.path),
                fix="build with the Docker builder (`invoke build --builder docker`), which compiles them in the Lambda base image",
            )
        # hard links into uv's cache: no step writes into a tree's files (pipeline/files.py, Digests)
        install_native(lock, target, dest, on_line=on_line, link_mode="hardlink")

    def bytecode(self, tree: Path, on_line=None, store: cache.Store | None = None, digests: Digests | None = None) -> BytecodeResult:
        return compile_tree(tree, self.interpreter, self.why_not, on_line=on_line, store=store, version=BUILDER_VERSION, digests=digests)


def build_inputs(lock: LockFile, target: Target, rules: Rules, installer, check: str | None = None, earlier: dict[str, str] | None = None) -> dict[str, Any]:
    """What a set's tree depends on, by name (kept in its manifest, so a rebuild can say what changed). ``check``: the
    import check's runtime identity (importcheck.Runner.identity), importcheck.OPTED_OUT, or None when the set wants no check.
    ``earlier``: the content hashes of the sets on the path before it (the layer for the efs set), when its import
    check runs: what it imports from them decides what it opens (its hot set) and whether slimming held."""
    # the lock's packages (each URL and sha256), not its header: a requirement added to another set rewrites every
    # lock's input fingerprint, and that set's tree stays what it was
    pins = "\n".join(f"{p.name}=={p.version} {p.url} {p.sha256}" for p in lock.packages)
    return {
        "builder_version": BUILDER_VERSION,
        "installer": installer.identity,
        "lock": hashlib.sha256(pins.encode()).hexdigest(),
        "target": target.identity(),
        "slim_rules": rules.digest,
        "import_check": check,
    } | ({"earlier_sets": dict(sorted(earlier.items()))} if earlier else {})


def build_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


# what each build input is, for the reason a set is rebuilt
_INPUT_NAMES = {"builder_version": "Hoist's builder version", "installer": "the installer (builder or interpreter)", "target": "the target",
                "slim_rules": "the slim rules", "import_check": "the import check's runtime", "earlier_sets": "the sets before it"}


def previous_build(set_dir: Path, lock: LockFile, inputs: dict[str, Any], force: bool) -> tuple[Manifest | None, str | None]:
    """The build in ``set_dir`` and why the set is built now, in a few words: (its manifest, None) when it is up to
    date for ``inputs``. Its manifest is read once, its files stat'ed once (``touched``)."""
    if force:
        return None, "--force"
    path = manifest_path(set_dir)
    try:
        before = load_manifest(path)
    except (OSError, RecordError):
        return None, "no earlier build" if not path.exists() else "the earlier build's manifest cannot be read"
    if before.build_key != build_key(inputs):
        return None, _changes(before, lock, inputs)
    if not (set_dir / "site-packages").is_dir() or (set_dir.name == "efs" and not (set_dir / "archives" / "index.json").is_file()):
        return None, "the earlier tree is incomplete"
    check = before.slim.import_check
    if check is not None and not check.verified and check.runtime is not None:  # it had a runtime and could not run: try again
        return None, "its import check could not run last time"
    if edited := touched(set_dir / "site-packages", before):
        return None, f"its tree in dist/ was changed after the build ({', '.join(edited[:3])}{', ...' if len(edited) > 3 else ''})"
    return before, None


def rebuild_reason(set_dir: Path, lock: LockFile, inputs: dict[str, Any], force: bool) -> str | None:
    """Why the set in ``set_dir`` is built now; None when it is up to date (previous_build)."""
    return previous_build(set_dir, lock, inputs, force)[1]


def _changes(before: Manifest, lock: LockFile, inputs: dict[str, Any]) -> str:
    """What differs between the inputs a build was made from (its manifest) and ``inputs``: the packages that
    moved first, then each other input by name."""
    changes = version_changes({p.name: p.version for p in before.packages}, {p.name: p.version for p in lock.packages})
    if not before.build_inputs:  # a manifest of a builder that did not keep its inputs
        return ", ".join(changes) if changes else "built by an earlier Hoist"
    if before.build_inputs.get("lock") != inputs["lock"] and not changes:
        changes.append("a wheel's URL or hash changed in the lock")
    for name, what in _INPUT_NAMES.items():
        was_input, now_input = before.build_inputs.get(name), inputs.get(name)
        if was_input == now_input:
            continue
        if name == "import_check" and importcheck.OPTED_OUT in (was_input, now_input):
            changes.append("the import check is opted out now" if now_input == importcheck.OPTED_OUT else "the import check is back on (it was opted out)")
        elif name == "earlier_sets":
            was_sets, now_sets = was_input or {}, now_input or {}
            if was_sets:  # (none before: its check did not run then, which the check's own input says)
                changes += [f"the {other} set it imports with changed" for other in sorted(was_sets.keys() | now_sets.keys()) if was_sets.get(other) != now_sets.get(other)]
            elif name not in before.build_inputs and before.build_inputs.get("import_check") == inputs.get("import_check"):
                changes.append("built by an earlier Hoist, whose key did not hold the sets before it")
        else:
            changes.append(f"{what} changed" + (f" ({was_input} -> {now_input})" if name == "builder_version" else ""))
    if not changes:
        return "what it is built from changed"
    return ", ".join(changes[:6]) + (f" and {len(changes) - 6} more" if len(changes) > 6 else "")


def touched(tree: Path, manifest: Manifest) -> list[str]:
    """The files of ``tree`` whose size or mtime is not what the build left (each file's mtime comes from its content,
    builder/manifest.py) or that are gone: a file edited in dist/ after its build. One stat per listed file, so an
    unchanged build stays quick; validate and sync-efs compare every byte (records.tree_differences)."""
    changed = []
    for e in manifest.files:
        try:
            st = os.lstat(os.path.join(tree, e.path))
        except OSError:
            changed.append(e.path)
            continue
        if e.mode != SYMLINK_MODE and (st.st_size != e.size or int(st.st_mtime) != mf.content_mtime(e.sha256)):
            changed.append(e.path)
    return changed


def _swap_into_place(staging: Path, final: Path) -> None:
    """Replace ``final`` by ``staging``: never a moment with a half tree there."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
    staging.rename(final)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _clean_leftovers(target_dir: Path) -> None:
    """Staging folders of interrupted builds: never used, removed on the next run."""
    for leftover in target_dir.glob(".*.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in target_dir.glob(".*.old-*"):
        shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def _exclusive(target_dir: Path, target: Target):
    """One build per target folder at a time: a second one would remove the first one's staging folders."""
    with open(target_dir / ".hoist-build.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildError(
                f"another build of target {target.name} is running in {target_dir}",
                where=str(target_dir),
                fix="wait for it to finish, or build into another output folder (build.output in pipeline.toml)",
            ) from None
        yield


def _set_result(name: str, set_dir: Path, found: Manifest, rebuilt: bool) -> SetBuild:
    return SetBuild(
        name=name,
        tree=set_dir / "site-packages",
        manifest=manifest_path(set_dir),
        content_hash=found.content_hash,
        identity=found.identity,
        bytes=found.bytes,
        files=found.files_count,
        bytecode=found.bytecode,
        packages=tuple(mf.package_sizes(set_dir / "site-packages", list(found.files))),
        slim=found.slim,
        rebuilt=rebuilt,
    )


def build_set(name: str, lock: LockFile, target: Target, target_dir: Path, rules: Rules, installer, progress: Progress, force: bool = False, verify=None,
              check: str | None = None, store: cache.Store | None = None, digests: Digests | None = None, earlier: dict[str, str] | None = None) -> SetBuild:
    """``digests``: the build's remembered sha256s (one read of each file for the cache keys, RECORD and the manifest).
    ``earlier``: the content hashes of the sets built before it, on its import check's path (build_inputs)."""
    set_dir = target_dir / name
    inputs = build_inputs(lock, target, rules, installer, check, earlier)
    key = build_key(inputs)
    found, why = previous_build(set_dir, lock, inputs, force)
    if found is not None:
        progress.step(f"[{name}] up to date ({found.content_hash[:12]}), not rebuilt")
        return _set_result(name, set_dir, found, rebuilt=False)
    progress.step(f"[{name}] building: {why}")

    laps = _Laps()
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=target_dir))
    try:
        tree = staging / "site-packages"
        progress.step(f"[{name}] installing {counted(len(lock.packages), 'package')} for {target.describe()} ({installer.name} builder)")
        digests = digests or Digests()
        installer.install(lock, target, tree, on_line=progress.line)
        check_wheel_tags(tree, target, installer.built_on_target)
        check_records(tree, digests, rebuild=f"invoke build --target {target.name} --force")
        laps.lap("install")

        progress.step(f"[{name}] slimming")
        report: SlimReport = slim(tree, rules, on_line=progress.line, aside=staging / "slimmed", store=store, version=BUILDER_VERSION, digests=digests)
        mf.normalize_modes(tree)
        laps.lap("slim")

        # bytecode before the import check: under QEMU, compiling every imported
        # module from source was most of the check's time; the .pyc are the ones Lambda loads
        progress.step(f"[{name}] compiling bytecode (unchecked-hash)")
        bytecode: BytecodeResult = installer.bytecode(tree, on_line=progress.line, store=store, digests=digests)
        laps.lap("bytecode")
        slim_record = verify(name, tree, staging / "slimmed", report) if verify else SlimRecord.from_json(report.as_json())  # builder/importcheck.py
        forget(staging / "slimmed")
        laps.lap("import check")
        if slim_record.import_check and slim_record.import_check.restored:  # the files put back need their .pyc too
            progress.step(f"[{name}] compiling bytecode again for the files the import check put back")
            bytecode = installer.bytecode(tree, on_line=progress.line, store=store, digests=digests)
            laps.lap("bytecode")
        metadata.canonicalize(tree, digests)
        mf.normalize_modes(tree)
        laps.lap("metadata")

        progress.step(f"[{name}] hashing files for the manifest")
        files = mf.scan(tree, digests)
        mf.stamp_mtimes(tree, files)
        laps.lap("hash")
        index: dict[str, Any] = {"archives": []}
        index_sha = ""
        if name == "efs":  # the layer is unzipped by Lambda onto local disk: nothing to hydrate
            progress.step(f"[{name}] writing per-package archives for a fast cold start")
            done = slim_record.import_check
            index = write_archives(tree, staging / "archives", opened=done.opened if done else None, touched=done.touched if done else None,
                                   store=store, version=BUILDER_VERSION, digests=digests)
            index_sha = sha256_file(str(staging / "archives" / "index.json"))
            laps.lap("archives")
        made = mf.manifest(
            set_name=name,
            target=target.as_json(),
            build_key=key,
            build_inputs=inputs,
            files=files,
            packages=mf.read_packages(tree, name),
            bytecode=bytecode.as_report(),
            slim=slim_record,
            builder=installer.name,
            archives=index["archives"],
            archive_index=index_sha,
        )
        write_manifest(made, manifest_path(staging))  # last: marks the staging folder complete
        _swap_into_place(staging, set_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result = _set_result(name, set_dir, made, rebuilt=True)
    laps.lap("manifest")
    return replace(result, seconds=laps.seconds)


def _check_enabled(config: Config, flag: bool | None) -> tuple[bool, str]:
    """Whether the user asked for the import check, and where an opt-out came from: --no-import-check, else
    HOIST_IMPORT_CHECK=off (a CI runner that cannot run the target's runtime), else build.import_check."""
    if flag is not None:
        return flag, "" if flag else "`invoke build --no-import-check`"
    if (value := os.environ.get("HOIST_IMPORT_CHECK", "")).lower() in ("off", "0", "false", "no"):
        return False, f"HOIST_IMPORT_CHECK={value} in the environment"
    return config.build.import_check, "" if config.build.import_check else f"build.import_check = false in {config.path.name}"


def _check_runtime(config: Config, target: Target, rules: dict[str, Rules], progress: Progress, enabled: tuple[bool, str]) -> tuple[importcheck.Runner | None, str]:
    """The import check's runtime, chosen before any set's build key (the key holds its identity).

    None with why when no set wants the check, or the user opted out; a BuildError when it is
    wanted and none can run here (after preparing what this process can: importcheck.runner_for).
    """
    if not any(importcheck.wanted(name, r) for name, r in rules.items()):
        return None, "no set wants it"
    if not enabled[0]:
        return None, importcheck.opted_out_why(enabled[1])
    runner, why = importcheck.runner_for(target, on_line=progress.step, base_image=config.build.base_image,
                                         cache=config.root / ".hoist-cache" / "interpreters.json")
    if runner is None:
        raise BuildError(
            f"no runtime for {target.describe()} can run here to import-check the trees: {why}",
            where=f"target {target.name}, the import check (docs/build.md, Slimming)",
            fix="install what the runtime named above needs and run again (as root the build installs qemu-user-static, binfmt-support and "
                "debootstrap itself and prepares the Debian root, ~8 minutes once); or opt out, knowing what it costs, with "
                f"`invoke build --no-import-check` or `import_check = false` under [build] in {config.path.name}: {importcheck.OPT_OUT_COST}",
        )
    return runner, why


def _bytecode_interpreter(target: Target, cache: Path | None = None) -> tuple[Interpreter | None, str | None]:
    try:
        return find_python(target.python, cache=cache), None
    except InterpreterNotFound as exc:
        return None, exc.render()


def choose_installer(config: Config, target: Target, builder: str, progress: Progress):
    """The installer for ``builder`` ("native", "docker" or "auto"), and why it was chosen."""
    cache = config.root / ".hoist-cache" / "interpreters.json"  # found once, then trusted while the file is unchanged
    interpreter, why_not = _bytecode_interpreter(target, cache) if builder != "docker" else (None, None)
    if builder in ("docker", "auto"):
        from .docker import DockerInstaller, DockerUnavailable

        docker = DockerInstaller(target=target, base_image=config.build.base_image or target.base_image(), cache_dir=config.root / ".hoist-cache" / "pip-docker" / target.machine)
        try:
            progress.step(f"preparing the builder image FROM {docker.base_image} ({target.docker_platform})")
            docker.prepare(on_line=progress.line)
            return docker, f"docker: {docker.tag} FROM {docker.base_image}"
        except DockerUnavailable as exc:
            if builder == "docker":
                raise
            reason = f"native (Docker not usable: {exc.what.splitlines()[0]})"
            progress.step(f"builder auto: {reason}")
            return NativeInstaller(interpreter, why_not), reason
    return NativeInstaller(interpreter, why_not), "native"


def image_step(config: Config, target: Target, sets: dict[str, SetBuild], record: BuildRecord, progress: Progress) -> BuildRecord:
    """The image of the image shape, named in the record; the record as it is for the EFS shape."""
    from dataclasses import replace

    from pipeline.shapes import shape_of

    from .image import build_for, image_record

    shape = shape_of(config)
    if shape.artifact != "image":
        return record
    model = config.model_dir if config.model_dir and config.model_dir.is_dir() else None
    made = build_for(base_ref=config.build.base_image or target.base_image(), platform=target.docker_platform, target_dir=config.build.output / target.name,
                     sets={name: (s.tree, s.content_hash) for name, s in sets.items()}, handler_dir=config.build.handler_dir, model_dir=model,
                     handler=config.function.handler, snapstart=shape.snapstart, repository=f"hoist/{config.function.name.lower()}", on_step=progress.step)
    return replace(record, image=image_record(made, target.docker_platform))


def build(config: Config, target_name: str | None = None, *, force: bool = False, progress: Progress | None = None, builder: str | None = None,
          import_check: bool | None = None, cache_dir: Path | None = None) -> BuildResult:
    """Build every set of the target. ``import_check``: False opts out of the import check (default:
    build.import_check); when it is wanted and no runtime for the target can run here, the build stops.
    ``cache_dir``: the build cache's folder (default: builder/cache.py's root())."""
    progress = progress or Progress()
    tcfg: TargetConfig = config.target(target_name)
    target = tcfg.target
    builder = builder or config.build.builder
    if builder not in ("native", "docker", "auto"):
        raise BuildError(f"unknown builder {builder!r}", where="--builder", fix="use native, docker or auto")
    if not config.build.handler_dir.is_dir():
        raise BuildError(f"handler folder {config.build.handler_dir} does not exist", where=f"{config.path.name}: build.handler_dir", fix="point handler_dir at the folder holding the Lambda handler")
    locks = current_locks(config, tcfg)
    rules = {name: configure(load_rules(), config.slim, name, config.path.name) for name in locks}
    installer, chosen = choose_installer(config, target, builder, progress)
    warnings = []
    if isinstance(installer, NativeInstaller) and installer.interpreter is None:
        warnings.append(f"no bytecode: {installer.why_not}\n  the trees are built without .pyc and the manifests say so")

    out = config.build.output
    target_dir = out / target.name
    target_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(target_dir, target):
        _clean_leftovers(target_dir)
        sets: dict[str, SetBuild] = {}
        laps = _Laps()
        runner, why = _check_runtime(config, target, rules, progress, _check_enabled(config, import_check))
        store = cache.Store(cache_dir, on_line=progress.step)
        digests = Digests()
        order = sorted(locks, key=lambda name: name != "layer")  # the layer first: EFS packages import from it
        verify = importcheck.hook(target, target_dir, order, progress, runner=runner, why=why, requirements=set_requirements(config, tcfg),
                                  store=store, version=BUILDER_VERSION, digests=digests)
        laps.lap("check runtime")
        for name in order:
            lock = locks[name]
            check = (runner.identity if runner else importcheck.OPTED_OUT) if importcheck.wanted(name, rules[name]) else None
            # a set whose check runs imports from the sets before it (importcheck.hook): they are its inputs too
            earlier = {n: sets[n].content_hash for n in sets} if check not in (None, importcheck.OPTED_OUT) else {}
            try:
                sets[name] = build_set(name, lock, target, target_dir, rules[name], installer, progress, force=force, verify=verify, check=check, store=store,
                                       digests=digests, earlier=earlier)
            except OSError as exc:
                raise BuildError(f"{exc}", where=f"set {name}, {target_dir}", fix="check free disk space and permissions of the output folder") from exc

        laps.lap("sets")  # each set's steps are in its own SetBuild.seconds
        layer_zip = None
        if "layer" in sets:
            # the layer set's content hash covers every file, mode and byte: an unchanged set keeps its zip
            layer_zip = make_zip(sets["layer"].tree, target_dir / "layer.zip", prefix="python/", skip_dirs=set(), key=sets["layer"].content_hash,
                                 on_made=lambda: progress.step("packaging the layer zip (python/...)"))
        function_zip = make_zip(config.build.handler_dir, target_dir / "function.zip", on_made=lambda: progress.step("packaging the function zip"))
        laps.lap("zips")
        sets = {name: sets[name] for name in locks}
        warnings += importcheck.warnings(sets)

    unzipped = function_zip.unzipped_bytes + (layer_zip.unzipped_bytes if layer_zip else 0)
    if unzipped > LAMBDA_UNZIPPED_LIMIT:
        warnings.append(
            f"function + layer unzip to {unzipped:,} bytes, over Lambda's {LAMBDA_UNZIPPED_LIMIT:,}: move packages from requirements/layer.in to requirements/efs.in"
        )

    build_json = config.build_json(target.name)
    record = BuildRecord(
        target=target.as_json(),
        builder=installer.name,
        builder_detail=chosen,
        sets={
            name: SetRecord(content_hash=s.content_hash, identity=s.identity, tree=s.tree, manifest=s.manifest, bytes=s.bytes, files=s.files,
                            bytecode=s.bytecode.compiled, bytecode_python=s.bytecode.python, rebuilt=s.rebuilt,
                            lock_sha256=hashlib.sha256(locks[name].path.read_bytes()).hexdigest())
            for name, s in sets.items()
        },
        artifacts={"function_zip": function_zip, **({"layer_zip": layer_zip} if layer_zip else {})},
        warnings=tuple(warnings),
    )
    record = image_step(config, target, sets, record, progress)  # the image shape only (pipeline/shapes.py)
    record = write_build_record(record, build_json, config.root)
    return BuildResult(target=target, builder=installer.name, sets=sets, layer_zip=layer_zip, function_zip=function_zip, build_json=build_json,
                       warnings=tuple(warnings), record=record,
                       seconds={k: v for k, v in laps.seconds.items() if k != "sets"}, cache=store.counts)


