"""The records stages pass through dist/: the build record and the manifest.

A build writes ``dist/<target>/build.json`` (what it built, where, from which
builder) and one ``manifest.json`` per set (what a tree holds, its content hash,
and the identity that names its published version). validate, sync, deploy,
serve and the benchmarks read them. This module is the only one that writes or
parses either file; every stage receives the frozen dataclasses below.

Version 2 of both files added the identity: the content hash covers the tree
alone, while an EFS version also holds the archives and their index, so a
rebuild that changed only those published nothing new under a name that
covered the tree only. A version 1 file is refused with the fix (rebuild).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .console import counted
from .files import Digests, atomic_write_json

MANIFEST_NAME = "manifest.json"  # beside a set's site-packages/, and in each EFS version
BUILD_RECORD_NAME = "build.json"  # dist/<target>/build.json
MANIFEST_VERSION = 2  # 2: "identity" and "archive_index" (the published version's name covers the archives too)
BUILD_RECORD_VERSION = 2  # 2: each set's "identity"
# `docker save`'s index of an image archive (not a set's manifest): the image shape's layout in dist/ carries one beside
# the OCI index so `docker load` takes it; builder/image.py writes it, base images' are read from `docker save`
DOCKER_ARCHIVE_INDEX = "manifest.json"
SYMLINK_MODE = 0o120777  # a symlink's entry: size and sha256 are of its target path


class RecordError(ValueError):
    """A record file that is not what this module writes (malformed JSON, missing keys)."""


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise RecordError(f"{path}: not a JSON object")
    return doc


def identity(content_hash: str, archive_index: str) -> str:
    """The name of a set's published version: everything that travels with it, the tree (its content hash)
    and the archives' index (its sha256, "" without archives), which names every archive by its sha256.
    Two builds publish under one name only when the handler would find the same bytes in both."""
    return hashlib.sha256(f"hoist-version\0{content_hash}\0{archive_index}\n".encode()).hexdigest()


def _older(path: Path, doc: dict[str, Any], what: str, current: int) -> None:
    found = doc.get("version")
    if isinstance(found, int) and found < current:
        raise RecordError(f"{path}: {what} written by an older Hoist (version {found}, this one reads {current}); "
                          "run `invoke build` (a rebuild writes it anew)")


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


# ---------------------------------------------------------------- manifest


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    mode: int
    sha256: str


@dataclass(frozen=True)
class PackageEntry:
    name: str
    version: str
    tags: tuple[str, ...]
    set: str


@dataclass(frozen=True)
class ArchiveEntry:
    name: str
    sha256: str
    bytes: int
    raw: int = 0  # its records' size unpacked: what the handler holds in memory for it during init


@dataclass(frozen=True)
class BytecodeReport:
    """A manifest's "bytecode": what compileall wrote into the tree, or why nothing."""

    compiled: bool = False
    python: str | None = None  # full version of the compiling interpreter
    invalidation_mode: str | None = None  # "unchecked-hash" when compiled
    files: int = 0  # .pyc written
    failed: tuple[str, ...] = ()  # sources that do not compile
    reason: str | None = None  # why nothing was compiled

    def as_json(self) -> dict[str, Any]:
        return {"compiled": self.compiled, "python": self.python, "invalidation_mode": self.invalidation_mode, "files": self.files,
                "failed": list(self.failed), "reason": self.reason}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BytecodeReport:
        return cls(compiled=bool(doc.get("compiled", False)), python=doc.get("python"), invalidation_mode=doc.get("invalidation_mode"),
                   files=doc.get("files", 0), failed=tuple(doc.get("failed") or ()), reason=doc.get("reason"))


@dataclass(frozen=True)
class RuleCount:
    """What one slimming rule removed from a tree."""

    name: str
    files: int
    bytes: int


@dataclass(frozen=True)
class StripCount:
    """What stripping debug symbols took off: files, bytes, and the (file, why) it refused."""

    files: int = 0
    bytes: int = 0
    reverted: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Restored:
    """Files the import check put back: slimming rule ``rule`` removed what ``import module`` needs."""

    module: str
    package: str
    rule: str
    files: int
    error: str
    line: str  # what to add to pipeline.toml to keep them without the check
    paths: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"module": self.module, "package": self.package, "rule": self.rule, "files": self.files, "error": self.error, "line": self.line,
                "paths": list(self.paths)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Restored:
        return cls(module=doc["module"], package=doc["package"], rule=doc["rule"], files=doc["files"], error=doc.get("error", ""), line=doc.get("line", ""),
                   paths=tuple(doc.get("paths") or ()))


@dataclass(frozen=True)
class ImportCheck:
    """A slim report's "import_check": whether every top-level module imported after slimming, and in what.

    ``runtime`` is written as null when the check was not needed (slimming
    off) and left out when no runtime could run here (``verified`` false);
    ``why`` is left out when there is nothing to explain.
    """

    verified: bool
    modules: int
    runtime: str | None = None
    why: str | None = None
    restored: tuple[Restored, ...] = ()
    failing: dict[str, str] = field(default_factory=dict)  # module -> error, with or without slimming
    hot_modules: tuple[str, ...] = ()  # imported first: the set's own requirements' modules
    opened: tuple[str, ...] | None = None  # the files of the tree they opened (the hot set); None: not recorded
    touched: dict[str, list[list[int]]] | None = None  # library -> [offset, length] of its pages mapped after them; None: not recorded

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"verified": self.verified}
        if self.verified or self.runtime is not None:
            doc["runtime"] = self.runtime
        if self.why is not None:
            doc["why"] = self.why
        doc.update({"modules": self.modules, "restored": [r.as_json() for r in self.restored], "failing": dict(self.failing)})
        if self.opened is not None:
            doc.update(hot_modules=list(self.hot_modules), opened=list(self.opened))
        if self.touched is not None:
            doc["touched"] = {rel: [list(r) for r in ranges] for rel, ranges in self.touched.items()}
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ImportCheck:
        return cls(verified=bool(doc.get("verified")), modules=doc.get("modules", 0), runtime=doc.get("runtime"), why=doc.get("why"),
                   restored=tuple(Restored.from_json(r) for r in doc.get("restored") or ()), failing=dict(doc.get("failing") or {}),
                   hot_modules=tuple(doc.get("hot_modules") or ()), opened=tuple(doc["opened"]) if doc.get("opened") is not None else None,
                   touched={rel: [list(r) for r in ranges] for rel, ranges in doc["touched"].items()} if doc.get("touched") is not None else None)


@dataclass(frozen=True)
class SlimRecord:
    """A manifest's "slim": what the slimming rules removed and kept, and the import check of the result."""

    enabled: bool = True
    rules: tuple[RuleCount, ...] = ()
    strip: StripCount = StripCount()
    guarded: tuple[tuple[str, str], ...] = ()  # (directory kept, importing file)
    kept_beside: tuple[tuple[str, str], ...] = ()  # (file kept, the module that needs it)
    removed_files: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # package -> rule -> files
    import_check: ImportCheck | None = None  # None: no check was asked for

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "enabled": self.enabled,
            "rules": [{"name": r.name, "files": r.files, "bytes": r.bytes} for r in self.rules],
            "strip": {"files": self.strip.files, "bytes": self.strip.bytes, "reverted": [list(x) for x in self.strip.reverted]},
            "guarded": [list(x) for x in self.guarded],
            "kept_beside": [list(x) for x in self.kept_beside],
            "removed_files": {p: {r: list(f) for r, f in by_rule.items()} for p, by_rule in self.removed_files.items()},
        }
        if self.import_check is not None:
            doc["import_check"] = self.import_check.as_json()
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SlimRecord:
        strip = doc.get("strip") or {}
        check = doc.get("import_check")
        return cls(
            enabled=doc.get("enabled", True),
            rules=tuple(RuleCount(r["name"], r["files"], r["bytes"]) for r in doc.get("rules") or ()),
            strip=StripCount(files=strip.get("files", 0), bytes=strip.get("bytes", 0), reverted=tuple((a, b) for a, b in strip.get("reverted") or ())),
            guarded=tuple((a, b) for a, b in doc.get("guarded") or ()),
            kept_beside=tuple((a, b) for a, b in doc.get("kept_beside") or ()),
            removed_files={p: {r: list(f) for r, f in by_rule.items()} for p, by_rule in (doc.get("removed_files") or {}).items()},
            import_check=ImportCheck.from_json(check) if check else None,
        )


@dataclass(frozen=True)
class Manifest:
    """What one set's tree holds, with the builder's bytecode and slim reports."""

    set: str
    target: dict[str, Any]
    builder: str
    build_key: str
    content_hash: str
    bytes: int
    files_count: int
    bytecode: BytecodeReport
    slim: SlimRecord
    packages: tuple[PackageEntry, ...]
    files: tuple[FileEntry, ...]
    archives: tuple[ArchiveEntry, ...] = ()
    archive_index: str = ""  # sha256 of archives/index.json ("": no archives)
    build_inputs: dict[str, Any] = field(default_factory=dict)  # what build_key hashes, by name ({}: an older manifest)
    version: int = MANIFEST_VERSION

    @property
    def identity(self) -> str:
        """The published version's name (EFS ``envs/<identity>``): the tree and the archives together."""
        return identity(self.content_hash, self.archive_index)

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "set": self.set,
            "target": self.target,
            "builder": self.builder,
            "build_key": self.build_key,
            "content_hash": self.content_hash,
            "identity": self.identity,
            "archive_index": self.archive_index,
            "totals": {"bytes": self.bytes, "files": self.files_count},
            "bytecode": self.bytecode.as_json(),
            "slim": self.slim.as_json(),
            "packages": [{"name": p.name, "version": p.version, "tags": list(p.tags), "set": p.set} for p in self.packages],
            "files": [{"path": e.path, "size": e.size, "mode": f"{e.mode:o}", "sha256": e.sha256} for e in self.files],
            "archives": [{"name": a.name, "sha256": a.sha256, "bytes": a.bytes, "raw": a.raw} for a in self.archives],
            "build_inputs": self.build_inputs,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Manifest:
        return cls(
            version=doc.get("version", MANIFEST_VERSION),
            set=doc["set"],
            target=doc["target"],
            builder=doc.get("builder", ""),
            build_key=doc.get("build_key", ""),
            build_inputs=doc.get("build_inputs") or {},
            content_hash=doc["content_hash"],
            bytes=doc["totals"]["bytes"],
            files_count=doc["totals"]["files"],
            bytecode=BytecodeReport.from_json(doc.get("bytecode") or {}),
            slim=SlimRecord.from_json(doc.get("slim") or {}),
            packages=tuple(PackageEntry(p["name"], p["version"], tuple(p["tags"]), p["set"]) for p in doc.get("packages", [])),
            files=tuple(FileEntry(f["path"], f["size"], int(f["mode"], 8), f["sha256"]) for f in doc["files"]),
            archives=tuple(ArchiveEntry(a["name"], a["sha256"], a["bytes"], a["raw"]) for a in doc.get("archives") or []),
            archive_index=doc["archive_index"],
        )

    def hot_set_cost(self) -> str | None:
        """What a tree built without its hot set costs every cold start (no import check ran: the archives hold every
        file, read at each cold start and held in memory during init); None when the hot set was recorded or there
        are no archives."""
        check = self.slim.import_check
        if (check is not None and check.opened is not None) or not self.archives:
            return None
        read, held = sum(a.bytes for a in self.archives), sum(a.raw for a in self.archives)
        why = check.why if check is not None and check.why else "build.import_check = false"
        return (f"this EFS tree was built without its hot set (no import check ran: {why}), so its archives hold every file: each cold start "
                f"reads {read / 1e6:,.1f} MB of them and holds {held / 1e6:,.1f} MB in memory during init, and its init takes about 1.5x "
                "as long as with the hot set (docs/cold-start.md: 'every file')")

    def with_files(self, files: list[FileEntry] | tuple[FileEntry, ...], content_hash: str) -> Manifest:
        """The same manifest over other files (their totals follow)."""
        return replace(self, files=tuple(files), content_hash=content_hash, bytes=sum(e.size for e in files), files_count=len(files))


def manifest_path(set_dir: Path) -> Path:
    """Where a set's manifest lives: ``<set dir>/manifest.json`` beside its site-packages/."""
    return set_dir / MANIFEST_NAME


def load_manifest(path: Path) -> Manifest:
    """The manifest at ``path``; RecordError when it is not one, OSError when it cannot be read."""
    doc = _read(path)
    _older(path, doc, "manifest", MANIFEST_VERSION)
    try:
        return Manifest.from_json(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"{path}: not a Hoist manifest ({exc!r} missing or malformed)") from exc


def write_manifest(manifest: Manifest, path: Path) -> None:
    atomic_write_json(path, manifest.as_json())


def scan_tree(tree: Path, digests: Digests | None = None) -> list[FileEntry]:
    """Every file of ``tree`` as a manifest lists it (path, size, mode, sha256; a symlink by its target path), sorted
    by path; ``digests`` remembers sha256s across a build's steps."""
    entries = []
    regular: list[tuple[str, str, os.stat_result]] = []
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for f in files:
            p = os.path.join(root, f)
            rel = os.path.relpath(p, tree).replace(os.sep, "/")
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                entries.append(FileEntry(rel, len(target), SYMLINK_MODE, hashlib.sha256(target.encode()).hexdigest()))
            else:
                regular.append((p, rel, st))
    found = (digests or Digests()).many(p for p, _, _ in regular)
    entries += [FileEntry(rel, st.st_size, stat.S_IMODE(st.st_mode), d) for (_, rel, st), d in zip(regular, found, strict=True)]
    entries.sort(key=lambda e: e.path)
    return entries


def tree_differences(tree: Path, manifest: Manifest) -> list[str]:
    """What ``tree`` holds that its manifest does not say, file by file (missing, not listed, another size, mode or
    content), sorted; [] when it is what was built. Reads every file (the stages that send or judge a tree call it)."""
    listed = {e.path: e for e in manifest.files}
    found = {e.path: e for e in scan_tree(tree)}
    problems = [f"missing: {rel}" for rel in sorted(listed.keys() - found.keys())]
    problems += [f"not in the manifest: {rel}" for rel in sorted(found.keys() - listed.keys())]
    for rel in sorted(found.keys() & listed.keys()):
        got, want = found[rel], listed[rel]
        if got == want:
            continue
        if got.mode == SYMLINK_MODE:
            problems.append(f"another symlink: {rel}")
        elif want.mode == SYMLINK_MODE or got.size != want.size or got.mode != want.mode:
            problems.append(f"{'size' if got.size != want.size else 'mode'} differs: {rel}")
        else:
            problems.append(f"content differs: {rel}")
    return sorted(problems, key=lambda p: p.split(": ", 1)[1])


def changed_after_build(set_name: str, problems: list[str]) -> str:
    """The error text for a tree ``tree_differences`` found changed (validate and sync say the same)."""
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return f"the built tree of set {set_name} is not what its manifest lists ({counted(len(problems), 'difference')}: {shown}): it was changed after the build"


def rebuild_fix(target: str) -> str:
    return (f"build it again with `invoke build --target {target} --force` (if the change reached uv's cache, whose files the tree's are, "
            "that build stops and names the `python3 -m uv cache clean` command to run first)")


# ---------------------------------------------------------------- build record


@dataclass(frozen=True)
class Artifact:
    """A zip the build made (layer or function)."""

    path: Path
    sha256: str
    bytes: int
    unzipped_bytes: int
    entries: int

    def as_json(self, root: Path) -> dict[str, Any]:
        return {
            "path": _relative(self.path, root),
            "sha256": self.sha256,
            "bytes": self.bytes,
            "unzipped_bytes": self.unzipped_bytes,
            "entries": self.entries,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], root: Path) -> Artifact:
        return cls(path=root / doc["path"], sha256=doc["sha256"], bytes=doc["bytes"], unzipped_bytes=doc["unzipped_bytes"], entries=doc["entries"])


@dataclass(frozen=True)
class ImageRecord:
    """The image shape's artifact (builder/image.py): an OCI layout, the local tag docker load gives it, its digests."""

    layout: Path  # the OCI layout folder
    tag: str  # the local name (<repository>:<first 12 of the config digest>)
    config_digest: str  # sha256:...: the image id; equal inputs give an equal one
    manifest_digest: str  # sha256:... of the layout's manifest (uncompressed layers; a registry's, after push, differs)
    base: str  # the base image, as named, @ its id here
    platform: str  # linux/arm64 | linux/amd64
    bytes: int  # every layer uncompressed: what Lambda's 10 GB limit counts
    layers: tuple[tuple[str, str, int], ...]  # (what it holds, diff_id, bytes), lowest first
    written: tuple[str, ...] = ()  # the layers this build wrote; the others were the previous build's

    def as_json(self, root: Path) -> dict[str, Any]:
        return {"layout": _relative(self.layout, root), "tag": self.tag, "config_digest": self.config_digest, "manifest_digest": self.manifest_digest,
                "base": self.base, "platform": self.platform, "bytes": self.bytes,
                "layers": [{"name": n, "diff_id": d, "bytes": b} for n, d, b in self.layers], "written": list(self.written)}

    @classmethod
    def from_json(cls, doc: dict[str, Any], root: Path) -> ImageRecord:
        return cls(layout=root / doc["layout"], tag=doc["tag"], config_digest=doc["config_digest"], manifest_digest=doc["manifest_digest"], base=doc["base"],
                   platform=doc["platform"], bytes=doc["bytes"], layers=tuple((x["name"], x["diff_id"], x["bytes"]) for x in doc["layers"]),
                   written=tuple(doc.get("written") or ()))


@dataclass(frozen=True)
class SetRecord:
    """One set of a build: its tree and manifest (absolute paths once loaded)."""

    content_hash: str
    identity: str  # the published version's name (Manifest.identity)
    tree: Path
    manifest: Path
    bytes: int
    files: int
    bytecode: bool
    bytecode_python: str | None
    rebuilt: bool
    lock_sha256: str | None = None  # the lock file the set was built from (None: a record of an older Hoist)


@dataclass(frozen=True)
class BuildRecord:
    """dist/<target>/build.json: what the last build of a target made."""

    target: dict[str, Any]
    builder: str
    builder_detail: str
    sets: dict[str, SetRecord]
    artifacts: dict[str, Artifact]  # "function_zip", and "layer_zip" when there is a layer
    warnings: tuple[str, ...] = ()
    version: int = BUILD_RECORD_VERSION
    path: Path | None = field(default=None, compare=False)  # where it was read from or written to
    image: ImageRecord | None = None  # the image shape's image (pipeline/shapes.py); None for the EFS shape

    @property
    def target_name(self) -> str:
        return str(self.target["name"])

    def as_json(self, root: Path) -> dict[str, Any]:
        return {
            "version": self.version,
            "target": self.target,
            "builder": self.builder,
            "builder_detail": self.builder_detail,
            "sets": {
                name: {
                    "content_hash": s.content_hash,
                    "identity": s.identity,
                    "tree": _relative(s.tree, root),
                    "manifest": _relative(s.manifest, root),
                    "bytes": s.bytes,
                    "files": s.files,
                    "bytecode": s.bytecode,
                    "bytecode_python": s.bytecode_python,
                    "rebuilt": s.rebuilt,
                    **({"lock_sha256": s.lock_sha256} if s.lock_sha256 else {}),
                }
                for name, s in self.sets.items()
            },
            "artifacts": {name: a.as_json(root) for name, a in self.artifacts.items()},
            "warnings": list(self.warnings),
            **({"image": self.image.as_json(root)} if self.image else {}),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], root: Path, path: Path | None = None) -> BuildRecord:
        sets = {
            name: SetRecord(content_hash=s["content_hash"], identity=s["identity"], tree=root / s["tree"], manifest=root / s["manifest"], bytes=s["bytes"], files=s["files"],
                            bytecode=s["bytecode"], bytecode_python=s.get("bytecode_python"), rebuilt=s.get("rebuilt", False),
                            lock_sha256=s.get("lock_sha256"))
            for name, s in doc["sets"].items()
        }
        return cls(target=doc["target"], builder=doc.get("builder", ""), builder_detail=doc.get("builder_detail", ""), sets=sets,
                   artifacts={name: Artifact.from_json(a, root) for name, a in (doc.get("artifacts") or {}).items()},
                   warnings=tuple(doc.get("warnings", ())), version=doc.get("version", BUILD_RECORD_VERSION), path=path,
                   image=ImageRecord.from_json(doc["image"], root) if doc.get("image") else None)


def build_record_path(output: Path, target_name: str) -> Path:
    """The build record of one target: building one never touches another's."""
    return output / target_name / BUILD_RECORD_NAME


def load_build_record(path: Path, root: Path) -> BuildRecord:
    """The build record at ``path``, its relative paths resolved against the project ``root``."""
    doc = _read(path)
    _older(path, doc, "build record", BUILD_RECORD_VERSION)
    try:
        return BuildRecord.from_json(doc, root, path)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"{path}: not a Hoist build record ({exc!r} missing or malformed)") from exc


def write_build_record(record: BuildRecord, path: Path, root: Path) -> BuildRecord:
    atomic_write_json(path, record.as_json(root))
    return replace(record, path=path)
