"""`invoke bench coldstart`: the handler's init (trees on sys.path, import
torch and PIL, load the demo model) in a fresh process, with the EFS tree
behind bench/latencyfs.py (a FUSE mount adding a round trip per operation and
a throughput cap, mounted fresh for every run).

Compared, on this machine's interpreter and platform (the `local` target), each
in a fresh `python -I -S` (nothing of this machine's site-packages, as on Lambda):
- seed: a plain `uv pip install --target` tree of the same locks, no bytecode,
  everything on EFS, `sys.path.insert(0, tree)`;
- hoist: the built EFS tree as the handler loads it (the archives of its hot
  set read in parallel into memory and imported from there, the pages of the
  libraries the build saw touched read ahead, the tree appended to sys.path),
  the layer on local disk as Lambda extracts it under /opt; and the same tree
  imported straight from EFS;
- limit: the Hoist trees from local disk;
- the trade-off curve: the hydrated init at 1 ms for every read-ahead mode of
  the libraries (HOIST_PREFETCH: touched, relocs, loader, ordered, all, none),
  archive compression (zlib as built; lzma, smaller and slower to unpack;
  none: the same archives stored as they are), and archives of every file
  (no hot set: what a build without an import check writes). zstd is not in
  the standard library of the runtime's Python before 3.14, and activation
  uses the standard library only, so it is not a candidate.
Every case reports the seconds and the bytes read from EFS, and what those
bytes cost at Elastic throughput's read price. Goals (cold start issue): the
default at least 4x faster than the seed at 1 ms, reading at most 1.5x the
seed's bytes; and hoist at 1 ms at most 1.3x hoist at 0 ms.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from builder.archives import INDEX_VERSION, write_archives
from builder.build import build
from builder.install import install_native
from builder.lock import current_locks
from compose.serve import ensure_built
from pipeline import proc
from pipeline.config import Config
from pipeline.errors import BenchError
from pipeline.files import atomic_write_bytes, sha256_file
from pipeline.interpreters import find_python

from . import record, snapstart

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
how, tree, layer, model, handler_dir = sys.argv[1:6]
if layer != "-":
    sys.path.insert(0, layer)
if how == "insert":
    sys.path.insert(0, tree)
elif how == "append":
    sys.path.append(tree)
else:  # the handler's own activation: hydrate from the archives beside the tree, then append
    sys.path.insert(0, handler_dir)
    from hoist_lambda import archive, prefetch
    # the curve's other points, injected beside what the handler ships (read-aheads touched and relocs; zlib archives)
    import lzma
    class Stored:
        def decompress(self, data):
            return data
    archive.DECOMPRESS.setdefault("lzma", lzma.LZMADecompressor)
    archive.DECOMPRESS.setdefault("none", Stored)
    prefetch.RANGES.setdefault("all", lambda path, rel, index: [[0, os.path.getsize(path)]])
    prefetch.RANGES.setdefault("none", lambda path, rel, index: [])
    from hoist_lambda.activate import activate, release, report
    memory = os.environ.get("HOIST_BENCH_MEMORY") == "1"
    if memory:  # the activation's own allocations, not the process's: tracemalloc from just before it
        import tracemalloc
        tracemalloc.start()
    activate(tree)
    if memory:
        peak = tracemalloc.get_traced_memory()[1]
    sys.path.remove(handler_dir)
t1 = time.perf_counter()
import torch, PIL.Image
try:
    import torchvision
    vision = True
except ImportError:
    vision = False
net = torch.jit.load(model)
out = {"seconds": time.perf_counter() - t0, "path_setup_seconds": t1 - t0, "torchvision": vision}
if how == "handler":
    during = report()
    release()  # init is over, as the demo handler says it
    out["activation"] = {**during, "released": report()["released"]}
    if memory:
        import gc
        gc.collect()
        held = sum(s.size for s in tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/hoist_lambda/*")]).statistics("filename"))
        out["memory"] = {"peak_during_activation": peak, "held_after_init": held}
print(json.dumps(out))
"""
LATENCYFS = Path(__file__).with_name("latencyfs.py")
ELASTIC_READ_USD_PER_GB = 0.03  # EFS Elastic throughput reads (lambda-facts.md)
# touched and relocs: what the handler ships (HOIST_PREFETCH); all and none: the curve's ends, injected by the child
PREFETCH_MODES = ("touched", "relocs", "all", "none")
# goals of the cold start issue, each over the seed at 1 ms or over the hot set the archives hold
GOALS = {"speedup": 6.0, "bytes": 1.0, "held_after_init_bytes": 5_000_000, "peak_over_hot_set": 1.10}


def _default_prefetch(handler_dir: Path) -> str:
    """The handler's default read-ahead (prefetch.DEFAULT), read from its source (the bench does not import the handler)."""
    for line in (handler_dir / "hoist_lambda" / "prefetch.py").read_text().splitlines():
        if line.startswith("DEFAULT ="):
            return line.split("=", 1)[1].split("#")[0].strip().strip('"')
    raise RuntimeError("DEFAULT not found in hoist_lambda/prefetch.py")


COMPRESSIONS = ("zlib", "lzma", "none")  # zlib: as the build writes them


def _recompress(args: tuple[Path, Path, str]) -> int:
    import lzma
    import zlib

    source, dest, compression = args
    if not dest.exists():
        raw = zlib.decompress(source.read_bytes())
        data = lzma.compress(raw, preset=6) if compression == "lzma" else raw
        atomic_write_bytes(dest, data)
    return dest.stat().st_size


def _variant(version: Path, dest: Path, compression: str, cache: Path) -> Path:
    """A copy of the version whose archives use ``compression`` (the tree hard-linked, the archives
    recompressed once into ``cache``, by content); returns its tree."""
    from concurrent.futures import ProcessPoolExecutor

    shutil.copytree(version / "site-packages", dest / "site-packages", copy_function=os.link, symlinks=True)
    (dest / "archives").mkdir(parents=True)
    index = json.loads((version / "archives" / "index.json").read_text())
    assert index.get("version") == INDEX_VERSION
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [(version / "archives" / a["name"], cache / f"{a['sha256']}.{compression}", compression) for a in index["archives"]]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        sizes = list(pool.map(_recompress, jobs))
    for a, (_, cached, _), size in zip(index["archives"], jobs, sizes, strict=True):
        os.link(cached, dest / "archives" / a["name"])
        a["bytes"], a["sha256"] = size, sha256_file(cached)  # the handler checks each archive against it
    (dest / "archives" / "index.json").write_text(json.dumps({**index, "compression": compression}))
    return dest / "site-packages"


def _everything(version: Path, dest: Path) -> Path:
    """A copy of the version whose archives hold every file, not the hot set (the tree hard-linked,
    the libraries' touched pages kept); returns its tree."""
    shutil.copytree(version / "site-packages", dest / "site-packages", copy_function=os.link, symlinks=True)
    index = json.loads((version / "archives" / "index.json").read_text())
    write_archives(dest / "site-packages", dest / "archives", opened=None, touched=index.get("touched_ranges"))
    return dest / "site-packages"


LIBFUSE_PACKAGE = "libfuse2"  # fusepy (bench/latencyfs.py) loads libfuse.so.2; Ubuntu 24.04's apt picks libfuse2t64 for it
FUSE_DEVICE = Path("/dev/fuse")


def prepare_machine(say) -> None:
    """What the latency mount needs on this machine: libfuse2, installed here when root with apt-get (as `invoke test`
    installs what its tests start), else a BenchError saying what to install; and /dev/fuse."""
    import ctypes.util

    if not ctypes.util.find_library("fuse"):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise BenchError(f"the latency file system (bench/latencyfs.py, through fusepy) needs libfuse.so.2, which is not installed ({LIBFUSE_PACKAGE})",
                             where="invoke bench coldstart",
                             fix=f"sudo apt-get install {LIBFUSE_PACKAGE} (then run again); run as root, the benchmark installs it itself")
        say(f"installing {LIBFUSE_PACKAGE} (the latency file system loads libfuse.so.2): apt-get install {LIBFUSE_PACKAGE}")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        proc.run(["apt-get", "update", "-q"], what="apt-get update", env=env)
        proc.run(["apt-get", "install", "-y", "-q", LIBFUSE_PACKAGE], what=f"apt-get install {LIBFUSE_PACKAGE}", env=env,
                 fix=f"install {LIBFUSE_PACKAGE} by hand (apt-get install {LIBFUSE_PACKAGE}), then run again")
        if not ctypes.util.find_library("fuse"):
            raise BenchError(f"{LIBFUSE_PACKAGE} was installed, yet libfuse.so.2 is still not found", where="invoke bench coldstart",
                             fix="check `ldconfig -p | grep libfuse.so.2`; install the package that provides it, then run again")
    if not FUSE_DEVICE.exists():
        raise BenchError(f"no {FUSE_DEVICE}: the latency file system mounts through FUSE", where="invoke bench coldstart",
                         fix="load the module (modprobe fuse); in a container, start it with --device /dev/fuse --cap-add SYS_ADMIN")


def _mounted(source: Path, latency_ms: float, mbps: float, work: Path):
    """Start a fresh latency mount of ``source``; returns (mountpoint, process, stats file)."""
    mnt = Path(tempfile.mkdtemp(prefix="mnt-", dir=work))
    stats = work / f"stats-{mnt.name}.json"
    proc = subprocess.Popen([sys.executable, str(LATENCYFS), str(source), str(mnt), "--latency-ms", str(latency_ms), "--mbps", str(mbps), "--stats", str(stats)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while not os.path.ismount(mnt):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"latencyfs did not mount: {proc.stderr.read().decode()[-800:] if proc.stderr else ''} (needs /dev/fuse and libfuse2)")
        time.sleep(0.05)
    return mnt, proc, stats


def _unmount(mnt: Path, proc: subprocess.Popen) -> None:
    clean = subprocess.run(["umount", str(mnt)], check=False, capture_output=True).returncode == 0
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not clean:  # busy, or its server gone ("transport endpoint is not connected"): detach it
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)
    shutil.rmtree(mnt, ignore_errors=True)


def _detach_all(work: Path) -> None:
    """Whatever latency mount is left under ``work`` (a run that failed half-way), detached before cleanup."""
    for line in Path("/proc/mounts").read_text().splitlines():
        point = line.split()[1]
        if point.startswith(str(work) + "/"):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _one(python: str, how: str, tree: Path, layer: Path | None, model: Path, latency_ms: float | None, mbps: float, work: Path, handler_dir: Path,
         prefetch: str | None = None, memory: bool = False) -> dict:
    """One cold init. The mount covers the tree's folder, so archives beside it travel through it too."""
    mnt = proc = stats = None
    source = tree
    if latency_ms is not None:
        mnt, proc, stats = _mounted(tree.parent, latency_ms, mbps, work)
        source = mnt / tree.name
    try:
        subprocess.run(["sync"], check=False)
        env = {"PATH": os.environ.get("PATH", ""), "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008"}
        if prefetch:
            env["HOIST_PREFETCH"] = prefetch
        if memory:
            env["HOIST_BENCH_MEMORY"] = "1"
        out = subprocess.run([python, "-I", "-S", "-c", CHILD, how, str(source), str(layer) if layer else "-", str(model), str(handler_dir)], check=False, capture_output=True, text=True, timeout=900, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"cold init failed ({how}, {tree}): {out.stderr[-1500:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if mnt is not None and proc is not None:
            _unmount(mnt, proc)
    if stats is not None and stats.exists():
        result.update(json.loads(stats.read_text()))
    return result


def run(cfg: Config, *, target: str | None = None, runs: int = 3, console: Console | None = None, command: str = "invoke bench coldstart",
        shapes: bool = True) -> dict:
    console = console or Console()
    runs = max(1, runs)
    target = target or "local"
    tcfg = cfg.target(target)
    say = lambda line: console.print(f"[bold cyan]==>[/] {line}")  # noqa: E731
    prepare_machine(say)
    ensure_built(cfg, target, say)  # locks it first when its locks are missing or stale, as `invoke serve` does
    console.print(f"[bold cyan]==>[/] invoke build --target {target} (reused when current)")
    built = build(cfg, target)
    efs, layer = built.sets["efs"].tree, built.sets["layer"].tree if "layer" in built.sets else None
    model = (cfg.model_dir or cfg.root / "model" / "artifacts") / "model.pt"
    python = find_python(tcfg.target.python).path
    default = _default_prefetch(cfg.build.handler_dir)
    with tempfile.TemporaryDirectory(prefix="hoist-bench-coldstart-", dir=cfg.root, ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        console.print("[bold cyan]==>[/] the seed's tree: every locked wheel with `--target`, no bytecode")
        seed = work / "seed" / "site-packages"
        for lf in current_locks(cfg, tcfg).values():
            install_native(lf, tcfg.target, seed)
        trees = {"zlib": efs}
        for compression in COMPRESSIONS[1:]:
            console.print(f"[bold cyan]==>[/] the same archives with compression {compression} (cached in .hoist-cache/bench-archives)")
            trees[compression] = _variant(efs.parent, work / compression / "v", compression, cfg.root / ".hoist-cache" / "bench-archives")
        console.print("[bold cyan]==>[/] archives of every file, as a build without a hot set writes them")
        trees["everything"] = _everything(efs.parent, work / "everything" / "v")
        # name: (how, tree, layer, latency ms, read-ahead); hoist_* is the handler's default
        cases: dict[str, tuple[str, Path, Path | None, float | None, str | None]] = {
            "seed_1ms": ("insert", seed, None, 1.0, None),
            "seed_0ms": ("insert", seed, None, 0.0, None),
            "hoist_1ms": ("handler", efs, layer, 1.0, default),
            "hoist_0ms": ("handler", efs, layer, 0.0, default),
            "hoist_no_hydrate_1ms": ("append", efs, layer, 1.0, None),
            "limit_local_disk": ("append", efs, layer, None, None),
        }
        for compression in COMPRESSIONS:
            # every read-ahead with the archives as built; the others with the default and the two ends
            for mode in PREFETCH_MODES if compression == "zlib" else (default, "all", "none"):
                if (compression, mode) != ("zlib", default):  # that one is hoist_1ms
                    cases[f"curve_{compression}_{mode}_1ms"] = ("handler", trees[compression], layer, 1.0, mode)
        cases[f"curve_everything_{default}_1ms"] = ("handler", trees["everything"], layer, 1.0, default)
        samples: dict[str, list[dict]] = {name: [] for name in cases}
        for i in range(runs):
            for name, (how, tree, lay, latency, prefetch) in cases.items():
                console.print(f"[bold cyan]==>[/] run {i + 1}/{runs}: {name}")
                try:
                    samples[name].append(_one(python, how, tree, lay, model, latency, 300.0, work, cfg.build.handler_dir, prefetch))
                except RuntimeError as exc:  # the instrument, not the init: a mount that did not come up; once more
                    console.print(f"    [yellow]retrying {name}: {str(exc)[:200]}[/]")
                    _detach_all(work)
                    samples[name].append(_one(python, how, tree, lay, model, latency, 300.0, work, cfg.build.handler_dir, prefetch))
        console.print("[bold cyan]==>[/] memory: the hydrated init once more under tracemalloc (its seconds are not reported)")
        measured = _one(python, "handler", efs, layer, model, 0.0, 300.0, work, cfg.build.handler_dir, default, memory=True)
        _detach_all(work)
        snap = pushed = None
        if shapes:  # the image shape (bench/snapstart.py): SnapStart restored by CRIU behind the same instrument, and a handler-only push
            console.print("[bold cyan]==>[/] image + SnapStart: init and hooks, CRIU dump, page cache dropped, restore through the latency mount, first answer")
            restores = []
            for i in range(runs):  # a fresh init, snapshot and restore each time, as the EFS cases get a fresh mount
                console.print(f"[bold cyan]==>[/] run {i + 1}/{runs}: image + SnapStart")
                restores.append(snapstart.measure(python=python, handler_dir=cfg.build.handler_dir, efs_tree=efs, layer=layer, model_dir=model.parent,
                                                  event=_sample_event(model.parent), work=work, latency_ms=1.0, mbps=300.0, mount=_mounted,
                                                  unmount=_unmount, say=say))
                _detach_all(work)
            snap = snapstart.median_run(restores)
            pushed = snapstart.handler_push(sets={name: (s.tree, s.content_hash) for name, s in built.sets.items()}, handler_dir=cfg.build.handler_dir,
                                            model_dir=model.parent, work=work, say=say)
    unhydrated = {name: rows[-1]["activation"]["why"] for name, rows in samples.items() if "activation" in rows[-1] and not rows[-1]["activation"]["hydrated"]}
    if unhydrated or not measured["activation"]["hydrated"]:  # a figure of a case that imported from the tree would say nothing of hydration
        raise BenchError(f"these cases did not hydrate: {unhydrated or {'memory': measured['activation']['why']}}",
                         fix="run `invoke build --force --target local` (the archives and the handler library are built together), then the benchmark again")
    hot_bytes = measured["activation"]["hot_bytes"]
    memory = {**measured["memory"], "hot_set_bytes": hot_bytes, "held_during_init": measured["activation"]["held_bytes"],
              "peak_over_hot_set": round(measured["memory"]["peak_during_activation"] / max(hot_bytes, 1), 3)}
    figures = {}
    for name, rows in samples.items():
        read = rows[-1].get("bytes_read")
        figures[name] = {
            "seconds_median": round(statistics.median(r["seconds"] for r in rows), 3),
            "seconds_all": [round(r["seconds"], 3) for r in rows],
            "prefetch": cases[name][4],
            "compression": (name.split("_")[1] if name.startswith("curve_") and "everything" not in name else "zlib") if cases[name][0] == "handler" else None,
            "archived": ("every file" if "everything" in name else "hot set") if cases[name][0] == "handler" else None,
            "ops": rows[-1].get("ops"),
            "total_ops": rows[-1].get("total_ops"),
            "bytes_read": read,
            "bytes_read_all": [r.get("bytes_read") for r in rows],
            "elastic_read_usd": round(read / 1e9 * ELASTIC_READ_USD_PER_GB, 5) if read is not None else None,
            "torchvision": rows[-1]["torchvision"],
            "hydrated": rows[-1]["activation"]["hydrated"] if "activation" in rows[-1] else None,
        }
    med = {k: v["seconds_median"] for k, v in figures.items()}
    seed_bytes = figures["seed_1ms"]["bytes_read"] or 1
    curve = {name: {"speedup_vs_seed_1ms": round(med["seed_1ms"] / med[name], 2), "bytes_vs_seed": round((figures[name]["bytes_read"] or 0) / seed_bytes, 2)}
             for name in figures if name == "hoist_1ms" or name.startswith("curve_")}
    ratios = {
        "speedup_vs_baseline": round(med["seed_1ms"] / med["hoist_1ms"], 2),
        "bytes_vs_baseline": round((figures["hoist_1ms"]["bytes_read"] or 0) / seed_bytes, 2),
        "latency_penalty": round(med["hoist_1ms"] / med["hoist_0ms"], 2),
        "seed_latency_penalty": round(med["seed_1ms"] / med["seed_0ms"], 2),
        "hoist_1ms_vs_local_disk": round(med["hoist_1ms"] / med["limit_local_disk"], 2),
    }
    shape_doc = _shapes(cfg, tcfg.target, figures, med, snap, pushed, built) if snap and pushed else None
    doc, written = record.write(
        "coldstart", command,
        instrument="bench/latencyfs.py: FUSE passthrough, fixed latency per metadata operation and read, 300 MB/s, NFS-like caching after a fresh mount",
        target=tcfg.target.as_json(),
        runs=runs,
        default_prefetch=default,
        elastic_read_usd_per_gb=ELASTIC_READ_USD_PER_GB,
        figures=figures,
        ratios=ratios,
        curve=curve,
        memory=memory,
        goals={"speedup_at_least_6x": ratios["speedup_vs_baseline"] >= GOALS["speedup"], "bytes_at_most_1.0x_seed": ratios["bytes_vs_baseline"] <= GOALS["bytes"],
               "held_after_init_at_most_5_mb": memory["held_after_init"] <= GOALS["held_after_init_bytes"],
               "peak_at_most_1.1x_hot_set": memory["peak_over_hot_set"] <= GOALS["peak_over_hot_set"],
               **(shape_doc["goals"] if shape_doc else {})},
        **({"shapes": shape_doc} if shape_doc else {}),
    )
    table = Table(title=f"coldstart: init (path, import torch + PIL, load the model), median of {runs}; hoist_* read ahead with {default!r}", title_justify="left")
    for col in ("", "seconds", "vs seed 1 ms", "fs operations", "bytes read", "Elastic read $ / cold start"):
        table.add_column(col, justify="right" if col else "left")
    for name, f in figures.items():
        table.add_row(name, f"{f['seconds_median']:.2f}", f"{med['seed_1ms'] / f['seconds_median']:.2f}x", f"{f['total_ops']:,}" if f["total_ops"] is not None else "-",
                      f"{f['bytes_read'] / 1e6:,.1f} MB" if f["bytes_read"] is not None else "-", f"{f['elastic_read_usd']:.5f}" if f["elastic_read_usd"] is not None else "-")
    console.print(table)
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    console.print(f"speedup vs seed at 1 ms: {ratios['speedup_vs_baseline']}x (goal >= 6x: {verdict(doc['goals']['speedup_at_least_6x'])}); "
                  f"bytes {ratios['bytes_vs_baseline']}x the seed's (goal <= 1.0x: {verdict(doc['goals']['bytes_at_most_1.0x_seed'])}); "
                  f"latency penalty {ratios['latency_penalty']}x; seed's penalty {ratios['seed_latency_penalty']}x")
    console.print(f"memory (tracemalloc, the activation's own allocations): peak during activation {memory['peak_during_activation'] / 1e6:,.1f} MB, "
                  f"{memory['peak_over_hot_set']}x the hot set's {hot_bytes / 1e6:,.1f} MB (goal <= 1.1x: {verdict(doc['goals']['peak_at_most_1.1x_hot_set'])}); "
                  f"held after init {memory['held_after_init'] / 1e6:,.2f} MB (goal <= 5 MB: {verdict(doc['goals']['held_after_init_at_most_5_mb'])})")
    if shape_doc:
        _print_shapes(console, shape_doc)
    console.print(f"written: {written}")
    return doc


def _sample_event(model_dir: Path) -> bytes:
    """The model folder's sample as the API sends it (validate's smoke test sends the same)."""
    from pipeline import modelfolder
    from validate.stage import classify_event

    found = modelfolder.sample(model_dir)
    if found is None:
        raise BenchError("the model folder has no sample.json: the SnapStart case answers a request with it", where=str(model_dir / "sample.json"),
                         fix='add sample.json ({"image": "sample.png", "label": "<its label>"}) beside an image')
    image, _ = found
    return classify_event(image.read_bytes(), "image/jpeg" if image.suffix.lower() in (".jpg", ".jpeg") else "image/png")


def _shapes(cfg: Config, target, figures: dict, med: dict, snap: dict, pushed: dict, built) -> dict:
    """The three shapes side by side, the goals of issue 24, and the priced table."""
    from deploy.template import rollback_images

    first = snap["restore_to_first_answer_seconds"]
    seconds = {"efs (hot set, 1 ms)": med["hoist_1ms"], "image, tree on local disk": med["limit_local_disk"],
               "image + SnapStart (CRIU, 1 ms)": first}
    tree_bytes = sum(s.bytes for s in built.sets.values())
    table = snapstart.priced(memory_mb=cfg.function.memory_mb, arch="arm64", requests_per_month=1_000_000, cold_start_share=0.01, deploys_per_month=30,
                             versions_cached=rollback_images(cfg),
                             efs={"seconds": med["hoist_1ms"], "bytes_read": figures["hoist_1ms"]["bytes_read"] or 0},
                             image_local={"seconds": med["limit_local_disk"]}, snap={"after_restore_seconds": snap["after_restore_and_answer_seconds"]},
                             tree_bytes=tree_bytes, image_bytes=pushed["image_bytes"])
    sent = pushed["handler_change"]["bytes_pushed"]
    return {
        "seconds": seconds,
        "compared": "efs and local disk: init (path, import torch and PIL, load the model); image + SnapStart: from the start of the restore to the "
                    "first answer (restore, after-restore hooks, one inference): the SnapStart figure includes an inference the others do not",
        "snapstart": snap,
        "handler_push": pushed,
        "priced": table,
        "goals": {"snapstart_first_answer_at_most_0.5x_efs": first <= 0.5 * med["hoist_1ms"], "handler_only_push_at_most_1_mb": sent <= 1 << 20},
        "ratios": {"snapstart_first_answer_vs_efs": round(first / med["hoist_1ms"], 3), "snapstart_first_answer_vs_local_disk": round(first / med["limit_local_disk"], 3)},
    }


def _print_shapes(console: Console, doc: dict) -> None:
    snap, push, priced = doc["snapstart"], doc["handler_push"], doc["priced"]
    console.print("[bold]shapes[/]: time to a working function after a cold start (measured here; SnapStart restored by CRIU, not Lambda)")
    for line in snapstart.bars(doc["seconds"], "s"):
        console.print("  " + line, highlight=False)
    console.print(f"  snapshot {snap['snapshot_bytes'] / 1e6:,.0f} MB ({snap['resident_bytes'] / 1e6:,.0f} MB resident); dumped in {snap['dump_seconds']} s; "
                  f"restored here in {snap['restore_seconds_local']} s (measured, CRIU {snap['criu']}, through the 1 ms mount, {(snap['bytes_read'] or 0) / 1e6:,.0f} MB read); "
                  f"on Lambda about {snap['lambda_restore_seconds_implied']} s ({snap['lambda_restore_basis']})")
    table = Table(title=f"priced (us-east-1 list prices): {priced['assumed']['requests_per_month']:,} requests a month, "
                        f"{priced['assumed']['cold_start_share']:.0%} cold, {priced['assumed']['deploys_per_month']} deploys a month, "
                        f"{priced['assumed']['versions_cached']} versions kept (rollback), {priced['assumed']['memory_mb']} MB {priced['assumed']['arch']}",
                  title_justify="left")
    for col in ("shape", "$ per cold start", "fixed $ per month", "$ per million requests"):
        table.add_column(col, justify="right" if col != "shape" else "left")
    for name, row in priced["shapes"].items():
        table.add_row(name, f"{row['per_cold_start_usd']:.6f}", f"{row['fixed_per_month_usd']:,.2f}", f"{row['per_million_requests_usd']:,.2f}")
    console.print(table)
    for line in snapstart.bars({k: v["per_million_requests_usd"] for k, v in priced["shapes"].items()}, "$ / million requests"):
        console.print("  " + line, highlight=False)
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    console.print(f"image + SnapStart first answer {doc['ratios']['snapstart_first_answer_vs_efs']}x the EFS cold start "
                  f"(goal <= 0.5x: {verdict(doc['goals']['snapstart_first_answer_at_most_0.5x_efs'])}); a handler-only change wrote "
                  f"{', '.join(push['handler_change']['layers_written'])} and pushed {push['handler_change']['bytes_pushed']:,} bytes "
                  f"(goal <= 1 MB: {verdict(doc['goals']['handler_only_push_at_most_1_mb'])})")
