"""How deploy plans and results are shown: rich tables, kept out of the stage."""
from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.console import ConsoleProgress as StepsProgress
from pipeline.console import human

from .stage import DeployPlan, DeployResult, TeardownPlan

ACTION_STYLE = {"Add": "green", "Modify": "yellow", "Remove": "red", "Import": "cyan"}


class ConsoleProgress(StepsProgress):
    """The build's progress lines (every line shown), plus stack events as they come."""

    def __init__(self, console: Console):
        super().__init__(console, verbose=True)

    def event(self, ev: dict) -> None:
        status = ev.get("ResourceStatus", "")
        style = "red" if "FAILED" in status or "ROLLBACK" in status else "green" if status.endswith("_COMPLETE") else "dim"
        when = ev.get("Timestamp")
        stamp = when.strftime("%H:%M:%S") if when is not None and hasattr(when, "strftime") else ""
        reason = f"  {ev['ResourceStatusReason']}" if ev.get("ResourceStatusReason") and style != "green" else ""
        self.console.print(f"    {stamp} [{style}]{escape(status):<28}[/] {escape(ev.get('LogicalResourceId', ''))} ({escape(ev.get('ResourceType', ''))}){escape(reason)}")


def print_plan(console: Console, plan: DeployPlan) -> None:
    if plan.artifacts:
        for u in plan.artifacts.uploads:
            state = "in the bucket" if u.present else ("uploaded" if u.name in plan.uploaded else "to upload" if u.present is False else "to upload (bucket not checked)")
            console.print(f"  {u.name:<22} {human(u.bytes):>9}  s3://{plan.artifacts.bucket}/{u.key}  [dim]{state}[/]")
    if plan.sync:
        s = plan.sync
        verb = "synced" if s.done else ("up to date" if s.action == "up-to-date" else f"to sync ({s.action})")
        console.print(f"  EFS version {s.version[:16]}  {s.files:,} files, {human(s.bytes)} via {s.method} -> {escape(s.where)}  [dim]{verb}[/]")
    if plan.image:  # the image shape: pushed at apply, before the change set runs
        i = plan.image
        where = i.repository or "the stack's repository (not created yet)"
        state = f"in the registry ({i.digest[:19]})" if i.digest else "to push at apply (the function is pinned by the digest the push reports)"
        console.print(f"  image {i.tag}  {human(i.record.bytes)} unpacked, {len(i.record.layers)} layers -> {escape(where)}  [dim]{state}[/]")
    cs = plan.change_set
    if cs.change_set_type == "offline":
        import json

        table = Table("resource", "type", title=f"template for stack {plan.stack_name}: rendered and linted; no change set (no AWS credentials)", title_justify="left")
        for logical, resource in sorted(json.loads(plan.template_path.read_text())["Resources"].items()):
            table.add_row(logical, resource["Type"])
        console.print(table)
    elif cs.empty:
        console.print(f"[bold]plan[/] for stack {plan.stack_name}: no changes")
    else:
        table = Table("action", "resource", "type", "replacement", "changes", title=f"plan for stack {plan.stack_name} ({cs.change_set_type})", title_justify="left")
        for c in cs.changes:
            style = "red" if c.replacement == "True" else ACTION_STYLE.get(c.action, "")
            table.add_row(f"[{style}]{c.action}[/]" if style else c.action, c.logical_id, c.resource_type,
                          f"[red]{c.replacement}[/]" if c.replacement == "True" else c.replacement, ", ".join(c.details))
        console.print(table)
    if plan.untested:
        console.print(f"  version {plan.untested} is published but not live (it failed its test, or a rollback moved the alias away): "
                      f"it is tested directly again before alias live moves from {plan.live_version}")
    elif plan.live_version:
        console.print(f"  alias live is on version {plan.live_version} now and stays there until the release's version passes its own test")
    for w in plan.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    console.print(f"  template: {plan.template_path}")
    if plan.unchecked:
        console.print("[yellow]not checked offline[/] (no AWS credentials):" if cs.change_set_type == "offline" else "[yellow]not checked[/]:")
        for item in plan.unchecked:
            console.print(f"  - {escape(item)}")


def print_result(console: Console, result: DeployResult) -> None:
    outputs = result.state.outputs
    for key in ("ApiUrl", "FunctionName", "FunctionVersion", "EfsVersion", "FileSystemId", "AccessPointArn"):
        if key in outputs:
            console.print(f"  {key:<16} {outputs[key]}")
    for note in result.notes:
        console.print(f"  note: {escape(note)}")
    for what, check in (("version test", result.version_test), ("smoke test", result.smoke)):
        if check:
            colour = "green" if check.ok else "red"
            console.print(f"  {what}: [{colour}]{'passed' if check.ok else 'FAILED'}[/] ({escape(check.message)}, {check.seconds:.1f} s)")
    if result.live:
        console.print(f"  alias live is on version {result.live}")
    if result.rolled_back_to:
        console.print(f"  [red]rolled back[/]: alias live points at version {result.rolled_back_to} again")
    if result.record:
        console.print(f"  record: {result.record}")


def print_teardown(console: Console, plan: TeardownPlan) -> None:
    table = Table("", "resource", "type", "physical id", title=f"teardown of stack {plan.stack} ({plan.state.status})", title_justify="left")
    for logical, kind, physical in plan.removed:
        table.add_row("[red]delete[/]", logical, kind, physical)
    for logical, kind, physical in plan.retained:
        if kind == "AWS::EFS::FileSystem":
            what = "[red]delete (--delete-data)[/]" if plan.delete_data else "[green]keep[/] (its data; --delete-data removes it)"
        else:
            what = "[red]delete[/] (retained by the stack, removed after it)"
        table.add_row(what, logical, kind, physical)
    console.print(table)
