"""`invoke bench serve`: warm request latency through the local endpoint
against calling the model directly.

Direct: the same TorchScript model, in a process of the target's Python with
the same tree, fed the same preprocessed digit. Endpoint: `invoke serve`'s
HTTP -> API Gateway event -> Runtime API -> awslambdaric -> handler path.
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

from pipeline.config import Config
from pipeline.interpreters import find_python
from runtime.serve import start

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


def run(cfg: Config, *, target: str | None = None, runs: int = 1, console: Console | None = None, command: str = "invoke bench serve") -> dict:
    console = console or Console()
    n = 300 * max(1, runs)
    server = start(cfg, target, port=0)
    try:
        body = _digit_png()
        req = lambda: urllib.request.urlopen(urllib.request.Request(server.url + "/classify", data=body, method="POST", headers={"Content-Type": "image/png"}), timeout=30).read()  # noqa: E731
        for _ in range(30):  # warm
            req()
        http = []
        for _ in range(n):
            t = time.perf_counter()
            req()
            http.append((time.perf_counter() - t) * 1000)
        python = find_python(server.function.spec.runtime.removeprefix("python")) if server.function.spec.runtime.startswith("python") else None
        threads = max(1, min(6, round(cfg.function.memory_mb / 1769)))
        out = subprocess.run([python.path, "-c", DIRECT, server.efs_tree, str(cfg.root / "model" / "artifacts"), str(n), str(threads)], capture_output=True, text=True, check=True)
        direct = json.loads(out.stdout)
    finally:
        server.stop()
    fig = {
        "endpoint_ms": {"median": round(statistics.median(http), 3), "p99": round(_pct(http, 0.99), 3), "requests": n},
        "direct_model_ms": {"median": round(statistics.median(direct), 3), "p99": round(_pct(direct, 0.99), 3), "calls": n},
    }
    overhead = fig["endpoint_ms"]["median"] - fig["direct_model_ms"]["median"]
    doc, written = record.write(
        "serve", command,
        figures=fig,
        ratios={"endpoint_vs_direct_median": round(fig["endpoint_ms"]["median"] / fig["direct_model_ms"]["median"], 2)},
        overhead_ms_median=round(overhead, 3),
        goals={"overhead_under_5_ms_median": overhead < 5.0},
    )
    table = Table(title=f"serve: warm latency, {n} requests", title_justify="left")
    for col in ("", "median ms", "p99 ms"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("direct model call", f"{fig['direct_model_ms']['median']:.3f}", f"{fig['direct_model_ms']['p99']:.3f}")
    table.add_row("local endpoint (HTTP -> handler)", f"{fig['endpoint_ms']['median']:.3f}", f"{fig['endpoint_ms']['p99']:.3f}")
    console.print(table)
    console.print(f"overhead {overhead:.2f} ms median ({doc['ratios']['endpoint_vs_direct_median']}x); goal < 5 ms: {'met' if doc['goals']['overhead_under_5_ms_median'] else 'MISSED'}")
    console.print(f"written: {written}")
    return doc
