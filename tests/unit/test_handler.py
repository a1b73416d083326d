"""The handler's request handling, in process: event shapes, errors, S3 references
(against moto's server), and a 500 that leaves the next request working."""
from __future__ import annotations

import base64
import importlib.util
import json
import sys
from types import SimpleNamespace

import pytest

from tests.conftest import REPO


@pytest.fixture
def app(monkeypatch):
    monkeypatch.delenv("HOIST_MODEL_DIR", raising=False)
    monkeypatch.delenv("HOIST_MODEL_S3", raising=False)
    monkeypatch.syspath_prepend(str(REPO / "handler"))
    spec = importlib.util.spec_from_file_location("hoist_handler_under_test", REPO / "handler" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen, previews = [], []

    def fake_classify(data, preview=False):
        seen.append(data)
        previews.append(preview)
        return {"predictions": [{"label": "7", "probability": 1.0}], "model": {"id": "m", "version": "1"}, "timings_ms": {}}

    monkeypatch.setattr(module, "classify", fake_classify)
    monkeypatch.setattr(module, "MODEL", SimpleNamespace(folder=SimpleNamespace(meta={"model": "m"})))
    module.seen, module.previews = seen, previews
    return module


class Ctx:
    aws_request_id = "req-1"


def test_http_api_rest_and_direct_invokes(app):
    data = b"\x89PNG fake"
    v2 = {"version": "2.0", "requestContext": {"http": {"method": "POST", "path": "/classify"}}, "rawPath": "/classify",
          "headers": {"Content-Type": "image/png"}, "body": base64.b64encode(data).decode(), "isBase64Encoded": True}
    r = app.handler(v2, Ctx())
    assert r["statusCode"] == 200 and json.loads(r["body"])["request_id"] == "req-1" and app.seen[-1] == data
    rest = {"httpMethod": "POST", "path": "/classify", "headers": {"content-type": "application/json"}, "body": json.dumps({"image": base64.b64encode(data).decode()}), "isBase64Encoded": False}
    assert app.handler(rest, Ctx())["statusCode"] == 200 and app.seen[-1] == data
    direct = app.handler({"image": base64.b64encode(data).decode()}, Ctx())
    assert direct["predictions"][0]["label"] == "7" and "statusCode" not in direct
    bad = app.handler({"image": "%%%"}, Ctx())
    assert bad["statusCode"] == 400 and bad["error"] == "invalid_base64"
    assert app.handler("not an object", Ctx())["error"] == "invalid_event"


def test_unexpected_failure_is_a_500_with_the_request_id_and_the_next_request_works(app, monkeypatch, capsys):
    def boom(data, preview=False):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(app, "classify", boom)
    r = app.handler({"image": base64.b64encode(b"x").decode()}, Ctx())
    assert r["statusCode"] == 500 and r["error"] == "internal_error" and r["request_id"] == "req-1"
    assert "req-1" in r["message"] and "log" in r["message"]  # the 500 points to the log
    logged = json.loads([line for line in capsys.readouterr().out.splitlines() if '"error"' in line][-1])
    assert logged["error"] == "RuntimeError: model exploded" and "Traceback" in logged["traceback"]  # logged, not returned
    monkeypatch.setattr(app, "classify", lambda data, preview=False: {"predictions": [], "model": {}, "timings_ms": {}})
    assert "predictions" in app.handler({"image": base64.b64encode(b"x").decode()}, Ctx())


def test_no_model_configured_is_a_503_and_health_still_answers(app):
    app.MODEL = None
    r = app.handler({"image": base64.b64encode(b"x").decode()}, Ctx())
    assert r["statusCode"] == 503 and r["error"] == "model_not_configured"
    health = app.handler({"version": "2.0", "requestContext": {"http": {"method": "GET", "path": "/health"}}, "rawPath": "/health"}, Ctx())
    assert health["statusCode"] == 200 and json.loads(health["body"])["status"] == "ok"


@pytest.mark.moto
def test_s3_references_inside_the_allowed_prefix_only(app, monkeypatch, moto_server):
    import boto3

    try:
        for k, v in {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("HOIST_INPUT_S3_PREFIX", "s3://inputs-bucket/uploads/")
        monkeypatch.setenv("HOIST_OUTPUT_S3", "s3://inputs-bucket/results/")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="inputs-bucket")
        from hoist_lambda import aws

        aws.s3.cache_clear()
        made, real_client = [], boto3.client
        monkeypatch.setattr(boto3, "client", lambda *a, **k: made.append(a) or real_client(*a, **k))
        s3.put_object(Bucket="inputs-bucket", Key="uploads/seven.png", Body=b"png bytes")
        ok = app.handler({"s3": {"bucket": "inputs-bucket", "key": "uploads/seven.png"}}, Ctx())
        assert ok["predictions"][0]["label"] == "7" and app.seen[-1] == b"png bytes"
        stored = json.loads(s3.get_object(Bucket="inputs-bucket", Key="results/req-1.json")["Body"].read())
        assert stored["request_id"] == "req-1"  # the result is kept in S3, keyed by request id
        missing = app.handler({"s3": {"bucket": "inputs-bucket", "key": "uploads/nothing.png"}}, Ctx())
        assert (missing["statusCode"], missing["error"]) == (404, "s3_object_not_found")
        outside = app.handler({"s3": {"bucket": "inputs-bucket", "key": "uploads/../secrets/a.png"}}, Ctx())
        assert (outside["statusCode"], outside["error"]) == (403, "s3_key_not_allowed")
        assert made == [("s3",)]  # one client for the execution environment: inputs and outputs of every request reuse it
    finally:
        sys.modules.pop("hoist_handler_under_test", None)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_photo_is_read_upright_as_its_exif_orientation_says(monkeypatch, fmt):
    """A phone stores a portrait photo sideways and says so in EXIF: decode turns it upright (as ImageOps.exif_transpose)."""
    import numpy as np

    from tests.digits import held_out, photo, render

    monkeypatch.syspath_prepend(str(REPO / "handler"))
    from hoist_lambda import images

    digit = held_out()[0][5]
    upright = np.asarray(images.decode(render(digit, fmt)).convert("L"), dtype=float)
    for orientation in (2, 3, 6, 8):  # mirrored, upside down, and the two portrait turns
        seen = images.decode(photo(digit, orientation, fmt))
        untagged = np.asarray(images.decode(photo(digit, orientation, fmt, tagged=False)).convert("L"), dtype=float)  # what was classified before
        assert seen.getexif().get(0x0112) in (None, 1)  # applied, so no longer said
        error = np.abs(np.asarray(seen.convert("L"), dtype=float) - upright).mean()
        assert error == 0 if fmt == "PNG" else error < 4, (orientation, error)  # JPEG: its own loss only
        assert np.abs(untagged - upright).mean() > 20, orientation  # the test tells sideways from upright


def test_the_image_the_model_saw_is_returned_when_asked(app, monkeypatch):
    """?preview=1 (HTTP API and REST events) or "preview": true (direct invoke); not otherwise, so answers stay small."""
    import io

    from PIL import Image

    monkeypatch.syspath_prepend(str(REPO / "handler"))
    from hoist_lambda import images
    from hoist_lambda.contract import parse_preprocess

    data = base64.b64encode(b"png").decode()
    v2 = {"version": "2.0", "requestContext": {"http": {"method": "POST", "path": "/classify"}}, "rawPath": "/classify", "rawQueryString": "preview=1",
          "headers": {"content-type": "image/png"}, "body": data, "isBase64Encoded": True}
    rest = {"httpMethod": "POST", "path": "/classify", "queryStringParameters": {"preview": "true"}, "headers": {"content-type": "image/png"}, "body": data, "isBase64Encoded": True}
    for event in (v2, rest, {"image": data, "preview": True}, {**v2, "rawQueryString": ""}, {"image": data}):
        app.handler(event, Ctx())
    assert app.previews == [True, True, True, False, False]

    img = Image.new("L", (3, 2))
    img.frombytes(bytes([0, 50, 100, 150, 200, 250]))
    for invert, expected in ((False, [0, 50, 100, 150, 200, 250]), (True, [255, 205, 155, 105, 55, 5])):
        shown = images.preview(img, parse_preprocess({"mode": "L", "size": [2, 3], "invert": invert})[0])
        assert shown["image"].startswith("data:image/png;base64,") and (shown["width"], shown["height"]) == (3, 2)
        back = Image.open(io.BytesIO(base64.b64decode(shown["image"].split(",", 1)[1])))
        assert back.format == "PNG" and back.tobytes() == bytes(expected)
