"""One Lambda execution environment, locally: the real ``awslambdaric`` client
running the handler, fed by the Runtime API emulator.

Three ways to run it: a local interpreter of the target Python (level 1), a
container of the Lambda base image with the trees mounted (level 2), or the
image shape's built image itself (``ContainerProcess``: its own ENTRYPOINT and
runtime client, given Lambda's variables by ``container_environment``). Either
way the function sees Lambda's layout: the handler folder as the task root
first on sys.path, the layer where /opt/python is, the EFS tree where the
handler is told it is, and the reserved environment variables.
"""
from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline import docker, emulation, proc
from pipeline.targets import Target

from .emulator import RuntimeAPI

RIC_VERSION = "4.2.2"  # awslambdaric, the client Lambda's own Python images run
# the SDK Lambda's Python runtimes carry in their own site-packages (lambda-facts.md, sys.path): the
# runtime folder holds it beside the client, so a function run here finds boto3 where Lambda has one
# and nothing else of this machine's site-packages
BOTO3_VERSION = "1.43.11"
EMULATED_FACTOR = 20.0  # a foreign CPU under QEMU: the limits a run waits for are stretched this much, its figures are not Lambda's


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    runtime: str  # "python3.13"
    handler: str  # "hoist_smoke.handler"
    memory_mb: int
    timeout_s: int
    efs_env: str = "HOIST_EFS_TREE"  # the variable naming the EFS tree to the handler


@dataclass(frozen=True)
class Layout:
    """Paths as the function process sees them."""

    task_root: str  # /var/task
    layer: str | None  # /opt/python
    efs_tree: str | None  # <mount path>/... on Lambda
    runtime_dir: str  # where awslambdaric is importable from


@dataclass(frozen=True)
class InvokeReport:
    request_id: str
    status: str  # ok | error | timeout | crashed
    payload: bytes
    error: dict | None
    duration_ms: float | None
    init_ms: float | None
    memory_mb: int
    max_memory_mb: int | None

    @property
    def billed_ms(self) -> int | None:
        return None if self.duration_ms is None else max(1, math.ceil(self.duration_ms))

    def report_line(self) -> str:
        """Lambda's REPORT line."""
        parts = [f"REPORT RequestId: {self.request_id}"]
        if self.duration_ms is not None:
            parts += [f"Duration: {self.duration_ms:.2f} ms", f"Billed Duration: {self.billed_ms} ms"]
        parts.append(f"Memory Size: {self.memory_mb} MB")
        if self.max_memory_mb is not None:
            parts.append(f"Max Memory Used: {self.max_memory_mb} MB")
        if self.init_ms is not None:
            parts.append(f"Init Duration: {self.init_ms:.2f} ms")
        if self.status != "ok":
            parts.append(f"Status: {self.status}")
        return "\t".join(parts)


def lambda_environment(spec: FunctionSpec, layout: Layout, api_address: str) -> dict[str, str]:
    """The variables Lambda sets (lambda-facts.md, reserved variables and base image)."""
    version = spec.runtime.removeprefix("python")
    path = [layout.task_root] + ([layout.layer] if layout.layer else []) + [layout.runtime_dir]
    env = {
        "AWS_LAMBDA_RUNTIME_API": api_address,
        "_HANDLER": spec.handler,
        "LAMBDA_TASK_ROOT": layout.task_root,
        "LAMBDA_RUNTIME_DIR": layout.runtime_dir,
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]") + "hoistsmoke",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{version}",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONPATH": ":".join(path),
        "PYTHONNOUSERSITE": "1",
    }
    if layout.efs_tree:
        env[spec.efs_env] = layout.efs_tree
    return env


class FunctionProcess:
    """Start the runtime client with ``command``, deliver events, report like Lambda."""

    def __init__(self, command: list[str], env: dict[str, str], api: RuntimeAPI, spec: FunctionSpec, pid_for_memory: bool = True,
                 on_line: Callable[[str], None] | None = None, cwd: str | None = None):
        self.command = command
        self.cwd = cwd  # the task root for a function run here (Lambda's /var/task); None for a container
        self.env = env
        self.api = api
        self.spec = spec
        self.pid_for_memory = pid_for_memory
        self.on_line = on_line  # every line the function prints, as it prints it
        self.proc: proc.Popen[str] | None = None
        self.started_at = 0.0
        self.output: deque[str] = deque(maxlen=200)
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.proc = proc.start(self.command, env=self.env, clean_env=True, cwd=Path(self.cwd) if self.cwd else None)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            self.output.append(line)
            if self.on_line:
                self.on_line(line)

    def wait_for_output(self, needle: str, limit_s: float = 2.0) -> bool:
        """Wait until the function has printed a line containing ``needle``: what it printed before answering
        can still be in the pipe when its answer arrives through the Runtime API."""
        deadline = time.monotonic() + limit_s
        while not any(needle in line for line in list(self.output)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def wait_ready(self, limit_s: float) -> tuple[str, float | None]:
        """Wait for init: ("ready", ms), ("init-error", ms), ("crashed", None) or ("timeout", None)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.api.first_next.is_set() and self.api.first_next_at is not None:
                return "ready", (self.api.first_next_at - self.started_at) * 1000
            if self.api.init_error_event.is_set():
                return "init-error", (time.monotonic() - self.started_at) * 1000
            if self.proc and self.proc.poll() is not None:
                return ("init-error", None) if self.api.init_error_event.wait(0.5) else ("crashed", None)
            time.sleep(0.02)
        return "timeout", None

    def _max_memory_mb(self) -> int | None:
        if not self.pid_for_memory or not self.proc:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return math.ceil(int(line.split()[1]) / 1024)
        except OSError:
            return None
        return None

    def invoke(self, event: bytes, init_ms: float | None = None) -> InvokeReport:
        inv = self.api.submit(event, self.spec.timeout_s)
        deadline = time.monotonic() + self.spec.timeout_s
        while not inv.done.wait(0.05):
            if self.proc and self.proc.poll() is not None:
                inv.status = "crashed"
                inv.error = {"errorType": "Runtime.ExitError", "errorMessage": f"the runtime exited with code {self.proc.returncode} during the invocation"}
                break
            if time.monotonic() > deadline:
                inv.status = "timeout"
                inv.error = {"errorType": "Sandbox.Timedout", "errorMessage": f"Task timed out after {self.spec.timeout_s:.2f} seconds"}
                inv.finished_at = time.monotonic()
                self.stop()
                break
        return InvokeReport(
            request_id=inv.request_id,
            status=inv.status,
            payload=inv.payload,
            error=inv.error,
            duration_ms=inv.duration_ms,
            init_ms=init_ms,
            memory_mb=self.spec.memory_mb,
            max_memory_mb=self._max_memory_mb(),
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except proc.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(list(self.output)[-lines:])


def container_environment(spec: FunctionSpec, api_address: str, environment: Mapping[str, str] | None = None, *,
                          version: str = "$LATEST", init_type: str = "on-demand", log_stream: str = "hoist", machine: str | None = None) -> dict[str, str]:
    """What Lambda sets in an image function's container (lambda-facts.md, reserved variables), over the function's own
    ``environment`` ([function] environment); the image's own ENV (task root, paths, Hoist's tree and model) stays.
    ``init_type``: "snap-start" when a version is published with SnapStart, else "on-demand". ``machine``: the image's
    CPU; when it is foreign, the variables that make QEMU (binfmt, read from the container's environment) emulate the
    CPU the import check and the EFS smoke test emulate too (pipeline/emulation.py), not QEMU's default "max"."""
    return {**(environment or {}), **(emulation.qemu_env(machine) if machine else {}),
            "AWS_LAMBDA_RUNTIME_API": api_address, "AWS_LAMBDA_FUNCTION_NAME": spec.name, "AWS_LAMBDA_FUNCTION_VERSION": version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb), "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": log_stream, "AWS_LAMBDA_INITIALIZATION_TYPE": init_type,
            "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}"}


class ContainerProcess(FunctionProcess):
    """The function as a container (``command``: a ``docker run`` of the image, named ``container``, with the function's
    variables given by -e): its output is the docker CLI's, and stopping it removes the container by name, whatever
    became of the CLI."""

    def __init__(self, command: list[str], api: RuntimeAPI, spec: FunctionSpec, container: str, on_line: Callable[[str], None] | None = None):
        super().__init__(command, {}, api, spec, pid_for_memory=False, on_line=on_line)
        self.container = container

    def start(self) -> None:
        self.env = dict(os.environ)  # the docker CLI's own environment; the function's goes in with -e
        super().start()

    def stop(self) -> None:
        docker.remove(self.container)
        super().stop()


def local_command(python: str, handler: str) -> list[str]:
    """The runtime client on this machine's CPython, started in the task root (the cwd Lambda gives it).
    -S: no site-packages of this machine, as on Lambda only the task root, the layer, the runtime
    folder (the client and boto3) and the standard library are there (PYTHONPATH, lambda_environment)."""
    return [python, "-S", "-m", "awslambdaric", handler]


def runtime_client(target: Target, cache: Path) -> Path:
    """awslambdaric for the target's Python and CPU, installed once into the cache."""
    dest = cache / f"awslambdaric-{RIC_VERSION}-boto3-{BOTO3_VERSION}" / f"{target.python}-{target.machine}"
    if (dest / "awslambdaric").is_dir():
        return dest
    tmp = dest.with_name(dest.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [proc.uv_bin(), "pip", "install", "--no-config", "--no-python-downloads", "--quiet", "--target", str(tmp),
           "--python-version", target.python, "--only-binary", ":all:", f"awslambdaric=={RIC_VERSION}", f"boto3=={BOTO3_VERSION}"]
    if target.uv_python_platform:
        cmd += ["--python-platform", target.uv_python_platform]
    proc.run(cmd, what=f"installing awslambdaric {RIC_VERSION} and boto3 {BOTO3_VERSION} for CPython {target.python} on {target.machine}", fix="the first smoke test needs PyPI; run it once with network access")
    (tmp / ".lock").unlink(missing_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)
    return dest
