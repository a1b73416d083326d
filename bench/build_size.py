"""`invoke bench build`: Hoist's tree against a naive install of the same locks.

Naive is what `pip install --target` on a machine of the target platform
gives: every file of every wheel, bytecode compiled by the target Python in
its default (timestamp) mode, nothing removed. For a foreign target (the arm64
demo on x86_64) uv's ``--python-platform`` install, copying every file as pip
does, plus ``compileall`` stands in for it (Hoist's build links uv's cached
files instead: builder/install.py). Both sides install the same hash-pinned wheels from a warm uv cache,
in the same run, on the same machine.

Goals (the foundation issue): Hoist's tree at most 70% of the naive bytes and
55% of the naive file count, with every top-level module intact. Issue 26,
each over the naive install's wall time, in one run: ``seconds``, the cold
full build (``invoke build --force``, uv's cache warm, Hoist's build cache
empty) at most 3x; ``cached``, the same build again into a fresh output folder
with the build cache warm, at most 1.2x; ``one_package``, the slower of two
changes rebuilt with everything else as it was (a leaf pure-Python package
added to efs.in, and a numpy pin bump; each locked, and its wheels put in uv's
cache, untimed), at most 1.0x. Each build's steps are timed (the breakdown
table). The moonshot: the slower one-package change within twice SAM CLI's
full warm build (``python-uv``) of the same pins, in the same run (bench/sam.py).
For a target this machine runs under QEMU (the arm64 demo here), the same two
changes are also built for a target of this machine's own CPU when the config
has one (``one_package_native``): it shows what the rebuild costs where the
import check runs natively, as on an arm64 CI runner; the goal is judged on the
benchmarked target's figure, not this one.
Issue 16: a no-op `invoke build` (nothing changed) at most twice the
start-up of `invoke --list`, both launched the same way (``python -m invoke``)
in the same run.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from builder.build import BuildResult, build
from builder.install import install_native
from builder.lock import current_locks, lock
from pipeline import proc
from pipeline.config import Config, load
from pipeline.console import human
from pipeline.dists import owner_of, owners, top_level_modules
from pipeline.interpreters import find_python
from pipeline.records import load_build_record

from . import record, sam

GOALS = {"bytes": 0.70, "files": 0.55, "seconds": 3.0, "cached": 1.2, "one_package": 1.0, "noop": 2.0}
MOONSHOT = 2.0  # issue 26: a one-package change within 2x SAM CLI's full warm build of the same requirements (bench/sam.py)
LEAF = "idna"  # a pure-Python package with no dependencies that nothing in the demo imports
STEPS = ("check runtime", "install", "slim", "bytecode", "import check", "metadata", "hash", "archives", "manifest", "zips")


def tree_size(*trees: Path) -> tuple[int, int]:
    total = count = 0
    for tree in trees:
        for root, _, files in os.walk(tree):
            for f in files:
                total += os.lstat(os.path.join(root, f)).st_size
                count += 1
    return total, count


def package_bytes(*trees: Path) -> dict[str, int]:
    """Bytes of each distribution in ``trees`` (by its RECORD; bytecode counts for its source's), for the chart."""
    totals: dict[str, int] = {}
    for tree in trees:
        owner = owners(tree)
        for root, _, files in os.walk(tree):
            for f in files:
                path = os.path.join(root, f)
                name = owner_of(owner, os.path.relpath(path, tree).replace(os.sep, "/")) or "(not in any RECORD)"
                totals[name] = totals.get(name, 0) + os.lstat(path).st_size
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def _invoke(cfg: Config, *args: str) -> float:
    """Wall time of one `python -m invoke ...` in the project folder."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cfg.root, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"invoke {' '.join(args)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return seconds


def noop(cfg: Config, target_name: str | None, runs: int) -> tuple[list[float], list[float], bool]:
    """`invoke --list` and a no-op `invoke build`, alternating; and whether the no-op rebuilt anything."""
    tcfg = cfg.target(target_name)
    args = ["build", "--target", tcfg.target.name]
    build(cfg, target_name)  # the project's own dist/ is current before timing (not timed)
    _invoke(cfg, *args)  # and the interpreter cache and .pyc of the pipeline are warm
    listing, building = [], []
    for _ in range(runs):
        listing.append(_invoke(cfg, "--list"))
        building.append(_invoke(cfg, *args))
    record = load_build_record(cfg.build_json(tcfg.target.name), cfg.root)
    return listing, building, any(s.rebuilt for s in record.sets.values())


def naive(cfg: Config, target_name: str | None, dest: Path) -> float:
    tcfg = cfg.target(target_name)
    python = find_python(tcfg.target.python)  # finding it is not part of an install (nor, cached, of a build)
    started = time.perf_counter()
    for lf in current_locks(cfg, tcfg).values():
        install_native(lf, tcfg.target, dest, link_mode="copy")  # pip --target copies every file
    proc.run([python.path, "-m", "compileall", "-q", "-j", "0", str(dest)], what="compileall (naive)", check=False)
    return time.perf_counter() - started


def hoist(cfg: Config, target_name: str | None, out: Path, cache: Path, force: bool = True) -> tuple[float, list[Path], BuildResult]:
    local = dataclasses.replace(cfg, build=cfg.build.model_copy(update={"output": out}))
    started = time.perf_counter()
    result = build(local, target_name, force=force, cache_dir=cache)
    return time.perf_counter() - started, [s.tree for s in result.sets.values()], result


def breakdown(result: BuildResult) -> dict[str, float]:
    """Seconds per step of one build, summed over its sets."""
    steps: dict[str, float] = dict(result.seconds)
    for s in result.sets.values():
        for step, seconds in s.seconds.items():
            steps[step] = steps.get(step, 0.0) + seconds
    return {step: round(seconds, 2) for step, seconds in steps.items()}


def _project_copy(cfg: Config, dest: Path) -> Config:
    """The project's pipeline.toml, requirements, handler and model folder in ``dest``: the changes are made there, never in
    the project (a [model] dir that pipeline.toml names must exist where it points)."""
    dest.mkdir()
    shutil.copy(cfg.path, dest / cfg.path.name)
    shutil.copytree(cfg.root / "requirements", dest / "requirements")
    shutil.copytree(cfg.build.handler_dir, dest / cfg.build.handler_dir.relative_to(cfg.root), ignore=shutil.ignore_patterns("__pycache__"))
    if cfg.model_dir and cfg.model_dir.is_dir() and cfg.model_dir.is_relative_to(cfg.root):
        shutil.copytree(cfg.model_dir, dest / cfg.model_dir.relative_to(cfg.root))
    return load(dest / cfg.path.name)


def one_package(cfg: Config, target_name: str | None, work: Path, cache: Path, console: Console) -> dict[str, dict[str, Any]]:
    """The two one-package changes, each locked and its wheels in uv's cache (untimed), then built with the
    previous build in place and the build cache warm (timed); each against its own naive install."""
    project = _project_copy(cfg, work / "project")
    out = work / "hoist-changes"
    hoist(project, target_name, out, cache, force=False)  # the state before the change (from the cache)
    efs_in = project.root / "requirements" / "efs.in"
    tname = project.target(target_name).target.name
    figures = {}
    for change, line in (("leaf", LEAF), ("numpy", "numpy!={numpy}")):
        pinned = {p.name: p.version for p in current_locks(project, project.target(target_name))["efs"].packages}
        efs_in.write_text(efs_in.read_text() + line.format(numpy=pinned.get("numpy", "0")) + "\n")
        project = load(project.path)
        lock(project, target_name)
        after = {p.name: p.version for p in current_locks(project, project.target(target_name))["efs"].packages}
        package = LEAF if change == "leaf" else "numpy"
        if package in pinned:
            what = f"{package} {pinned[package]} -> {after.get(package)}"
        else:
            what = f"{package} {after.get(package)} added" + (" (torch imports it)" if package == "numpy" else "")
        console.print(f"[bold cyan]==>[/] one package: {what}; naive install of the changed locks, then `invoke build`")
        naive(project, target_name, work / f"warm-{change}")  # its wheels into uv's cache (untimed)
        shutil.rmtree(work / f"warm-{change}")
        naive_seconds = naive(project, target_name, work / f"naive-{change}")
        shutil.rmtree(work / f"naive-{change}")
        seconds, _, result = hoist(project, target_name, out, cache, force=False)
        for w in result.warnings:
            console.print(f"[yellow]build warning:[/] {escape(w)}")
        figures[change] = {"change": what, "naive_seconds": round(naive_seconds, 2), "seconds": round(seconds, 2), "ratio": round(seconds / naive_seconds, 4),
                           "steps": breakdown(result), "cache": {"hits": result.cache.hits, "misses": result.cache.misses}, "target": tname}
    return figures


def native_target(cfg: Config, target_name: str | None) -> str | None:
    """A local target of this machine's own CPU to rebuild the same changes for, when ``target_name`` runs under QEMU."""
    if cfg.target(target_name).target.machine == platform.machine():
        return None
    return next((name for name, t in sorted(cfg.targets.items()) if t.target.kind == "local" and t.target.machine == platform.machine()), None)


def moonshot(cfg: Config, target_name: str | None, work: Path, runs: int, console: Console) -> dict[str, Any]:
    """SAM CLI's full warm build of the same pins (bench/sam.py), or why it could not run here."""
    tcfg = cfg.target(target_name)
    target = tcfg.target
    pins = [(p.name, p.version) for lf in current_locks(cfg, tcfg).values() for p in lf.packages]
    python = find_python(target.python)
    try:
        return sam.warm_build(pins=pins, runtime=target.runtime or f"python{target.python}", arch=target.arch or ("arm64" if target.machine == "aarch64" else "x86_64"),
                              python_dir=Path(python.path).parent, work=work, runs=max(runs, 3), say=lambda line: console.print(f"    {line}"))
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        console.print(f"[yellow]moonshot not measured:[/] {exc}")
        return {"why": str(exc)}


def _import_check(cfg: Config, target_name: str | None, trees: list[Path], modules: set[str]) -> str:
    """On a target this machine can run, import every top-level module for real."""
    target = cfg.target(target_name).target
    if target.kind != "local":
        return "static (foreign target): every top-level module present"
    python = find_python(target.python)
    code = "import importlib, sys\nsys.path[:0] = {!r}\nbad = []\nfor m in {!r}:\n    try: importlib.import_module(m)\n    except Exception as e: bad.append(f'{{m}}: {{e}}')\nprint('\\n'.join(bad))".format([str(t) for t in trees], sorted(modules - {"_distutils_hack", "isympy", "distutils-precedence"}))
    out = subprocess.run([python.path, "-I", "-c", code], capture_output=True, text=True, timeout=600, check=False)
    failures = out.stdout.strip()
    return "imported every top-level module" if out.returncode == 0 and not failures else f"import failures: {failures or out.stderr[-500:]}"


def run(cfg: Config, *, target: str | None = None, runs: int = 1, console: Console | None = None, command: str = "invoke bench build") -> dict:
    console = console or Console()
    tcfg = cfg.target(target)
    samples: dict[str, list[float]] = {"naive": [], "hoist": [], "cached": []}
    steps: dict[str, dict[str, float]] = {}
    native: dict[str, dict[str, Any]] = {}
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="hoist-bench-", dir=cfg.root) as tmp:
        work = Path(tmp)
        console.print("[bold cyan]==>[/] warming uv's cache with the locked wheels (not timed)")
        naive(cfg, target, work / "warm")
        shutil.rmtree(work / "warm")
        for i in range(runs):
            cache = work / f"cache-{i}"  # Hoist's build cache, empty for the cold build
            console.print(f"[bold cyan]==>[/] run {i + 1}/{runs}: naive install + compileall")
            naive_dir = work / f"naive-{i}"
            samples["naive"].append(naive(cfg, target, naive_dir))
            console.print(f"[bold cyan]==>[/] run {i + 1}/{runs}: invoke build --force, the build cache empty")
            seconds, trees, cold = hoist(cfg, target, work / f"hoist-{i}", cache)
            samples["hoist"].append(seconds)
            console.print(f"[bold cyan]==>[/] run {i + 1}/{runs}: the same build into a fresh output folder, the build cache warm")
            seconds, _, cached = hoist(cfg, target, work / f"cached-{i}", cache)
            samples["cached"].append(seconds)
            if {n: x.content_hash for n, x in cached.sets.items()} != {n: x.content_hash for n, x in cold.sets.items()}:
                raise RuntimeError("the build from the cache differs from the cold build")
            steps = {"cold": breakdown(cold), "cached": breakdown(cached)}
            for w in (*cold.warnings, *cached.warnings):
                console.print(f"[yellow]build warning:[/] {escape(w)}")
            sizes = {"naive": tree_size(naive_dir), "hoist": tree_size(*trees)}
            by_package = {"naive": package_bytes(naive_dir), "hoist": package_bytes(*trees)}
            modules = {"naive": top_level_modules(naive_dir), "hoist": top_level_modules(*trees)}
            if i < runs - 1:
                shutil.rmtree(naive_dir)
        imports = _import_check(cfg, target, trees, modules["hoist"])
        missing = sorted(modules["naive"] - modules["hoist"])
        changes = one_package(cfg, target, work, cache, console)
        for change, fig in changes.items():
            steps[change] = fig["steps"]
        native_name = native_target(cfg, target)
        if native_name:
            console.print(f"[bold cyan]==>[/] the same two changes for target {native_name!r}, whose import check runs on this machine's own CPU")
            (work / "native").mkdir()
            native = one_package(cfg, native_name, work / "native", work / "cache-native", console)
            for change, fig in native.items():
                steps[f"{change} ({native_name})"] = fig["steps"]
        console.print("[bold cyan]==>[/] moonshot: SAM CLI's python-uv build of the same requirements, uv's cache warm")
        moon = moonshot(cfg, target, work, runs, console)

    noop_runs = max(runs, 5)
    console.print(f"[bold cyan]==>[/] {noop_runs} x `invoke --list` and a no-op `invoke build`, alternating")
    listing, building, rebuilt = noop(cfg, target, noop_runs)

    figures: dict[str, dict[str, Any]] = {
        side: {"bytes": sizes[side][0], "files": sizes[side][1], "seconds": round(statistics.median(samples[side]), 2), "seconds_all": [round(s, 2) for s in samples[side]],
               "packages": by_package[side]}
        for side in ("naive", "hoist")
    }
    figures["cached"] = {"seconds": round(statistics.median(samples["cached"]), 2), "seconds_all": [round(s, 2) for s in samples["cached"]]}
    figures["one_package"] = changes
    if native_name:
        figures["one_package_native"] = native
    figures["sam"] = moon
    figures["steps"] = steps
    figures["noop"] = {"list_seconds": round(statistics.median(listing), 3), "build_seconds": round(statistics.median(building), 3),
                       "list_all": [round(s, 3) for s in listing], "build_all": [round(s, 3) for s in building], "rebuilt": rebuilt}
    ratios = {k: round(figures["hoist"][k] / figures["naive"][k], 4) for k in ("bytes", "files", "seconds")}
    ratios["cached"] = round(figures["cached"]["seconds"] / figures["naive"]["seconds"], 4)
    slower = max(changes, key=lambda c: changes[c]["ratio"])
    ratios["one_package"] = changes[slower]["ratio"]
    if native_name:
        ratios["one_package_native"] = max(c["ratio"] for c in native.values())
    ratios["noop"] = round(figures["noop"]["build_seconds"] / figures["noop"]["list_seconds"], 4)
    met = {k: ratios[k] <= GOALS[k] for k in GOALS} | {"imports": not missing and not imports.startswith("import failures"), "noop_did_no_work": not rebuilt}
    if "seconds" in moon:  # the moonshot: the slower one-package change within MOONSHOT x SAM's full warm build
        ratios["one_package_vs_sam"] = round(changes[slower]["seconds"] / moon["seconds"], 4)
        met["moonshot"] = ratios["one_package_vs_sam"] <= MOONSHOT
    doc, written = record.write(
        "build", command,
        target=tcfg.target.as_json(),
        runs=runs,
        baseline="naive: uv install --target of the same locks, copying every file as pip does (+ --python-platform for a foreign target), then compileall by the target Python; nothing removed. "
        "seconds: invoke build --force with the build cache empty; cached: the same build into a fresh output folder, the build cache warm; "
        "one_package: the slower of a leaf package added and a numpy pin bump, each built over the previous build (cache warm) against the naive install of its locks. "
        "one_package_native (a foreign target only): the same two changes for a local target of this machine's CPU, the import check native; not a goal. "
        "noop: `python -m invoke --list` (start-up) against `python -m invoke build` with nothing changed, alternating, medians",
        figures=figures,
        ratios=ratios,
        goals={"bytes_max": GOALS["bytes"], "files_max": GOALS["files"], "seconds_max": GOALS["seconds"], "cached_max": GOALS["cached"],
               "one_package_max": GOALS["one_package"], "noop_max": GOALS["noop"], "moonshot_one_package_vs_sam_max": MOONSHOT, "met": met},
        top_level_missing=missing,
        imports=imports,
    )

    def goal(k: str) -> str:
        return f"<= {GOALS[k]:g}x {'ok' if met[k] else 'MISSED'}"

    table = Table(title=f"build: {tcfg.target.describe()}, median of {runs} run(s)", title_justify="left")
    for col in ("", "naive", "hoist", "hoist / naive", "goal"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("tree bytes", human(figures["naive"]["bytes"]), human(figures["hoist"]["bytes"]), f"{ratios['bytes']:.1%}", f"<= {GOALS['bytes']:.0%} {'ok' if met['bytes'] else 'MISSED'}")
    table.add_row("files", f"{figures['naive']['files']:,}", f"{figures['hoist']['files']:,}", f"{ratios['files']:.1%}", f"<= {GOALS['files']:.0%} {'ok' if met['files'] else 'MISSED'}")
    table.add_row("cold full build (--force, build cache empty)", f"{figures['naive']['seconds']:.1f} s", f"{figures['hoist']['seconds']:.1f} s", f"{ratios['seconds']:.2f}x", goal("seconds"))
    table.add_row("the same, build cache warm", f"{figures['naive']['seconds']:.1f} s", f"{figures['cached']['seconds']:.1f} s", f"{ratios['cached']:.2f}x", goal("cached"))
    for change, fig in changes.items():
        ok = fig["ratio"] <= GOALS["one_package"]
        table.add_row(f"one package: {fig['change']}", f"{fig['naive_seconds']:.1f} s", f"{fig['seconds']:.1f} s", f"{fig['ratio']:.2f}x",
                      f"<= {GOALS['one_package']:g}x {'ok' if ok else 'MISSED'}" + (" (the slower: the goal's figure)" if change == slower else ""))
    if native_name:
        for fig in native.values():
            table.add_row(f"the same on this CPU (target {fig['target']}): {fig['change']}", f"{fig['naive_seconds']:.1f} s", f"{fig['seconds']:.1f} s",
                          f"{fig['ratio']:.2f}x", "(the check native; not the goal's figure)")
    console.print(table)
    parts = Table(title="where the seconds go (each build's steps, summed over its sets)", title_justify="left")
    parts.add_column("step")
    for name in steps:
        parts.add_column(name, justify="right")
    for step in STEPS:
        parts.add_row(step, *(f"{steps[name].get(step, 0.0):.1f}" for name in steps))
    parts.add_row("total", *(f"{sum(steps[name].values()):.1f}" for name in steps))
    console.print(parts)
    n = figures["noop"]
    console.print(f"no-op build: {n['build_seconds']:.2f} s against `invoke --list` {n['list_seconds']:.2f} s = {ratios['noop']:.2f}x "
                  f"(<= {GOALS['noop']:.0f}x {'ok' if met['noop'] else 'MISSED'}); {'REBUILT something' if rebuilt else 'nothing rebuilt'}")
    if "seconds" in moon:
        console.print(f"moonshot: SAM CLI {moon['version']} ({moon['build_method']}, no slimming, bytecode, checks or hot set) builds the same "
                      f"{moon['packages']} packages warm in {moon['seconds']:.1f} s; the slower one-package change takes {changes[slower]['seconds']:.1f} s = "
                      f"{ratios['one_package_vs_sam']:.1f}x (<= {MOONSHOT:g}x {'ok' if met['moonshot'] else 'MISSED'})")
    else:
        console.print(f"moonshot: not measured ({moon['why'][:200]})")
    console.print(f"top-level modules: {'all present' if not missing else 'MISSING ' + ', '.join(missing)}; {imports}")
    console.print(f"written: {written}")
    return doc
