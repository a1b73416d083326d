"""The Runtime API emulator speaks the contract of lambda-facts.md, checked over HTTP."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler

from runtime.emulator import MAX_RESPONSE_BYTES, RuntimeAPI
from runtime.function import FunctionSpec, InvokeReport, Layout, lambda_environment
from tests.conftest import REPO


def _call(api, method, path, body=None, headers=None):
    req = urllib.request.Request(f"http://{api.address}/2018-06-01{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_next_delivers_the_event_with_lambdas_headers_and_response_completes_it():
    with RuntimeAPI() as api:
        inv = api.submit(b'{"x": 1}', timeout_s=30)
        status, headers, body = _call(api, "GET", "/runtime/invocation/next")
        assert status == 200 and body == b'{"x": 1}'
        assert headers["Lambda-Runtime-Aws-Request-Id"] == inv.request_id
        assert int(headers["Lambda-Runtime-Deadline-Ms"]) == inv.deadline_ms
        assert headers["Lambda-Runtime-Invoked-Function-Arn"].startswith("arn:aws:lambda:")
        assert headers["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
        status, _, _ = _call(api, "POST", f"/runtime/invocation/{inv.request_id}/response", b'{"ok": true}')
        assert status == 202 and inv.done.is_set() and inv.status == "ok" and inv.payload == b'{"ok": true}'
        assert inv.duration_ms is not None and inv.duration_ms >= 0


def test_next_long_polls_until_an_invocation_arrives():
    with RuntimeAPI() as api:
        got = {}
        t = threading.Thread(target=lambda: got.update(result=_call(api, "GET", "/runtime/invocation/next")))
        t.start()
        t.join(0.3)
        assert t.is_alive()  # still waiting: nothing was invoked
        api.submit(b"{}", 30)
        t.join(10)
        assert got["result"][0] == 200


def test_errors_and_oversized_responses():
    with RuntimeAPI() as api:
        inv = api.submit(b"{}", 30)
        _call(api, "GET", "/runtime/invocation/next")
        body = json.dumps({"errorMessage": "boom", "errorType": "ValueError", "stackTrace": []}).encode()
        status, _, _ = _call(api, "POST", f"/runtime/invocation/{inv.request_id}/error", body, {"Lambda-Runtime-Function-Error-Type": "Unhandled"})
        assert status == 202 and inv.status == "error" and inv.error["errorType"] == "ValueError"

        big = api.submit(b"{}", 30)
        _call(api, "GET", "/runtime/invocation/next")
        status, _, _ = _call(api, "POST", f"/runtime/invocation/{big.request_id}/response", b"x" * (MAX_RESPONSE_BYTES + 1))
        assert status == 413 and big.status == "error" and "6 MB" in big.error["errorMessage"]

        status, _, _ = _call(api, "POST", "/runtime/invocation/no-such-id/response", b"{}")
        assert status == 400

        status, _, _ = _call(api, "POST", "/runtime/init/error", b'{"errorMessage": "bad import", "errorType": "Runtime.ImportModuleError"}')
        assert status == 202 and api.init_error["errorType"] == "Runtime.ImportModuleError"


def test_environment_and_report_line_follow_lambda():
    spec = FunctionSpec(name="fn", runtime="python3.13", handler="app.handler", memory_mb=1769, timeout_s=30)
    env = lambda_environment(spec, Layout("/var/task", "/opt/python", "/mnt/hoist/envs/abc", "/var/runtime"), "127.0.0.1:9001")
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.13" and env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "1769"
    assert env["PYTHONPATH"].split(":") == ["/var/task", "/opt/python", "/var/runtime"]
    assert env["HOIST_EFS_TREE"] == "/mnt/hoist/envs/abc" and env["_HANDLER"] == "app.handler"
    assert "AWS_LAMBDA_MAX_CONCURRENCY" not in env  # it switches awslambdaric's mode
    line = InvokeReport("id-1", "ok", b"", None, 12.3, 450.0, 1769, 80).report_line()
    assert line.split("\t") == ["REPORT RequestId: id-1", "Duration: 12.30 ms", "Billed Duration: 13 ms", "Memory Size: 1769 MB", "Max Memory Used: 80 MB", "Init Duration: 450.00 ms"]


def test_a_function_run_here_sees_no_site_packages_of_this_machine_and_the_runtimes_boto3():
    """As on Lambda: the task root (its cwd), the layer, the runtime folder (client and boto3), the standard library."""
    from runtime.function import BOTO3_VERSION, local_command

    assert local_command("/usr/bin/python3", "app.handler") == ["/usr/bin/python3", "-S", "-m", "awslambdaric", "app.handler"]
    pins = dict(line.split("==") for line in (REPO / "requirements" / "tooling.txt").read_text().splitlines() if "==" in line and not line.startswith("#"))
    assert pins["boto3"] == BOTO3_VERSION  # the SDK the runtime folder holds is the one the pipeline is tested with


def test_a_client_that_hung_up_prints_no_traceback_and_other_errors_still_do(capsys):
    """socketserver prints a traceback per failed request: a hang-up is not one (it broke `invoke validate`'s output)."""
    from runtime.emulator import QuietHTTPServer

    server = QuietHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    try:
        for exc, printed in ((ConnectionResetError(104, "Connection reset by peer"), False), (ValueError("a real bug"), True)):
            try:
                raise exc
            except Exception:
                server.handle_error(None, ("127.0.0.1", 1))
            assert ("Traceback" in capsys.readouterr().err) is printed, exc
    finally:
        server.server_close()
