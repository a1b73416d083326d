"""Find a working CPython of a given version on this machine.

Shims lie: a pyenv shim named python3.13 exists even when pyenv has not
selected 3.13 and fails when run. So every candidate is *run* and must report
the right version; each rejected candidate is kept with its reason, and the
error lists them all.

Probing costs a few subprocesses (about a second); ``find_python(..., cache=)``
remembers what it found with the interpreter file's identity (size, mtime,
inode) and the search inputs (PATH, the override variable), and trusts it
while all of them hold.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import InterpreterNotFound
from .files import atomic_write_json
from .proc import TimeoutExpired, capture, uv_bin

PROBE = "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.executable)"


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # full, "3.13.0"
    found_by: str


@dataclass
class Search:
    version: str  # "3.13"
    tried: list[tuple[str, str]] = field(default_factory=list)  # (candidate, why rejected)

    def check(self, candidate: str, found_by: str, env: dict | None = None) -> Interpreter | None:
        try:
            out = capture([candidate, "-I", "-c", PROBE], timeout=30, env=env, clean_env=env is not None)
        except (OSError, TimeoutExpired) as exc:
            self.tried.append((f"{candidate} ({found_by})", f"could not run: {exc}"))
            return None
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["no output"])[-1]
            self.tried.append((f"{candidate} ({found_by})", f"exit {out.returncode}: {last}"))
            return None
        full, executable = (out.stdout.splitlines() + ["", ""])[:2]
        if ".".join(full.split(".")[:2]) != self.version:
            self.tried.append((f"{candidate} ({found_by})", f"is Python {full}, not {self.version}"))
            return None
        return Interpreter(path=executable, version=full, found_by=found_by)


def _env_override(version: str) -> str | None:
    return os.environ.get("HOIST_PYTHON" + version.replace(".", "_"))


def _pyenv_candidates(version: str, search: Search) -> list[str]:
    pyenv = shutil.which("pyenv")
    if not pyenv:
        search.tried.append(("pyenv", "not on PATH"))
        return []
    try:
        listed = capture([pyenv, "versions", "--bare", "--skip-aliases"], timeout=30)
    except (OSError, TimeoutExpired) as exc:
        search.tried.append(("pyenv versions", str(exc)))
        return []
    matches = [v.strip() for v in listed.stdout.splitlines() if v.strip().startswith(version + ".") and v.strip()[len(version) + 1 :].isdigit()]
    matches.sort(key=lambda v: tuple(int(p) for p in v.split(".")), reverse=True)
    if not matches:
        search.tried.append(("pyenv", f"has no {version}.x installed"))
    found = []
    for v in matches:
        prefix = capture([pyenv, "prefix", v], timeout=30).stdout.strip()
        if prefix:
            found.append(os.path.join(prefix, "bin", f"python{version}"))
    return found


def _uv_candidate(version: str, search: Search) -> str | None:
    try:
        out = capture([uv_bin(), "python", "find", "--no-python-downloads", version], timeout=60)
    except Exception as exc:  # uv missing or broken: one more reason in the list
        search.tried.append(("uv python find", getattr(exc, "what", str(exc))))
        return None
    if out.returncode != 0:
        search.tried.append((f"uv python find {version}", (out.stderr.strip().splitlines() or ["failed"])[-1]))
        return None
    return out.stdout.strip()


def _identity(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _inputs(version: str) -> str:
    """What the search depends on besides the files: where it looks."""
    return hashlib.sha256(json.dumps([version, os.environ.get("PATH", ""), _env_override(version), os.environ.get("PYENV_VERSION")]).encode()).hexdigest()


def _read_cache(cache: Path) -> dict:
    try:
        doc = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _cached(version: str, cache: Path) -> Interpreter | None:
    entry = _read_cache(cache).get(version)
    if not isinstance(entry, dict) or entry.get("inputs") != _inputs(version):
        return None
    found = entry.get("interpreter", {})
    if not found.get("path") or _identity(found["path"]) != entry.get("identity"):
        return None
    return Interpreter(path=found["path"], version=found["version"], found_by=found["found_by"] + ", cached")


def _remember(found: Interpreter, version: str, cache: Path) -> None:
    doc = _read_cache(cache)
    doc[version] = {"inputs": _inputs(version), "identity": _identity(found.path), "interpreter": asdict(found)}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache, doc)
    except OSError:
        pass  # a cache that cannot be written only costs the next probe


def find_python(version: str, cache: Path | None = None) -> Interpreter:
    """Find CPython ``version`` ("3.13"): $HOIST_PYTHON3_13, PATH, uv, pyenv, in that order.

    ``cache``: a JSON file remembering the result while the interpreter file and
    the search inputs are unchanged (no subprocess then).
    """
    if cache is not None and (hit := _cached(version, cache)):
        return hit
    found = _search(version)
    if cache is not None:
        _remember(found, version, cache)
    return found


def _search(version: str) -> Interpreter:
    search = Search(version)
    override = _env_override(version)
    if override:
        found = search.check(override, "HOIST_PYTHON" + version.replace(".", "_"))
        if found:
            return found
    for name in (f"python{version}", "python3"):
        path = shutil.which(name)
        if path:
            found = search.check(path, f"PATH ({name})")
            if found:
                return found
        elif name != "python3":
            search.tried.append((name, "not on PATH"))
    candidate = _uv_candidate(version, search)
    if candidate:
        found = search.check(candidate, "uv python find")
        if found:
            return found
    for candidate in _pyenv_candidates(version, search):
        found = search.check(candidate, "pyenv prefix")
        if found:
            return found
    raise InterpreterNotFound(
        f"no working CPython {version} found; tried:\n" + "\n".join(f"    - {c}: {why}" for c, why in search.tried),
        where=f"python{version}",
        fix=f"install Python {version} (e.g. `pyenv install {version}` or `uv python install {version}`), "
        f"or point HOIST_PYTHON{version.replace('.', '_')} at its interpreter",
    )
