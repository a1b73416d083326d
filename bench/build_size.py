"""`invoke bench build`: Hoist's tree against a naive install of the same locks.

Naive is what `pip install --target` on a machine of the target platform
gives: every file of every wheel, bytecode compiled by the target Python in
its default (timestamp) mode, nothing removed. For a foreign target (the arm64
demo on x86_64) uv's ``--python-platform`` install plus ``compileall`` stands
in for it. Both sides install the same hash-pinned wheels from a warm uv cache,
in the same run, on the same machine.

Goals (the foundation issue): Hoist's tree at most 70% of the naive bytes and
55% of the naive file count, with every top-level module intact. Issue 16: a
full warm build at most 1.2x the naive install's wall time, and a no-op
`invoke build` (nothing changed) at most twice the start-up of `invoke --list`,
both launched the same way (``python -m invoke``) in the same run.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from builder.build import build
from builder.install import install_native
from builder.lock import current_locks
from pipeline import proc
from pipeline.config import Config
from pipeline.console import human
from pipeline.dists import top_level_modules
from pipeline.interpreters import find_python
from pipeline.records import load_build_record

from . import record

GOALS = {"bytes": 0.70, "files": 0.55, "seconds": 1.20, "noop": 2.0}


def tree_size(*trees: Path) -> tuple[int, int]:
    total = count = 0
    for tree in trees:
        for root, _, files in os.walk(tree):
            for f in files:
                total += os.lstat(os.path.join(root, f)).st_size
                count += 1
    return total, count


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
        install_native(lf, tcfg.target, dest)
    proc.run([python.path, "-m", "compileall", "-q", "-j", "0", str(dest)], what="compileall (naive)", check=False)
    return time.perf_counter() - started


def hoist(cfg: Config, target_name: str | None, out: Path) -> tuple[float, list[Path]]:
    local = dataclasses.replace(cfg, build=cfg.build.model_copy(update={"output": out}))
    started = time.perf_counter()
    result = build(local, target_name, force=True)
    return time.perf_counter() - started, [s.tree for s in result.sets.values()]


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
    samples: dict[str, list[float]] = {"naive": [], "hoist": []}
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="hoist-bench-", dir=cfg.root) as tmp:
        work = Path(tmp)
        console.print("[bold cyan]==>[/] warming uv's cache with the locked wheels (not timed)")
        naive(cfg, target, work / "warm")
        shutil.rmtree(work / "warm")
        for i in range(runs):
            console.print(f"[bold cyan]==>[/] run {i + 1}/{runs}: naive install + compileall")
            naive_dir = work / f"naive-{i}"
            samples["naive"].append(naive(cfg, target, naive_dir))
            console.print(f"[bold cyan]==>[/] run {i + 1}/{runs}: invoke build --force")
            seconds, trees = hoist(cfg, target, work / f"hoist-{i}")
            samples["hoist"].append(seconds)
            sizes = {"naive": tree_size(naive_dir), "hoist": tree_size(*trees)}
            modules = {"naive": top_level_modules(naive_dir), "hoist": top_level_modules(*trees)}
            if i < runs - 1:
                shutil.rmtree(naive_dir)
        imports = _import_check(cfg, target, trees, modules["hoist"])
        missing = sorted(modules["naive"] - modules["hoist"])

    noop_runs = max(runs, 5)
    console.print(f"[bold cyan]==>[/] {noop_runs} x `invoke --list` and a no-op `invoke build`, alternating")
    listing, building, rebuilt = noop(cfg, target, noop_runs)

    figures: dict[str, dict[str, Any]] = {
        side: {"bytes": sizes[side][0], "files": sizes[side][1], "seconds": round(statistics.median(samples[side]), 2), "seconds_all": [round(s, 2) for s in samples[side]]}
        for side in ("naive", "hoist")
    }
    figures["noop"] = {"list_seconds": round(statistics.median(listing), 3), "build_seconds": round(statistics.median(building), 3),
                       "list_all": [round(s, 3) for s in listing], "build_all": [round(s, 3) for s in building], "rebuilt": rebuilt}
    ratios = {k: round(figures["hoist"][k] / figures["naive"][k], 4) for k in ("bytes", "files", "seconds")}
    ratios["noop"] = round(figures["noop"]["build_seconds"] / figures["noop"]["list_seconds"], 4)
    met = {k: ratios[k] <= GOALS[k] for k in GOALS} | {"imports": not missing and not imports.startswith("import failures"), "noop_did_no_work": not rebuilt}
    doc, written = record.write(
        "build", command,
        target=tcfg.target.as_json(),
        runs=runs,
        baseline="naive: uv install --target of the same locks (+ --python-platform for a foreign target), then compileall by the target Python; nothing removed. "
        "noop: `python -m invoke --list` (start-up) against `python -m invoke build` with nothing changed, alternating, medians",
        figures=figures,
        ratios=ratios,
        goals={"bytes_max": GOALS["bytes"], "files_max": GOALS["files"], "seconds_max": GOALS["seconds"], "noop_max": GOALS["noop"], "met": met},
        top_level_missing=missing,
        imports=imports,
    )

    table = Table(title=f"build: {tcfg.target.describe()}, median of {runs} run(s)", title_justify="left")
    for col in ("", "naive", "hoist", "hoist / naive", "goal"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("tree bytes", human(figures["naive"]["bytes"]), human(figures["hoist"]["bytes"]), f"{ratios['bytes']:.1%}", f"<= {GOALS['bytes']:.0%} {'ok' if met['bytes'] else 'MISSED'}")
    table.add_row("files", f"{figures['naive']['files']:,}", f"{figures['hoist']['files']:,}", f"{ratios['files']:.1%}", f"<= {GOALS['files']:.0%} {'ok' if met['files'] else 'MISSED'}")
    table.add_row("wall time", f"{figures['naive']['seconds']:.1f} s", f"{figures['hoist']['seconds']:.1f} s", f"{ratios['seconds']:.2f}x",
                  f"<= {GOALS['seconds']:.1f}x {'ok' if met['seconds'] else 'MISSED'}")
    console.print(table)
    n = figures["noop"]
    console.print(f"no-op build: {n['build_seconds']:.2f} s against `invoke --list` {n['list_seconds']:.2f} s = {ratios['noop']:.2f}x "
                  f"(<= {GOALS['noop']:.0f}x {'ok' if met['noop'] else 'MISSED'}); {'REBUILT something' if rebuilt else 'nothing rebuilt'}")
    console.print(f"top-level modules: {'all present' if not missing else 'MISSING ' + ', '.join(missing)}; {imports}")
    console.print(f"written: {written}")
    return doc
