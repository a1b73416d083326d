"""How a validation report is shown (rich); the report itself is data."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from .checks import ValidationReport

STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def print_report(console: Console, report: ValidationReport, show_info: bool = True) -> None:
    console.print(f"[bold]validate[/] for {escape(report.target.describe())}")
    for t in report.trees:
        console.print(f"  {escape(t.name)}: {t.bytes / 1e6:,.1f} MB, {t.files:,} files, {t.elf_files} ELF files ({escape(t.path)})")
    for f in report.findings:
        if f.severity == "info" and not show_info:
            continue
        pkg = f" ({escape(f.package)})" if f.package else ""
        console.print(f"[{STYLE[f.severity]}]{f.severity}[/] {f.rule}: {escape(f.file or '')}{pkg}")
        console.print(f"    {escape(f.message)}")
        if f.fix:
            console.print(f"    [green]fix:[/] {escape(f.fix)}")
    smoke = report.smoke or {}
    if not smoke.get("run"):
        console.print(f"  [yellow]smoke test not run:[/] {escape(smoke.get('why', 'not requested'))}")
    else:
        where = f"CPython {smoke.get('python')}" if smoke["level"] == 1 else f"image {smoke.get('image')}"
        verdict = "[green]passed[/]" if smoke.get("ok") else "[bold red]failed[/]"
        console.print(f"  smoke test level {smoke['level']} ({escape(where)}): {verdict}, imported {len(smoke.get('modules', []))} modules, init {smoke.get('init_ms')} ms")
        if smoke.get("report"):
            console.print(f"    {escape(smoke['report'])}")
        for skipped in smoke.get("skipped_levels", []):
            console.print(f"    level {skipped['level']} not run: {escape(skipped['why'])}")
    counts = {s: sum(1 for f in report.findings if f.severity == s) for s in ("error", "warning", "info")}
    passed = "passed (static checks and smoke test)" if smoke.get("run") else "static checks passed; smoke test not run"
    verdict = f"[bold green]{passed}[/]" if report.ok else "[bold red]FAILED[/]"
    console.print(f"{verdict}: {counts['error']} errors, {counts['warning']} warnings, {counts['info']} notes")
