"""The smoke test: import every top-level module of each set, then invoke the
handler with a real API Gateway event, through the real ``awslambdaric`` client
and the Runtime API emulator (runtime/).

Level 1 runs a local interpreter of the target's Python version, when this
machine has the target's CPU. Level 2 runs a container of the Lambda base
image (foreign CPUs through qemu binfmt). Level 3 runs a stand-in image made
of a Debian root holding the target's CPython for the target's CPU
(pipeline/emulation.py), under QEMU when the CPU is foreign. A level that
cannot run says why and what to install; nothing is reported as passed that
did not run. Each result says how far it is from Lambda ("distance").
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline import docker, emulation
from pipeline.dists import top_level_modules
from pipeline.errors import CommandError, InterpreterNotFound, ValidationError
from pipeline.interpreters import find_python
from pipeline.targets import Target, init_report
from runtime.emulator import RuntimeAPI
from runtime.function import FunctionProcess, FunctionSpec, Layout, lambda_environment, local_command, runtime_client

from .checks import LOG_BELOW, Finding, SmokeAnswer, SmokeResult

EVENT = Path(__file__).resolve().parent.parent / "runtime" / "events" / "http_api_health.json"
# not meant to be imported: setuptools' import hook and a console script module
SKIP_MODULES = {"_distutils_hack", "isympy", "distutils-precedence"}
WRAPPER = "hoist_smoke"
WRAPPER_SOURCE = '''\
"""Written by `invoke validate`: import every top-level module, then call the real handler."""
import importlib
import json
import os
import sys
import time

_module, _, _function = os.environ["HOIST_REAL_HANDLER"].rpartition(".")
_t = time.perf_counter()
_real = getattr(importlib.import_module(_module), _function)  # the handler puts the EFS tree on sys.path
HANDLER_MS = round((time.perf_counter() - _t) * 1000, 1)
_activate = sys.modules.get("hoist_lambda.activate")  # what activation did, when the handler activated through Hoist's library
ACTIVATION = _activate.report() if _activate is not None and hasattr(_activate, "report") else None
IMPORT_MS = {}
_failed = {}
for _name in json.loads(os.environ["HOIST_SMOKE_MODULES"]):
    _t = time.perf_counter()
    try:
        importlib.import_module(_name)
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, not only the first
        _failed[_name] = f"{type(exc).__name__}: {exc}"
    IMPORT_MS[_name] = round((time.perf_counter() - _t) * 1000, 1)
if _failed:
    raise ImportError("HOIST_IMPORT_FAILURES " + json.dumps(_failed))


def _loaded():
    """Every shared object this process mapped (the loader's view, also under QEMU)."""
    try:
        with open("/proc/self/maps") as fh:
            return sorted({line.split(None, 5)[5].strip() for line in fh if len(line.split(None, 5)) == 6 and ".so" in line})
    except OSError:
        return []


def handler(event, context):
    result = _real(event, context)
    held = _activate.report()["held_now"] if ACTIVATION is not None else None  # after init and the first invocation
    return {"hoist_smoke": {"import_ms": IMPORT_MS, "handler_ms": HANDLER_MS, "activation": ACTIVATION, "held_after_init": held, "loaded": _loaded()},
            "handler_result": result}
'''


@dataclass(frozen=True)
class SmokeInputs:
    handler_dir: Path | None  # None: a plain handler (validating a folder on its own)
    handler: str  # "app.handler"
    trees: dict[str, Path]
    layer_set: str | None
    mount_path: str
    function_name: str
    memory_mb: int
    timeout_s: int
    cache: Path  # where awslambdaric is installed per Python version and CPU
    model_dir: Path | None = None  # the model folder the handler reads (HOIST_MODEL_DIR); None: no model
    events: tuple[bytes, ...] = ()  # more events after GET /health; their payloads land in the result's events
    environment: dict[str, str] = field(default_factory=dict)  # the function's own variables ([function] environment), as deploy and serve set them


def modules_of(trees: dict[str, Path]) -> list[str]:
    return sorted(top_level_modules(*trees.values()) - SKIP_MODULES)


PLAIN_HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'ok'}\n"


def _task_root(inputs: SmokeInputs, workdir: Path) -> Path:
    task = workdir / "task"
    if inputs.handler_dir:
        shutil.copytree(inputs.handler_dir, task, ignore=shutil.ignore_patterns("__pycache__"))
    else:  # a tree checked on its own: a handler that only answers
        task.mkdir()
        (task / "app.py").write_text(PLAIN_HANDLER)
    (task / f"{WRAPPER}.py").write_text(WRAPPER_SOURCE)
    return task


def _spec(inputs: SmokeInputs, target: Target) -> FunctionSpec:
    runtime = target.runtime or f"python{target.python}"
    return FunctionSpec(name=inputs.function_name, runtime=runtime, handler=f"{WRAPPER}.handler", memory_mb=inputs.memory_mb, timeout_s=inputs.timeout_s)


def _env_extra(inputs: SmokeInputs) -> dict[str, str]:
    return {**inputs.environment, "HOIST_REAL_HANDLER": inputs.handler, "HOIST_SMOKE_MODULES": json.dumps(modules_of(inputs.trees))}


def _layer_and_efs(inputs: SmokeInputs) -> tuple[Path | None, Path | None]:
    layer = inputs.trees.get(inputs.layer_set) if inputs.layer_set else None
    efs = next((t for name, t in inputs.trees.items() if name != inputs.layer_set), None)
    return layer, efs


# Lambda's init has its own limit; here the deadline covers a slow CPU too: QEMU
# imports the demo's torch in minutes, where Lambda takes seconds.
INIT_LIMIT_S = 60
EMULATED_INIT_LIMIT_S = 1800
MODEL_MOUNT = "/mnt/hoist-smoke-model"


def _on_host(said: object, inputs: SmokeInputs) -> str:
    """The handler's words (an error's text or document) about its model folder, with the folder as the user knows it,
    not where the smoke test mounts it."""
    text = str(said)
    return text.replace(MODEL_MOUNT, str(inputs.model_dir)) if inputs.model_dir is not None else text


def _import_findings(failed: dict[str, str], where: str, fix_for) -> list[Finding]:
    return [Finding("error", "smoke-import", where, module, f"`import {module}` failed in the runtime: {why}", fix_for(module, why)) for module, why in failed.items()]


def _exercise(fn: FunctionProcess, inputs: SmokeInputs, level: int, init_limit_s: float, fix_for=None) -> tuple[SmokeResult, list[Finding]]:
    """Init, then GET /health and any further events; findings for whatever failed."""
    findings: list[Finding] = []
    where = f"smoke level {level}"
    fix_for = fix_for or (lambda module, why: "install what the error names (requirements/*.in, then `invoke lock` and `invoke build`), or fix the static findings of that package's files")
    fn.start()
    try:
        state, init_ms = fn.wait_ready(init_limit_s)
        result = SmokeResult(run=True, level=level, init_ms=round(init_ms, 1) if init_ms else None, modules=tuple(modules_of(inputs.trees)))
        if state != "ready":
            err = fn.api.init_error or {}
            message = err.get("errorMessage", "")
            failed = {}
            if "HOIST_IMPORT_FAILURES " in message:
                failed = json.loads(message.split("HOIST_IMPORT_FAILURES ", 1)[1])
            findings += _import_findings(failed, where, fix_for)
            if not failed:
                what = {"init-error": f"init failed: {err.get('errorType', '')}: {_on_host(message, inputs)}", "crashed": f"the runtime exited during init (code {fn.proc.returncode if fn.proc else '?'})",
                        "timeout": f"init did not finish in {init_limit_s:.0f} s"}[state]
                findings.append(Finding("error", "smoke-init", where, None, what, f"{LOG_BELOW}; check the handler setting and the static findings"))
            result = replace(result, ok=False, state=state, error=err or None, failed_imports=failed, log_tail=fn.log_tail())
            return result, findings
        report = fn.invoke(EVENT.read_bytes(), init_ms=init_ms)
        result = replace(result, ok=report.status == "ok", report=report.report_line(), status=report.status, error=report.error)
        if report.status == "ok":
            payload = json.loads(report.payload or b"null")
            seen = (payload or {}).get("hoist_smoke", {})
            activation = seen.get("activation")
            if activation is not None:
                activation = {**activation, "held_after_init": seen.get("held_after_init"), "handler_ms": seen.get("handler_ms")}
            result = replace(result, import_ms=seen.get("import_ms"), loaded=tuple(seen.get("loaded", [])), activation=activation,
                             handler_result=(payload or {}).get("handler_result"))
            hydration = hydration_findings(inputs, activation, where)
            if hydration:
                result = replace(result, ok=False)
            findings += hydration
        else:
            findings.append(Finding("error", "smoke-invoke", where, None, f"the handler {inputs.handler} failed on a GET /health event: {_on_host(report.error, inputs)}", LOG_BELOW))
            result = replace(result, log_tail=fn.log_tail())
            return result, findings
        answers: list[SmokeAnswer] = []
        for event in inputs.events:
            more = fn.invoke(event)
            doc = json.loads(more.payload or b"null") if more.status == "ok" else None
            answers.append(SmokeAnswer(status=more.status, error=more.error, report=more.report_line(), result=(doc or {}).get("handler_result")))
            if more.status != "ok":
                findings.append(Finding("error", "smoke-invoke", where, None, f"the handler {inputs.handler} failed on event {len(answers)}: {_on_host(more.error, inputs)}", LOG_BELOW))
                result = replace(result, ok=False, log_tail=fn.log_tail())
        if inputs.events:
            result = replace(result, events=tuple(answers))
        return result, findings
    finally:
        fn.stop()


def archives_of(inputs: SmokeInputs) -> Path | None:
    """The EFS tree's archive index, when the build wrote one beside it (the version then hydrates)."""
    _, efs = _layer_and_efs(inputs)
    index = efs.parent / "archives" / "index.json" if efs else None
    return index if index is not None and index.is_file() else None


def hydration_findings(inputs: SmokeInputs, activation: dict | None, where: str) -> list[Finding]:
    """An error when the version has archives and the function's init did not hydrate from them: it works, seconds slower
    per cold start, and nothing else would say so."""
    if archives_of(inputs) is None:
        return []
    if activation is None:
        return [Finding("error", "smoke-hydrate", where, None,
                        "the handler did not activate the EFS tree through hoist_lambda.activate, so the archives beside it are never read: every cold start imports from EFS",
                        "call hoist_lambda.activate.activate() at the top of the handler module, before importing from the tree (docs/handler.md, Your own handler)")]
    if not activation.get("hydrated"):
        why = activation.get("why") or "not said"
        fix = {"HOIST_HYDRATE=0": "remove HOIST_HYDRATE from [function] environment in pipeline.toml"}.get(why,
               "run `invoke build --force` (the archives and the handler library are built together), then validate again; the function's log has the line 'hydrate_failed'")
        return [Finding("error", "smoke-hydrate", where, None, f"the version has archives, but the init imported from the tree instead of hydrating: {why}", fix)]
    return []


def level1(inputs: SmokeInputs, target: Target, fix_for=None) -> tuple[SmokeResult, list[Finding]]:
    if target.machine != platform.machine():
        return SmokeResult(run=False, level=1, why=f"the target runs on {target.machine}, this machine is {platform.machine()}; level 1 runs only on the target's CPU (levels 2 and 3 run foreign CPUs through qemu)"), []
    try:
        python = find_python(target.python)
    except InterpreterNotFound as exc:
        return SmokeResult(run=False, level=1, why=f"no CPython {target.python} here: {exc.render()}"), []
    ric = runtime_client(target, inputs.cache)
    layer, efs = _layer_and_efs(inputs)
    spec = _spec(inputs, target)
    with tempfile.TemporaryDirectory(prefix="hoist-smoke-") as tmp, RuntimeAPI() as api:
        task = _task_root(inputs, Path(tmp))
        layout = Layout(task_root=str(task), layer=str(layer) if layer else None, efs_tree=str(efs) if efs else None, runtime_dir=str(ric))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **lambda_environment(spec, layout, api.address), **_env_extra(inputs)}
        if inputs.model_dir:
            env["HOIST_MODEL_DIR"] = str(inputs.model_dir)
        fn = FunctionProcess(local_command(python.path, spec.handler), env, api, spec, cwd=str(task))
        result, findings = _exercise(fn, inputs, 1, INIT_LIMIT_S + inputs.timeout_s, fix_for)
        result = replace(result, python=python.version, machine=platform.machine(),
                         distance=None if target.kind == "local" else  # the target is this machine: no distance to tell
                         f"this machine's CPU and CPython {python.version}, with this machine's glibc and libraries rather than {target.os_name or 'Lambda'}'s")
        return result, findings


def _image_problem(image: str, docker_platform: str, target: Target, pull: bool = True) -> str | None:
    """Why a container of ``image`` cannot run here, or None."""
    why = docker.daemon_problem() or emulation.binfmt_problem(target.machine)
    if why:
        return why
    if not docker.image_exists(image):
        pulled = docker.pull(image, docker_platform) if pull else None
        if pulled is None or pulled.returncode != 0:
            tail = (pulled.stderr.strip().splitlines() or ["no output"])[-1] if pulled else "not pulled"
            return f"image {image} is not here and could not be pulled ({tail}): pull it where a registry is reachable, or pass --image"
    return None


class DockerFunction(FunctionProcess):
    def __init__(self, command: list[str], env: dict[str, str], api: RuntimeAPI, spec: FunctionSpec, *, container: str):
        super().__init__(command, env, api, spec, pid_for_memory=False)  # the container's memory is not this process's
        self.container = container

    def stop(self) -> None:
        docker.remove(self.container)
        super().stop()


@dataclass(frozen=True)
class _Sandbox:
    """Lambda's layout for a function run in a root of its own (a container, a chroot): what both set up alike."""

    spec: FunctionSpec
    api: RuntimeAPI
    env: dict[str, str]  # Lambda's environment, with the paths inside
    mounts: tuple[tuple[Path, str], ...]  # (host folder, path inside), read-only


@contextlib.contextmanager
def _sandbox(inputs: SmokeInputs, target: Target) -> Iterator[_Sandbox]:
    """The task root, the runtime client, the layer, the EFS version at the mount path (as on EFS: archives
    beside site-packages get hydrated) and the model, each mounted where Lambda has it; the emulator's API."""
    ric = runtime_client(target, inputs.cache)
    layer, efs = _layer_and_efs(inputs)
    spec = _spec(inputs, target)
    with tempfile.TemporaryDirectory(prefix="hoist-smoke-") as tmp, RuntimeAPI() as api:
        task = _task_root(inputs, Path(tmp))
        layout = Layout(task_root="/var/task", layer="/opt/python" if layer else None, efs_tree=f"{inputs.mount_path}/{efs.name}" if efs else None, runtime_dir="/opt/hoist-runtime")
        # under QEMU, the CPU the import check emulates too (a Neoverse N1, Graviton2's core: pipeline/emulation.py): QEMU's
        # default emulates pointer authentication in every function, several times slower; {} on the target's own CPU
        env = {**lambda_environment(spec, layout, api.address), **_env_extra(inputs), **emulation.qemu_env(target.machine)}
        mounts = [(task, "/var/task"), (ric, "/opt/hoist-runtime")]
        if layer:
            mounts.append((layer, "/opt/python"))
        if efs:
            mounts.append((efs.parent, inputs.mount_path))
        if inputs.model_dir:
            mounts.append((inputs.model_dir.resolve(), MODEL_MOUNT))
            env["HOIST_MODEL_DIR"] = MODEL_MOUNT
        yield _Sandbox(spec=spec, api=api, env=env, mounts=tuple(mounts))


def _in_container(inputs: SmokeInputs, target: Target, image: str, level: int, init_limit_s: float, fix_for=None, docker_platform: str | None = "target") -> tuple[SmokeResult, list[Finding]]:
    """The function in a container of ``image``: Lambda's layout, the real client, the emulator on the host network."""
    with _sandbox(inputs, target) as box:
        name = docker.container_name("hoist-smoke")
        plat = target.docker_platform if docker_platform == "target" else docker_platform
        cmd = docker.run_command(image, ["-s", "-m", "awslambdaric", box.spec.handler], name=name, network="host", platform=plat, memory_mb=box.spec.memory_mb,
                                 entrypoint=f"/var/lang/bin/python{target.python}", mounts=[docker.Mount(host, inside) for host, inside in box.mounts], env=box.env)
        fn = DockerFunction(cmd, {**os.environ}, box.api, box.spec, container=name)
        result, findings = _exercise(fn, inputs, level, init_limit_s, fix_for)
        return replace(result, image=image, machine=target.machine, emulated=target.machine != platform.machine()), findings


def level2(inputs: SmokeInputs, target: Target, image: str | None = None, fix_for=None) -> tuple[SmokeResult, list[Finding]]:
    image = image or target.base_image()
    why = _image_problem(image, target.docker_platform, target)
    if why:
        return SmokeResult(run=False, level=2, image=image, why=why), []
    emulated = target.machine != platform.machine()
    limit = (EMULATED_INIT_LIMIT_S if emulated else INIT_LIMIT_S) + inputs.timeout_s
    result, findings = _in_container(inputs, target, image, 2, limit, fix_for)
    return replace(result, distance="the Lambda base image" + ("; emulated CPU (QEMU user mode): timings are not Lambda's" if emulated else "; this machine's CPU")), findings


def level3(inputs: SmokeInputs, target: Target, fix_for=None, on_line=None) -> tuple[SmokeResult, list[Finding]]:
    try:
        emulated = emulation.emulated_python(target.python, target.machine, on_line)
    except emulation.EmulationUnavailable as exc:
        return SmokeResult(run=False, level=3, why=f"{exc.what} (fix: {exc.fix})"), []
    limit = EMULATED_INIT_LIMIT_S + inputs.timeout_s
    if emulated.image:
        result, findings = _in_container(inputs, target, emulated.image, 3, limit, fix_for, docker_platform=emulation.run_platform(emulated.image, target.machine))
    else:
        result, findings = _in_chroot(inputs, target, emulated.root, limit, fix_for)
    return replace(result, distance=emulated.distance(), root=str(emulated.root), python=f"{emulated.python} (Debian {emulated.suite})", emulated=target.machine != platform.machine()), findings


def _in_chroot(inputs: SmokeInputs, target: Target, root: Path, init_limit_s: float, fix_for=None) -> tuple[SmokeResult, list[Finding]]:
    """Level 3 without Docker: the same layout as the container, bind-mounted into a chroot of the root."""
    with _sandbox(inputs, target) as box:
        cmd = emulation.chroot_command(root, list(box.mounts), [f"/var/lang/bin/python{target.python}", "-s", "-m", "awslambdaric", box.spec.handler])
        # the host's PATH finds unshare, mount and chroot; the function sees Lambda's
        fn = FunctionProcess(cmd, {**box.env, "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}, box.api, box.spec, pid_for_memory=False)
        result, findings = _exercise(fn, inputs, 3, init_limit_s, fix_for)
        return replace(result, runner="chroot", machine=target.machine), findings


def init_findings(result: SmokeResult) -> list[Finding]:
    """A warning when the measured init passes Lambda's 10 s on the target's own CPU (none for an emulated CPU)."""
    _, warning = init_report(result.init_ms, emulated=bool(result.emulated))
    return [Finding("warning", "smoke-init-over-10s", None, None, warning,
                    "make the init lighter: fewer imports at init, HOIST_PREFETCH (docs/cold-start.md); the figure is this machine's CPU, not Lambda's")] if warning else []


LEVELS = {"1": "a CPython of the target's version on this machine", "2": "the Lambda base image in Docker", "3": "an emulated Debian CPython"}
CHOICES = ("auto", *LEVELS, "none")


def check_level(level: str) -> None:
    """ValidationError for a --smoke value that is no level, before any check runs."""
    if level not in CHOICES:
        raise ValidationError(f"--smoke {level!r} is not a smoke test level", where="--smoke",
                              fix="use one of " + ", ".join(CHOICES) + " (auto: the first of 1, 2, 3 that can run)")


def smoke(inputs: SmokeInputs, target: Target, level: str = "auto", image: str | None = None, fix_for=None, on_line=None) -> tuple[SmokeResult, list[Finding]]:
    """Run the smoke test at ``level`` ("1", "2", "3", "auto": the first of 1, 2, 3 that can run; "none": skip).

    ``fix_for(module, why)`` gives the fix text of a failed import (the caller
    knows what slimming removed); ``on_line`` hears about long preparations.
    """
    if level == "none":
        return SmokeResult(run=False, why="skipped (--smoke none)"), []
    attempts: list[SmokeResult] = []
    try:
        for lvl in (["1", "2", "3"] if level == "auto" else [level]):
            if on_line:  # an emulated init takes minutes: say what runs
                slow = " (under QEMU: the init can take minutes)" if lvl in "23" and target.machine != platform.machine() else ""
                on_line(f"smoke test: trying level {lvl}, {LEVELS[lvl]}{slow}")
            if lvl == "1":
                result, findings = level1(inputs, target, fix_for)
            elif lvl == "2":
                result, findings = level2(inputs, target, image, fix_for)
            else:
                result, findings = level3(inputs, target, fix_for, on_line)
            if result.run:
                return replace(result, skipped_levels=tuple(attempts)), findings + init_findings(result)
            attempts.append(result)
    except CommandError as exc:
        return SmokeResult(run=False, why=exc.render(), skipped_levels=tuple(attempts)), []
    why = "; ".join(f"level {a.level}: {a.why}" for a in attempts)
    return SmokeResult(run=False, why=why, skipped_levels=tuple(attempts)), []
