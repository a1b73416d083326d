"""The Lambda Runtime API (2018-06-01), served on 127.0.0.1 for the real
``awslambdaric`` client. The contract is in lambda-facts.md, "The Runtime API".

One invocation at a time, as in one Lambda execution environment: ``invoke``
queues an event, the runtime's long-poll on ``/runtime/invocation/next``
receives it, and its ``/response`` or ``/error`` completes it.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API = "/2018-06-01"
MAX_RESPONSE_BYTES = 6 * 1024 * 1024  # synchronous payload limit


class QuietHTTPServer(ThreadingHTTPServer):
    """socketserver prints a traceback for every exception in a handler; a client that hung up
    (a timed-out smoke request, an interrupted curl) is not one worth printing mid-report."""

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)


@dataclass
class Invocation:
    request_id: str
    event: bytes
    deadline_ms: int
    received_at: float | None = None  # when the runtime took it (next returned)
    done: threading.Event = None  # type: ignore[assignment]
    status: str = "pending"  # ok | error | timeout | crashed
    payload: bytes = b""
    error: dict | None = None
    finished_at: float | None = None

    def __post_init__(self):
        self.done = threading.Event()

    @property
    def duration_ms(self) -> float | None:
        if self.received_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.received_at) * 1000


class RuntimeAPI:
    """Serve the Runtime API; ``address`` is what AWS_LAMBDA_RUNTIME_API takes."""

    def __init__(self, function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:hoist-smoke"):
        self.function_arn = function_arn
        self.pending: queue.Queue[Invocation] = queue.Queue()
        self.invocations: dict[str, Invocation] = {}
        self.init_error: dict | None = None
        self.first_next_at: float | None = None
        self.init_error_event = threading.Event()
        self.first_next = threading.Event()
        # SnapStart (lambda-facts.md): the runtime calls restore/next after its before-snapshot hooks; the answer means
        # "restored". ``snapshot_ready`` is set when it asks; ``restore()`` (after a real checkpoint and restore, or at
        # once) lets the answer go; a failing after-restore hook posts to restore/error.
        self.snapshot_ready = threading.Event()
        self.snapshot_ready_at: float | None = None
        self.restored = threading.Event()
        self.restored_at: float | None = None
        self.restore_error: dict | None = None
        self.restore_error_event = threading.Event()
        self.server = QuietHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="runtime-api", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def __enter__(self) -> RuntimeAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def restore(self) -> None:
        """Answer the runtime's pending (or next) ``restore/next``: the environment counts as restored from now."""
        self.restored_at = time.monotonic()
        self.restored.set()

    def submit(self, event: bytes, timeout_s: float) -> Invocation:
        inv = Invocation(request_id=str(uuid.uuid4()), event=event, deadline_ms=int((time.time() + timeout_s) * 1000))
        self.invocations[inv.request_id] = inv
        self.pending.put(inv)
        return inv

    # ---------------------------------------------------------------- HTTP

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stalls

            def log_message(self, *args):  # quiet: the report says what happened
                pass

            def _reply(self, code: int, body: bytes = b"", headers: dict | None = None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_GET(self):
                if self.path == f"{API}/runtime/restore/next":
                    api.snapshot_ready_at = time.monotonic()
                    api.snapshot_ready.set()
                    api.restored.wait()
                    return self._reply(200, b"", {"Content-Type": "application/json"})
                if self.path != f"{API}/runtime/invocation/next":
                    return self._reply(404, b'{"errorMessage":"not found"}')
                if api.first_next_at is None:
                    api.first_next_at = time.monotonic()
                    api.first_next.set()
                inv = api.pending.get()
                inv.received_at = time.monotonic()
                self._reply(200, inv.event, {
                    "Content-Type": "application/json",
                    "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                    "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn": api.function_arn,
                    "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0",
                })

            def do_POST(self):
                body = self._body()
                parts = self.path[len(API):].strip("/").split("/")
                if parts == ["runtime", "restore", "error"]:
                    api.restore_error = _error(body, self.headers)
                    api.restore_error_event.set()
                    return self._reply(202, b'{"status":"OK"}')
                if parts == ["runtime", "init", "error"]:
                    api.init_error = _error(body, self.headers)
                    api.init_error_event.set()
                    return self._reply(202, b'{"status":"OK"}')
                if len(parts) == 4 and parts[:2] == ["runtime", "invocation"] and parts[3] in ("response", "error"):
                    inv = api.invocations.get(parts[2])
                    if inv is None:
                        return self._reply(400, b'{"errorMessage":"unknown request id","errorType":"InvalidRequestID"}')
                    # record before replying: whoever waits on done sees the outcome
                    if parts[3] == "response" and len(body) > MAX_RESPONSE_BYTES:
                        inv.status, inv.error = "error", {"errorType": "Function.ResponseSizeTooLarge", "errorMessage": f"response payload of {len(body):,} bytes is over the 6 MB limit"}
                        code, reply = 413, b'{"errorMessage":"payload too large","errorType":"RequestEntityTooLarge"}'
                    elif parts[3] == "response":
                        inv.status, inv.payload = "ok", body
                        code, reply = 202, b'{"status":"OK"}'
                    else:
                        inv.status, inv.error = "error", _error(body, self.headers)
                        code, reply = 202, b'{"status":"OK"}'
                    inv.finished_at = time.monotonic()
                    inv.done.set()
                    return self._reply(code, reply)
                return self._reply(404, b'{"errorMessage":"not found"}')

        return Handler


def _error(body: bytes, headers) -> dict:
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        doc = {"errorMessage": body.decode(errors="replace")}
    doc.setdefault("errorType", headers.get("Lambda-Runtime-Function-Error-Type", "Unknown"))
    return doc
