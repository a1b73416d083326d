"""The records stages pass through dist/: the build record and the manifest.

A build writes ``dist/<target>/build.json`` (what it built, where, from which
builder) and one ``manifest.json`` per set (what a tree holds and the content
hash that names it). validate, sync, deploy, serve and the benchmarks read
them. This module is the only one that writes or parses either file; every
stage receives the frozen dataclasses below. The JSON format is unchanged
from the dicts the stages used to read (``"version": 1``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .files import atomic_write_json

MANIFEST_NAME = "manifest.json"  # beside a set's site-packages/, and in each EFS version
BUILD_RECORD_NAME = "build.json"  # dist/<target>/build.json
MANIFEST_VERSION = 1
BUILD_RECORD_VERSION = 1
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


@dataclass(frozen=True)
class Manifest:
    """What one set's tree holds. ``bytecode`` and ``slim`` are the builder's reports as written."""

    set: str
    target: dict[str, Any]
    builder: str
    build_key: str
    content_hash: str
    bytes: int
    files_count: int
    bytecode: dict[str, Any]
    slim: dict[str, Any]
    packages: tuple[PackageEntry, ...]
    files: tuple[FileEntry, ...]
    archives: tuple[ArchiveEntry, ...] = ()
    version: int = MANIFEST_VERSION

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "set": self.set,
            "target": self.target,
            "builder": self.builder,
            "build_key": self.build_key,
            "content_hash": self.content_hash,
            "totals": {"bytes": self.bytes, "files": self.files_count},
            "bytecode": self.bytecode,
            "slim": self.slim,
            "packages": [{"name": p.name, "version": p.version, "tags": list(p.tags), "set": p.set} for p in self.packages],
            "files": [{"path": e.path, "size": e.size, "mode": f"{e.mode:o}", "sha256": e.sha256} for e in self.files],
            "archives": [{"name": a.name, "sha256": a.sha256, "bytes": a.bytes} for a in self.archives],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Manifest:
        return cls(
            version=doc.get("version", MANIFEST_VERSION),
            set=doc["set"],
            target=doc["target"],
            builder=doc.get("builder", ""),
            build_key=doc.get("build_key", ""),
            content_hash=doc["content_hash"],
            bytes=doc["totals"]["bytes"],
            files_count=doc["totals"]["files"],
            bytecode=doc.get("bytecode") or {},
            slim=doc.get("slim") or {},
            packages=tuple(PackageEntry(p["name"], p["version"], tuple(p["tags"]), p["set"]) for p in doc.get("packages", [])),
            files=tuple(FileEntry(f["path"], f["size"], int(f["mode"], 8), f["sha256"]) for f in doc["files"]),
            archives=tuple(ArchiveEntry(a["name"], a["sha256"], a["bytes"]) for a in doc.get("archives") or []),
        )

    def with_files(self, files: list[FileEntry] | tuple[FileEntry, ...], content_hash: str) -> Manifest:
        """The same manifest over other files (their totals follow)."""
        return replace(self, files=tuple(files), content_hash=content_hash, bytes=sum(e.size for e in files), files_count=len(files))


def manifest_path(set_dir: Path) -> Path:
    """Where a set's manifest lives: ``<set dir>/manifest.json`` beside its site-packages/."""
    return set_dir / MANIFEST_NAME


def load_manifest(path: Path) -> Manifest:
    """The manifest at ``path``; RecordError when it is not one, OSError when it cannot be read."""
    doc = _read(path)
    try:
        return Manifest.from_json(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"{path}: not a Hoist manifest ({exc!r} missing or malformed)") from exc


def write_manifest(manifest: Manifest, path: Path) -> None:
    atomic_write_json(path, manifest.as_json())


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
class SetRecord:
    """One set of a build: its tree and manifest (absolute paths once loaded)."""

    content_hash: str
    tree: Path
    manifest: Path
    bytes: int
    files: int
    bytecode: bool
    bytecode_python: str | None
    rebuilt: bool


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
                    "tree": _relative(s.tree, root),
                    "manifest": _relative(s.manifest, root),
                    "bytes": s.bytes,
                    "files": s.files,
                    "bytecode": s.bytecode,
                    "bytecode_python": s.bytecode_python,
                    "rebuilt": s.rebuilt,
                }
                for name, s in self.sets.items()
            },
            "artifacts": {name: a.as_json(root) for name, a in self.artifacts.items()},
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], root: Path, path: Path | None = None) -> BuildRecord:
        sets = {
            name: SetRecord(content_hash=s["content_hash"], tree=root / s["tree"], manifest=root / s["manifest"], bytes=s["bytes"], files=s["files"],
                            bytecode=s["bytecode"], bytecode_python=s.get("bytecode_python"), rebuilt=s.get("rebuilt", False))
            for name, s in doc["sets"].items()
        }
        return cls(target=doc["target"], builder=doc.get("builder", ""), builder_detail=doc.get("builder_detail", ""), sets=sets,
                   artifacts={name: Artifact.from_json(a, root) for name, a in (doc.get("artifacts") or {}).items()},
                   warnings=tuple(doc.get("warnings", ())), version=doc.get("version", BUILD_RECORD_VERSION), path=path)


def build_record_path(output: Path, target_name: str) -> Path:
    """The build record of one target: building one never touches another's."""
    return output / target_name / BUILD_RECORD_NAME


def load_build_record(path: Path, root: Path) -> BuildRecord:
    """The build record at ``path``, its relative paths resolved against the project ``root``."""
    doc = _read(path)
    try:
        return BuildRecord.from_json(doc, root, path)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"{path}: not a Hoist build record ({exc!r} missing or malformed)") from exc


def write_build_record(record: BuildRecord, path: Path, root: Path) -> BuildRecord:
    atomic_write_json(path, record.as_json(root))
    return replace(record, path=path)
