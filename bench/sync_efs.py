"""`invoke bench sync`: how much sync-efs moves, and how fast, on the demo tree.

Measured with the `local` transport (rsync into a folder standing in for the
mount): the same rsync command and flags the bastion uses, without the network.

- first: publish the Hoist tree into an empty EFS folder, against a plain
  `rsync -a` of the naive tree (what copying a `pip install -t` folder costs);
- unchanged: sync the same build again;
- one package changed: a copy of the tree in which every file of one package
  changed, published as a new version next to the first; numpy (46 MB, a
  typical upgrade) and filelock (1 MB, to show the fixed cost of a version:
  its manifest and rsync's file list, about 2 MB for this tree).
Goals (EFS sync issue): unchanged < 1 MB moved; one package changed <= 1.1x
that package's bytes (checked on numpy; the small package shows the overhead).
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from builder import manifest as mf
from builder.archives import write_archives
from builder.build import build
from pipeline.config import Config
from pipeline.console import human
from pipeline.files import sha256_file
from pipeline.records import ArchiveEntry, load_manifest, manifest_path, write_manifest
from sync.efs import apply_sync, plan_sync
from sync.shell import Remote

from . import record
from .build_size import naive, tree_size

CHANGED_PACKAGES = ("numpy", "filelock")  # the first is checked against the goal


def _variant(tree: Path, manifest: Path, work: Path, package: str) -> tuple[Path, Path, int]:
    """A copy of the tree where every file of one package changed; its own manifest."""
    new_tree = work / f"variant-{package}" / "site-packages"
    shutil.copytree(tree, new_tree, symlinks=True)
    changed = 0
    for path in sorted((new_tree / package).rglob("*")):
        if path.is_file():
            path.write_bytes(path.read_bytes() + b"\n# changed\n" if path.suffix == ".py" else path.read_bytes() + b"\0")
            changed += path.stat().st_size
    files = mf.scan(new_tree)
    mf.stamp_mtimes(new_tree, files)
    index = write_archives(new_tree, new_tree.parent / "archives")  # as the build writes them beside the tree
    variant = dataclasses.replace(load_manifest(manifest).with_files(files, mf.content_hash(files)),
                                  archives=tuple(ArchiveEntry(a["name"], a["sha256"], a["bytes"], a["raw"]) for a in index["archives"]),
                                  archive_index=sha256_file(new_tree.parent / "archives" / "index.json"))
    new_manifest = manifest_path(work / f"variant-{package}")
    write_manifest(variant, new_manifest)
    return new_tree, new_manifest, changed


def _rsync_plain(src: Path, dest: Path) -> tuple[float, int]:
    started = time.perf_counter()
    out = subprocess.run(["rsync", "-a", "--stats", f"{src}/", f"{dest}/"], capture_output=True, text=True, check=True).stdout
    sent = next(int(line.split(":")[1].split()[0].replace(",", "")) for line in out.splitlines() if line.startswith("Total bytes sent"))
    return time.perf_counter() - started, sent


def run(cfg: Config, *, target: str | None = None, runs: int = 1, console: Console | None = None, command: str = "invoke bench sync") -> dict:
    console = console or Console()
    console.print("[bold cyan]==>[/] invoke build (reused when current)")
    result = build(cfg, target)
    efs = result.sets["efs"]
    remote = Remote()
    with tempfile.TemporaryDirectory(prefix="hoist-bench-sync-", dir=cfg.root) as tmp:
        work = Path(tmp)
        console.print("[bold cyan]==>[/] naive tree for the plain rsync baseline (not timed)")
        naive(cfg, target, work / "naive")
        plain_s, plain_bytes = _rsync_plain(work / "naive", work / "plain-dest")

        root = str(work / "efs")
        console.print("[bold cyan]==>[/] first sync of the Hoist tree")
        plan = plan_sync(remote, root, efs.tree, efs.manifest)
        first = apply_sync(plan, remote)
        console.print("[bold cyan]==>[/] the same build again")
        again_plan = plan_sync(remote, root, efs.tree, efs.manifest)
        again = apply_sync(again_plan, remote)
        variants = {}
        for package in CHANGED_PACKAGES:
            console.print(f"[bold cyan]==>[/] a new version with {package} changed")
            v_tree, v_manifest, changed_bytes = _variant(efs.tree, efs.manifest, work, package)
            done = apply_sync(plan_sync(remote, root, v_tree, v_manifest), remote)
            variants[package] = {"package_bytes": changed_bytes, "bytes_sent": done.bytes_sent, "seconds": round(done.seconds, 2),
                                 "ratio": round(done.bytes_sent / changed_bytes, 3), "overhead_bytes": done.bytes_sent - changed_bytes}
        naive_bytes, naive_files = tree_size(work / "naive")

    doc, written = record.write(
        "sync", command,
        transport="local (rsync into a folder; the bastion runs the same rsync over ssh)",
        figures={
            "plain_rsync_naive": {"seconds": round(plain_s, 2), "bytes_sent": plain_bytes, "tree_bytes": naive_bytes, "files": naive_files},
            "first_sync": {"seconds": round(first.seconds, 2), "bytes_sent": first.bytes_sent, "tree_bytes": efs.bytes, "files": efs.files},
            "unchanged_resync": {"seconds": round(again.seconds, 2), "bytes_sent": again.bytes_sent, "action": again_plan.action},
            "one_package_changed": variants,
        },
        ratios={
            "first_sync_time_vs_plain_rsync": round(first.seconds / plain_s, 3),
            "changed_bytes_sent_vs_package_bytes": {p: v["ratio"] for p, v in variants.items()},
        },
        goals={"unchanged_under_1_MB": again.bytes_sent < 1_000_000, "changed_at_most_1.1x": variants[CHANGED_PACKAGES[0]]["ratio"] <= 1.1},
    )

    table = Table(title="sync: demo tree, local transport", title_justify="left")
    for col in ("", "seconds", "bytes sent", "note"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row("plain rsync -a, naive tree", f"{plain_s:.1f}", human(plain_bytes), f"{naive_files:,} files")
    table.add_row("sync-efs, first version", f"{first.seconds:.1f}", human(first.bytes_sent), f"{doc['ratios']['first_sync_time_vs_plain_rsync']:.2f}x the plain rsync's time")
    table.add_row("sync-efs, unchanged", f"{again.seconds:.1f}", human(again.bytes_sent), f"{again_plan.action}; goal < 1 MB {'ok' if doc['goals']['unchanged_under_1_MB'] else 'MISSED'}")
    for i, (package, v) in enumerate(variants.items()):
        goal = f"; goal <= 1.1x {'ok' if v['ratio'] <= 1.1 else 'MISSED'}" if i == 0 else f"; fixed cost of a version {human(v['overhead_bytes'])}"
        table.add_row(f"sync-efs, {package} changed", f"{v['seconds']:.1f}", human(v["bytes_sent"]), f"{v['ratio']:.2f}x its {human(v['package_bytes'])}{goal}")
    console.print(table)
    console.print(f"written: {written}")
    return doc

