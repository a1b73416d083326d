"""An HTTP API's (payload format 2.0) side of a request and its reply: the event API Gateway sends the function
for a route, and how it reads the function's proxy response (API Gateway developer guide, "Create AWS Lambda proxy
integrations for HTTP APIs": payload format 2.0). Shared by the local endpoint (runtime/) and deploy's test of a
published version, which invokes it directly with the events the API would send."""
from __future__ import annotations

import base64
import json
import time
import uuid
from urllib.parse import urlsplit

TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")


def http_api_event(method: str, raw_path: str, headers: dict[str, str], body: bytes, source_ip: str = "127.0.0.1", route: str = "$default") -> dict:
    """The event API Gateway sends for a request (payload format 2.0) matched to ``route`` ("POST /classify")."""
    parts = urlsplit(raw_path)
    lowered = {k.lower(): v for k, v in headers.items()}
    ctype = lowered.get("content-type", "")
    binary = bool(body) and not ctype.startswith(TEXT_TYPES)
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": route,
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": lowered,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": lowered.get("host", "127.0.0.1"),
            "http": {"method": method, "path": parts.path, "protocol": "HTTP/1.1", "sourceIp": source_ip, "userAgent": lowered.get("user-agent", "")},
            "requestId": uuid.uuid4().hex,
            "routeKey": route,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": base64.b64encode(body).decode() if binary else body.decode("utf-8", "replace"),
        "isBase64Encoded": binary,
    }


def http_response(payload: bytes) -> tuple[int, dict[str, str], bytes]:
    """A proxy integration's reply: a dict with statusCode, or any JSON value (2.0 infers a 200)."""
    try:
        doc = json.loads(payload or b"null")
    except ValueError:
        return 502, {"content-type": "application/json"}, b'{"message": "Internal Server Error"}'
    if isinstance(doc, dict) and "statusCode" in doc:
        body = doc.get("body") or ""
        data = base64.b64decode(body) if doc.get("isBase64Encoded") else (body if isinstance(body, str) else json.dumps(body)).encode()
        return int(doc["statusCode"]), {str(k).lower(): str(v) for k, v in (doc.get("headers") or {}).items()}, data
    return 200, {"content-type": "application/json"}, json.dumps(doc).encode()
