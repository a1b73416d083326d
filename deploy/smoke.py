"""The deployed API's smoke test: GET /health, then POST /classify with a sample image.

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
                "add it to the handler's health answer (README, Your own handler)")
    if activation.get("hydrated"):
        return None
    return f"the version has archives, but the init imported from the tree instead of hydrating: {activation.get('why') or 'not said'} (the function's log has the details)"


def smoke(api_url: str, image: Path, expect: str, *, attempts: int = 5, timeout_s: float = 35, on_line=None, archives: bool = False) -> SmokeResult:
    t0 = time.perf_counter()
    base = api_url.rstrip("/")

    def done(ok, health, label, message):
        return SmokeResult(ok=ok, health=health, label=label, message=message, seconds=round(time.perf_counter() - t0, 2))

    status, health = _retrying(f"{base}/health", None, None, attempts, timeout_s, on_line)
    if status != 200 or not isinstance(health, dict) or health.get("status") != "ok":
        return done(False, health if isinstance(health, dict) else None, None, f"GET /health answered {status}: {health}")
    if not health.get("on_path"):
        return done(False, health, None, f"GET /health: the EFS tree {health.get('efs_tree')} is not on sys.path (is the version synced and complete?)")
    problem = hydration_problem(health, archives)
    if problem:
        return done(False, health, None, problem)
    status, body = _retrying(f"{base}/classify", image.read_bytes(), "image/png", attempts, timeout_s, on_line)
    if status != 200 or not isinstance(body, dict) or not body.get("predictions"):
        return done(False, health, None, f"POST /classify answered {status}: {body}")
    label = str(body["predictions"][0]["label"])
    if expect and label != expect:
        return done(False, health, label, f"POST /classify labelled {image.name} {label!r}, expected {expect!r}")
    activation = health.get("activation") if isinstance(health.get("activation"), dict) else None
    how = (f", hydrated ({activation.get('hot_files', 0):,} hot files, {activation.get('ms', 0) / 1000:.2f} s)" if activation and activation.get("hydrated")
           else "")
    return done(True, health, label, f"health ok{how}, {image.name} classified as {label!r}")
