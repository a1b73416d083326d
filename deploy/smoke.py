"""The smoke test: GET /health, then POST /classify with a sample image; through the
deployed API (``smoke``), or to a published version directly, before the alias
``live`` moves to it (``check_version``: Lambda's Invoke with that version as the
Qualifier and the API's own events).

GET /health answers what activation did (``activation``: hoist_lambda.activate's
report). When the version has archives, an init that did not hydrate from them
fails the test, naming the cause: the function works, seconds slower per cold
start, and nothing else would say so.

A function that has just been deployed starts cold: the first requests may
meet API Gateway's 30 s limit (503/504) while init hydrates the tree, so each
check is retried with backoff before it counts as failed.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipeline import aws
from pipeline.errors import DeployError
from pipeline.httpapi import http_api_event, http_response
from pipeline.routes import route_key

RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class SmokeResult:
    ok: bool
    health: dict | None
    label: str | None  # top label of the sample image
    message: str  # what failed, or a one-line summary
    seconds: float


def _request(url: str, data: bytes | None, content_type: str | None, timeout_s: float) -> tuple[int, dict | str]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET", headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")[:300]


def _retrying(url: str, data: bytes | None, content_type: str | None, attempts: int, timeout_s: float, on_line) -> tuple[int, dict | str]:
    delay, status = 2.0, 0
    body: dict | str = ""
    for attempt in range(1, attempts + 1):
        try:
            status, body = _request(url, data, content_type, timeout_s)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            status, body = 0, f"no answer: {getattr(exc, 'reason', exc)}"
        if status not in RETRY_STATUS and status != 0:
            return status, body
        if attempt < attempts:
            if on_line:
                on_line(f"{url}: {status or 'no answer'}, retrying in {delay:.0f} s (cold start?)")
            time.sleep(delay)
            delay = min(delay * 2, 15)
    return status, body


def hydration_problem(health: dict, archives: bool) -> str | None:
    """Why GET /health's answer shows a version with archives that did not hydrate; None when it did (or has nothing to hydrate)."""
    if not archives:
        return None
    activation = health.get("activation")
    if not isinstance(activation, dict):
        if health.get("hydrated") is True:
            return None
        return ("GET /health does not say what activation did (no 'activation': hoist_lambda.activate.report()), and the version has archives: "
                "add it to the handler's health answer (docs/handler.md, Your own handler)")
    if activation.get("hydrated"):
        return None
    return f"the version has archives, but the init imported from the tree instead of hydrating: {activation.get('why') or 'not said'} (the function's log has the details)"


def smoke(api_url: str, image: Path, expect: str, *, attempts: int = 5, timeout_s: float = 35, on_line=None, archives: bool = False) -> SmokeResult:
    """Through the API, as a user calls it (what the alias serves)."""
    base = api_url.rstrip("/")
    return _judge(lambda: _retrying(f"{base}/health", None, None, attempts, timeout_s, on_line),
                  lambda: _retrying(f"{base}/classify", image.read_bytes(), "image/png", attempts, timeout_s, on_line), image, expect, archives)


def _judge(health_call, classify_call, image: Path, expect: str, archives: bool) -> SmokeResult:
    """The checks, whichever way the requests travel: GET /health (status ok, the tree on the path, hydrated when the
    version has archives), then POST /classify of the sample (its label)."""
    t0 = time.perf_counter()

    def done(ok, health, label, message):
        return SmokeResult(ok=ok, health=health, label=label, message=message, seconds=round(time.perf_counter() - t0, 2))

    status, health = health_call()
    if status != 200 or not isinstance(health, dict) or health.get("status") != "ok":
        return done(False, health if isinstance(health, dict) else None, None, f"GET /health answered {status}: {health}")
    if not health.get("on_path"):
        return done(False, health, None, f"GET /health: the EFS tree {health.get('efs_tree')} is not on sys.path (is the version synced and complete?)")
    problem = hydration_problem(health, archives)
    if problem:
        return done(False, health, None, problem)
    status, body = classify_call()
    if status != 200 or not isinstance(body, dict) or not body.get("predictions"):
        return done(False, health, None, f"POST /classify answered {status}: {body}")
    label = str(body["predictions"][0]["label"])
    if expect and label != expect:
        return done(False, health, label, f"POST /classify labelled {image.name} {label!r}, expected {expect!r}")
    activation = health.get("activation") if isinstance(health.get("activation"), dict) else None
    how = (f", hydrated ({activation.get('hot_files', 0):,} hot files, {activation.get('ms', 0) / 1000:.2f} s)" if activation and activation.get("hydrated")
           else "")
    return done(True, health, label, f"health ok{how}, {image.name} classified as {label!r}")


# Invoke's errors that say the version cannot run (Lambda API reference, "Invoke", Errors): the test fails, naming it
VERSION_FAULTS = ("EFSMountConnectivityException", "EFSMountFailureException", "EFSMountTimeoutException", "EFSIOException",
                  "ENILimitReachedException", "SubnetIPAddressLimitReachedException", "InvalidSubnetIDException", "InvalidSecurityGroupIDException",
                  "EC2AccessDeniedException", "EC2UnexpectedException", "KMSAccessDeniedException", "KMSDisabledException", "KMSNotFoundException",
                  "InvalidRuntimeException", "InvalidZipFileException", "SnapStartException", "RecursiveInvocationException")
# Invoke's errors that pass: a version still Pending (ResourceConflictException), an idle VPC connection being restored
# (ResourceNotReadyException), throttling
VERSION_WAIT = ("ResourceConflictException", "ResourceNotReadyException", "TooManyRequestsException")


def _invoke(lam, function: str, version: str, method: str, path: str, body: bytes, content_type: str | None, attempts: int, on_line) -> tuple[int, dict | str]:
    """One request to the published version itself (Invoke, Qualifier=version), as the API's event; the proxy answer as (status, body)."""
    from botocore.exceptions import ClientError

    event = http_api_event(method, path, {"content-type": content_type} if content_type else {}, body, route=route_key(method, path) or "$default")
    delay = 2.0
    for attempt in range(1, attempts + 1):
        try:
            got = lam.invoke(FunctionName=function, Qualifier=version, InvocationType="RequestResponse", Payload=json.dumps(event).encode())
        except ClientError as exc:
            code, message = aws.error_code(exc), exc.response.get("Error", {}).get("Message", "")
            if code in VERSION_FAULTS:
                return 0, f"Invoke of version {version} said {code}: {message}"
            if code not in VERSION_WAIT or attempt == attempts:
                raise aws.translate(exc, "invoke", "lambda", DeployError, "lambda-alias", "read AWS's message") from None
            if on_line:
                on_line(f"{method} {path} on version {version}: {code}, retrying in {delay:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 15)
            continue
        payload = got["Payload"].read()
        if got.get("ExecutedVersion") not in (None, version):
            return 0, f"Invoke ran version {got.get('ExecutedVersion')}, not {version}"
        if got.get("FunctionError"):  # Handled or Unhandled: the payload is the error object
            try:
                err = json.loads(payload)
            except ValueError:
                err = {}
            what = f"{err.get('errorType', '')}: {err.get('errorMessage', '')}".strip(": ") if isinstance(err, dict) else str(err)
            return 0, f"the function raised ({got['FunctionError']}) {what or payload[:300].decode(errors='replace')}"
        status, _, data = http_response(payload)
        try:
            return status, json.loads(data)
        except ValueError:
            return status, data.decode(errors="replace")[:300]
    raise AssertionError("unreachable")


def check_version(lam, function: str, version: str, image: Path, expect: str, *, attempts: int = 5, on_line=None, archives: bool = False) -> SmokeResult:
    """The published version before the alias moves to it: Lambda's Invoke with Qualifier=<version> (Lambda API
    reference, "Invoke": a version number invokes that version, whatever the alias says) with the events the HTTP API
    sends on its routes (payload format 2.0), judged as the API's answers are."""
    return _judge(lambda: _invoke(lam, function, version, "GET", "/health", b"", None, attempts, on_line),
                  lambda: _invoke(lam, function, version, "POST", "/classify", image.read_bytes(), "image/png", attempts, on_line), image, expect, archives)

