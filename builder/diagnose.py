"""Why `invoke lock` failed, in the user's terms, with a fix for each cause.

uv's resolver output names the cause; this module recognises the four a user
meets (rules as data in ``CAUSES``), then looks up what would fix it:

1. an index that cannot be reached: its URL, which configured index it is, and
   the network error (DNS, refused connection, timeout);
2. a package no source has: the closest names the sources do have;
3. no version that matches the pin: the versions that exist, and which of
   them have a wheel the target loads;
4. no wheel for the target: the Docker builder, or a version that has one.

Look-ups are cheap and best effort (a project page per package on the
configured indexes, the find-links folders, the names in uv's cache): when one
fails, the message is only shorter.
"""
from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

from pipeline import proc
from pipeline.errors import PipelineError
from pipeline.targets import Target, facts, lambda_target

PYPI = "https://pypi.org/simple"
DOCKER_HINT = ('set builder = "docker" under [build] in pipeline.toml and lock again (the Docker builder compiles a source in the Lambda base '
               "image), or pin a version that ships a wheel for this target")
LOOKUP_TIMEOUT_S = 10


@dataclass(frozen=True)
class Source:
    """Where packages come from for a target: an index (by URL) or a find-links location."""

    kind: str  # "index" | "find-links"
    url: str
    label: str  # how pipeline.toml names it: 'PyPI', '[[targets.x86.index]] "pytorch-cpu"', 'find_links'


@dataclass(frozen=True)
class Pins:
    """Where a fix puts a pin, and what tells a version that fits from one that does not."""

    files: str  # where a pin holds for every target: "efs.in or layer.in"
    files_of: dict[str, str] = field(default_factory=dict)  # a requirement's name -> the .in file that lists it
    target_only: str = ""  # where a pin for this target alone goes ("the override list of [targets.x] ..."), when there are others
    fits: Callable[[str, str], bool] | None = None  # whether name==version resolves with the other requirements
    docker: bool = True  # whether to offer the Docker builder (False: it is the builder already)

    def where(self, name: str) -> str:
        return self.files_of.get(name, self.files)


FIT_TRIES = 6  # versions tried against the other requirements, newest first, before a fix names one


def _fitting(name: str, candidates: list[Version], pins: Pins) -> tuple[Version | None, list[Version]]:
    """The newest of ``candidates`` that resolves with the other requirements (each tried, newest first, at most
    FIT_TRIES), and those tried; without a way to try, the newest."""
    if not candidates:
        return None, []
    if pins.fits is None:
        return candidates[-1], []
    tried = []
    for v in reversed(candidates[-FIT_TRIES:]):
        tried.append(v)
        if pins.fits(name, str(v)):
            return v, tried
    return None, tried


def _pin_fix(name: str, fits: list[Version], pins: Pins, elsewhere: bool, example: str = "pin {pin} in {where}") -> str:
    """The fix that pins a version of ``name`` with a wheel for the target: one tried against the other requirements,
    put where it belongs (this target's override list when the version wanted exists for other platforms and the
    config has other targets; else the .in file that lists it)."""
    chosen, tried = _fitting(name, fits, pins)
    where = pins.target_only if (elsewhere and pins.target_only) else pins.where(name)
    if chosen is None:
        return (f"none of the {len(tried)} newest versions with a wheel for it ({', '.join(map(str, tried))}) resolves with the other requirements: "
                f"pin an older one in {where}, or loosen the requirement that holds it back (uv's reason above)")
    return example.format(pin=f"{name}=={chosen}", where=where) + (" (it resolves with the other requirements)" if tried else "")


@dataclass(frozen=True)
class Diagnosis:
    cause: str  # unreachable | unknown-package | no-matching-version | no-wheel | other
    what: str
    fix: str


# ---------------------------------------------------------------- what exists


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[tuple[str, str]] = []  # (href, text)
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self.hrefs.append((self._href, data.strip()))
            self._href = None


def _fetch(url: str) -> tuple[str, str] | None:
    """(content type, body) of ``url``, or None when it cannot be read."""
    if url.startswith("file://"):
        path = Path(unquote(urlparse(url).path))
        index = path / "index.html" if path.is_dir() else path
        return ("text/html", index.read_text()) if index.is_file() else None
    import urllib.request  # only when a lock failed: not on every build's start-up

    request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    try:
        with urllib.request.urlopen(request, timeout=LOOKUP_TIMEOUT_S) as response:
            return response.headers.get("Content-Type", ""), response.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def _page_names(content_type: str, body: str) -> list[str]:
    """File names (a project page) or project names (an index root) a simple-API page lists."""
    if "json" in content_type:
        doc = json.loads(body)
        return [f["filename"] for f in doc.get("files", [])] or [p["name"] for p in doc.get("projects", [])]
    parser = _Links()
    parser.feed(body)
    return [text or unquote(href.rsplit("/", 1)[-1].split("#", 1)[0]) for href, text in parser.hrefs]


def distribution_files(name: str, sources: list[Source]) -> list[str]:
    """Every file name of project ``name`` the sources offer."""
    canonical = canonicalize_name(name)
    files: list[str] = []
    for source in sources:
        if source.kind == "find-links":
            folder = Path(unquote(urlparse(source.url).path)) if source.url.startswith("file://") else Path(source.url)
            names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        else:
            page = _fetch(source.url.rstrip("/") + f"/{canonical}/")
            names = _page_names(*page) if page else []
        files += [f for f in names if _project_of(f) == canonical]
    return files


def _project_of(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return canonicalize_name(parse_wheel_filename(filename)[0])
        return canonicalize_name(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def versions(files: list[str], target: Target) -> dict[Version, bool]:
    """Each version offered, and whether it has a wheel the target loads."""
    loads = {str(t) for t in target.supported_tags()}
    out: dict[Version, bool] = {}
    for f in files:
        try:
            if f.endswith(".whl"):
                _, version, _, tags = parse_wheel_filename(f)
                out[version] = out.get(version, False) or any(str(t) in loads for t in tags)
            else:
                out.setdefault(parse_sdist_filename(f)[1], False)
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue
    return dict(sorted(out.items()))


def known_names(sources: list[Source], extra: list[str]) -> set[str]:
    """Project names the sources are known to have: find-links folders, small index roots, uv's cache."""
    names: set[str] = {canonicalize_name(n) for n in extra}
    for source in sources:
        if source.kind == "find-links":
            folder = Path(unquote(urlparse(source.url).path)) if source.url.startswith("file://") else Path(source.url)
            if folder.is_dir():
                names |= {p for p in (_project_of(f.name) for f in folder.iterdir()) if p}
        elif source.url.rstrip("/") != PYPI:  # PyPI's root lists every project: far too big to read for a hint
            page = _fetch(source.url.rstrip("/") + "/")
            if page:
                names |= {canonicalize_name(n) for n in _page_names(*page)}
    try:  # projects uv has looked up before, on any index: its cache keeps one file per project
        cache = proc.capture([proc.uv_bin(), "cache", "dir"], timeout=10).stdout.strip()
        if cache:
            names |= {canonicalize_name(p.stem) for p in Path(cache).glob("simple-v*/*/*.rkyv")}
            names |= {canonicalize_name(p.stem) for p in Path(cache).glob("simple-v*/index/*/*.rkyv")}
    except (OSError, proc.TimeoutExpired, PipelineError):
        pass
    return names


# ---------------------------------------------------------------- the causes


def _unreachable(m: re.Match[str], text: str, target: Target, sources: list[Source], pins: Pins) -> Diagnosis:
    url = m.group("url").strip("`'")
    causes = [line.split("cause:", 1)[1].strip() for line in text.splitlines() if "cause:" in line]
    network = causes[-1] if causes else "no answer"
    if any("dns" in c.lower() for c in causes):
        network = f"DNS: {network}"
    host = urlparse(url).netloc
    source = next((s for s in sources if s.kind == "index" and url.startswith(s.url.rstrip("/"))), None)
    label = source.label if source else "an index"
    return Diagnosis(
        "unreachable",
        f"could not reach {label} at {url} ({network})",
        f"check that this machine reaches {host} (network, DNS, a proxy through HTTPS_PROXY) and that the url of {label} in pipeline.toml is right; "
        "without network, point find_links at a folder holding the wheels",
    )


def _unknown(m: re.Match[str], text: str, target: Target, sources: list[Source], pins: Pins, extra_names: list[str] | None = None) -> Diagnosis:
    name = canonicalize_name(m.group("name"))
    where_pins = pins.where(name)  # the file whose line names it
    close = difflib.get_close_matches(name, sorted(known_names(sources, extra_names or []) - {name}), n=3, cutoff=0.6)
    where = ", ".join(s.label for s in sources) or "no source"
    return Diagnosis(
        "unknown-package",
        f"no package named {name!r} on {where}" + (f"; closest names: {', '.join(close)}" if close else ""),
        (f"correct the name in {where_pins} (did you mean {close[0]!r}?)" if close else f"check the name in {where_pins}")
        + ", or add the index that serves it ([[targets.<name>.index]] in pipeline.toml)",
    )


def _final(vs: list[Version]) -> list[Version]:
    """The versions to suggest: the final releases, or every version when there are only pre-releases."""
    return [v for v in vs if not v.is_prerelease and not v.is_devrelease] or vs


def _list(vs: list[Version], limit: int = 12) -> str:
    shown = [str(v) for v in vs[-limit:]]
    return ("..., " if len(vs) > limit else "") + ", ".join(shown)


def _no_version(m: re.Match[str], text: str, target: Target, sources: list[Source], pins: Pins) -> Diagnosis:
    name, spec = canonicalize_name(m.group("name")), m.group("spec")
    offered = versions(distribution_files(name, sources), target)
    fits = _final([v for v, ok in offered.items() if ok])
    others = [v for v, ok in offered.items() if not ok]
    what = f"no version of {name} matches {spec} for {target.describe()}"
    what += f"; versions with a wheel for it: {_list(fits)}" if fits else "; no version has a wheel for it"
    if others:
        what += f" (without one: {_list(others)})"
    try:  # versions the requirement asks for that exist, for other platforms: a pin for this target alone
        elsewhere = any(v in SpecifierSet(spec) for v in others)
    except InvalidSpecifier:
        elsewhere = False
    if fits:
        fix = _pin_fix(name, fits, pins, elsewhere, "pin one of those in {where}, e.g. {pin}")
    else:
        fix = f"pin an existing version in {pins.where(name)}" + ("; " + DOCKER_HINT if pins.docker else "")
    return Diagnosis("no-matching-version", what, fix)


def _runtimes_with_a_wheel(files: list[str], target: Target) -> list[str]:
    """The other Lambda runtimes of ``target``'s architecture that some version of the files has a wheel for."""
    if target.kind != "lambda" or not target.arch:
        return []
    found = []
    for runtime in facts()["runtimes"]:
        if runtime == target.runtime:
            continue
        try:
            other = lambda_target(target.name, runtime, target.arch)
        except (KeyError, ValueError):
            continue
        if any(versions(files, other).values()):
            found.append(runtime)
    return found


def _no_wheel(m: re.Match[str], text: str, target: Target, sources: list[Source], pins: Pins) -> Diagnosis:
    name = canonicalize_name(m.group("name"))
    files = distribution_files(name, sources)
    offered = versions(files, target)
    fits = _final([v for v, ok in offered.items() if ok])
    what = f"{name}: no wheel for {target.describe()} [platform {target.uv_python_platform or 'this machine'}, CPython {target.python}]"
    if fits:
        what += f"; versions with one: {_list(fits)}"
    fixes = [_pin_fix(name, fits, pins, elsewhere=True)] if fits else []  # the version asked for exists, without a wheel for this target
    runtimes = _runtimes_with_a_wheel(files, target) if not fits else []
    if runtimes:
        what += f"; runtimes it has wheels for on {target.arch}: {', '.join(runtimes)}"
        fixes.append(f'set runtime = "{runtimes[-1]}" under [targets.{target.name}] in pipeline.toml, then `invoke lock --target {target.name}`')
    if any(not f.endswith(".whl") for f in files) and pins.docker:  # something to compile (in the Lambda image: its build runs on a local target too)
        fixes.append(f'set builder = "docker" under [build] in pipeline.toml, then `invoke lock --target {target.name}` '
                     "(the Docker builder compiles its source in the Lambda base image)")
    elif not fixes:
        what += " (it publishes no source to compile either)"
    fix = "; or ".join(fixes) if fixes else f"remove {name} from {pins.where(name)}, or find an index that ships a wheel of it for this target"
    return Diagnosis("no-wheel", what, fix)


Rule = Callable[..., Diagnosis]
# (cause, what uv prints, how to explain it); the first that matches wins
CAUSES: list[tuple[str, re.Pattern[str], Rule]] = [
    ("unreachable", re.compile(r"Failed to (?:fetch|read|query)[^:]*: `?(?P<url>\S+?)`?\s*$", re.M), _unreachable),
    ("unknown-package", re.compile(r"Because (?P<name>[A-Za-z0-9][A-Za-z0-9._-]*) was not found in the (?:package registry|provided package locations)"), _unknown),
    ("no-wheel", re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*?)(?:==\S+)? has no (?:usable )?wheels"), _no_wheel),
    ("no-wheel", re.compile(r"[Oo]nly (?:an? )?source distributions? (?:is|are) available for (?P<name>[A-Za-z0-9._-]+)"), _no_wheel),
    ("no-matching-version", re.compile(r"there is no version of (?P<name>[A-Za-z0-9][A-Za-z0-9._-]*?)(?P<spec>(?:==|>=|<=|~=|!=|<|>)\S+?)(?:,| and| we|$)"), _no_version),
    ("no-matching-version", re.compile(r"only (?P<name>[A-Za-z0-9][A-Za-z0-9._-]*?)(?:[<>=!~]=?\S+)? (?:is|are) available and \S+ depends on \S+?(?P<spec>(?:==|>=|<=|~=|!=|<|>)[^\s,]+)"), _no_version),
]


def diagnose(text: str, target: Target, sources: list[Source], where_pins: str | Pins, extra_names: list[str] | None = None) -> Diagnosis:
    """The cause of a failed resolution, from uv's output. ``where_pins``: the .in files (a string), or Pins."""
    pins = where_pins if isinstance(where_pins, Pins) else Pins(files=where_pins)
    for _cause, pattern, explain in CAUSES:
        m = pattern.search(text)
        if m:
            if explain is _unknown:
                return _unknown(m, text, target, sources, pins, extra_names)
            return explain(m, text, target, sources, pins)
    return Diagnosis(
        "other",
        f"could not resolve the dependency sets for {target.describe()}",
        f"read uv's reason above and adjust the pins in {pins.files}" + (f", or, for this target only, {pins.target_only}" if pins.target_only else "")
        + ("; a package without a wheel for the target: " + DOCKER_HINT if pins.docker and "wheel" in text else ""),
    )
