"""Hoist: run PyTorch models on AWS Lambda with the heavy packages on EFS.

Tasks only parse options, call one stage function and print its result.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from invoke import Collection, Exit, task
from rich.console import Console

from pipeline import config as config_mod
from pipeline.errors import PipelineError

# logs (CI, pipes) get wide lines instead of rich's 80-column default
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)

CONFIG_HELP = "pipeline file (default: pipeline.toml)"
TARGET_HELP = "target from pipeline.toml [targets.*] (default: default_target)"


def _load(path):
    return config_mod.load(path or "pipeline.toml")


def _fail(err: PipelineError):
    raise Exit(f"error: {err}", code=1)


@task(help={"config": CONFIG_HELP, "target": TARGET_HELP, "force": "resolve again even if the locks are current"})
def lock(c, config=None, target=None, force=False):
    """Resolve the dependency sets for the target into hash-pinned locks."""
    from builder.lock import lock as do_lock
    from builder.report import print_lock

    try:
        cfg = _load(config)
        console.print(f"[bold cyan]==>[/] resolving {', '.join(cfg.sets)} for {cfg.target(target).target.describe()}")
        result = do_lock(cfg, target, force=force)
    except PipelineError as err:
        _fail(err)
    print_lock(console, result)


@task(
    help={
        "config": CONFIG_HELP,
        "target": TARGET_HELP,
        "force": "rebuild even if a set's lock and inputs are unchanged",
        "verbose": "show every line the tools print",
        "builder": "native (cross-platform wheels), docker (in the Lambda base image) or auto (docker when usable); default: build.builder",
    }
)
def build(c, config=None, target=None, force=False, verbose=False, builder=None):
    """Install the locks into slim, precompiled trees; write manifests, zips, dist/build.json."""
    from builder.build import build as do_build
    from builder.report import ConsoleProgress, print_build

    try:
        result = do_build(_load(config), target, force=force, progress=ConsoleProgress(console, verbose), builder=builder)
    except PipelineError as err:
        _fail(err)
    print_build(console, result)


def _not_yet(what: str, issue: str):
    raise Exit(f"error: `invoke {what}` is not built yet ({issue}); nothing was done.", code=2)


@task(
    help={
        "config": CONFIG_HELP,
        "target": TARGET_HELP + "; validates its last build (dist/build.json)",
        "tree": "validate this folder instead of the last build (any site-packages tree)",
        "runtime": "with --tree: Lambda runtime, e.g. python3.13",
        "arch": "with --tree: x86_64 or arm64",
        "layer": "with --tree: the folder is a layer, so it counts toward the 250 MB limit",
        "json": "also write the report as JSON to this path (for CI)",
        "smoke": "smoke test level: auto (1 when this machine runs the target, else 2), 1 (local interpreter), 2 (Lambda base image in Docker), none",
        "image": "level 2: the base image (default public.ecr.aws/lambda/python:<ver>-<arch>)",
    }
)
def validate(c, config=None, target=None, tree=None, runtime=None, arch=None, layer=False, json=None, smoke=None, image=None):
    """Check trees for Lambda (ELF, glibc, libraries, ABI, sizes, CUDA), then smoke-test them."""
    from validate.report import print_report
    from validate.stage import from_build, from_tree

    try:
        if tree:
            if not (runtime and arch):
                raise Exit("error: --tree needs --runtime and --arch (e.g. --runtime python3.13 --arch arm64)", code=1)
            report = from_tree(Path(tree), runtime, arch, layer=layer, smoke_level=smoke or "none", image=image)
        else:
            report = from_build(_load(config), target, smoke_level=smoke or "auto", image=image)
    except PipelineError as err:
        _fail(err)
    print_report(console, report)
    if json:
        report.write_json(Path(json))
        console.print(f"report: {json}")
    if not report.ok:
        raise Exit(code=1)


@task(
    name="sync-efs",
    help={
        "config": CONFIG_HELP,
        "target": TARGET_HELP + "; syncs the EFS set of its last build",
        "method": "local, bastion or datasync (default: sync.method)",
        "dry_run": "show the plan, transfer nothing",
    },
)
def sync_efs(c, config=None, target=None, method=None, dry_run=False):
    """Put the built EFS tree on EFS as a new immutable, verified version."""
    from sync import stage

    try:
        cfg = _load(config)
        if (method or cfg.sync.method) == "datasync":
            plan, aws = stage.datasync_plan(cfg, target)
            console.print(f"[bold]sync-efs[/] {plan.version[:16]} through DataSync: {plan.where}")
            console.print(f"  action: {plan.action}; upload {len(plan.upload):,} files ({plan.upload_bytes / 1e6:,.1f} MB), copy {len(plan.copy):,} inside S3, {plan.present:,} already staged")
            if dry_run or plan.action == "up-to-date":
                return
            done = stage.datasync_apply(plan, aws, cfg, on_line=lambda line: console.print(f"    [dim]{line}[/]", highlight=False))
            console.print(f"published {plan.efs_dir}: {done['bytes'] / 1e6:,.2f} MB uploaded, verified by DataSync, marker written")
            return
        plan, remote = stage.plan(cfg, target, method)
        console.print(f"[bold]sync-efs[/] {plan.version[:16]} ({plan.files:,} files, {plan.bytes / 1e6:,.1f} MB) -> {plan.where}:{plan.dest}")
        console.print(f"  action: {plan.action}" + (f"; unchanged files become hard links into {len(plan.link_dests)} earlier version(s)" if plan.link_dests and plan.action != "up-to-date" else ""))
        if dry_run or plan.action == "up-to-date":
            return
        result = stage.apply(plan, remote, cfg, on_line=_progress_line)
    except PipelineError as err:
        _fail(err)
    console.print(f"published {plan.dest}: {result.bytes_sent / 1e6:,.2f} MB sent in {result.seconds:.1f} s, verified against the manifest"
                  + (f" ({result.repaired} files repaired by checksum)" if result.repaired else ""))


def _progress_line(line: str):
    if "%" in line or "retrying" in line or "differ" in line:
        console.print(f"    [dim]{line}[/]", highlight=False)


@task(
    name="efs-gc",
    help={
        "config": CONFIG_HELP,
        "keep": "newest complete versions to keep (default: sync.keep)",
        "protect": "comma-separated version hashes (or prefixes) to keep, e.g. the deployed one",
        "method": "local or bastion (default: sync.method)",
        "yes": "remove without asking",
        "dry_run": "show what would be removed, remove nothing",
    },
)
def efs_gc(c, config=None, keep=None, protect="", method=None, yes=False, dry_run=False):
    """Remove EFS versions that are neither recent nor protected (shows them first)."""
    from sync import stage

    try:
        cfg = _load(config)
        plan, remote = stage.gc_plan(cfg, int(keep) if keep else None, {p.strip() for p in protect.split(",") if p.strip()}, method)
        for v in plan.keep:
            console.print(f"  keep    {v.name[:16]} {'complete' if v.complete else 'being written'}")
        for v in plan.remove:
            console.print(f"  [red]remove[/]  {v.name[:16]} {'complete' if v.complete else 'unfinished, stale'}")
        if not plan.remove or dry_run:
            console.print("nothing to remove" if not plan.remove else "dry run: nothing removed")
            return
        if not yes and input(f"remove {len(plan.remove)} version(s) from {plan.where}:{plan.base}? [y/N] ").strip().lower() != "y":
            raise Exit("nothing removed", code=1)
        removed = stage.gc_apply(plan, remote)
    except PipelineError as err:
        _fail(err)
    console.print(f"removed {len(removed)} version(s)")


@task
def deploy(c):
    """Ship handler, layer and HTTP API with CloudFormation - not built yet."""
    _not_yet("deploy", "the deploy issue")


@task(help={"config": CONFIG_HELP, "target": "target whose tree to serve (default: the default target if it runs here, else `local`)", "port": "port on 127.0.0.1 (default 8000; 0 picks a free one)"})
def serve(c, config=None, target=None, port=8000):
    """Serve the handler locally behind an API Gateway emulator (Ctrl-C stops)."""
    import time

    from runtime.serve import start

    try:
        server = start(_load(config), target, int(port), on_line=lambda line: console.print(f"    [dim]{line}[/]", highlight=False))
    except PipelineError as err:
        _fail(err)
    console.print(f"serving on [bold]{server.url}[/]: POST /classify (image/png, image/jpeg or JSON), GET /health, and a page at /")
    try:
        while server.function.proc.poll() is None:
            time.sleep(0.5)
        raise Exit(f"error: the handler process exited:\n{server.function.log_tail()}", code=1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@task(help={"name": "benchmark to run: build, sync, serve or coldstart", "config": CONFIG_HELP, "target": TARGET_HELP, "runs": "timed runs of each side (median is reported)"})
def bench(c, name, config=None, target=None, runs=1):
    """Run a benchmark; print a table and write bench/results/<name>.json."""
    from bench import registry

    if name not in registry.BENCHMARKS:
        raise Exit(f"error: no benchmark {name!r}; available: {', '.join(registry.BENCHMARKS)}", code=1)
    try:
        registry.BENCHMARKS[name](_load(config), target=target, runs=int(runs), console=console, command=" ".join(["invoke", *sys.argv[1:]]))
    except PipelineError as err:
        _fail(err)


# what the component tests start themselves, by the command that shows it is there
SYSTEM_PACKAGES = {"dockerd": "docker.io", "sshd": "openssh-server", "rsync": "rsync", "chromium": "chromium", "chromedriver": "chromium-driver", "gcc": "gcc"}


def _missing_system_packages() -> list[str]:
    import ctypes.util
    import shutil

    missing = {pkg for cmd, pkg in SYSTEM_PACKAGES.items() if not (shutil.which(cmd) or Path("/usr/sbin", cmd).exists())}
    if not ctypes.util.find_library("fuse"):  # fusepy (the cold-start instrument) loads libfuse.so.2
        missing.add("libfuse2")
    return sorted(missing)


@task(help={"markers": "pytest -m expression (default: all tests)", "k": "pytest -k expression", "verbose": "pytest -v",
            "no_system": "do not apt-get install the system packages the component tests need"})
def test(c, markers="", k="", verbose=False, no_system=False):
    """Run the test suite (all markers: docker, sshd, moto, network, slow)."""
    import os

    missing = [] if no_system else _missing_system_packages()
    if missing:
        if os.geteuid() != 0 or not Path("/usr/bin/apt-get").exists():
            raise Exit(f"error: the component tests need {' '.join(missing)}: install them (apt-get install {' '.join(missing)}) or pass --no-system and -m to deselect", code=1)
        console.print(f"[bold cyan]==>[/] installing what the component tests start: {' '.join(missing)}")
        c.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq " + " ".join(missing) + " >/dev/null", pty=False)
    args = [sys.executable, "-m", "pytest", "-ra"]
    if markers:
        args += ["-m", markers]
    if k:
        args += ["-k", k]
    if verbose:
        args.append("-v")
    result = c.run(shlex.join(args), pty=False, warn=True, env={"PYTHONDONTWRITEBYTECODE": "1"})
    if result.exited != 0:
        raise Exit(code=result.exited)


ns = Collection(lock, build, validate, sync_efs, efs_gc, deploy, serve, bench, test)
ns.configure({"run": {"echo": True}})
