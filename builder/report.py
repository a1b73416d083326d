"""How build and lock results are shown: rich tables, kept out of the stages."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.console import ConsoleProgress, counted, human

from .build import BuildResult
from .lock import LockResult

__all__ = ["ConsoleProgress", "human", "print_build", "print_lock"]


def print_lock(console: Console, result: LockResult) -> None:
    verb = "resolved" if result.resolved else "already current (use --force to resolve again)"
    console.print(f"[bold]lock[/] for {result.target.describe()}: {verb}")
    for why in result.released:
        console.print(f"  [yellow]previous pins let go:[/] {why}")
    if result.resolved and result.first:
        console.print(f"  new lock: {counted(sum(len(lf.packages) for lf in result.locks.values()), 'package')} (no earlier lock of this target)")
    elif result.resolved and result.changes:
        console.print(f"  changed: {'; '.join(result.changes)}")
    elif result.resolved:
        console.print("  changed: nothing (the same versions as before)")
    table = Table("set", "package", "version", "wheel")
    for name, lf in result.locks.items():
        for p in lf.packages:
            table.add_row(name, p.name, p.version, p.filename)
    console.print(table)
    for name, lf in result.locks.items():
        console.print(f"  {name}: {lf.path} ({counted(len(lf.packages), 'package')})")


def print_build(console: Console, result: BuildResult, top: int = 12) -> None:
    for name, s in result.sets.items():
        table = Table(title=f"{name}: {human(s.bytes)} in {s.files:,} files", title_justify="left")  # the hash below: a title wraps at the table's width
        table.add_column("package")
        table.add_column("bytes", justify="right")
        table.add_column("files", justify="right")
        for pkg, b, n in s.packages[:top]:
            table.add_row(pkg, human(b), f"{n:,}")
        if len(s.packages) > top:
            rest = s.packages[top:]
            table.add_row(f"({len(rest)} more)", human(sum(x[1] for x in rest)), f"{sum(x[2] for x in rest):,}")
        console.print(table)
        console.print(f"  content hash {s.content_hash[:16]}" + ("" if s.rebuilt else " (up to date, not rebuilt)"))
        slim = s.slim
        removed = ", ".join(f"{r.name} {r.files:,} files/{human(r.bytes)}" for r in slim.rules if r.files)
        strip = slim.strip
        console.print(f"  slimmed: {removed or 'nothing'}; stripped {strip.files} files ({human(strip.bytes)})")
        for path, why in strip.reverted:
            console.print(f"  [yellow]not stripped[/] {path}: {why}")
        for folder, importer in slim.guarded:
            console.print(f"  kept {folder}: imported by {importer}")
        for kept, needer in slim.kept_beside:
            console.print(f"  kept {kept}: read by {needer}")
        check = slim.import_check
        if check and check.verified and check.runtime:
            console.print(f"  import-checked: {counted(check.modules, 'module')} in {check.runtime}, {len(check.restored)} restored")
        elif check and not check.verified:
            console.print("  [yellow]slimming not import-verified[/] (see warning below)")
        if name == "efs" and check is not None:  # the set the handler hydrates (builder/archives.py)
            if check.opened is not None:
                pages = sum(length for ranges in (check.touched or {}).values() for _, length in ranges)
                touched = f"; {human(pages)} of library pages to read ahead" if check.touched else "; no library pages recorded (read ahead: relocs)"
                console.print(f"  hot set: `import {', '.join(check.hot_modules)}` opened {len(check.opened):,} files; the archives hold them"
                              f" and the sources of their bytecode (what the handler counts as hot files){touched}")
            else:
                console.print("  [yellow]no hot set[/]: the import check did not run, so the archives hold every file and a cold start keeps them all in memory")
        bc = s.bytecode
        if bc.compiled:
            console.print(f"  bytecode: {bc.files:,} .pyc by CPython {bc.python} (unchecked-hash), {len(bc.failed)} sources not compilable")
        else:
            console.print("  [yellow]bytecode: none[/] (see warning below)")
        console.print(f"  {'built' if s.rebuilt else 'unchanged'}: {s.tree}")
    for label, art in (("layer zip", result.layer_zip), ("function zip", result.function_zip)):
        if art:
            console.print(f"{label}: {art.path} {human(art.bytes)} (unzipped {human(art.unzipped_bytes)}), sha256 {art.sha256[:16]}")
    counts = result.cache
    if counts.hits or counts.misses:
        names = {"pyc": ("bytecode file", None), "strip": ("stripped library", "stripped libraries"), "check": ("import check", None),
                 "unit": ("import run", None), "archive": ("archive", None)}
        reused = ", ".join(counted(n, *names.get(k, (k, k))) for k, n in sorted(counts.hits.items())) or "nothing"
        done = ", ".join(counted(n, *names.get(k, (k, k))) for k, n in sorted(counts.misses.items())) or "nothing"
        console.print(f"build cache: reused {reused}; made and stored {done}" + (f"; {len(counts.damaged)} damaged entries removed and redone" if counts.damaged else "")
                      + " (`invoke cache` shows where and how big)")
    image = result.record.image
    if image:  # the image shape (pipeline/shapes.py)
        console.print(f"image: {image.tag} ({image.platform}, {human(image.bytes)} unpacked), config {image.config_digest[:19]}, FROM {image.base}")
        for name, diff_id, size in image.layers:
            state = "written" if name in image.written else "kept" if not name.startswith("base-") else "base"
            console.print(f"  layer {name:<8} {human(size):>10}  {diff_id[:19]}  {state}")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    console.print(f"summary: {result.build_json}")
