"""Static checks of a tree against a Lambda target. Every finding is collected
before the verdict, so one run shows every problem.

Rules (the ``rule`` of each finding):
  elf-machine        every shared object and executable is for the target's CPU
  symbol-versions    GLIBC_/GLIBCXX_/CXXABI_ versions needed are within the runtime's ceilings
  needed-libraries   every DT_NEEDED library is in the tree or in the Lambda base image
  python-abi         extension modules are for the target's CPython and architecture
  wheel-tags         every *.dist-info/WHEEL has a tag the target loads
  gpu-bloat          no CUDA libraries or nvidia-* distributions (Lambda has no GPU)
  size               function + layers fit Lambda's limits; the EFS tree's size and cost
  unreadable-elf     an ELF file pyelftools cannot parse
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.dists import dists, owner_of, owners, unloadable
from pipeline.files import atomic_write_json, bytecode_tag
from pipeline.globs import matches
from pipeline.targets import Target, facts

from . import elf

RULES = ("elf-machine", "symbol-versions", "needed-libraries", "python-abi", "wheel-tags", "gpu-bloat", "size", "unreadable-elf")
LIBRARIES_FILE = Path(__file__).with_name("libraries.json")
REPORT_VERSION = 1
# lambda-facts.md, "Limits" and "EFS for Lambda"
UNZIPPED_LIMIT = 262_144_000
ZIPPED_DIRECT_UPLOAD = 50 * 1024 * 1024
EFS_STANDARD_USD_PER_GB_MONTH = 0.30
CPU_INDEX_FIX = (
    "use CPU-only builds: for x86_64 take torch from the PyTorch CPU index ([[index]] url = "
    '"https://download.pytorch.org/whl/cpu", packages = ["torch", "torchvision"] in pipeline.toml, pins like torch==2.9.1+cpu); '
    "PyPI's aarch64 torch up to 2.9.1 is already CPU-only"
)


# the fix of a smoke test finding whose cause is in the function's own output (validate/report.py prints its tail)
LOG_BELOW = "see the function's log printed below the findings (`--json FILE` keeps it as smoke.log_tail)"

@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning" | "info"
    rule: str
    file: str | None
    package: str | None
    message: str
    fix: str | None = None

    def as_json(self) -> dict:
        return {"severity": self.severity, "rule": self.rule, "file": self.file, "package": self.package, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class TreeStats:
    name: str  # "efs" | "layer" | the folder's name
    path: str
    bytes: int
    files: int
    elf_files: int


@dataclass(frozen=True)
class EfsSize:
    """One EFS tree's size and what it costs a month in EFS Standard."""

    tree: str
    bytes: int
    files: int
    usd_per_month: float


@dataclass(frozen=True)
class SizeReport:
    """The report's "sizes": the EFS trees, and function + layers unzipped against Lambda's limit (when there is a layer or a zip)."""

    efs: tuple[EfsSize, ...] = ()
    function_and_layers_unzipped: int | None = None
    limit_unzipped: int | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.efs:
            doc["efs"] = [{"tree": e.tree, "bytes": e.bytes, "files": e.files, "usd_per_month": e.usd_per_month} for e in self.efs]
        if self.function_and_layers_unzipped is not None:
            doc["function_and_layers_unzipped"] = self.function_and_layers_unzipped
        if self.limit_unzipped is not None:
            doc["limit_unzipped"] = self.limit_unzipped
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SizeReport:
        return cls(efs=tuple(EfsSize(e["tree"], e["bytes"], e["files"], e["usd_per_month"]) for e in doc.get("efs") or ()),
                   function_and_layers_unzipped=doc.get("function_and_layers_unzipped"), limit_unzipped=doc.get("limit_unzipped"))


@dataclass(frozen=True)
class SmokeAnswer:
    """The function's answer to one of the smoke test's further events (after GET /health)."""

    status: str
    error: dict[str, Any] | None
    report: str
    result: Any  # the real handler's result (an API Gateway response), None when it failed

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "error": self.error, "report": self.report, "result": self.result}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SmokeAnswer:
        return cls(status=doc["status"], error=doc.get("error"), report=doc.get("report", ""), result=doc.get("result"))


@dataclass(frozen=True)
class SmokeResult:
    """The report's "smoke": whether the smoke test ran, where, and what the function did.

    A test that did not run has ``why`` (and, when levels were tried,
    ``skipped_levels``: their results). One that ran has the init and the
    GET /health invocation (``state`` and ``failed_imports`` when init
    failed; ``import_ms``, ``loaded`` and ``handler_result`` when the
    invocation succeeded), then where it ran: level 1 ``python``; a
    container ``image``; a chroot ``runner``. ``as_json`` writes the keys
    each case always had, in their order.
    """

    run: bool
    level: int | None = None
    why: str | None = None
    image: str | None = None
    init_ms: float | None = None
    modules: tuple[str, ...] = ()
    ok: bool = False
    state: str | None = None  # "init-error" | "crashed" | "timeout": init did not finish
    failed_imports: dict[str, str] | None = None
    report: str | None = None  # the REPORT line of the GET /health invocation
    status: str | None = None
    error: dict[str, Any] | None = None
    import_ms: dict[str, float] | None = None
    loaded: tuple[str, ...] = ()
    handler_result: Any = None
    activation: dict[str, Any] | None = None  # what hoist_lambda.activate reported (hydrated, why, hot files and bytes, held bytes, read-ahead, ms)
    log_tail: str | None = None
    events: tuple[SmokeAnswer, ...] = ()
    python: str | None = None
    machine: str | None = None
    emulated: bool | None = None
    distance: str | None = None
    root: str | None = None
    runner: str | None = None
    skipped_levels: tuple[SmokeResult, ...] | None = None
    sample_label: str | None = None
    sample_expected: str | None = None  # set (with sample_label) when the model folder's sample was classified
    snapstart: dict[str, Any] | None = None  # the image shape (validate/image.py): init to snapshot, restore to first answer, the hooks' times

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"run": self.run}
        if self.level is not None:
            doc["level"] = self.level
        if not self.run:
            if self.image is not None:
                doc["image"] = self.image
            doc["why"] = self.why
        else:
            doc.update(init_ms=self.init_ms, modules=list(self.modules), ok=self.ok)
            if self.state is not None:
                doc.update(state=self.state, error=self.error, failed_imports=self.failed_imports)
            else:
                doc.update(report=self.report, status=self.status, error=self.error)
                if self.status == "ok":
                    doc.update(import_ms=self.import_ms, loaded=list(self.loaded), handler_result=self.handler_result)
                    if self.activation is not None:
                        doc["activation"] = self.activation
            if self.log_tail is not None:
                doc["log_tail"] = self.log_tail
            if self.events:
                doc["events"] = [a.as_json() for a in self.events]
            if self.snapstart is not None:
                doc["snapstart"] = self.snapstart
            if self.runner is not None:
                order: tuple[str, ...] = ("runner", "machine", "distance", "root", "python", "emulated")
            elif self.image is not None:
                order = ("image", "machine", "emulated", "distance", "root", "python")
            else:
                order = ("python", "machine", "distance")
            doc.update({key: getattr(self, key) for key in order if getattr(self, key) is not None})
        if self.skipped_levels is not None:
            doc["skipped_levels"] = [a.as_json() for a in self.skipped_levels]
        if self.sample_expected is not None:
            doc.update(sample_label=self.sample_label, sample_expected=self.sample_expected)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SmokeResult:
        skipped = doc.get("skipped_levels")
        return cls(
            run=bool(doc.get("run")), level=doc.get("level"), why=doc.get("why"), image=doc.get("image"), init_ms=doc.get("init_ms"),
            modules=tuple(doc.get("modules") or ()), ok=bool(doc.get("ok")), state=doc.get("state"), failed_imports=doc.get("failed_imports"),
            report=doc.get("report"), status=doc.get("status"), error=doc.get("error"), import_ms=doc.get("import_ms"), loaded=tuple(doc.get("loaded") or ()),
            handler_result=doc.get("handler_result"), activation=doc.get("activation"), log_tail=doc.get("log_tail"), events=tuple(SmokeAnswer.from_json(a) for a in doc.get("events") or ()),
            python=doc.get("python"), machine=doc.get("machine"), emulated=doc.get("emulated"), distance=doc.get("distance"), root=doc.get("root"),
            runner=doc.get("runner"), skipped_levels=tuple(cls.from_json(a) for a in skipped) if skipped is not None else None,
            sample_label=doc.get("sample_label"), sample_expected=doc.get("sample_expected"), snapstart=doc.get("snapstart"),
        )


@dataclass(frozen=True)
class ValidationReport:
    target: Target
    trees: tuple[TreeStats, ...]
    findings: tuple[Finding, ...]
    sizes: SizeReport = SizeReport()
    smoke: SmokeResult | None = None  # None: no smoke test was asked for

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_json(self) -> dict:
        return {
            "version": REPORT_VERSION,
            "target": self.target.as_json(),
            "ok": self.ok,
            "counts": {s: sum(1 for f in self.findings if f.severity == s) for s in ("error", "warning", "info")},
            "trees": [t.__dict__ for t in self.trees],
            "sizes": self.sizes.as_json(),
            "smoke": self.smoke.as_json() if self.smoke else {},
            "findings": [f.as_json() for f in self.findings],
        }

    def write_json(self, path: Path) -> None:
        atomic_write_json(path, self.as_json())


@cache
def libraries() -> dict:
    return json.loads(LIBRARIES_FILE.read_text())


def _ceilings(target: Target) -> dict[str, tuple[int, ...]]:
    if target.kind == "local":
        return {"GLIBC": tuple(int(x) for x in target.glibc.split("."))}
    os_facts = facts()["os"][facts()["runtimes"][target.runtime]["os"]]
    return {k.upper(): tuple(int(x) for x in os_facts[k].split(".")) for k in ("glibc", "glibcxx", "cxxabi")}


def _v(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def base_image_libraries(target: Target) -> set[str]:
    libs = libraries()["present"]
    if target.kind == "local":
        return set(libs["common"]) | set(libs["al2"]) | set(libs["al2023"])
    os_key = facts()["runtimes"][target.runtime]["os"]
    return set(libs["common"]) | set(libs[os_key])


class _Checker:
    def __init__(self, target: Target, built_on_target: bool = False):
        self.target = target
        self.built_on_target = built_on_target
        self.findings: list[Finding] = []
        self.ceilings = _ceilings(target)
        self.expected_machine = facts()["architectures"][target.arch]["elf_machine"] if target.arch else {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}.get(target.machine)

    def add(self, severity, rule, file, package, message, fix=None):
        self.findings.append(Finding(severity, rule, file, package, message, fix))

    # ------------------------------------------------------------ per tree

    def tree(self, name: str, tree: Path, infos: list[elf.ElfInfo], broken: list[tuple[str, str]], all_sonames: set[str]) -> TreeStats:
        owner = owners(tree)
        for rel, why in broken:
            self.add("error", "unreadable-elf", f"{name}:{rel}", owner_of(owner, rel), f"not a readable ELF file: {why}", "reinstall the package; the file may be truncated")
        present = {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file() or p.is_symlink()}
        base = base_image_libraries(self.target)
        absent = libraries()["absent"]
        for info in infos:
            pkg = owner_of(owner, info.path)
            where = f"{name}:{info.path}"
            self._machine(info, where, pkg)
            resolved_in_tree = self._needed(info, where, pkg, tree, present, all_sonames, base, absent)
            self._versions(info, where, pkg, resolved_in_tree)
        self._abi(name, present, owner)
        self._wheels(name, tree)
        self._gpu(name, present, owner, tree)
        total = sum((tree / p).lstat().st_size for p in present)
        return TreeStats(name=name, path=str(tree), bytes=total, files=len(present), elf_files=len(infos))

    def _machine(self, info, where, pkg):
        if self.expected_machine and info.machine != self.expected_machine:
            self.add(
                "error", "elf-machine", where, pkg,
                f"built for {info.machine}, the target runs {self.expected_machine} ({self.target.describe()}); loading it fails with 'wrong ELF class' or 'cannot open shared object file'",
                f"install {pkg or 'the package'} for the target architecture: `invoke lock --force` then `invoke build`, or pass --arch matching the tree",
            )

    def _needed(self, info, where, pkg, tree, present, all_sonames, base, absent) -> set[str]:
        folder = Path(info.path).parent
        search = [folder]
        for rpath in info.rpaths:
            if rpath.startswith("$ORIGIN") or rpath.startswith("${ORIGIN}"):
                rel = rpath.replace("${ORIGIN}", "$ORIGIN").replace("$ORIGIN", str(folder), 1)
                search.append(Path(rel))
        in_tree = set()
        for lib in info.needed:
            if any(os.path.normpath(d / lib) in present for d in search):
                in_tree.add(lib)
                continue
            if lib in all_sonames:
                in_tree.add(lib)  # loaded by its own package first (torchvision needs torch's libc10.so)
                continue
            if lib in base:
                continue
            if lib in absent:
                self.add("error", "needed-libraries", where, pkg, f"needs {lib}, which the Lambda base image does not have (manylinux allows it, Lambda lacks it)", absent[lib])
            else:
                self.add(
                    "error", "needed-libraries", where, pkg,
                    f"needs {lib}, found neither in the tree (RPATH/RUNPATH {', '.join(info.rpaths) or 'none'}, same folder, *.libs) nor in the Lambda base image",
                    f"ship {lib} inside the wheel (auditwheel repair puts it in <package>.libs/) or in a layer's lib/ folder; or use a build of {pkg or 'the package'} that does not need it",
                )
        return in_tree

    def _versions(self, info, where, pkg, in_tree):
        for (family, library), version in sorted(info.versions.items()):
            ceiling = self.ceilings.get(family)
            if ceiling is None or library in in_tree:
                continue  # no ceiling known, or the tree brings its own copy of that library
            if version > ceiling:
                self.add(
                    "error", "symbol-versions", where, pkg,
                    f"needs {family}_{_v(version)} from {library}; {self.target.describe()} provides up to {family}_{_v(ceiling)}: the import fails with \"version `{family}_{_v(version)}' not found\"",
                    f"use a wheel of {pkg or 'the package'} built for manylinux_{'_'.join(map(str, self.ceilings['GLIBC'][:2]))} or older, "
                    + ("or a newer runtime (python3.12+ runs on glibc 2.34)" if self.ceilings["GLIBC"] < (2, 34) else "or build it in the Lambda base image (Docker builder)"),
                )

    def _abi(self, name, present, owner):
        tag = bytecode_tag(self.target.python_tuple)
        arch = self.target.machine
        pattern = re.compile(r"\.cpython-(\d+)t?-([a-z0-9_]+)-linux-gnu\.so$")
        for rel in sorted(present):
            m = pattern.search(rel)
            if not m:
                continue
            version, mod_arch = m.groups()
            if f"cpython-{version}" != tag or mod_arch != arch:
                self.add(
                    "error", "python-abi", f"{name}:{rel}", owner_of(owner, rel),
                    f"extension module for CPython {version[0]}.{version[1:]} on {mod_arch}; the target imports cpython-{tag[8:]}-{arch} (or abi3) modules only",
                    "install the package for the target's Python version and architecture: `invoke lock --force` then `invoke build`",
                )

    def _wheels(self, name, tree):
        for dist in unloadable(tree, self.target, self.built_on_target):
            self.add(
                "error", "wheel-tags", f"{name}:{dist.dist_info.name}/WHEEL", dist.name,
                f"wheel tags {', '.join(dist.tags)} are not loadable by {self.target.describe()} ({self.target.abi}, up to {self.target.platform_tags()[0]})",
                "re-lock for this target (`invoke lock --force`), or build the package in the Lambda base image",
            )

    def _gpu(self, name, present, owner, tree):
        gpu = libraries()["gpu"]
        seen: set[str] = set()
        for rel in sorted(present):
            base = rel.rsplit("/", 1)[-1]
            if matches(base, gpu["libraries"]):
                pkg = owner_of(owner, rel)
                seen.add(pkg or rel)
                self.add("error", "gpu-bloat", f"{name}:{rel}", pkg, f"CUDA library {base} ({(tree / rel).lstat().st_size:,} bytes): Lambda has no GPU", CPU_INDEX_FIX)
        for dist in dists(tree):
            if dist.name not in seen and matches(dist.name, gpu["distributions"]):
                self.add("error", "gpu-bloat", f"{name}:{dist.dist_info.name}", dist.name, f"{dist.name} {dist.version} is a GPU package: Lambda has no GPU", CPU_INDEX_FIX)


def _sizes(checker: _Checker, stats: list[TreeStats], layer_set: str | None, zips: dict[str, dict]) -> SizeReport:
    efs_sizes: list[EfsSize] = []
    efs = [s for s in stats if s.name != layer_set]
    for s in efs:
        gb = s.bytes / 2**30
        efs_sizes.append(EfsSize(tree=s.name, bytes=s.bytes, files=s.files, usd_per_month=round(gb * EFS_STANDARD_USD_PER_GB_MONTH, 2)))
        checker.add("info", "size", s.name, None, f"EFS tree {s.name}: {s.bytes / 1e6:,.1f} MB in {s.files:,} files, about ${gb * EFS_STANDARD_USD_PER_GB_MONTH:,.2f}/month in EFS Standard (no size limit; does not count toward the 250 MB)")
    unzipped = sum(z["unzipped_bytes"] for z in zips.values())
    if layer_set and not zips:
        unzipped = sum(s.bytes for s in stats if s.name == layer_set)
    out = SizeReport(efs=tuple(efs_sizes))
    if layer_set or zips:
        out = dataclasses.replace(out, function_and_layers_unzipped=unzipped, limit_unzipped=UNZIPPED_LIMIT)
        if unzipped > UNZIPPED_LIMIT:
            checker.add(
                "error", "size", ", ".join(zips) or layer_set, None,
                f"function + layers unzip to {unzipped:,} bytes; Lambda refuses more than {UNZIPPED_LIMIT:,} ('Unzipped size must be smaller than 262144000 bytes')",
                "move the heaviest packages from requirements/layer.in to requirements/efs.in (EFS does not count), then `invoke lock` and `invoke build`",
            )
    for label, z in zips.items():
        if z["bytes"] > ZIPPED_DIRECT_UPLOAD:
            checker.add("warning", "size", label, None, f"{label} is {z['bytes']:,} bytes zipped, over the 50 MB direct-upload limit", "upload it through S3 (the deploy stage does this)")
    return out


def validate(trees: dict[str, Path], target: Target, *, layer_set: str | None = None, zips: dict[str, dict] | None = None, built_on_target: bool = False) -> ValidationReport:
    """Check every tree for ``target``; ``layer_set`` names the tree that counts toward the 250 MB.

    ``built_on_target``: the Docker builder compiled sdists in the Lambda image,
    so their ``linux_<machine>`` wheel tags are fine.
    """
    checker = _Checker(target, built_on_target)
    scanned = {name: elf.scan(tree) for name, tree in trees.items()}
    sonames = {info.soname or info.path.rsplit("/", 1)[-1] for infos, _ in scanned.values() for info in infos}
    stats = [checker.tree(name, tree, *scanned[name], sonames) for name, tree in trees.items()]
    sizes = _sizes(checker, stats, layer_set, zips or {})
    order = {"error": 0, "warning": 1, "info": 2}
    findings = sorted(checker.findings, key=lambda f: (order[f.severity], f.rule, f.file or ""))
    return ValidationReport(target=target, trees=tuple(stats), findings=tuple(findings), sizes=sizes)
