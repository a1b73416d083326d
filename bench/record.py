"""What every benchmark writes: bench/results/<name>.json with its figures,
ratios, the machine and the command (one layout for all of them), and its
chart beside it, bench/results/<name>.png (bench/charts.py)."""
from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

from . import charts

RESULTS = Path(__file__).with_name("results")


def write(name: str, command: str, **fields) -> tuple[dict, Path]:
    doc = {
        "benchmark": name,
        "version": 1,
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        **fields,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    charts.draw(doc, path)  # after the JSON: a chart that fails loses no measurement (`--chart-only` redraws)
    return doc, path
