"""What `invoke serve` prints for the function's log lines."""
from __future__ import annotations

import json

from runtime.logview import render_line


def test_init_phases_become_one_line():
    line = json.dumps({"hoist": "init", "path_setup_ms": 812.4, "import_torch_ms": 1503.0, "model_load_ms": 41.2, "model": "/m", "labels": 5, "threads": 2})
    assert render_line(line) == "init: sys.path 812 ms, import torch 1503 ms, model load 41 ms; model /m (5 labels, 2 torch threads)"


def test_a_failed_request_shows_its_traceback_as_lines():
    tb = 'Traceback (most recent call last):\n  File "app.py", line 3, in handler\nRuntimeError: boom\n'
    text = render_line(json.dumps({"hoist": "error", "request_id": "r-1", "error": "RuntimeError: boom", "traceback": tb}))
    assert text.splitlines()[0] == "request r-1 failed: RuntimeError: boom" and text.splitlines()[-1] == "RuntimeError: boom"


def test_other_lines_pass_through():
    assert render_line("START RequestId: x") == "START RequestId: x"
    assert render_line('{"hoist": broken') == '{"hoist": broken'
    assert render_line(json.dumps({"hoist": "activate", "efs_tree": "/t", "hydrated": True, "hot_files": 1473, "hot_bytes": 28_750_771, "prefetch": "touched", "ms": 5.2})) == \
        "activate: EFS tree /t, its 1,473 hot files (28.8 MB) in memory, read-ahead touched (5 ms)"
    assert render_line(json.dumps({"hoist": "activate", "efs_tree": "/t", "hydrated": False, "ms": 1.0})) == "activate: EFS tree /t, imported from EFS directly (1 ms)"
