"""Slim a site-packages tree safely, package-aware.

1. The rules in ``slim_rules.toml`` (data, not code) pick files nothing loads at
   run time: test suites, headers, static archives, build files.
2. The import guard: a kept module that imports something a rule picked keeps
   it (the whole directory); a rule's ``keep_beside`` keeps a file whose sibling
   module names a marker (``__init__.pyi`` beside a module using lazy_loader's
   ``attach_stub``, which reads the stub at import); a kept module that names a
   picked file in a string literal (a data file read at import) keeps it.
3. The user's settings (pipeline.toml [slim], see ``configure``): slimming off,
   rules turned off, keep globs per set or per package.
4. Removed files can be moved aside instead of deleted, so that the import
   check after slimming (builder/importcheck.py) can put back what a module
   needs.
5. Symbol tables are stripped from an allow-list of ELF files only, by
   ``elfstrip`` (not ``strip``, which corrupts patchelf'd libraries), and every
   stripped file must show the loader the same segments; otherwise the
   original stays.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import struct
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import SlimConfig
from pipeline.dists import owner_of, owners
from pipeline.errors import BuildError
from pipeline.files import Digests, is_elf
from pipeline.globs import matches
from pipeline.records import RuleCount

from . import cache, elfstrip

RULES_FILE = Path(__file__).with_name("slim_rules.toml")
ELFSTRIP_DIGEST = hashlib.sha256(Path(elfstrip.__file__).read_bytes()).hexdigest()  # part of a stripped library's cache key


@dataclass(frozen=True)
class Rule:
    name: str
    why: str
    dirs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    # keep a picked file when the module beside it (same stem, .py) contains one of these
    keep_beside: tuple[str, ...] = ()
    literal_guard: bool = True  # a kept module naming a picked file in a string literal keeps it


@dataclass(frozen=True)
class StripPolicy:
    allow: tuple[str, ...]
    never: tuple[str, ...]
    why: str

    def wants(self, rel: str) -> bool:
        return matches(rel, self.allow) and not matches(rel, self.never)


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    strip: StripPolicy
    digest: str  # sha256 of the rules file and the user's settings: part of the build key
    keep: tuple[str, ...] = ()  # the user's globs, every package
    package_keep: dict[str, tuple[str, ...]] = field(default_factory=dict)  # distribution -> globs
    strip_enabled: bool = True


@dataclass(frozen=True)
class SlimReport:
    removed: tuple[RuleCount, ...]
    guarded: tuple[tuple[str, str], ...]  # (directory kept, importing file)
    stripped: int
    strip_bytes: int
    strip_reverted: tuple[tuple[str, str], ...]  # (file, why the stripped copy was refused)
    removed_files: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # package -> rule -> files
    kept_beside: tuple[tuple[str, str], ...] = ()  # (file kept, the module that needs it)
    enabled: bool = True

    @property
    def files_removed(self) -> int:
        return sum(r.files for r in self.removed)

    def as_json(self) -> dict:
        return {
            "enabled": self.enabled,
            "rules": [{"name": r.name, "files": r.files, "bytes": r.bytes} for r in self.removed],
            "strip": {"files": self.stripped, "bytes": self.strip_bytes, "reverted": [list(x) for x in self.strip_reverted]},
            "guarded": [list(x) for x in self.guarded],
            "kept_beside": [list(x) for x in self.kept_beside],
            "removed_files": self.removed_files,
        }


def load_rules(path: Path = RULES_FILE) -> Rules:
    data = path.read_bytes()
    raw = tomllib.loads(data.decode())
    rules = tuple(
        Rule(name=r["name"], why=r["why"], dirs=tuple(r.get("dirs", ())), files=tuple(r.get("files", ())), keep=tuple(r.get("keep", ())),
             keep_beside=tuple(r.get("keep_beside", ())), literal_guard=r.get("literal_guard", True))
        for r in raw["rule"]
    )
    s = raw["strip"]
    strip = StripPolicy(allow=tuple(s["allow"]), never=tuple(s["never"]), why=s["why"])
    return Rules(rules=rules, strip=strip, digest=hashlib.sha256(data).hexdigest())


def configure(rules: Rules, settings: SlimConfig, set_name: str, where: str = "pipeline.toml") -> Rules:
    """The rules for one set after the user's [slim] settings; the digest covers them."""
    names = [r.name for r in rules.rules]
    unknown = [d for d in settings.disable if d not in names]
    if unknown:
        raise BuildError(f"slim.disable names unknown rule(s) {', '.join(unknown)}", where=f"{where}: slim.disable", fix=f"rules are {', '.join(names)} (builder/slim_rules.toml)")
    chosen = tuple(r for r in rules.rules if r.name not in settings.disable) if settings.enabled else ()
    keep = settings.keep + settings.set_keep.get(set_name, ())
    doc = json.dumps({"file": rules.digest, "enabled": settings.enabled, "disable": sorted(settings.disable), "keep": keep,
                      "packages": {k: list(v) for k, v in sorted(settings.package_keep.items())}}, sort_keys=True)
    return dataclasses.replace(rules, rules=chosen, keep=rules.keep + keep, package_keep={**rules.package_keep, **settings.package_keep},
                               strip_enabled=settings.enabled, digest=hashlib.sha256(doc.encode()).hexdigest())


# ---------------------------------------------------------------- selection


def _walk(tree: Path) -> tuple[list[str], list[str]]:
    files, dirs = [], []
    for root, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        rel_root = os.path.relpath(root, tree).replace(os.sep, "/")
        prefix = "" if rel_root == "." else rel_root + "/"
        dirs += [prefix + d for d in dirnames]
        files += [prefix + f for f in sorted(filenames)]
    return files, dirs


def select(files: list[str], dirs: list[str], rules: Rules, owner: dict[str, str] | None = None) -> dict[str, str]:
    """file -> name of the first rule that removes it (never a file the user keeps)."""
    picked: dict[str, str] = {}
    # each file's folders, innermost last: "a/b/c.py" -> ["a", "a/b"]
    folders = {f: [f[:i] for i, ch in enumerate(f) if ch == "/"] for f in files}
    for rule in rules.rules:
        hit_dirs = {d for d in dirs if rule.dirs and matches(d, rule.dirs) and not matches(d, rule.keep)}
        for f in files:
            if f in picked or matches(f, rule.keep):
                continue
            if (rule.files and matches(f, rule.files)) or (hit_dirs and any(d in hit_dirs for d in folders[f])):
                picked[f] = rule.name
    for f in [f for f in picked if matches(f, rules.keep)]:
        del picked[f]
    if rules.package_keep and owner is not None:
        for f in list(picked):
            globs = rules.package_keep.get(owner_of(owner, f) or "")
            if globs and matches(f, globs):
                del picked[f]
    return picked


def guard_beside(tree: Path, picked: dict[str, str], rules: Rules) -> list[tuple[str, str]]:
    """Un-pick a file whose sibling module names one of its rule's ``keep_beside`` markers."""
    markers = {r.name: r.keep_beside for r in rules.rules if r.keep_beside}
    kept = []
    for f, rule in sorted(picked.items()):
        if rule not in markers:
            continue
        module = f.rsplit(".", 1)[0] + ".py"
        path = tree / module
        if path.is_file() and any(m in path.read_text(errors="replace") for m in markers[rule]):
            kept.append((f, module))
    for f, _ in kept:
        del picked[f]
    return kept


_LITERAL_RE = re.compile(r"""["']([\w.+-]+\.[A-Za-z0-9]+)["']""")


def guard_data(tree: Path, files: list[str], picked: dict[str, str], rules: Rules | None = None) -> list[tuple[str, str]]:
    """Un-pick a non-module file that a kept module of the same top-level package names in a string literal."""
    unguarded = {r.name for r in rules.rules if not r.literal_guard} if rules else set()
    by_top: dict[str, dict[str, list[str]]] = {}
    for f, rule in picked.items():
        if _module_name(f) is None and "/" in f and rule not in unguarded:
            by_top.setdefault(f.split("/", 1)[0], {}).setdefault(f.rsplit("/", 1)[-1], []).append(f)
    kept = []
    for f in files:
        top = f.split("/", 1)[0]
        if not f.endswith(".py") or f in picked or top not in by_top:
            continue
        for name in set(_LITERAL_RE.findall((tree / f).read_text(errors="replace"))) & by_top[top].keys():
            kept += [(victim, f) for victim in by_top[top].pop(name)]
    for victim, _ in kept:
        picked.pop(victim, None)
    return kept


def _module_name(rel: str) -> str | None:
    """Dotted module for a .py or extension file path, or None."""
    parts = rel.split("/")
    last = parts[-1]
    if last.endswith(".py"):
        stem = last[:-3]
    elif ".so" in last and last.endswith(".so"):
        stem = last.split(".", 1)[0]
    else:
        return None
    mods = parts[:-1] + ([] if stem == "__init__" else [stem])
    return ".".join(mods) if mods and all(m.isidentifier() for m in mods) else None


# An import statement at the start of a line: `from X import (a, b)` (parens may
# span lines), `from X import a as b, c`, `import X.Y as Z, W`. A regex rather
# than ast: 100x faster on torch, and it errs on the side of seeing an import
# (one inside a string only keeps a file that could have been removed).
_IMPORT_RE = re.compile(r"^[ \t]*(?:from[ \t]+([.\w]+)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]+)|import[ \t]+([^\n#;]+))", re.M)


def _imports(rel: str, source: str) -> set[str]:
    package = rel.split("/")[:-1]
    names: set[str] = set()
    for frm, what, plain in _IMPORT_RE.findall(source):
        if plain:
            names.update(part.split()[0] for part in plain.split(",") if part.strip())
            continue
        level = len(frm) - len(frm.lstrip("."))
        module = frm.lstrip(".")
        if level:
            base = package[: len(package) - (level - 1)] if level > 1 else package
            module = ".".join(base + ([module] if module else []))
        names.add(module)
        for part in what.strip("() \t\n").replace("\\\n", " ").split(","):
            if part.strip():
                names.add(f"{module}.{part.split()[0]}")
    return names


def guard_imports(tree: Path, files: list[str], picked: dict[str, str]) -> list[tuple[str, str]]:
    """Un-pick what a kept module imports. Returns (kept directory, importer) pairs."""
    guarded: list[tuple[str, str]] = []
    imports = {f: _imports(f, (tree / f).read_text(errors="replace")) for f in files if f.endswith(".py") and f not in picked}
    while True:
        removed_mods = {m: f for f in picked if (m := _module_name(f))}
        rescued: dict[str, str] = {}
        for f, names in imports.items():
            for name in names & removed_mods.keys():
                rescued.setdefault(removed_mods[name], f)
        if not rescued:
            return guarded
        for victim, importer in sorted(rescued.items()):
            directory = victim.rsplit("/", 1)[0] if "/" in victim else ""
            if (directory or victim, importer) not in guarded:
                guarded.append((directory or victim, importer))
            # the victim's folder, and the __init__.py of every package above it
            parts = directory.split("/") if directory else []
            inits = {"/".join([*parts[:i], "__init__.py"]) for i in range(1, len(parts) + 1)}
            for f in [x for x in picked if x == victim or x in inits or (directory and x.startswith(directory + "/"))]:
                del picked[f]
                if f.endswith(".py"):
                    imports[f] = _imports(f, (tree / f).read_text(errors="replace"))


# ---------------------------------------------------------------- the step


def slim(tree: Path, rules: Rules | None = None, on_line=None, aside: Path | None = None, store: cache.Store | None = None, version: str = "",
         digests: Digests | None = None) -> SlimReport:
    """Remove (or, with ``aside``, move there) what the rules pick; strip the allowed ELF files.

    ``store``: the build cache (builder/cache.py) holds each library's stripped copy by its sha256
    and elfstrip's, with ``version`` (the builder's): a library stripped before is copied, not cut again."""
    rules = rules or load_rules()
    files, dirs = _walk(tree)
    owner = owners(tree)
    picked = select(files, dirs, rules, owner)
    kept_beside = guard_beside(tree, picked, rules)
    guarded = guard_imports(tree, files, picked)
    kept_beside += guard_data(tree, files, picked, rules)
    per_rule: dict[str, list[int]] = {r.name: [0, 0] for r in rules.rules}
    removed_files: dict[str, dict[str, list[str]]] = {}
    whole = _whole_folders(tree, files, dirs, picked) if aside is not None else []
    for folder in whole:  # torch's 9,000 headers: one rename, not one each
        assert aside is not None
        (aside / folder).parent.mkdir(parents=True, exist_ok=True)
        os.rename(tree / folder, aside / folder)
    moved = tuple(folder + "/" for folder in whole)
    for rel, rule in sorted(picked.items()):
        p = tree / rel
        per_rule[rule][0] += 1
        removed_files.setdefault(owner_of(owner, rel) or "(not in any RECORD)", {}).setdefault(rule, []).append(rel)
        if aside is None:
            per_rule[rule][1] += p.lstat().st_size
            p.unlink()
        elif rel.startswith(moved):
            per_rule[rule][1] += (aside / rel).lstat().st_size
        else:
            per_rule[rule][1] += p.lstat().st_size
            (aside / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(p, aside / rel)
    for d in sorted(dirs, key=lambda x: x.count("/"), reverse=True):
        with contextlib.suppress(OSError):
            (tree / d).rmdir()  # only empties

    stripped = saved_total = 0
    reverted: list[tuple[str, str]] = []
    digests = digests or Digests()
    for rel in files if rules.strip_enabled else ():
        if rel in picked or not rules.strip.wants(rel):
            continue
        p = tree / rel
        if p.is_symlink() or not p.is_file() or not is_elf(p):
            continue
        if on_line:
            on_line(f"strip {rel}")
        entry = cache.key("strip", version, ELFSTRIP_DIGEST, digests.sha256(p)) if store else ""
        done = store.get_json("strip", entry) if store else None
        if store and done is not None and (done["reverted"] or not done["saved"] or store.get_file("strip", entry, p)):
            why, saved = done["reverted"], done["saved"]
        else:
            why = None
            try:
                saved = elfstrip.strip_file(p)
            except (ValueError, OSError, struct.error) as exc:
                why, saved = f"{exc}; original kept", 0
            if store:
                if saved:
                    store.put_file("strip", entry, p)
                store.put_json("strip", entry, {"saved": saved, "reverted": why})
        if why:
            reverted.append((rel, why))
        elif saved:
            stripped += 1
            saved_total += saved
    removed = tuple(RuleCount(name, n, b) for name, (n, b) in per_rule.items())
    return SlimReport(removed=removed, guarded=tuple(guarded), stripped=stripped, strip_bytes=saved_total, strip_reverted=tuple(reverted),
                      removed_files=removed_files, kept_beside=tuple(kept_beside), enabled=bool(rules.rules) or rules.strip_enabled)


def _ancestors(rel: str) -> list[str]:
    """The folders above ``rel``, outermost first: "a/b/c.py" -> ["a", "a/b"]."""
    return [rel[:i] for i, ch in enumerate(rel) if ch == "/"]


def _whole_folders(tree: Path, files: list[str], dirs: list[str], picked: dict[str, str]) -> list[str]:
    """The outermost folders every file under which is picked, holding no symlinked folder: each is moved aside
    in one rename, and the files under it are where a move of each would have put them."""
    total: dict[str, int] = {}
    hit: dict[str, int] = {}
    for f in files:
        for d in _ancestors(f):
            total[d] = total.get(d, 0) + 1
            if f in picked:
                hit[d] = hit.get(d, 0) + 1
    whole = {d for d, n in total.items() if hit.get(d) == n}
    for d in dirs:  # a symlinked folder is not a file os.walk lists: the folders above it are not whole
        if (d in whole or any(a in whole for a in _ancestors(d))) and os.path.islink(tree / d):
            whole -= {d, *_ancestors(d)}
    return sorted(d for d in whole if not any(a in whole for a in _ancestors(d)))


def restore(tree: Path, aside: Path, files: Iterable[str]) -> int:
    """Put files moved aside by ``slim`` back into the tree; how many."""
    n = 0
    for rel in files:
        src = aside / rel
        if src.exists() or src.is_symlink():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(src, tree / rel)
            n += 1
    return n


def remove_again(tree: Path, aside: Path, files: Iterable[str]) -> None:
    """Move restored files aside again (they were not what the import needed)."""
    for rel in files:
        p = tree / rel
        if p.exists() or p.is_symlink():
            (aside / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(p, aside / rel)
            folder = p.parent
            while folder != tree and not any(folder.iterdir()):  # folders restore() made for them
                folder.rmdir()
                folder = folder.parent


def forget(aside: Path) -> None:
    shutil.rmtree(aside, ignore_errors=True)
