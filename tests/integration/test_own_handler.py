"""A handler of one's own, named by function.handler, served through the real
awslambdaric with the same activation as the demo (hoist_lambda.activate)."""
from __future__ import annotations

import json
import urllib.request

import pytest

from tests.conftest import lock_and_build, write_pipeline

pytestmark = [pytest.mark.network]  # awslambdaric comes from PyPI once per project cache

OWN = '''
from hoist_lambda.activate import activate

ENV = activate()
import nativepkg  # from the EFS tree, put on sys.path by activate()

from hoist_lambda import events


def handler(event, context):
    return events.respond(event, 200, {"double": nativepkg.helpers.double(21), "hydrated": ENV.hydrated, "file": nativepkg.__file__,
                                       "loader": type(nativepkg.__loader__).__name__, "prefetch": ENV.prefetch})
'''


def test_an_own_handler_module_is_served_with_the_same_activation(project, wheelhouse):
    from compose.serve import start
    from pipeline import config

    lock_and_build(project)
    (project / "handler" / "my_handler.py").write_text(OWN)
    cfg = config.load(write_pipeline(project, wheelhouse, {'name = "test-fn"': 'name = "test-fn"\nhandler = "my_handler.handler"\nenvironment = { HOIST_PREFETCH = "relocs" }'}))
    assert cfg.function.handler == "my_handler.handler" and not cfg.model_dir.exists()  # no model folder: a handler of one's own may need none
    lines: list[str] = []
    server = start(cfg, port=0, on_line=lines.append)
    try:
        # the API routes POST /classify and GET /health to any handler
        with urllib.request.urlopen(server.url + "/health", timeout=60) as resp:
            doc = json.loads(resp.read())
    finally:
        server.stop()
    assert doc["double"] == 42 and doc["hydrated"] is True and doc["prefetch"] == "relocs"  # [function] environment reached the function
    assert doc["loader"] == "HotSourceLoader" and "/envs/" in doc["file"]  # from memory, under its own path in the synced tree
    assert any(line.startswith("activate: EFS tree ") and "hot files" in line and "in memory" in line for line in lines)  # streamed as it happened
