"""invoke serve: the handler behind a local API Gateway.

An HTTP request on 127.0.0.1 becomes an HTTP API event, goes through the
Runtime API emulator to the real awslambdaric running the handler (one
execution environment, one request at a time, as Lambda does), and the proxy
response goes back. The EFS tree comes from the local sync folder (synced
first, as a version), the model from the model folder ([model] dir), checked
before the function starts. When the target has no build yet (or its locks
are stale), serve locks and builds it first, and says so. Everything the
function prints (init phases, log lines, tracebacks) streams to ``on_line``
as it happens; a 500 points to the traceback printed above it.
"""
from __future__ import annotations

import json
import os
import platform
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline import modelfolder
from pipeline.config import Config
from pipeline.errors import LockError, PipelineError
from pipeline.interpreters import find_python
from pipeline.routes import route_key
from sync.efs import apply_sync, plan_sync
from sync.shell import Remote

from .emulator import RuntimeAPI
from .function import FunctionProcess, FunctionSpec, Layout, lambda_environment, local_command, runtime_client
from .gateway import http_api_event, http_response
from .logview import render_line

PAGE = Path(__file__).with_name("static") / "index.html"


class ServeError(PipelineError):
    stage = "serve"


def pick_target(config: Config, name: str | None):
    """The target to serve: the one asked for, else the default if it runs here, else `local`."""
    if name:
        tcfg = config.target(name)
    else:
        tcfg = config.target()
        if tcfg.target.machine != platform.machine() and any(t.target.kind == "local" for t in config.targets.values()):
            tcfg = next(t for t in config.targets.values() if t.target.kind == "local")
    if tcfg.target.machine != platform.machine():
        raise ServeError(
            f"target {tcfg.target.name} runs on {tcfg.target.machine}; this machine is {platform.machine()}, so its tree cannot run here",
            where=f"--target {tcfg.target.name}",
            fix="serve a tree for this machine (`invoke lock --target local && invoke build --target local && invoke serve --target local`), "
            "or check the tree in the Lambda image under Docker with `invoke validate --smoke 2`",
        )
    return tcfg


@dataclass
class Server:
    url: str
    httpd: ThreadingHTTPServer
    function: FunctionProcess
    api: RuntimeAPI
    efs_tree: str
    model_dir: Path

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.function.stop()
        self.api.__exit__(None, None, None)


def model_folder(config: Config) -> Path:
    return config.model_dir or config.root / "model" / "artifacts"


def ensure_built(config: Config, target_name: str, say: Callable[[str], None]) -> None:
    """Lock and build the target when it has no build or its locks are stale (`invoke serve` right after a clone)."""
    from builder.build import build
    from builder.lock import current_locks, lock

    tcfg = config.target(target_name)
    built = (config.build.output / target_name / "efs" / "manifest.json").is_file()
    try:
        current_locks(config, tcfg)
        stale = False
    except LockError:
        stale = True
    if built and not stale:
        return
    why = "its locks are missing or stale" if stale else f"there is no build in {config.build.output / target_name}"
    say(f"target {target_name}: {why}; running `invoke lock --target {target_name}` and `invoke build --target {target_name}` first")
    locked = lock(config, target_name)
    say(f"locked {target_name}" + (" (resolved again)" if locked.resolved else " (locks current)"))
    result = build(config, target_name)
    say(f"built {target_name}: " + ", ".join(f"{name} {s.content_hash[:12]}" for name, s in result.sets.items()))


def _port_error(port: int, exc: OSError) -> ServeError:
    return ServeError(f"port {port} on 127.0.0.1 is not free ({exc.strerror})", where="--port", fix=f"stop what listens on {port}, or pick another port (--port 0 takes a free one)")


def _port_free(port: int) -> None:
    import socket

    if not port:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server binds: a port in TIME_WAIT is free
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise _port_error(port, exc) from None


def start(config: Config, target_name: str | None = None, port: int = 0, on_line: Callable[[str], None] | None = None,
          extra_env: dict[str, str] | None = None, build_if_needed: bool = True) -> Server:
    say = on_line or (lambda line: None)
    _port_free(port)  # before any build or init: a busy port is said at once
    tcfg = pick_target(config, target_name)
    target = tcfg.target
    model_dir = model_folder(config)
    if model_dir.exists() or config.function.handler == "app.handler":  # the demo handler needs one; a handler of your own may not
        model = modelfolder.check(model_dir)
        say(f"model folder {model_dir}: {len(model.labels)} labels, input {list(model.pre.input_shape())}; the labels are checked against the model's output at init")
    if build_if_needed:
        ensure_built(config, target.name, say)
    set_dir = config.build.output / target.name
    efs = set_dir / "efs"
    if not (efs / "manifest.json").is_file():
        raise ServeError(f"no build of target {target.name} in {set_dir}", where=str(set_dir),
                         fix=f"invoke lock --target {target.name} && invoke build --target {target.name}")
    assert config.sync is not None
    local_root = str((config.sync.local_path / config.efs.root.strip("/")).resolve())
    remote = Remote()
    plan = plan_sync(remote, local_root, efs / "site-packages", efs / "manifest.json")
    apply_sync(plan, remote, stale_lock_s=config.sync.stale_lock_s)
    efs_tree = f"{plan.dest}/site-packages"
    layer = set_dir / "layer" / "site-packages"

    python = find_python(target.python)
    ric = runtime_client(target, config.root / ".hoist-cache")
    spec = FunctionSpec(name=config.function.name, runtime=target.runtime or f"python{target.python}", handler=config.function.handler,
                        memory_mb=config.function.memory_mb, timeout_s=config.function.timeout_s)
    api = RuntimeAPI().__enter__()
    layout = Layout(task_root=str(config.build.handler_dir.resolve()), layer=str(layer) if layer.is_dir() else None, efs_tree=efs_tree, runtime_dir=str(ric))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **lambda_environment(spec, layout, api.address), "HOIST_MODEL_DIR": str(model_dir.resolve()),
           "PYTHONUNBUFFERED": "1", **(extra_env or {})}  # unbuffered: every line reaches the console as it is printed
    say(f"starting the function: {spec.handler} on CPython {python.version}, EFS tree {efs_tree}")
    function = FunctionProcess(local_command(python.path, spec.handler), env, api, spec, on_line=lambda line: say(render_line(line)))
    function.start()
    state, init_ms = function.wait_ready(spec.timeout_s + 120)
    if state != "ready":
        function.stop()
        api.__exit__(None, None, None)
        error = api.init_error or {}
        message = error.get("errorMessage") or f"the process {state}"
        fix = ("fix the model folder as the message says (its output is above)" if error.get("errorType") == "ModelFolderError"
               else f"read the function's output above; `invoke validate --target {target.name}` checks the tree")
        raise ServeError(f"the handler did not start ({state}): {error.get('errorType', '')}: {message}", where=config.function.handler, fix=fix)
    say(f"handler ready: init {init_ms:.0f} ms")
    lock = threading.Lock()

    class Gateway(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stalls

        def log_message(self, format, *args):
            say(format % args)

        def _send(self, code, headers, body):
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _invoke(self, method):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
            route = route_key(method, self.path)
            if route is None:  # API Gateway answers a request no route matches itself; the function never sees it
                return self._send(404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
            event = http_api_event(method, self.path, dict(self.headers), body, self.client_address[0], route)
            with lock:  # one execution environment: one request at a time
                report = function.invoke(json.dumps(event).encode())
            if report.status != "ok":
                say(f"request {report.request_id}: the function {report.status}: {report.error}; its output is above")
                return self._send(502 if report.status != "timeout" else 504, {"content-type": "application/json"},
                                  json.dumps({"message": "Internal Server Error", "status": report.status, "error": report.error}).encode())
            code, headers, data = http_response(report.payload)
            if code >= 500:
                say(f"request {report.request_id} answered {code}: the function's traceback is printed above")
            return self._send(code, headers, data)

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                return self._send(200, {"content-type": "text/html; charset=utf-8"}, PAGE.read_bytes())
            return self._invoke("GET")

        def do_POST(self):
            return self._invoke("POST")

    try:
        httpd = ThreadingHTTPServer(("127.0.0.1", port), Gateway)
    except OSError as exc:  # taken meanwhile
        function.stop()
        raise _port_error(port, exc) from None
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True, name="gateway").start()
    host, bound = httpd.server_address[:2]
    return Server(url=f"http://{host!s}:{bound}", httpd=httpd, function=function, api=api, efs_tree=efs_tree, model_dir=model_dir)
