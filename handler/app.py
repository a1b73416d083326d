"""The demo Lambda handler: image classification with a TorchScript model.

Built from hoist_lambda's parts (one job each): ``activate`` puts the EFS tree
on sys.path, ``model`` loads and checks the model folder named by
HOIST_MODEL_DIR (EFS) or HOIST_MODEL_S3, ``events`` parses the request and
keeps the 4xx contract, ``images`` decodes and preprocesses. A broken model
folder fails init, naming the file, before any request. An unexpected failure
is a 500 naming the request id, with the traceback in the log. This folder
imports nothing from the pipeline: it is what gets zipped.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

from hoist_lambda import events, images, snapstart
from hoist_lambda.activate import activate, release, report
from hoist_lambda.events import BadRequest
from hoist_lambda.log import log
from hoist_lambda.model import Model, load

TOP_K = int(os.environ.get("HOIST_TOP_K", "3"))


def _init() -> tuple[Any, Model | None]:
    env = activate()
    source = os.environ.get("HOIST_MODEL_DIR") or os.environ.get("HOIST_MODEL_S3")
    if not source:
        log("init", path_setup_ms=env.ms, model=None)
        return env, None
    t = time.perf_counter()
    import torch  # noqa: F401 - the heavy import is a measured init phase
    from PIL import Image  # noqa: F401

    import_ms = round((time.perf_counter() - t) * 1000, 1)
    t = time.perf_counter()
    model = load(source)
    log("init", path_setup_ms=env.ms, import_torch_ms=import_ms, model_load_ms=round((time.perf_counter() - t) * 1000, 1),
        efs_tree=env.tree, hydrated=env.hydrated, model=source, labels=len(model.labels), threads=model.threads)
    return env, model


ENV, MODEL = _init()
release()  # init is over: the hot set's memory goes back (hoist_lambda/activate.py)



def classify(data: bytes, preview: bool = False) -> dict:
    """The top predictions for an image; with ``preview``, also the image the model was given (``model_input``)."""
    import torch

    model = MODEL
    assert model is not None
    t0 = time.perf_counter()
    seen = images.resized(images.decode(data), model.folder.pre)  # upright (EXIF), then resized and cropped
    x = images.tensor_of(seen, model.folder.pre)
    t1 = time.perf_counter()
    with torch.inference_mode():
        probs = torch.softmax(model.net(x)[0], dim=0)
    t2 = time.perf_counter()
    top = torch.topk(probs, min(TOP_K, probs.numel()))
    values, indices = top.values.tolist(), top.indices.tolist()
    meta = model.folder.meta
    doc = {  # no zip(strict=): the handler also runs on python3.9
        "predictions": [{"label": model.labels[indices[k]], "probability": round(float(values[k]), 6)} for k in range(len(indices))],
        "model": {"id": meta.get("model", "model"), "version": meta.get("version", "")},
        "timings_ms": {"preprocess": round((t1 - t0) * 1000, 3), "inference": round((t2 - t1) * 1000, 3)},
    }
    if preview:
        doc["model_input"] = images.preview(seen, model.folder.pre)
    return doc


def handler(event: Any, context: Any) -> dict:
    request_id = getattr(context, "aws_request_id", "local")
    method, path = events.route(event) if isinstance(event, dict) else (None, None)
    try:
        if not isinstance(event, dict):
            raise BadRequest(400, "invalid_event", "the event must be a JSON object")
        if method == "GET" and (path or "").rstrip("/").endswith("/health"):
            return events.respond(event, 200, {"status": "ok", "efs_tree": ENV.tree, "hydrated": ENV.hydrated, "hot_files": ENV.hot_files, "on_path": bool(ENV.tree) and ENV.tree in sys.path,
                                               "activation": report(), "snapstart": snapstart.report(), "model": MODEL.folder.meta if MODEL else None})
        if MODEL is None:
            raise BadRequest(503, "model_not_configured", "no model: set HOIST_MODEL_DIR or HOIST_MODEL_S3")
        t0 = time.perf_counter()
        doc = classify(events.image_bytes(event), preview=events.wants_preview(event))
        doc["request_id"] = request_id
        doc["timings_ms"]["total"] = round((time.perf_counter() - t0) * 1000, 3)
        events.write_output(request_id, {k: v for k, v in doc.items() if k != "model_input"})  # the result, not the picture
        return events.respond(event, 200, doc)
    except BadRequest as exc:
        log("bad_request", request_id=request_id, code=exc.code)
        return events.respond(event, exc.status, {"error": exc.code, "message": exc.message, "request_id": request_id})
    except Exception as exc:
        log("error", request_id=request_id, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return events.respond(event, 500, {"error": "internal_error", "message": f"unexpected failure; the traceback is in the function's log under request id {request_id}",
                                           "request_id": request_id})


def _warm() -> None:
    """One inference on the model folder's sample, before a SnapStart snapshot: the lazy kernels are primed in it."""
    sample = MODEL.folder.sample if MODEL else None
    if sample is not None:
        with open(sample.image, "rb") as fh:
            classify(fh.read())


snapstart.prepare(warm=_warm)  # runs only when SnapStart snapshots this init (hoist_lambda/snapstart.py)
