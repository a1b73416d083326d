"""How a validation report is shown (rich); the report itself is data."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from pipeline.console import counted
from pipeline.targets import init_report

from .checks import SmokeResult, ValidationReport

STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}
LOG_LINES = 25  # of a failed smoke test's function log


def init_breakdown(smoke: SmokeResult) -> list[str]:
    """Where the smoke test's init went: the handler's module (activation within it), the other modules, what stayed held."""
    if smoke.init_ms is None or smoke.status != "ok" or smoke.snapstart is not None:  # an image's smoke test imports no module by module
        return []
    a = smoke.activation
    others = sum((smoke.import_ms or {}).values())
    parts = [f"the handler module {a['handler_ms'] / 1000:.2f} s (activation within it)"] if a and a.get("handler_ms") is not None else []
    parts.append(f"{'then ' if parts else ''}the other top-level modules {others / 1000:.2f} s")
    lines = ["where the init went: " + ", ".join(parts)]
    if a is None:
        lines.append("activation: not through hoist_lambda.activate (nothing reported)")
    elif a.get("hydrated"):
        held = a.get("held_after_init")
        lines.append(f"activation {a['ms'] / 1000:.2f} s: hydrated, {a['hot_files']:,} hot files ({a['hot_bytes'] / 1e6:,.1f} MB) from memory "
                     f"({a['held_bytes'] / 1e6:,.1f} MB held during init), "
                     f"read-ahead {a['prefetch']}; held after init: " + (f"{held / 1e6:,.1f} MB" if held is not None else "?"))
    else:
        lines.append(f"activation {a['ms'] / 1000:.2f} s: not hydrated ({a.get('why') or 'no tree'})")
    return lines


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
    smoke = report.smoke
    if not smoke or not smoke.run:
        console.print(f"  [yellow]smoke test not run:[/] {escape(smoke.why if smoke and smoke.why is not None else 'not requested')}")
    else:
        if smoke.level == 1 or (smoke.level == 3 and not smoke.image):
            where = f"CPython {smoke.python}" + (f" in a chroot of {smoke.root}" if smoke.root else "")
        else:
            where = f"image {smoke.image}"
        verdict = "[green]passed[/]" if smoke.ok else "[bold red]failed[/]"
        on = f" on {smoke.machine}" + (" (emulated)" if smoke.emulated else "") if smoke.machine else ""
        init, _ = init_report(smoke.init_ms, emulated=bool(smoke.emulated))
        imported = f"imported {counted(len(smoke.modules), 'module')}, " if smoke.snapstart is None else ""  # the image's own smoke test runs its handler only
        console.print(f"  smoke test level {smoke.level}{escape(on)} ({escape(where)}): {verdict}, {imported}{escape(init)}")
        if smoke.distance:
            console.print(f"    distance from Lambda: {escape(smoke.distance)}")
        for line in init_breakdown(smoke):
            console.print(f"    {escape(line)}")
        if smoke.report:
            console.print(f"    {escape(smoke.report)}")
        if smoke.snapstart:  # the image shape (validate/image.py)
            snap = smoke.snapstart
            hooks = (snap.get("hooks") or {}).get("ms") or {}
            kind = "emulated (QEMU): not Lambda's figures" if snap.get("emulated") else "measured here, not on Lambda"
            console.print(f"    SnapStart {'on' if snap.get('snapstart') else 'off'}: init to snapshot {snap.get('init_to_snapshot_ms', '-')} ms, "
                          f"restore to first answer {snap.get('restore_to_first_answer_ms', '-')} ms; hooks: "
                          + (", ".join(f"{k} {v} ms" for k, v in hooks.items()) or "not reported by the handler") + f" ({kind})")
        if smoke.sample_expected is not None:
            console.print(f"    sample: {escape(str(smoke.sample_label))} (expected {escape(smoke.sample_expected)})")
        for skipped in smoke.skipped_levels or ():
            console.print(f"    level {skipped.level} not run: {escape(skipped.why or '')}")
        if not smoke.ok and smoke.log_tail:
            lines = smoke.log_tail.rstrip("\n").splitlines()
            error = max((i for i, line in enumerate(lines) if "[ERROR]" in line), default=None)  # the runtime client's error line, then its traceback
            if error is not None:
                lines = lines[error:error + LOG_LINES]
                console.print(f"    the function's log, from its error ({counted(len(lines), 'line')}):")
            else:
                lines = lines[-LOG_LINES:]
                console.print(f"    the function's log, its last {counted(len(lines), 'line')}:")
            for line in lines:
                console.print(f"      [dim]{escape(line)}[/]", highlight=False)
    counts = {s: sum(1 for f in report.findings if f.severity == s) for s in ("error", "warning", "info")}
    if not report.ok:
        verdict = "[bold red]FAILED[/]" + (" (the static checks above; the smoke test passed)" if smoke and smoke.run and smoke.ok else "")
    elif smoke and smoke.run:
        verdict = f"[bold green]passed (static checks and smoke test level {smoke.level}{escape(' on ' + smoke.machine if smoke.machine else '')})[/]"
    else:
        verdict = "[bold green]static checks passed; smoke test not run[/]"
    console.print(f"{verdict}: " + ", ".join(f"{n} {word}{'' if n == 1 else 's'}" for n, word in
                                            ((counts["error"], "error"), (counts["warning"], "warning"), (counts["info"], "note"))))
