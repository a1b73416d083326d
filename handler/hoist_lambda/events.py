"""Events in, proxy responses out, and the 4xx contract.

API Gateway HTTP API (payload 2.0) and REST (1.0) proxy events, and direct
invokes. The image is the raw body (image/png, image/jpeg; base64 from API
Gateway), JSON {"image": "<base64>"}, or {"s3": {"bucket": ..., "key": ...}}
under HOIST_INPUT_S3_PREFIX. Bad input raises ``BadRequest`` (status, code,
message), which ``respond`` turns into a 4xx with a JSON error code.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from . import aws

MAX_BODY_BYTES = 5_500_000  # Lambda refuses events over 6 MB; stay clear of it
IMAGE_TYPES = {"image/png", "image/jpeg", "image/jpg", "application/octet-stream"}


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def headers(event: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in (event.get("headers") or {}).items()}


def route(event: dict) -> tuple[str | None, str | None]:
    """(method, path) of an API Gateway event; (None, None) for a direct invoke."""
    if "requestContext" in event and "http" in event["requestContext"]:
        return event["requestContext"]["http"]["method"], event.get("rawPath", "/")
    if "httpMethod" in event:
        return event["httpMethod"], event.get("path", "/")
    return None, None


def wants_preview(event: dict) -> bool:
    """``?preview=1`` on the request (``"preview": true`` in a direct invoke): the answer also carries the image the model saw."""
    from urllib.parse import parse_qsl

    method, _ = route(event)
    if method is None:
        return event.get("preview") is True
    params = event.get("queryStringParameters") or dict(parse_qsl(event.get("rawQueryString") or ""))  # REST (1.0) has no rawQueryString
    return params.get("preview") in ("1", "true")


def image_bytes(event: dict) -> bytes:
    method, _ = route(event)
    if method is None:  # direct invoke: {"image": base64} or {"s3": {...}}
        return from_json(event)
    body = event.get("body")
    if body is None or body == "":
        raise BadRequest(400, "missing_body", "send the image as the request body, or JSON {\"image\": \"<base64>\"}")
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(413, "payload_too_large", f"the request is {len(body):,} bytes; Lambda's limit is 6 MB: send a smaller image or an S3 reference")
    ctype = headers(event).get("content-type", "").split(";")[0].strip().lower()
    raw = b64(body) if event.get("isBase64Encoded") else body.encode("latin-1") if isinstance(body, str) else body
    if ctype == "application/json":
        try:
            doc = json.loads(raw)
        except ValueError:
            raise BadRequest(400, "invalid_json", "the body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise BadRequest(400, "invalid_json", "the JSON body must be an object with \"image\" or \"s3\"")
        return from_json(doc)
    if ctype and ctype not in IMAGE_TYPES:
        raise BadRequest(415, "unsupported_content_type", f"content type {ctype!r}: send image/png, image/jpeg or application/json")
    return raw


def b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(400, "invalid_base64", "the image is not valid base64") from None


def from_json(doc: dict) -> bytes:
    if "image" in doc:
        if not isinstance(doc["image"], str):
            raise BadRequest(400, "invalid_base64", "\"image\" must be a base64 string")
        return b64(doc["image"])
    if "s3" in doc:
        return from_s3(doc["s3"])
    raise BadRequest(400, "missing_image", "give \"image\" (base64) or \"s3\": {\"bucket\", \"key\"}")


def from_s3(ref: Any) -> bytes:
    allowed = os.environ.get("HOIST_INPUT_S3_PREFIX", "")  # s3://bucket/prefix/
    if not isinstance(ref, dict) or not isinstance(ref.get("bucket"), str) or not isinstance(ref.get("key"), str):
        raise BadRequest(400, "invalid_s3_reference", "\"s3\" must be {\"bucket\": ..., \"key\": ...}")
    uri = f"s3://{ref['bucket']}/{ref['key']}"
    if not allowed or not uri.startswith(allowed) or ".." in ref["key"]:
        raise BadRequest(403, "s3_key_not_allowed", f"{uri} is outside the allowed input prefix")
    from botocore.exceptions import ClientError

    try:
        obj = aws.s3().get_object(Bucket=ref["bucket"], Key=ref["key"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            raise BadRequest(404, "s3_object_not_found", f"{uri} does not exist") from None
        raise
    if obj.get("ContentLength", 0) > 50 * MAX_BODY_BYTES:
        raise BadRequest(413, "image_too_large", f"{uri} is too large")
    return obj["Body"].read()


def respond(event: Any, status: int, doc: dict) -> dict:
    """A proxy response for API Gateway events; the document itself for a direct invoke."""
    if not isinstance(event, dict) or route(event)[0] is None:
        return doc if status == 200 else {"statusCode": status, **doc}
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(doc)}


def write_output(request_id: str, doc: dict) -> bool:
    """Keep the result under HOIST_OUTPUT_S3 (s3://bucket/prefix/), keyed by request id.

    On the response path on purpose: Lambda freezes the environment once the
    handler returns, so a write left to a background thread may wait frozen
    until the next request, or be lost with the environment. Its cost is in
    `invoke bench serve` (docs/benchmarks.md)."""
    target = os.environ.get("HOIST_OUTPUT_S3", "")
    if not target:
        return False
    bucket, _, prefix = target[5:].partition("/")
    aws.s3().put_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{request_id}.json", Body=json.dumps(doc).encode(), ContentType="application/json")
    return True
