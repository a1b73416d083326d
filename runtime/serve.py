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

The image shape (``run_image``) serves the built image instead: it runs in
Docker on the host network with its own ENTRYPOINT, the runtime client inside
it, against the same Runtime API and behind the same gateway (``_gateway``),
as an on-demand function (no snapshot is taken here), under QEMU when its CPU
is not this machine's.

This module runs the function and the gateway over a tree or an image it is
given; locking, building and syncing first is compose/serve.py's part.
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

from pipeline import docker, modelfolder
from pipeline.config import Config, TargetConfig
from pipeline.errors import ServeError
from pipeline.interpreters import find_python
from pipeline.records import ImageRecord
from pipeline.routes import route_key
from pipeline.shapes import IMAGE_PATHS
from pipeline.targets import init_report

from .emulator import QuietHTTPServer, RuntimeAPI
from .function import (
    EMULATED_FACTOR,
    ContainerProcess,
    FunctionProcess,
    FunctionSpec,
    Layout,
    container_environment,
    lambda_environment,
    local_command,
    runtime_client,
)
from .gateway import http_api_event, http_response
from .logview import render_line

PAGE = Path(__file__).with_name("static") / "index.html"


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
    efs_tree: str  # the tree on the function's sys.path: a synced version's site-packages, or its place in the image
    model_dir: Path
    image: ImageRecord | None = None  # the image served (the image shape), else None: the tree on this machine's CPython

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.function.stop()
        self.api.__exit__(None, None, None)


def model_folder(config: Config) -> Path:
    return config.model_dir or config.root / "model" / "artifacts"


def _port_error(port: int, exc: OSError) -> ServeError:
    return ServeError(f"port {port} on 127.0.0.1 is not free ({exc.strerror})", where="--port", fix=f"stop what listens on {port}, or pick another port (--port 0 takes a free one)")


def port_free(port: int) -> None:
    """A busy port is said at once, before any build or init."""
    import socket

    if not port:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server binds: a port in TIME_WAIT is free
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise _port_error(port, exc) from None


def check_model(config: Config, say: Callable[[str], None]) -> Path:
    """The model folder, its contract checked when the handler needs one."""
    model_dir = model_folder(config)
    if model_dir.exists() or config.function.handler == "app.handler":  # the demo handler needs one; a handler of your own may not
        model = modelfolder.check(model_dir)
        say(f"model folder {model_dir}: {len(model.labels)} labels, input {list(model.pre.input_shape())}; the labels are checked against the model's output at init")
    return model_dir


def run(config: Config, tcfg: TargetConfig, efs_tree: str, model_dir: Path, port: int = 0, on_line: Callable[[str], None] | None = None,
        extra_env: dict[str, str] | None = None) -> Server:
    """Start the function over ``efs_tree`` (a synced version's site-packages) and the gateway in front of it."""
    say = on_line or (lambda line: None)
    target = tcfg.target
    layer = config.build.output / target.name / "layer" / "site-packages"

    python = find_python(target.python)
    ric = runtime_client(target, config.root / ".hoist-cache")
    spec = _spec(config, tcfg)
    api = RuntimeAPI().__enter__()
    layout = Layout(task_root=str(config.build.handler_dir.resolve()), layer=str(layer) if layer.is_dir() else None, efs_tree=efs_tree, runtime_dir=str(ric))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **lambda_environment(spec, layout, api.address), "HOIST_MODEL_DIR": str(model_dir.resolve()),
           **config.function.environment, "PYTHONUNBUFFERED": "1", **(extra_env or {})}  # unbuffered: every line reaches the console as it is printed
    say(f"starting the function: {spec.handler} on CPython {python.version}, EFS tree {efs_tree}")
    function = FunctionProcess(local_command(python.path, spec.handler), env, api, spec, on_line=lambda line: say(render_line(line)), cwd=env["LAMBDA_TASK_ROOT"])
    function.start()
    _wait_ready(config, tcfg, function, api, say, emulated=False, checks="the tree")  # serve runs the tree natively (pick_target)
    httpd, url = _gateway(function, port, say)
    return Server(url=url, httpd=httpd, function=function, api=api, efs_tree=efs_tree, model_dir=model_dir)


def run_image(config: Config, tcfg: TargetConfig, image: ImageRecord, model_dir: Path, port: int = 0, on_line: Callable[[str], None] | None = None,
              extra_env: dict[str, str] | None = None) -> Server:
    """Start the image shape's built ``image`` in Docker (its own ENTRYPOINT: the runtime client inside it, on the host
    network, against the Runtime API here), on-demand as Lambda starts it without SnapStart, and the gateway in front."""
    say = on_line or (lambda line: None)
    target = tcfg.target
    docker.load_layout(image.layout, image.config_digest)  # a no-op when the daemon has this image already
    emulated = target.machine != platform.machine()
    stretch = EMULATED_FACTOR if emulated else 1.0
    spec = _spec(config, tcfg, stretch)
    api = RuntimeAPI().__enter__()
    # no snapshot here: the container starts as an on-demand function, so the before-snapshot hooks do not run
    env = {**container_environment(spec, api.address, config.function.environment, log_stream="hoist-serve", machine=target.machine), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    name = docker.container_name("hoist-serve")
    command = docker.run_command(image.config_digest, [], name=name, network="host", platform=image.platform, memory_mb=spec.memory_mb, env=env)
    say(f"starting the image {image.tag} ({image.platform}, {image.config_digest[:19]}) in Docker: its runtime client runs {spec.handler}"
        + (f"; {target.machine} under QEMU: init is slow, and the function's timeout is stretched {EMULATED_FACTOR:.0f} times" if emulated else ""))
    function = ContainerProcess(command, api, spec, name, on_line=lambda line: say(render_line(line)))
    function.start()
    _wait_ready(config, tcfg, function, api, say, emulated=emulated, checks="the image", stretch=stretch)
    httpd, url = _gateway(function, port, say)
    return Server(url=url, httpd=httpd, function=function, api=api, efs_tree=IMAGE_PATHS["efs"], model_dir=model_dir, image=image)


def _spec(config: Config, tcfg: TargetConfig, stretch: float = 1.0) -> FunctionSpec:
    target = tcfg.target
    return FunctionSpec(name=config.function.name, runtime=target.runtime or f"python{target.python}", handler=config.function.handler,
                        memory_mb=config.function.memory_mb, timeout_s=int(config.function.timeout_s * stretch))


def _wait_ready(config: Config, tcfg: TargetConfig, function: FunctionProcess, api: RuntimeAPI, say: Callable[[str], None], *, emulated: bool,
                checks: str, stretch: float = 1.0) -> None:
    """Wait for the function's init; a failed one stops it and is a ServeError pointing to its output."""
    target = tcfg.target
    state, init_ms = function.wait_ready((config.function.timeout_s + 120) * stretch)
    if state != "ready":
        function.stop()
        api.__exit__(None, None, None)
        error = api.init_error or {}
        message = error.get("errorMessage") or f"the process {state}"
        fix = ("fix the model folder as the message says (its output is above)" if error.get("errorType") == "ModelFolderError"
               else f"read the function's output above; `invoke validate --target {target.name}` checks {checks}")
        raise ServeError(f"the handler did not start ({state}): {error.get('errorType', '')}: {message}", where=config.function.handler, fix=fix)
    init, warning = init_report(init_ms, emulated=emulated, lambda_target=target.kind == "lambda")
    say(f"handler ready: {init}")
    if warning:
        say(f"warning: {warning}")


def _gateway(function: FunctionProcess, port: int, say: Callable[[str], None]) -> tuple[ThreadingHTTPServer, str]:
    """The API Gateway emulator on 127.0.0.1:``port`` in front of ``function``, serving; the server and its URL.
    The same for a tree and an image: only the function process differs."""
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
                # as API Gateway: a function error is a 502 whose body says nothing of it (Lambda Developer Guide, "Handling Lambda
                # errors with an API Gateway API"; an HTTP API spells it "Internal Server Error"): the error is on this console only
                return self._send(502 if report.status != "timeout" else 504, {"content-type": "application/json"},
                                  json.dumps({"message": "Internal Server Error"}).encode())
            code, headers, data = http_response(report.payload)
            if code >= 500:
                printed = function.wait_for_output(report.request_id)  # its log line first, then this one
                say(f"request {report.request_id} answered {code}: " + ("the function's traceback is printed above" if printed else "the function printed nothing for it"))
            return self._send(code, headers, data)

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                return self._send(200, {"content-type": "text/html; charset=utf-8"}, PAGE.read_bytes())
            return self._invoke("GET")

        def do_POST(self):
            return self._invoke("POST")

    try:
        httpd = QuietHTTPServer(("127.0.0.1", port), Gateway)
    except OSError as exc:  # taken meanwhile
        function.stop()
        raise _port_error(port, exc) from None
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True, name="gateway").start()
    host, bound = httpd.server_address[:2]
    return httpd, f"http://{host!s}:{bound}"
