"""`invoke bench serve`: warm request latency through the local endpoint
against calling the model directly.

Direct: the same TorchScript model, in a process of the target's Python with
the same tree, fed the same preprocessed digit. Endpoint: `invoke serve`'s
HTTP -> API Gateway event -> Runtime API -> awslambdaric -> handler path.
With output: the same endpoint with HOIST_OUTPUT_S3 set, as the deployed
stack sets it, against moto's server on 127.0.0.1: the result's put_object
on the response path (the S3 client made once per environment). moto answers
locally, so this is the code path's cost without the network's round trip.
Goal (handler issue): handler overhead under 5 ms median.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import time
import urllib.request

from rich.console import Console
from rich.table import Table

from compose.serve import start
from pipeline.config import Config
from pipeline.interpreters import find_python

from . import record

DIRECT = r"""
import json, sys, time
sys.path.append(sys.argv[1])
import torch
net = torch.jit.load(sys.argv[2] + "/model.pt").eval()
torch.set_num_threads(int(sys.argv[4]))  # as many as the handler uses
x = torch.zeros(1, 1, 8, 8)
times = []
with torch.inference_mode():
    for _ in range(int(sys.argv[3]) + 50):
        t = time.perf_counter(); torch.softmax(net(x)[0], 0); times.append((time.perf_counter() - t) * 1000)
print(json.dumps(times[50:]))
"""


def _digit_png() -> bytes:
    import io

    from PIL import Image

    img = Image.new("L", (32, 32))
    img.paste(255, (12, 4, 20, 28))  # a one
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _timed(url: str, body: bytes, n: int) -> list[float]:
    def req() -> dict:
        request = urllib.request.Request(url + "/classify", data=body, method="POST", headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read())

    for _ in range(30):  # warm
        req()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        req()
        times.append((time.perf_counter() - t) * 1000)
    return times


def _with_output(cfg: Config, target: str | None, body: bytes, n: int) -> tuple[list[float], int]:
    """The endpoint with HOIST_OUTPUT_S3 against moto's server; the times and the objects written."""
    import boto3
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        aws = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
        s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
        s3.create_bucket(Bucket="hoist-bench-outputs")
        server = start(cfg, target, port=0, extra_env={**aws, "HOIST_OUTPUT_S3": "s3://hoist-bench-outputs/results/"})
        try:
            times = _timed(server.url, body, n)
        finally:
            server.stop()
        written = sum(page.get("KeyCount", 0) for page in s3.get_paginator("list_objects_v2").paginate(Bucket="hoist-bench-outputs", Prefix="results/"))
    finally:
        moto.stop()
    return times, written


def _stats(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "p99": round(_pct(values, 0.99), 3), "count": len(values)}


def run(cfg: Config, *, target: str | None = None, runs: int = 1, console: Console | None = None, command: str = "invoke bench serve") -> dict:
    console = console or Console()
    n = 300 * max(1, runs)
    body = _digit_png()
    model_dir = cfg.model_dir or cfg.root / "model" / "artifacts"
    server = start(cfg, target, port=0)
    try:
        http = _timed(server.url, body, n)
        python = find_python(server.function.spec.runtime.removeprefix("python"))
        threads = max(1, min(6, round(cfg.function.memory_mb / 1769)))
        out = subprocess.run([python.path, "-c", DIRECT, server.efs_tree, str(model_dir), str(n), str(threads)], capture_output=True, text=True, check=True)
        direct = json.loads(out.stdout)
    finally:
        server.stop()
    console.print("[bold cyan]==>[/] the same endpoint with HOIST_OUTPUT_S3 set, against moto's server")
    with_output, written = _with_output(cfg, target, body, n)
    fig = {
        "endpoint_ms": _stats(http),
        "endpoint_with_output_ms": {**_stats(with_output), "objects_written": written},
        "direct_model_ms": _stats(direct),
    }
    overhead = fig["endpoint_ms"]["median"] - fig["direct_model_ms"]["median"]
    output_write = fig["endpoint_with_output_ms"]["median"] - fig["endpoint_ms"]["median"]
    doc, written_path = record.write(
        "serve", command,
        figures=fig,
        ratios={"endpoint_vs_direct_median": round(fig["endpoint_ms"]["median"] / fig["direct_model_ms"]["median"], 2)},
        overhead_ms_median=round(overhead, 3),
        output_write_ms_median=round(output_write, 3),
        goals={"overhead_under_5_ms_median": overhead < 5.0, "every_result_written": written == n + 30},
    )
    table = Table(title=f"serve: warm latency, {n} requests", title_justify="left")
    for col in ("", "median ms", "p99 ms"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("direct model call", f"{fig['direct_model_ms']['median']:.3f}", f"{fig['direct_model_ms']['p99']:.3f}")
    table.add_row("local endpoint (HTTP -> handler)", f"{fig['endpoint_ms']['median']:.3f}", f"{fig['endpoint_ms']['p99']:.3f}")
    table.add_row("local endpoint, result written to S3 (moto)", f"{fig['endpoint_with_output_ms']['median']:.3f}", f"{fig['endpoint_with_output_ms']['p99']:.3f}")
    console.print(table)
    console.print(f"overhead {overhead:.2f} ms median ({doc['ratios']['endpoint_vs_direct_median']}x); goal < 5 ms: {'met' if doc['goals']['overhead_under_5_ms_median'] else 'MISSED'}")
    console.print(f"the output write adds {output_write:.2f} ms median ({fig['endpoint_with_output_ms']['objects_written']} objects written for {n + 30} requests)")
    console.print(f"written: {written_path}")
    return doc
