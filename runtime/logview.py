"""The function's log lines, readable on a console: the handler's JSON events
(hoist_lambda.log) become one short line each, a traceback its own lines;
anything else (awslambdaric, print) is shown as it came."""
from __future__ import annotations

import json

PHASES = (("path_setup_ms", "sys.path"), ("import_torch_ms", "import torch"), ("model_load_ms", "model load"))


def render_line(line: str) -> str:
    if not line.startswith('{"hoist"'):
        return line
    try:
        doc = json.loads(line)
    except ValueError:
        return line
    event = doc.pop("hoist")
    if event == "init":
        phases = ", ".join(f"{label} {doc[key]:.0f} ms" for key, label in PHASES if isinstance(doc.get(key), (int, float)))
        model = f"; model {doc['model']} ({doc.get('labels')} labels, {doc.get('threads')} torch threads)" if doc.get("model") else "; no model"
        return f"init: {phases}{model}"
    if event == "activate":
        how = f"its {doc.get('hot_files', 0):,} hot files ({doc.get('hot_bytes', 0) / 1e6:.1f} MB) in memory" if doc.get("hydrated") else "imported from EFS directly"
        if doc.get("prefetch"):
            how += f", read-ahead {doc['prefetch']}"
        return f"activate: EFS tree {doc.get('efs_tree')}, {how} ({doc.get('ms', 0):.0f} ms)"
    if event == "error":
        return f"request {doc.get('request_id')} failed: {doc.get('error', '')}\n{doc.get('traceback', '').rstrip()}"
    if event == "bad_request":
        return f"request {doc.get('request_id')}: bad request ({doc.get('code')})"
    return f"{event}: " + ", ".join(f"{k}={v}" for k, v in doc.items())
