"""What a site-packages tree says about its distributions (*.dist-info)."""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from packaging.tags import parse_tag
from packaging.utils import canonicalize_name

from .targets import Target


@dataclass(frozen=True)
class Dist:
    name: str  # canonical
    version: str
    tags: tuple[str, ...]
    dist_info: Path


def _headers(path: Path):
    return Parser().parsestr(path.read_text(errors="replace"), headersonly=True)


def dists(tree: Path) -> list[Dist]:
    out = []
    for dist_info in sorted(tree.glob("*.dist-info")):
        meta = dist_info / "METADATA"
        if not meta.is_file():
            continue
        headers = _headers(meta)
        wheel = dist_info / "WHEEL"
        tags = tuple(_headers(wheel).get_all("Tag") or ()) if wheel.is_file() else ()
        out.append(Dist(name=canonicalize_name(headers["Name"]), version=headers["Version"], tags=tags, dist_info=dist_info))
    return out


def record_rows(dist: Dist) -> list[tuple[str, str]]:
    """Each row of the distribution's RECORD: (its path relative to the tree, normalized, '/'; its hash field, "" when
    none); [] without a RECORD."""
    record = dist.dist_info / "RECORD"
    if not record.is_file():
        return []
    rows = csv.reader(io.StringIO(record.read_text(errors="replace")))
    return [(os.path.normpath(row[0]).replace(os.sep, "/"), row[1] if len(row) > 1 else "") for row in rows if row]


def owners(tree: Path) -> dict[str, str]:
    """path (relative, '/') -> distribution name, from each RECORD."""
    return {rel: dist.name for dist in dists(tree) for rel, _ in record_rows(dist)}


def owner_of(owner: dict[str, str], path: str) -> str | None:
    """The distribution a file came from; bytecode belongs to its source's."""
    if "__pycache__/" in path:
        folder, _, pyc = path.rpartition("__pycache__/")
        path = folder + pyc.split(".", 1)[0] + ".py"
    return owner.get(path) or owner.get(path.split("/", 1)[0])


def unloadable(tree: Path, target: Target, built_on_target: bool = False) -> list[Dist]:
    """Distributions none of whose wheel tags the target loads."""
    supported = set(target.supported_tags(built_on_target))
    return [d for d in dists(tree) if d.tags and not any(t in supported for tag in d.tags for t in parse_tag(tag))]


def top_level_modules(*trees: Path) -> set[str]:
    """Importable top-level names of trees: packages, modules, extension modules."""
    names = set()
    for tree in trees:
        for p in tree.iterdir():
            if (p / "__init__.py").exists() or p.suffix == ".py" or (p.is_file() and ".so" in p.name):
                names.add(p.name.split(".", 1)[0])
    return names
