"""The picture of each benchmark, drawn from the JSON it writes (bench/record.py calls ``draw`` right after writing
it): bench/results/<name>.png beside bench/results/<name>.json. `invoke bench <name> --chart-only` draws it again
from the JSON, without running the benchmark.

matplotlib's object API on its Agg canvas: no pyplot, no display, no global state; PNG metadata without the
matplotlib version, so a redraw of the same JSON changes no byte that matters to git.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from pipeline.errors import BenchError

MB = 1e6
# one colour per archive compression, one marker per read-ahead mode (HOIST_PREFETCH), in the curve
COMPRESSION_COLOURS = {"zlib": "tab:blue", "lzma": "tab:orange", "none": "tab:green"}
PREFETCH_MARKERS = {"touched": "o", "relocs": "s", "loader": "D", "ordered": "v", "all": "^", "none": "X"}
NAIVE, HOIST = "tab:gray", "tab:blue"


def _figure(panels: int, title: str, doc: dict) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(6.4 * panels, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    machine = doc.get("machine") or {}
    fig.suptitle(title, fontweight="bold")
    fig.supxlabel(f"{doc.get('command', '')}  ·  {doc.get('date', '')}  ·  {machine.get('machine', '?')}, {machine.get('cpus', '?')} CPUs",
                  fontsize=7, color="dimgray", x=0.0, ha="left")
    return fig, axes


def _bars(ax: Axes, labels: list[str], values: list[float], colours: list[str], unit: str, title: str) -> None:
    bars = ax.bar(labels, values, color=colours)
    ax.bar_label(bars, labels=[f"{v:,.0f} {unit}" if abs(v) >= 100 else f"{v:.3g} {unit}" for v in values], fontsize=8, padding=2)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit)
    ax.margins(y=0.15)
    ax.tick_params(axis="x", labelsize=8)


def coldstart(doc: dict) -> Figure:
    """The curve: init seconds against bytes read from EFS, one point per read-ahead mode and compression, the seed
    and Hoist's default marked; the memory of the activation beside it when the JSON has it."""
    fig_ = doc["figures"]
    memory = doc.get("memory")
    fig, axes = _figure(2 if memory else 1, "cold start: init seconds against bytes read from EFS (1 ms per operation)", doc)
    ax = axes[0]
    names = list(doc.get("curve") or [n for n in fig_ if n.startswith("curve_")] + ["hoist_1ms"])
    default = fig_.get("hoist_1ms")
    for name in names:
        point = fig_.get(name)
        if not point or point.get("bytes_read") is None:
            continue
        every = point.get("archived") == "every file"
        ax.scatter(point["bytes_read"] / MB, point["seconds_median"], s=90 if every else 50,
                   color=COMPRESSION_COLOURS.get(point.get("compression") or "", "tab:purple"),
                   marker=PREFETCH_MARKERS.get(point.get("prefetch") or "", "P"),
                   facecolors="none" if every else None, linewidths=1.5, zorder=3)
        if every:
            ax.annotate("archives of every file", (point["bytes_read"] / MB, point["seconds_median"]), fontsize=7, xytext=(6, -10), textcoords="offset points")
    seed = fig_.get("seed_1ms")
    if seed:
        ax.scatter(seed["bytes_read"] / MB, seed["seconds_median"], s=120, color="black", marker="*", zorder=4)
        ax.annotate(f"seed (pip install -t): {seed['seconds_median']:.1f} s", (seed["bytes_read"] / MB, seed["seconds_median"]),
                    fontsize=8, xytext=(8, -4), textcoords="offset points")
    if default:
        ax.scatter(default["bytes_read"] / MB, default["seconds_median"], s=260, facecolors="none", edgecolors="red", linewidths=2, zorder=5)
        ax.annotate(f"Hoist's default ({doc.get('default_prefetch') or default.get('prefetch')}, {default.get('compression')}): "
                    f"{default['seconds_median']:.2f} s", (default["bytes_read"] / MB, default["seconds_median"]),
                    fontsize=8, color="red", xytext=(14, -22), textcoords="offset points")
    local = fig_.get("limit_local_disk")
    if local and local.get("seconds_median"):
        ax.axhline(local["seconds_median"], color="gray", linestyle=":", linewidth=1)
        ax.annotate(f"limit: local disk {local['seconds_median']:.2f} s", (0.99, local["seconds_median"]), xycoords=("axes fraction", "data"),
                    fontsize=7, color="gray", ha="right", va="bottom")
    ax.set_xscale("log")
    mb = FuncFormatter(lambda value, _: f"{value:,.0f}")
    ax.xaxis.set_major_formatter(mb)
    ax.xaxis.set_minor_formatter(mb)
    ax.tick_params(axis="x", which="both", labelsize=7)
    ax.set_xlabel("MB read from EFS per cold start (log scale)")
    ax.set_ylabel("init seconds (median)")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    used = {(fig_[n].get("compression"), fig_[n].get("prefetch")) for n in names if fig_.get(n)}
    compressions = [c for c in COMPRESSION_COLOURS if any(u[0] == c for u in used)]
    prefetches = [p for p in PREFETCH_MARKERS if any(u[1] == p for u in used)]
    handles = [ax.scatter([], [], color=COMPRESSION_COLOURS[c], marker="s", label=f"compression {c}") for c in compressions]
    handles += [ax.scatter([], [], color="black", marker=PREFETCH_MARKERS[p], label=f"read-ahead {p}") for p in prefetches]
    ax.legend(handles=handles, fontsize=7, loc="upper right", ncols=2)
    if memory:
        keys = [("hot_set_bytes", "hot set"), ("peak_during_activation", "peak during\nactivation"),
                ("held_during_init", "held during\ninit"), ("held_after_init", "held after\ninit")]
        shown = [(label, memory[k] / MB) for k, label in keys if memory.get(k) is not None]
        _bars(axes[1], [s[0] for s in shown], [s[1] for s in shown], ["tab:gray", "tab:red", "tab:orange", "tab:green"][: len(shown)], "MB",
              "the activation's memory (tracemalloc)" + (f": peak {memory['peak_over_hot_set']:.2f}x the hot set" if "peak_over_hot_set" in memory else ""))
    return fig


def build(doc: dict) -> Figure:
    """The tree against the naive install: bytes by package (when the JSON lists them) or in all, files, wall time."""
    naive, hoist = doc["figures"]["naive"], doc["figures"]["hoist"]
    by_package = "packages" in naive and "packages" in hoist
    fig, axes = _figure(3, f"build: Hoist's tree against the naive install ({(doc.get('target') or {}).get('name', '?')} target)", doc)
    if by_package:
        ax = axes[0]
        names = sorted(set(naive["packages"]) | set(hoist["packages"]), key=lambda n: -naive["packages"].get(n, 0))
        top, rest = names[:12], names[12:]
        rows = [(n, naive["packages"].get(n, 0), hoist["packages"].get(n, 0)) for n in top]
        if rest:
            rows.append((f"{len(rest)} other{'s' if len(rest) > 1 else ''}", sum(naive["packages"].get(n, 0) for n in rest), sum(hoist["packages"].get(n, 0) for n in rest)))
        rows.reverse()  # the largest on top
        ys = range(len(rows))
        ax.barh([y + 0.2 for y in ys], [r[1] / MB for r in rows], height=0.4, color=NAIVE, label="naive")
        ax.barh([y - 0.2 for y in ys], [r[2] / MB for r in rows], height=0.4, color=HOIST, label="hoist")
        ax.set_yticks(list(ys), [r[0] for r in rows], fontsize=8)
        ax.set_xlabel("MB")
        ax.set_title(f"tree bytes by package: {hoist['bytes'] / MB:,.0f} MB against {naive['bytes'] / MB:,.0f} MB", fontsize=10)
        ax.legend(fontsize=8)
    else:
        _bars(axes[0], ["naive", "hoist"], [naive["bytes"] / MB, hoist["bytes"] / MB], [NAIVE, HOIST], "MB",
              f"tree bytes: hoist {hoist['bytes'] / naive['bytes']:.0%} of naive")
    _bars(axes[1], ["naive", "hoist"], [naive["files"], hoist["files"]], [NAIVE, HOIST], "files", f"files in the tree: hoist {hoist['files'] / naive['files']:.0%} of naive")
    noop = doc["figures"].get("noop")
    labels, values, colours = ["naive\ninstall", "hoist\nbuild"], [naive["seconds"], hoist["seconds"]], [NAIVE, HOIST]
    cached, changes, sam = doc["figures"].get("cached"), doc["figures"].get("one_package") or {}, doc["figures"].get("sam") or {}
    if cached:
        labels.append("hoist,\ncache warm")
        values.append(cached["seconds"])
        colours.append("tab:green")
    if changes:  # the slower one-package change (the figure the goal is on)
        slower = max(changes.values(), key=lambda c: c["ratio"])
        labels.append("1 package\nchanged")
        values.append(slower["seconds"])
        colours.append("tab:purple")
    native = doc["figures"].get("one_package_native") or {}
    if native:  # the same changes where the import check runs on this machine's own CPU (a foreign target's reference)
        slower_native = max(native.values(), key=lambda c: c["ratio"])
        labels.append(f"same on\n{slower_native['target']}")
        values.append(slower_native["seconds"])
        colours.append("thistle")
    if "seconds" in sam:
        labels.append("SAM CLI\n(python-uv)")
        values.append(sam["seconds"])
        colours.append("tab:gray")
    if noop:
        labels += ["invoke\n--list", "no-op\nbuild"]
        values += [noop["list_seconds"], noop["build_seconds"]]
        colours += ["tab:olive", "tab:cyan"]
    _bars(axes[2], labels, values, colours, "s", f"wall time, median of {doc.get('runs', '?')} run(s)")
    return fig


def sync(doc: dict) -> Figure:
    """What sync-efs sends: the first version against a plain rsync of the naive tree, a resync, one package changed."""
    f = doc["figures"]
    fig, axes = _figure(3, "sync-efs: bytes sent and seconds", doc)
    steps = [("plain rsync\n(naive tree)", f["plain_rsync_naive"], NAIVE), ("first\nversion", f["first_sync"], HOIST),
             ("same build\nagain", f["unchanged_resync"], "tab:green")]
    _bars(axes[0], [s[0] for s in steps], [s[1]["bytes_sent"] / MB for s in steps], [s[2] for s in steps], "MB", "bytes sent")
    _bars(axes[1], [s[0] for s in steps], [s[1]["seconds"] for s in steps], [s[2] for s in steps], "s", "seconds")
    changed: dict[str, Any] = f.get("one_package_changed") or {}
    ax = axes[2]
    xs = range(len(changed))
    ax.bar([x - 0.2 for x in xs], [v["package_bytes"] / MB for v in changed.values()], width=0.4, color=NAIVE, label="the package's bytes")
    ax.bar([x + 0.2 for x in xs], [v["bytes_sent"] / MB for v in changed.values()], width=0.4, color=HOIST, label="bytes sent")
    for x, v in zip(xs, changed.values(), strict=True):
        ax.annotate(f"{v['bytes_sent'] / v['package_bytes']:.2f}x", (x + 0.2, v["bytes_sent"] / MB), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), list(changed), fontsize=8)
    ax.set_ylabel("MB")
    ax.set_title("a new version with one package changed", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def serve(doc: dict) -> Figure:
    """Warm latency: the model called directly, through the local endpoint, and with each result written to S3."""
    f = doc["figures"]
    rows = [("direct\nmodel call", f["direct_model_ms"], "tab:gray"), ("local\nendpoint", f["endpoint_ms"], HOIST)]
    if "endpoint_with_output_ms" in f:
        rows.append(("endpoint,\nresult to S3", f["endpoint_with_output_ms"], "tab:orange"))
    fig, axes = _figure(2, f"serve: warm latency, {rows[0][1].get('count', '?')} requests each", doc)
    _bars(axes[0], [r[0] for r in rows], [r[1]["median"] for r in rows], [r[2] for r in rows], "ms", "median")
    _bars(axes[1], [r[0] for r in rows], [r[1]["p99"] for r in rows], [r[2] for r in rows], "ms", "p99")
    return fig


CHARTS: dict[str, Callable[[dict], Figure]] = {"coldstart": coldstart, "build": build, "sync": sync, "serve": serve}


def chart_path(json_path: Path) -> Path:
    return json_path.with_suffix(".png")


def draw(doc: dict, json_path: Path) -> Path:
    """bench/results/<name>.png from the benchmark's document; a document a chart cannot read says which and how to redraw."""
    name = doc.get("benchmark", "")
    if name not in CHARTS:
        raise BenchError(f"no chart for benchmark {name!r}", where=str(json_path), fix=f"add a function for it to CHARTS in bench/charts.py (charts: {', '.join(CHARTS)})")
    try:
        fig = CHARTS[name](doc)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        raise BenchError(f"the chart cannot be drawn from this document ({type(err).__name__}: {err})", where=str(json_path),
                         fix=f"run `invoke bench {name}` again to write it afresh; bench/charts.py {name}() reads its figures") from None
    out = chart_path(json_path)
    fig.savefig(out, dpi=100, metadata={"Software": None})
    return out


def redraw(json_path: Path) -> Path:
    """The chart again from a JSON already written (`invoke bench <name> --chart-only`)."""
    name = json_path.stem
    if not json_path.is_file():
        raise BenchError(f"there is no {json_path} to draw from", where=f"bench {name}", fix=f"run `invoke bench {name}` first; it writes the JSON and the chart")
    try:
        doc = json.loads(json_path.read_text())
    except json.JSONDecodeError as err:
        raise BenchError(f"{json_path} is not JSON ({err})", where=f"bench {name}", fix=f"run `invoke bench {name}` again to write it afresh") from None
    return draw(doc, json_path)
