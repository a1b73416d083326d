"""`invoke serve` for an image target, end to end on x86_64: the target's image is built FROM the stand-in Lambda base
(tests/docker_support.py lambda_standin, awslambdaric as ENTRYPOINT), run in Docker on the host network, and requests through the local
API Gateway reach the handler inside the container through that client. A handler of the test's own answers with what
only the container has (its file under /var/task, the image's ENV), the [function] environment, and the init type.
A handler edit reaches the image on the next serve (only its layer rewritten); stopping removes the container."""
from __future__ import annotations

import json
import urllib.request

import pytest

from pipeline import config, docker, proc
from tests.conftest import write_pipeline
from tests.docker_support import PY312

pytestmark = [pytest.mark.docker, pytest.mark.network]  # awslambdaric from PyPI once per cache, for the stand-in

PROBE = '''import json, os

VERSION = "one"
print("probe: init, on-demand" if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "on-demand" else "probe: init", flush=True)


def handler(event, context):
    print(f"probe: {event['requestContext']['http']['method']} {event['rawPath']}", flush=True)
    answer = {"version": VERSION, "file": __file__, "cwd": os.getcwd(), "efs_tree": os.environ.get("HOIST_EFS_TREE"),
              "greeting": os.environ.get("GREETING"), "init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
              "function": context.function_name, "method": event["requestContext"]["http"]["method"], "body": event.get("body")}
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(answer)}
'''


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def _post(url: str, body: bytes) -> dict:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def _containers(name: str) -> str:
    out = proc.capture([docker.command(), "ps", "-a", "--quiet", "--filter", f"name={name}"])
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_an_image_target_is_served_from_its_image_through_the_gateway(project, wheelhouse, lambda_standin):
    from builder.lock import lock
    from compose.serve import start

    (project / "handler" / "probe.py").write_text(PROBE)
    path = write_pipeline(project, wheelhouse, {"[sets.efs]": PY312,
                                                 'name = "test-fn"': 'name = "test-fn"\npackage = "image"\nhandler = "probe.handler"\n'
                                                                     'environment = { GREETING = "hello from pipeline.toml" }',
                                                 'handler_dir = "handler"': f'handler_dir = "handler"\nbase_image = "{lambda_standin}"'})
    (project / "requirements" / "efs.in").write_text("purepkg\n")
    cfg = config.load(path)
    lock(cfg, "py312")
    lines: list[str] = []
    server = start(cfg, "py312", port=0, on_line=lines.append)  # built here: there is no build yet
    try:
        image = server.image
        assert image is not None and image.platform == "linux/amd64"
        assert json.loads(cfg.build_json("py312").read_text())["image"]["config_digest"] == image.config_digest  # the image build.json names
        health = _get(server.url + "/health")
        assert health["file"] == "/var/task/probe.py" and health["cwd"] == "/var/task"  # the handler in the image's task root
        assert health["efs_tree"] == "/opt/hoist/efs"  # the image's own ENV (builder/image.py), set by nothing of serve's
        assert health["greeting"] == "hello from pipeline.toml" and health["init_type"] == "on-demand" and health["function"] == "test-fn"
        posted = _post(server.url + "/classify", b'{"ping": 1}')
        assert posted["method"] == "POST" and json.loads(posted["body"]) == {"ping": 1} and posted["version"] == "one"
        assert any("probe: init, on-demand" in line for line in lines)  # the function's output streams as it prints
        assert server.function.wait_for_output("probe: POST /classify")
        container = server.function.container
        assert _containers(container)  # it runs as that container
    finally:
        server.stop()
    assert not _containers(container)  # stopped and removed

    # a handler edit reaches the image on the next serve: only the handler's layer is written again
    probe = project / "handler" / "probe.py"
    probe.write_text(probe.read_text().replace('VERSION = "one"', 'VERSION = "two"'))
    again = start(cfg, "py312", port=0, on_line=lines.append)
    try:
        assert again.image is not None and again.image.written == ("handler",) and again.image.config_digest != image.config_digest
        assert _get(again.url + "/health")["version"] == "two"
    finally:
        again.stop()
    assert not _containers(again.function.container)
