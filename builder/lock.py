"""invoke lock: resolve the dependency sets for the target platform.

All sets are resolved together (one resolution, so a package never has two
versions), then each resolved package is assigned to exactly one set: the
``layer`` set gets what its own requirements need (a second resolution of the
layer requirements constrained to the first one's versions), ``efs`` the rest.

uv resolves for the target, not for this machine: ``--python-platform`` and
``--python-version`` make it evaluate markers as the target would (pip's
``--platform`` does not, which pulls x86_64 CUDA packages into an arm64 torch).
The output is uv's PEP 751 lock, which names the one wheel per package that
the target loads; we keep that wheel's URL and sha256, so installing needs no
index and cannot pick another file.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import sys
import tempfile
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from pipeline import proc
from pipeline.config import Config, Index, TargetConfig
from pipeline.errors import CommandError, LockError
from pipeline.files import atomic_write_text
from pipeline.targets import Target

from .diagnose import DOCKER_HINT, PYPI, Pins, Source, diagnose

LOCK_FORMAT = 1
# Lambda has no GPU: CUDA libraries, triton and CUDA builds (a +cu/+rocm local version) only weigh
GPU_NAME = re.compile(r"^(nvidia-.+|triton|pytorch-triton(-.+)?|cupy-cuda.+|jax-cuda.+)$")
GPU_BUILD = re.compile(r"\+(cu\d+|rocm[\d.]+)")
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_FAMILY = ("torch", "torchvision", "torchaudio")


@dataclass(frozen=True)
class LockedPackage:
    name: str  # canonical
    version: str
    url: str
    sha256: str
    filename: str

    @property
    def is_sdist(self) -> bool:
        return not self.filename.endswith(".whl")

    @property
    def tags(self) -> tuple[str, ...]:
        return () if self.is_sdist else tuple(sorted(str(t) for t in parse_wheel_filename(self.filename)[3]))

    def line(self) -> str:
        return f"{self.name} @ {self.url} --hash=sha256:{self.sha256}"


@dataclass(frozen=True)
class LockFile:
    path: Path
    set_name: str
    target: str
    input_sha256: str
    packages: tuple[LockedPackage, ...]


@dataclass(frozen=True)
class LockResult:
    target: Target
    locks: dict[str, LockFile]
    resolved: bool  # False when the existing locks were already current
    # what a resolution changed against the previous locks: "numpy 2.5.5 -> 2.5.4", "idna 3.21 added", "six 1.17.0 removed"
    changes: tuple[str, ...] = ()
    # why previous pins were let go: the requirements excluded them, or they did not fit the new inputs together
    released: tuple[str, ...] = ()
    first: bool = False  # no earlier lock of this target to compare with


# ---------------------------------------------------------------- inputs


def pip_config_find_links(python: str = sys.executable) -> list[str]:
    """find-links from pip's own configuration and environment, read now.

    Machine paths (a local wheel folder) stay out of the repository this way.
    """
    try:
        _code, out = proc.run([python, "-m", "pip", "config", "list"], what="reading pip's configuration", check=False)
    except CommandError:
        return []
    links: list[str] = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith(".find-links"):
            for item in value.strip().strip("'\"").split():
                if item not in links:
                    links.append(item)
    return links


def find_links_for(config: Config, tcfg: TargetConfig) -> list[str]:
    """The global find-links, then the target's own, then pip's (when the target asks)."""
    links: list[str] = []
    for item in (*config.find_links, *tcfg.find_links):
        link = item if "://" in item else str((config.root / item).resolve())
        if link not in links:
            links.append(link)
    if tcfg.pip_config_find_links:
        links += [x for x in pip_config_find_links() if x not in links]
    return links


def indexes_for(config: Config, tcfg: TargetConfig) -> tuple[Index, ...]:
    """The global [[index]] tables, then the target's own [[targets.<name>.index]]."""
    return config.indexes + tcfg.indexes


def sources_for(config: Config, tcfg: TargetConfig, find_links: list[str]) -> list[Source]:
    """Where this target's packages come from, as pipeline.toml names them (for error messages)."""
    name = tcfg.target.name
    out = [Source("index", i.url, f'[[index]] "{i.name}"') for i in config.indexes]
    out += [Source("index", i.url, f'[[targets.{name}.index]] "{i.name}"') for i in tcfg.indexes]
    if not config.no_index:
        out.append(Source("index", PYPI, "PyPI"))
    if tcfg.torch_backend:
        out.append(Source("index", f"https://download.pytorch.org/whl/{tcfg.torch_backend}", f"the PyTorch {tcfg.torch_backend} index (torch_backend)"))
    out += [Source("find-links", link, "find_links") for link in find_links]
    return out


def set_requirements(config: Config, tcfg: TargetConfig) -> dict[str, list[str]]:
    """Each set's requirement lines for this target, minus the target's excludes."""
    out = {}
    for name, dset in config.sets.items():
        out[name] = [line for line in dset.lines if canonicalize_name(Requirement(line).name) not in tcfg.exclude]
    return out


def input_fingerprint(config: Config, tcfg: TargetConfig, find_links: list[str]) -> str:
    """What a lock depends on; a lock whose fingerprint differs is stale."""
    doc = {
        "format": LOCK_FORMAT,
        "target": tcfg.target.identity(),
        "sets": set_requirements(config, tcfg),
        "override": list(tcfg.override),
        "exclude": list(tcfg.exclude),
        "indexes": [[i.name, i.url, list(i.packages)] for i in indexes_for(config, tcfg)],
        "find_links": find_links,
        "no_index": config.no_index,
        "only_binary": config.build.builder == "native",
    }
    # keys only when set: a lock written before they existed stays current
    if tcfg.torch_backend:
        doc["torch_backend"] = tcfg.torch_backend
    if tcfg.allow_gpu:
        doc["allow_gpu"] = True
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- lock files


def read_lock(path: Path) -> LockFile:
    if not path.is_file():
        raise LockError(f"lock file {path} does not exist", where=str(path), fix="run `invoke lock` (with the same --target)")
    header: dict[str, str] = {}
    packages = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("# ") and ": " in line:
            key, _, value = line[2:].partition(": ")
            header[key] = value
            continue
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"(\S+) @ (\S+) --hash=sha256:([0-9a-f]{64})", line.strip())
        if not m:
            raise LockError(f"{path.name}:{number}: not a Hoist lock line: {line!r}", where=str(path), fix="do not edit locks by hand; run `invoke lock --force`")
        name, url, digest = m.groups()
        filename = url.rsplit("/", 1)[-1].split("#", 1)[0]
        filename = unquote(filename)
        version = parse_wheel_filename(filename)[1] if filename.endswith(".whl") else parse_sdist_filename(filename)[1]
        packages.append(LockedPackage(name=name, version=str(version), url=url, sha256=digest, filename=filename))
    if header.get("hoist-lock-format") != str(LOCK_FORMAT):
        raise LockError(f"{path} is not a Hoist lock (format {header.get('hoist-lock-format')!r})", where=str(path), fix="run `invoke lock --force`")
    return LockFile(path=path, set_name=header.get("set", ""), target=header.get("target", ""), input_sha256=header.get("input-sha256", ""), packages=tuple(packages))


def write_lock(path: Path, set_name: str, target: Target, fingerprint: str, packages: list[LockedPackage]) -> LockFile:
    lines = [
        f"# Hoist lock of dependency set {set_name!r} for {target.describe()}",
        "# Generated by `invoke lock`; do not edit. One wheel per package, pinned by URL and sha256.",
        f"# hoist-lock-format: {LOCK_FORMAT}",
        f"# set: {set_name}",
        f"# target: {target.name}",
        f"# input-sha256: {fingerprint}",
        "",
    ]
    packages = sorted(packages, key=lambda p: p.name)
    for pkg in packages:
        lines.append(f"# {pkg.name}=={pkg.version}")
        lines.append(pkg.line())
    atomic_write_text(path, "\n".join(lines) + "\n")
    return LockFile(path=path, set_name=set_name, target=target.name, input_sha256=fingerprint, packages=tuple(packages))


# ---------------------------------------------------------------- resolution


def _pyproject(deps: list[str], target: Target, indexes) -> str:
    """A throwaway project: uv honours per-package indexes (sources) only for projects."""
    lines = [
        "[project]",
        'name = "hoist-lock"',
        'version = "0"',
        f'requires-python = ">={target.python}"',
        "dependencies = [" + ", ".join(json.dumps(d) for d in deps) + "]",
        "",
    ]
    sources = {}
    for index in indexes:
        lines += ["[[tool.uv.index]]", f'name = "{index.name}"', f"url = {json.dumps(index.url)}"]
        if index.packages:
            lines.append("explicit = true")
            for pkg in index.packages:
                sources[pkg] = index.name
        lines.append("")
    if sources:
        lines.append("[tool.uv.sources]")
        lines += [f'{pkg} = {{ index = "{name}" }}' for pkg, name in sorted(sources.items())]
    return "\n".join(lines) + "\n"


def compile_command(workdir: Path, target: Target, config: Config, tcfg: TargetConfig, find_links: list[str]) -> list[str]:
    """The `uv pip compile` of the throwaway project in ``workdir``."""
    cmd = [proc.uv_bin(), "pip", "compile", "pyproject.toml", "--no-config", "--no-python-downloads", "--quiet", "--no-header", "-o", "pylock.toml", "--python-version", target.python]
    if target.uv_python_platform:
        cmd += ["--python-platform", target.uv_python_platform]
    if config.build.builder == "native":
        cmd += ["--only-binary", ":all:"]
    for link in find_links:
        cmd += ["--find-links", link]
    if config.no_index:
        # an empty index instead of PyPI: uv's --no-index would drop the [[index]] tables too
        empty = workdir / "no-index"
        empty.mkdir(exist_ok=True)
        cmd += ["--default-index", empty.as_uri()]
    if tcfg.torch_backend:
        # uv takes torch, torchvision... from the PyTorch index of this backend (CPU builds: no CUDA)
        cmd += ["--torch-backend", tcfg.torch_backend]
    return cmd


def _compile(workdir: Path, deps: list[str], target: Target, config: Config, tcfg: TargetConfig, find_links: list[str], constraints: list[str], on_line,
             explain: bool = True) -> dict:
    """uv's resolution of ``deps`` for the target; a failure is a LockError with its cause and fix (``explain``), or
    uv's CommandError as it is (a trial resolution of the fix's own)."""
    workdir.mkdir(parents=True, exist_ok=True)
    # a pin of a direct requirement replaces it in place, so the package keeps its index
    # (uv's --overrides drop [tool.uv.sources]); pins of indirect ones are overrides
    pins = {canonicalize_name(Requirement(line).name): line for line in tcfg.override}
    direct = {canonicalize_name(Requirement(d).name) for d in deps}
    deps = [pins.get(canonicalize_name(Requirement(d).name), d) for d in deps]
    (workdir / "pyproject.toml").write_text(_pyproject(deps, target, indexes_for(config, tcfg)))
    cmd = compile_command(workdir, target, config, tcfg, find_links)
    if overrides := [line for name, line in pins.items() if name not in direct]:
        (workdir / "overrides.txt").write_text("\n".join(overrides) + "\n")
        cmd += ["--overrides", "overrides.txt"]
    if constraints:
        (workdir / "constraints.txt").write_text("\n".join(constraints) + "\n")
        cmd += ["--constraints", "constraints.txt"]
    try:
        proc.run(cmd, what="uv pip compile", cwd=workdir, on_line=on_line)
    except CommandError as exc:
        if not explain:
            raise
        raise _lock_failure(exc, config, tcfg, find_links, workdir, deps, on_line) from None
    return tomllib.loads((workdir / "pylock.toml").read_text())


def _lock_failure(exc: CommandError, config: Config, tcfg: TargetConfig, find_links: list[str], workdir: Path, deps: list[str], on_line) -> LockError:
    """uv's failure with its cause named and the fix for that cause (builder/diagnose.py); a version the fix names
    is one that resolves with the other requirements, tried here (``deps``: the failed resolution's requirements)."""
    text = exc.output_tail
    target = tcfg.target
    files = " or ".join(d.requirements.name for d in config.sets.values())
    trials = itertools.count()

    def fits(name: str, version: str) -> bool:
        """Whether ``deps`` resolve with ``name`` pinned to ``version`` (for this target: the override of it set aside)."""
        if on_line:
            on_line(f"trying {name}=={version} with the other requirements")
        tried = [d for d in deps if canonicalize_name(Requirement(d).name) != name] + [f"{name}=={version}"]
        alone = replace(tcfg, override=tuple(o for o in tcfg.override if canonicalize_name(Requirement(o).name) != name))
        try:
            _compile(workdir.parent / f"{workdir.name}-fit-{next(trials)}", tried, target, config, alone, find_links, [], None, explain=False)
        except CommandError:
            return False
        return True

    pins = Pins(
        files=files + (f" or override of [targets.{target.name}]" if tcfg.override and len(config.targets) == 1 else ""),
        files_of={str(canonicalize_name(Requirement(line).name)): d.requirements.name for d in config.sets.values() for line in d.lines},
        # a pin for this target alone leaves the others' locks as they are
        target_only=(f"the override list of [targets.{target.name}] in {config.path.name} (this target only; a pin in {files} holds for every target)"
                     if len(config.targets) > 1 else ""),
        fits=fits,
        docker=config.build.builder != "docker",
    )
    known = [Requirement(line).name for d in config.sets.values() for line in d.lines]
    found = diagnose(text, target, sources_for(config, tcfg, find_links), pins, extra_names=known)
    return LockError(f"{found.what}\n  uv said:\n" + "\n".join("    " + line for line in text.splitlines()), where=f"target {target.name}", fix=found.fix)


def gpu_packages(packages: list[LockedPackage]) -> list[LockedPackage]:
    """What a Lambda function cannot use: CUDA libraries, triton, CUDA/ROCm builds."""
    return [p for p in packages if GPU_NAME.match(p.name) or GPU_BUILD.search(p.version)]


def refuse_gpu(packages: list[LockedPackage], tcfg: TargetConfig) -> None:
    """A Lambda lock holds no GPU package unless the target opts out (allow_gpu = true)."""
    target = tcfg.target
    gpu = gpu_packages(packages)
    if target.kind != "lambda" or tcfg.allow_gpu or not gpu:
        return
    family = [p.name for p in packages if p.name in TORCH_FAMILY] or ["torch"]
    pulled = ", ".join(f"{p.name}=={p.version}" for p in packages if p.name in TORCH_FAMILY)
    name = target.name
    raise LockError(
        f"the resolution for {target.describe()} holds GPU packages: {', '.join(f'{p.name}=={p.version}' for p in gpu)}; "
        f"Lambda has no GPU, so these CUDA builds and libraries (gigabytes) would only weigh"
        + (f". They come with {pulled}: PyPI's Linux torch is a CUDA build (x86_64, and aarch64 since 2.11)" if pulled else ""),
        where=f"target {name}",
        fix=f"take {', '.join(family)} from the PyTorch CPU index for this target: add to pipeline.toml\n"
        f"      [[targets.{name}.index]]\n"
        f'      name = "pytorch-cpu"\n'
        f'      url = "{PYTORCH_CPU_INDEX}"\n'
        f"      packages = [{', '.join(json.dumps(n) for n in family)}]\n"
        f"    (or torch_backend = \"cpu\" under [targets.{name}]: uv picks that index itself), then `invoke lock --target {name}`; "
        f"to keep GPU packages anyway: allow_gpu = true under [targets.{name}]",
    )


def _marker_env(target: Target) -> dict[str, str]:
    major, minor = target.python_tuple
    return {
        "python_version": f"{major}.{minor}",
        "python_full_version": f"{major}.{minor}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_system": "Linux",
        "platform_machine": target.machine,
    }


def pick_wheel(entry: dict, target: Target, allow_sdist: bool = False) -> LockedPackage:
    """The best wheel of a pylock entry for the target, by tag preference; the
    source distribution when no wheel fits and the builder compiles (Docker)."""
    name = canonicalize_name(entry["name"])
    ranks = {str(tag): i for i, tag in enumerate(target.supported_tags())}
    best: tuple[int, dict, str] | None = None
    filenames = []
    for wheel in entry.get("wheels", []):
        filename = wheel.get("name") or wheel["url"].rsplit("/", 1)[-1]
        filename = unquote(filename)
        filenames.append(filename)
        rank = min((ranks[str(t)] for t in parse_wheel_filename(filename)[3] if str(t) in ranks), default=None)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, wheel, filename)
    sdist = entry.get("sdist")
    if best is None and allow_sdist and sdist and sdist.get("url"):
        filename = unquote(sdist.get("name") or sdist["url"].rsplit("/", 1)[-1])
        return LockedPackage(name=name, version=str(entry["version"]), url=sdist["url"], sha256=sdist["hashes"]["sha256"], filename=filename)
    if best is None:
        offered = ", ".join(filenames) or "only a source distribution"
        raise LockError(
            f"{name}=={entry.get('version')}: no wheel the target loads ({offered}); the native builder installs wheels only",
            where=f"target {target.name} ({target.abi}, {target.platform_tags()[0]})",
            fix=DOCKER_HINT if sdist is not None else f"pin a version of {name} that ships a wheel for this target, or remove it (it publishes no source to compile)",
        )
    _, wheel, filename = best
    return LockedPackage(name=name, version=str(entry["version"]), url=wheel["url"], sha256=wheel["hashes"]["sha256"], filename=filename)


def _packages_for_target(pylock: dict, target: Target, allow_sdist: bool = False) -> list[LockedPackage]:
    env = _marker_env(target)
    out = []
    for entry in pylock.get("packages", []):
        marker = entry.get("marker")
        if marker and not Marker(marker).evaluate(env):
            continue
        out.append(pick_wheel(entry, target, allow_sdist))
    return out


def lock(config: Config, target_name: str | None = None, *, force: bool = False, on_line=None) -> LockResult:
    """Resolve every set for the target into ``requirements/<set>.<target>.lock``.

    Versions of the existing locks are kept where the new inputs allow them (as constraints; a
    resolution that fails with them is made again without), so adding a requirement moves no
    unrelated pin and no unchanged package gets a new EFS version. ``force`` resolves afresh:
    the newest versions the inputs allow.
    """
    tcfg = config.target(target_name)
    target = tcfg.target
    links = find_links_for(config, tcfg)
    fingerprint = input_fingerprint(config, tcfg, links)
    paths = {name: config.lock_path(name, target.name) for name in config.sets}

    if not force and all(p.is_file() for p in paths.values()):
        try:
            current = {name: read_lock(p) for name, p in paths.items()}
        except LockError:
            current = None
        if current and all(lf.input_sha256 == fingerprint for lf in current.values()):
            return LockResult(target=target, locks=current, resolved=False)

    reqs = set_requirements(config, tcfg)
    everything = [line for lines in reqs.values() for line in lines]
    previous = _previous_versions(paths)  # what the report compares with
    before = {} if force else previous  # the pins kept where they still fit (--force: none)
    released: list[str] = []
    excluded = _excluded(before, everything)  # a pin the requirements now rule out (numpy!=2.5.5, torch==2.10): let go of it alone
    if excluded:
        released.append(f"{', '.join(f'{n} {before[n]}' for n in excluded)}: excluded by the requirements now")
    kept = [f"{n}=={v}" for n, v in before.items() if n not in excluded]
    with tempfile.TemporaryDirectory(prefix="hoist-lock-") as tmp:
        sdists = config.build.builder != "native"  # the Docker builder compiles them in the Lambda image
        try:  # the previous locks' versions where they still fit: a new requirement moves no unrelated pin
            # (with pins kept, a failure is not explained: the resolution without them below is the one that counts)
            resolved = _compile(Path(tmp) / "kept", everything, target, config, tcfg, links, kept, on_line, explain=not kept)
        except (LockError, CommandError):
            if not kept:
                raise
            released.append("the other previous versions do not fit the new inputs together: resolved without them, so unrelated pins may move")
            if on_line:
                on_line(released[-1])
            resolved = _compile(Path(tmp) / "all", everything, target, config, tcfg, links, [], on_line)
        union = _packages_for_target(resolved, target, sdists)
        layer_names: set[str] = set()
        if reqs.get("layer"):
            pins = [f"{p.name}=={p.version}" for p in union]
            layer_only = _compile(Path(tmp) / "layer", reqs["layer"], target, config, tcfg, links, pins, on_line)
            layer_names = {p.name for p in _packages_for_target(layer_only, target, sdists)}
    refuse_gpu(union, tcfg)
    assigned = {
        "efs": [p for p in union if p.name not in layer_names],
        "layer": [p for p in union if p.name in layer_names],
    }
    locks = {}
    for name, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        locks[name] = write_lock(path, name, target, fingerprint, assigned[name])
    after = {p.name: p.version for p in union}
    changes = version_changes(previous, after) if previous else []
    return LockResult(target=target, locks=locks, resolved=True, changes=tuple(changes), released=tuple(released), first=not previous)


def version_changes(was: dict[str, str], now: dict[str, str]) -> list[str]:
    """Package -> version before and after, in words: "numpy 2.5.5 -> 2.5.4", then "idna 3.21 added", "six 1.17.0 removed"."""
    changes = [f"{n} {was[n]} -> {now[n]}" for n in sorted(was.keys() & now.keys()) if was[n] != now[n]]
    return changes + [f"{n} {now[n]} added" for n in sorted(now.keys() - was.keys())] + [f"{n} {was[n]} removed" for n in sorted(was.keys() - now.keys())]


def _previous_versions(paths: dict[str, Path]) -> dict[str, str]:
    """Package -> version of every package in the target's existing locks (none when unreadable)."""
    found: dict[str, str] = {}
    for path in paths.values():
        try:
            found.update({p.name: p.version for p in read_lock(path).packages} if path.is_file() else {})
        except LockError:
            continue
    return found


def _excluded(pins: dict[str, str], requirements: list[str]) -> list[str]:
    """The pinned packages whose pinned version a requirement line without a marker rules out (its specifier), sorted."""
    out = set()
    for line in requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        name = canonicalize_name(req.name)
        if req.marker is None and name in pins and req.specifier and not req.specifier.contains(pins[name], prereleases=True):
            out.add(name)
    return sorted(out)


def _any_of(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"one of {', '.join(names)}"


def current_locks(config: Config, tcfg: TargetConfig) -> dict[str, LockFile]:
    """The target's locks, refusing stale ones (inputs changed since `invoke lock`)."""
    fingerprint = input_fingerprint(config, tcfg, find_links_for(config, tcfg))
    locks = {}
    for name in config.sets:
        path = config.lock_path(name, tcfg.target.name)
        try:
            lf = read_lock(path)
        except LockError as exc:
            raise LockError(exc.what, where=exc.where, fix=f"run `invoke lock --target {tcfg.target.name}`") from None
        if lf.input_sha256 != fingerprint:
            raise LockError(
                f"{path.name} is stale: pipeline.toml or {_any_of([s.requirements.name for s in config.sets.values()])} changed since it was written"
                " (one fingerprint covers all of a target's locks)",
                where=str(path.relative_to(config.root)) if path.is_relative_to(config.root) else str(path),
                fix=f"run `invoke lock --target {tcfg.target.name}` and commit the new lock",
            )
        locks[name] = lf
    return locks
