"""The image shape's smoke test: the image itself, through its own runtime client, on the target's CPU.

The built image (dist/<target>/image, loaded into Docker) runs with its own
ENTRYPOINT and CMD on the host network, against runtime/'s Runtime API on
127.0.0.1, under ``--platform`` (QEMU when the CPU is foreign). With SnapStart
it is started as Lambda publishes a version: AWS_LAMBDA_INITIALIZATION_TYPE
``snap-start``. Then, in order:

1. init: the imports and the model load (the handler's module);
2. the before-snapshot hooks (hoist_lambda.snapstart: one warm-up inference,
   release); the runtime client then asks ``/runtime/restore/next``. A client
   that never asks does not serve SnapStart's hooks: a finding;
3. the restore is answered at once (no checkpoint here: the benchmark
   restores a real one with CRIU); the after-restore hooks run (reseed, fresh
   clients);
4. the first request after the restore (GET /health, then the model folder's
   sample): its answer is checked, and the time from the restore to that answer
   is reported, beside the hooks' own times from the health answer.

Without SnapStart the image starts as an on-demand function. Figures taken
under QEMU are said to be emulated: they are not Lambda's.

What a stand-in base image can show: that the image's layers, paths and
environment give a working function through the runtime client inside the
image, and that this client runs the hooks in SnapStart's order. What it
cannot: that AWS's base image and its entrypoint do the same (it holds the
client that does, awslambdaric with snapshot_restore_py: lambda-facts.md), and
anything about Lambda's own snapshot and restore (docs/untested.md).
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, replace
from typing import Any

from pipeline import docker
from pipeline.errors import CommandError
from pipeline.records import ImageRecord
from pipeline.shapes import IMAGE_LIMIT_BYTES
from pipeline.targets import Target
from runtime.emulator import RuntimeAPI
from runtime.function import EMULATED_FACTOR, ContainerProcess, FunctionProcess, FunctionSpec, container_environment

from .checks import LOG_BELOW, Finding, SmokeAnswer, SmokeResult

HEALTH = json.dumps({"version": "2.0", "routeKey": "GET /health", "rawPath": "/health", "rawQueryString": "", "headers": {},
                     "requestContext": {"http": {"method": "GET", "path": "/health"}}, "isBase64Encoded": False}).encode()
RESTORE_LIMIT_S = 10.0  # restore plus the after-restore hooks (lambda-facts.md, SnapStart)
PUBLISH_INIT_S = 130.0  # init at publish may run max(130 s, the timeout)


@dataclass(frozen=True)
class ImageSmokeInputs:
    function_name: str
    memory_mb: int
    timeout_s: int
    snapstart: bool
    events: tuple[bytes, ...] = ()  # after GET /health: the model folder's sample
    environment: dict[str, str] | None = None  # [function] environment


def size_findings(image: ImageRecord) -> list[Finding]:
    """Lambda refuses an image over 10 GB (lambda-facts.md, Limits)."""
    if image.bytes <= IMAGE_LIMIT_BYTES:
        return []
    return [Finding("error", "size", image.tag, None, f"the image is {image.bytes:,} bytes unpacked, over Lambda's 10 GB container image limit ({IMAGE_LIMIT_BYTES:,})",
                    "slim the heavy set (docs/build.md, Slimming), or move the model to S3 (HOIST_MODEL_S3), then `invoke build`")]


def _wait(event: Any, fn: FunctionProcess, limit_s: float, instead: Any = None) -> bool:
    """Wait for ``event``; False at the limit, when the process ended, or when ``instead`` happened first."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if event.wait(0.05):
            return True
        if (fn.proc and fn.proc.poll() is not None) or (instead is not None and instead.is_set()):
            return event.is_set()
    return False


def smoke_image(image: ImageRecord, target: Target, inputs: ImageSmokeInputs, on_line=None) -> tuple[SmokeResult, list[Finding]]:
    """Run the image as Lambda would (with SnapStart: snapshot, restore, first request); the result and the findings."""
    where = f"image {image.tag}"
    if why := docker.daemon_problem():
        return SmokeResult(run=False, level=2, image=image.tag, why=why), []
    try:
        docker.load_layout(image.layout, image.config_digest)
    except CommandError as exc:
        return SmokeResult(run=False, level=2, image=image.tag, why=exc.render()), []
    emulated = target.machine != platform.machine()
    stretch = EMULATED_FACTOR if emulated else 1.0
    findings: list[Finding] = []
    spec = FunctionSpec(name=inputs.function_name, runtime=target.runtime or f"python{target.python}", handler="(the image's CMD)",
                        memory_mb=inputs.memory_mb, timeout_s=int(inputs.timeout_s * stretch))
    with RuntimeAPI() as api:
        name = docker.container_name("hoist-image-smoke")
        cmd = docker.run_command(image.config_digest, [], name=name, network="host", platform=image.platform, memory_mb=inputs.memory_mb,
                                 env=container_environment(spec, api.address, inputs.environment, version="1", log_stream="hoist-validate",
                                                           init_type="snap-start" if inputs.snapstart else "on-demand", machine=target.machine))
        fn = ContainerProcess(cmd, api, spec, name, on_line=on_line)
        fn.start()
        try:
            result = SmokeResult(run=True, level=2, image=image.tag, machine=target.machine, emulated=emulated)
            snap: dict[str, Any] = {"snapstart": inputs.snapstart, "emulated": emulated}
            init_limit = max(PUBLISH_INIT_S, inputs.timeout_s) * stretch
            if inputs.snapstart:
                if not _wait(api.snapshot_ready, fn, init_limit, instead=api.first_next):  # a client without the hooks asks for a request
                    exited = fn.proc is not None and fn.proc.poll() is not None
                    state = "init-error" if api.init_error else ("crashed" if exited else "timeout")
                    if api.init_error:
                        what = f"init failed: {api.init_error.get('errorType', '')}: {api.init_error.get('errorMessage', '')}"
                    elif api.first_next.is_set():
                        what = "the runtime client in the image asked for a request without /runtime/restore/next: it does not serve SnapStart's hooks"
                    elif exited:
                        what = f"the runtime exited during init (code {fn.proc.returncode if fn.proc else '?'})"
                    else:
                        what = f"init and the before-snapshot hooks did not finish in {init_limit:.0f} s"
                    findings.append(Finding("error", "smoke-init", where, None, what,
                                            "build FROM AWS's base image for python3.12+ (its client runs the hooks), or install awslambdaric with "
                                            "snapshot-restore-py in the base; " + LOG_BELOW))
                    return replace(result, ok=False, state=state, error=api.init_error, failed_imports={}, log_tail=fn.log_tail()), findings
                assert api.snapshot_ready_at is not None
                snap["init_to_snapshot_ms"] = round((api.snapshot_ready_at - fn.started_at) * 1000, 1)
                api.restore()
            else:
                state, init_ms = fn.wait_ready(init_limit)
                if state != "ready":
                    findings.append(Finding("error", "smoke-init", where, None, f"init did not finish ({state}): {(api.init_error or {}).get('errorMessage', '')}",
                                            LOG_BELOW))
                    return replace(result, ok=False, state=state, error=api.init_error, failed_imports={}, log_tail=fn.log_tail()), findings
                result = replace(result, init_ms=round(init_ms or 0, 1))
            health = fn.invoke(HEALTH)
            if api.restore_error is not None:
                findings.append(Finding("error", "smoke-restore", where, None, f"an after-restore hook failed: {api.restore_error.get('errorMessage', '')}",
                                        "fix the hook named in the log tail (hoist_lambda.snapstart.prepare(after_restore=...))"))
            if inputs.snapstart and api.restored_at is not None and api.invocations:
                first = api.invocations[health.request_id]
                if first.finished_at is not None:
                    snap["restore_to_first_answer_ms"] = round((first.finished_at - api.restored_at) * 1000, 1)
            result = replace(result, init_ms=snap.get("init_to_snapshot_ms", result.init_ms), ok=health.status == "ok", report=health.report_line(),
                             status=health.status, error=health.error)
            if health.status != "ok":
                findings.append(Finding("error", "smoke-invoke", where, None, f"the first request after the {'restore' if inputs.snapstart else 'init'} failed: {health.error}",
                                        LOG_BELOW))
                return replace(result, log_tail=fn.log_tail(), snapstart=snap), findings
            payload = json.loads(health.payload or b"null")
            body = json.loads(payload["body"]) if isinstance(payload, dict) and isinstance(payload.get("body"), str) else payload
            hooks = (body or {}).get("snapstart") if isinstance(body, dict) else None
            if hooks:
                snap["hooks"] = hooks
                if inputs.snapstart and hooks.get("restores") != 1:
                    findings.append(Finding("error", "smoke-restore", where, None, f"the after-restore hooks ran {hooks.get('restores')} times before the first request, not once",
                                            "call hoist_lambda.snapstart.prepare() once, at the end of the handler module's init"))
            restore_ms = snap.get("restore_to_first_answer_ms")
            if restore_ms is not None and restore_ms > RESTORE_LIMIT_S * 1000 * stretch:
                findings.append(Finding("error", "smoke-restore", where, None, f"restore to first answer took {restore_ms:.0f} ms; Lambda allows 10 s for the restore and the after-restore hooks",
                                        "move work out of the after-restore hooks into init (before the snapshot)"))
            result = replace(result, import_ms={}, loaded=(), handler_result=payload)  # the API Gateway response, as the tree smoke test keeps it
            answers = []
            for event in inputs.events:
                more = fn.invoke(event)
                doc = json.loads(more.payload or b"null") if more.status == "ok" else None
                answers.append(SmokeAnswer(status=more.status, error=more.error, report=more.report_line(), result=doc))
                if more.status != "ok":
                    findings.append(Finding("error", "smoke-invoke", where, None, f"event {len(answers)} failed: {more.error}", LOG_BELOW))
                    result = replace(result, ok=False, log_tail=fn.log_tail())
            return replace(result, events=tuple(answers), snapstart=snap), findings
        finally:
            fn.stop()
