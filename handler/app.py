"""The Lambda handler: image classification with a TorchScript model.

Init, once per execution environment: the EFS dependency tree named by
HOIST_EFS_TREE goes on sys.path *after* the runtime's own entries (the
runtime's packages keep working, and stdlib imports never touch EFS), the
model comes from HOIST_MODEL_DIR (an EFS folder) or HOIST_MODEL_S3
(s3://bucket/prefix/, downloaded once to /tmp), and torch gets one thread per
vCPU the memory size buys. Each phase is logged with its duration.

Requests: API Gateway HTTP API (2.0) and REST (1.0) proxy events, and direct
invokes. The image is the raw body (image/png, image/jpeg; base64 from API
Gateway), JSON {"image": "<base64>"}, or {"s3": {"bucket": ..., "key": ...}}
under HOIST_INPUT_S3_PREFIX. Bad input is a 4xx with a JSON error code; an
unexpected failure is a 500 with the request id. This file imports nothing
from the pipeline: it is what gets zipped.
"""
import base64
import binascii
import io
import json
import os
import sys
import time
import traceback

MAX_PIXELS = int(os.environ.get("HOIST_MAX_PIXELS", 4096 * 4096))  # decompression bombs
MAX_BODY_BYTES = 5_500_000  # Lambda refuses events over 6 MB; stay clear of it
TOP_K = int(os.environ.get("HOIST_TOP_K", 3))
IMAGE_TYPES = {"image/png", "image/jpeg", "image/jpg", "application/octet-stream"}
# 1,769 MB buys one vCPU; 10,240 MB buys six (lambda-facts.md)
MB_PER_VCPU = 1769


def _log(event, **fields):
    print(json.dumps({"hoist": event, **fields}), flush=True)


class BadRequest(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _read(path, workers, chunk=4 << 20):
    """A whole file with concurrent large reads: on EFS the round trips overlap."""
    size = os.path.getsize(path)
    buf = bytearray(size)
    fd = os.open(path, os.O_RDONLY)

    def fetch(offset):
        data = os.pread(fd, min(chunk, size - offset), offset)
        buf[offset : offset + len(data)] = data

    try:
        list(workers.map(fetch, range(0, max(size, 1), chunk)))
    finally:
        os.close(fd)
    return bytes(buf)


def _warm(path, ranges=None, rest=False, chunk=4 << 20):
    """Read ``ranges`` ([offset, length]; all of the file when None) into the page cache;
    with ``rest``, read everything else of the file instead."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        if ranges is None:
            ranges = [[0, 1 << 62]]
        elif rest:
            size, at, gaps = os.fstat(fd).st_size, 0, []
            for offset, length in ranges:
                if offset > at:
                    gaps.append([at, offset - at])
                at = max(at, offset + length)
            ranges = gaps + ([[at, size - at]] if size > at else [])
        for offset, length in ranges:
            end = offset + length
            while offset < end and os.pread(fd, min(chunk, end - offset), offset):
                offset += chunk
    finally:
        os.close(fd)


def _unpack_into(blob, root):
    """Unpack one archive (builder/archives.py's format: zlib of <u32 n><path><u32 mode><u64 size><data>)."""
    import struct
    import zlib

    raw = zlib.decompress(blob)
    at, made = 0, set()
    while at < len(raw):
        (n,) = struct.unpack_from("<I", raw, at)
        rel = raw[at + 4 : at + 4 + n].decode()
        mode, size = struct.unpack_from("<IQ", raw, at + 4 + n)
        start = at + 4 + n + 12
        if rel.startswith("/") or ".." in rel.split("/"):
            raise OSError(f"unsafe path in archive: {rel}")
        path = os.path.join(root, rel)
        folder = os.path.dirname(path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.write(fd, raw[start : start + size])
        os.close(fd)
        at = start + size


def hydrate(tree, dest_root="/tmp/hoist-env"):
    """Unpack the tree's per-package archives (built beside it) into /tmp and
    link its shared libraries back to EFS; returns the local tree, or None
    when there are no archives. Once per execution environment."""
    from concurrent.futures import ThreadPoolExecutor

    version_dir = os.path.dirname(tree.rstrip("/"))
    index_path = os.path.join(version_dir, "archives", "index.json")
    if not os.path.exists(index_path):
        return None
    import hashlib

    raw_index = open(index_path, "rb").read()
    # named by content and by where the tree is: another version never reuses it, and
    # neither does the same version at another path (its library links point into the tree)
    local = os.path.join(dest_root, hashlib.sha256(raw_index + b"\0" + os.path.abspath(tree).encode()).hexdigest()[:16])
    if os.path.exists(os.path.join(local, ".complete")):
        return local
    index = json.loads(raw_index)
    # warm the page cache with the shared libraries in the background, while the
    # archives unpack and Python imports: the loader's page faults then find them
    # there instead of waiting one round trip each. First the ranges the loader
    # reads (index "elf_ranges"), then the code. HOIST_PREFETCH: ordered (default),
    # loader (those ranges only), all (whole files, in index order), none
    how = os.environ.get("HOIST_PREFETCH", "ordered")
    ranges = index.get("elf_ranges", {}) if how in ("ordered", "loader") else {}

    def start_prefetch():
        if how == "none":
            return
        prefetch = ThreadPoolExecutor(16)
        for rel in index["elf"]:
            prefetch.submit(_warm, os.path.join(tree, rel), ranges.get(rel))
        if how == "ordered" and ranges:
            for rel in index["elf"]:
                prefetch.submit(_warm, os.path.join(tree, rel), ranges.get(rel), True)
        prefetch.shutdown(wait=False)

    staging = local + ".partial-%d" % os.getpid()
    os.makedirs(staging, exist_ok=True)
    with ThreadPoolExecutor(32) as io_pool, ThreadPoolExecutor(4) as cpu_pool:
        # largest first: the long archives start early; zlib and writes release the GIL
        names = sorted(index["archives"], key=lambda a: -a["bytes"])
        blobs = [io_pool.submit(_read, os.path.join(version_dir, "archives", a["name"]), io_pool) for a in names]
        unpacked = [cpu_pool.submit(lambda f: _unpack_into(f.result(), staging), f) for f in blobs]
        for f in blobs:  # the archives have the bandwidth first; the libraries take it while they unpack
            f.result()
        start_prefetch()
        for f in unpacked:
            f.result()
    for rel in index["elf"]:  # libraries stay on EFS: only the pages the loader touches travel
        link = os.path.join(staging, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.join(tree, rel), link)
    open(os.path.join(staging, ".complete"), "w").close()
    os.rename(staging, local)
    return local


def _init():
    phases = {}
    t = time.perf_counter()
    tree = os.environ.get("HOIST_EFS_TREE", "")
    path = tree
    if tree and os.environ.get("HOIST_HYDRATE", "1") != "0":
        try:
            path = hydrate(tree, os.environ.get("HOIST_HYDRATE_DIR", "/tmp/hoist-env")) or tree
        except OSError as exc:  # /tmp full or EFS hiccup: import from EFS directly, slower but working
            _log("hydrate_failed", error=str(exc))
    if path and path not in sys.path:
        sys.path.append(path)
    phases["path_setup_ms"] = round((time.perf_counter() - t) * 1000, 2)
    state = {"tree": tree or None, "path": path or None, "model": None, "error": None}
    source = os.environ.get("HOIST_MODEL_DIR") or os.environ.get("HOIST_MODEL_S3")
    if source:
        t = time.perf_counter()
        import torch  # noqa: PLC0415 - the heavy import is a measured init phase

        from PIL import Image  # noqa: F401,PLC0415

        phases["import_torch_ms"] = round((time.perf_counter() - t) * 1000, 1)
        vcpus = max(1, min(6, round(int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", MB_PER_VCPU)) / MB_PER_VCPU)))
        torch.set_num_threads(vcpus)
        t = time.perf_counter()
        folder = _model_folder(source)
        state["model"] = {
            "net": torch.jit.load(os.path.join(folder, "model.pt"), map_location="cpu").eval(),
            "labels": json.load(open(os.path.join(folder, "labels.json"))),
            "pre": json.load(open(os.path.join(folder, "preprocess.json"))),
            "meta": json.load(open(os.path.join(folder, "metrics.json"))) if os.path.exists(os.path.join(folder, "metrics.json")) else {},
            "threads": vcpus,
        }
        phases["model_load_ms"] = round((time.perf_counter() - t) * 1000, 1)
    _log("init", **phases, efs_tree=state["tree"], imported_from=state["path"], model=source)
    return state


def _model_folder(source):
    if not source.startswith("s3://"):
        return source
    import hashlib

    import boto3  # noqa: PLC0415 - only for models kept in S3

    bucket, _, prefix = source[5:].partition("/")
    folder = os.path.join("/tmp", "hoist-model", hashlib.sha256(source.encode()).hexdigest()[:16])
    if not os.path.exists(os.path.join(folder, ".complete")):  # once per environment, reused afterwards
        os.makedirs(folder, exist_ok=True)
        s3 = boto3.client("s3")
        for name in ("model.pt", "labels.json", "preprocess.json", "metrics.json"):
            try:
                s3.download_file(bucket, prefix.rstrip("/") + "/" + name, os.path.join(folder, name))
            except Exception:  # noqa: BLE001 - metrics.json is optional
                if name != "metrics.json":
                    raise
        open(os.path.join(folder, ".complete"), "w").close()
    return folder


STATE = _init()


# ---------------------------------------------------------------- requests


def _headers(event):
    return {k.lower(): v for k, v in (event.get("headers") or {}).items()}


def _route(event):
    if "requestContext" in event and "http" in event["requestContext"]:
        return event["requestContext"]["http"]["method"], event.get("rawPath", "/")
    if "httpMethod" in event:
        return event["httpMethod"], event.get("path", "/")
    return None, None  # a direct invoke


def _image_bytes(event):
    method, _ = _route(event)
    if method is None:  # direct invoke: {"image": base64} or {"s3": {...}}
        return _from_json(event)
    body = event.get("body")
    if body is None or body == "":
        raise BadRequest(400, "missing_body", "send the image as the request body, or JSON {\"image\": \"<base64>\"}")
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(413, "payload_too_large", f"the request is {len(body):,} bytes; Lambda's limit is 6 MB: send a smaller image or an S3 reference")
    ctype = _headers(event).get("content-type", "").split(";")[0].strip().lower()
    raw = _b64(body) if event.get("isBase64Encoded") else body.encode("latin-1") if isinstance(body, str) else body
    if ctype == "application/json":
        try:
            doc = json.loads(raw)
        except ValueError:
            raise BadRequest(400, "invalid_json", "the body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise BadRequest(400, "invalid_json", "the JSON body must be an object with \"image\" or \"s3\"")
        return _from_json(doc)
    if ctype and ctype not in IMAGE_TYPES:
        raise BadRequest(415, "unsupported_content_type", f"content type {ctype!r}: send image/png, image/jpeg or application/json")
    return raw


def _b64(text):
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(400, "invalid_base64", "the image is not valid base64") from None


def _from_json(doc):
    if "image" in doc:
        if not isinstance(doc["image"], str):
            raise BadRequest(400, "invalid_base64", "\"image\" must be a base64 string")
        return _b64(doc["image"])
    if "s3" in doc:
        return _from_s3(doc["s3"])
    raise BadRequest(400, "missing_image", "give \"image\" (base64) or \"s3\": {\"bucket\", \"key\"}")


def _from_s3(ref):
    allowed = os.environ.get("HOIST_INPUT_S3_PREFIX", "")  # s3://bucket/prefix/
    if not isinstance(ref, dict) or not isinstance(ref.get("bucket"), str) or not isinstance(ref.get("key"), str):
        raise BadRequest(400, "invalid_s3_reference", "\"s3\" must be {\"bucket\": ..., \"key\": ...}")
    uri = f"s3://{ref['bucket']}/{ref['key']}"
    if not allowed or not uri.startswith(allowed) or ".." in ref["key"]:
        raise BadRequest(403, "s3_key_not_allowed", f"{uri} is outside the allowed input prefix")
    import boto3  # noqa: PLC0415
    from botocore.exceptions import ClientError  # noqa: PLC0415

    try:
        obj = boto3.client("s3").get_object(Bucket=ref["bucket"], Key=ref["key"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            raise BadRequest(404, "s3_object_not_found", f"{uri} does not exist") from None
        raise
    if obj.get("ContentLength", 0) > 50 * MAX_BODY_BYTES:
        raise BadRequest(413, "image_too_large", f"{uri} is too large")
    return obj["Body"].read()


def _decode(data):
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadRequest(400, "not_an_image", "the body is not a PNG or JPEG image") from None
    except Image.DecompressionBombError:
        raise BadRequest(413, "image_too_large", f"the image has more than {MAX_PIXELS:,} pixels") from None
    if img.width * img.height > MAX_PIXELS:
        raise BadRequest(413, "image_too_large", f"the image has {img.width * img.height:,} pixels; the limit is {MAX_PIXELS:,}")
    if img.format not in ("PNG", "JPEG"):
        raise BadRequest(415, "unsupported_image_format", f"{img.format} images are not accepted: send PNG or JPEG")
    try:
        img.load()
    except (OSError, SyntaxError, ValueError):
        raise BadRequest(400, "truncated_image", "the image data is truncated or corrupt") from None
    return img


def _tensor(img, pre):
    import torch
    from PIL import Image

    img = img.convert(pre.get("mode", "RGB"))
    resample = {"box": Image.Resampling.BOX, "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[pre.get("resample", "bilinear")]
    if "resize" in pre:  # ImageNet style: shorter side, then center crop
        w, h = img.size
        s = pre["resize"] / min(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), resample)
    if "center_crop" in pre:
        cw, ch = pre["center_crop"]
        w, h = img.size
        left, top = (w - cw) // 2, (h - ch) // 2
        img = img.crop((left, top, left + cw, top + ch))
    if "size" in pre:
        img = img.resize(tuple(pre["size"]), resample)
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).float()
    channels = len(img.getbands())
    x = x.reshape(img.height, img.width, channels).permute(2, 0, 1)
    if pre.get("invert"):
        x = 255.0 - x
    x = x * pre.get("scale", 1 / 255)
    mean = torch.tensor(pre.get("mean", [0.0] * channels)).reshape(-1, 1, 1)
    std = torch.tensor(pre.get("std", [1.0] * channels)).reshape(-1, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def classify(data):
    import torch

    model = STATE["model"]
    t0 = time.perf_counter()
    img = _decode(data)
    x = _tensor(img, model["pre"])
    t1 = time.perf_counter()
    with torch.inference_mode():
        probs = torch.softmax(model["net"](x)[0], dim=0)
    t2 = time.perf_counter()
    top = torch.topk(probs, min(TOP_K, probs.numel()))
    return {
        "predictions": [{"label": model["labels"][i], "probability": round(float(p), 6)} for p, i in zip(top.values.tolist(), top.indices.tolist())],
        "model": {"id": model["meta"].get("model", "model"), "version": model["meta"].get("version", "")},
        "timings_ms": {"preprocess": round((t1 - t0) * 1000, 3), "inference": round((t2 - t1) * 1000, 3)},
    }


def _respond(event, status, doc):
    if _route(event)[0] is None:
        return doc if status == 200 else {"statusCode": status, **doc}
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(doc)}


def _write_output(request_id, doc):
    target = os.environ.get("HOIST_OUTPUT_S3", "")  # s3://bucket/prefix/
    if not target:
        return
    import boto3  # noqa: PLC0415

    bucket, _, prefix = target[5:].partition("/")
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{request_id}.json", Body=json.dumps(doc).encode(), ContentType="application/json")


def handler(event, context):
    request_id = getattr(context, "aws_request_id", "local")
    method, path = _route(event if isinstance(event, dict) else {})
    try:
        if not isinstance(event, dict):
            raise BadRequest(400, "invalid_event", "the event must be a JSON object")
        if method == "GET" and path.rstrip("/").endswith("/health"):
            model = STATE["model"]
            return _respond(event, 200, {"status": "ok", "efs_tree": STATE["tree"], "imported_from": STATE["path"],
                                         "on_path": bool(STATE["path"]) and STATE["path"] in sys.path, "model": model["meta"] if model else None})
        if STATE["model"] is None:
            raise BadRequest(503, "model_not_configured", "no model: set HOIST_MODEL_DIR or HOIST_MODEL_S3")
        t0 = time.perf_counter()
        doc = classify(_image_bytes(event))
        doc["request_id"] = request_id
        doc["timings_ms"]["total"] = round((time.perf_counter() - t0) * 1000, 3)
        _write_output(request_id, doc)
        return _respond(event, 200, doc)
    except BadRequest as exc:
        _log("bad_request", request_id=request_id, code=exc.code)
        return _respond(event, exc.status, {"error": exc.code, "message": exc.message, "request_id": request_id})
    except Exception:  # noqa: BLE001 - a 500 names the request; the next one still works
        _log("error", request_id=request_id, traceback=traceback.format_exc())
        return _respond(event, 500, {"error": "internal_error", "message": "unexpected failure; see the logs", "request_id": request_id})
