"""`invoke build` then `invoke validate` for an image target, end to end on x86_64: the image is built FROM a stand-in
Lambda base (this machine's CPython 3.12 at /var/lang, awslambdaric 4.2.2 with snapshot_restore_py at /var/runtime,
the client as ENTRYPOINT, the handler as CMD: the shape of AWS's python3.12 image, without its entrypoint script), and
validate runs the image itself through that client with SnapStart: init, before-snapshot hooks, restore/next, the
after-restore hooks, the first answer. Small sets; the stand-in is built once per machine."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from builder.build import build
from builder.lock import lock
from pipeline import config, docker
from pipeline.targets import lambda_target
from runtime.function import runtime_client
from tests.conftest import write_pipeline
from tests.docker_support import PY312
from tests.schemas import assert_conforms

pytestmark = [pytest.mark.docker, pytest.mark.network]  # awslambdaric from PyPI once per cache

NO_HOOKS_CLIENT = """import importlib, json, os, sys, urllib.request
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
module, name = sys.argv[1].rsplit(".", 1)
sys.path.insert(0, "/var/task")
handler = getattr(importlib.import_module(module), name)
while True:  # a runtime loop that never asks /runtime/restore/next
    with urllib.request.urlopen(f"http://{api}/2018-06-01/runtime/invocation/next") as got:
        request_id, event = got.headers["Lambda-Runtime-Aws-Request-Id"], json.loads(got.read())
    body = json.dumps(handler(event, None)).encode()
    urllib.request.urlopen(urllib.request.Request(f"http://{api}/2018-06-01/runtime/invocation/{request_id}/response", data=body, method="POST")).close()
"""
def test_an_image_target_builds_and_validates_through_the_client_in_the_image(project, wheelhouse, lambda_standin):
    path = write_pipeline(project, wheelhouse, {"[sets.efs]": PY312, 'name = "test-fn"': 'name = "test-fn"\npackage = "image"',
                                                 'handler_dir = "handler"': f'handler_dir = "handler"\nbase_image = "{lambda_standin}"'})
    (project / "requirements" / "efs.in").write_text("purepkg\n")
    cfg = config.load(path)
    lock(cfg, "py312")
    result = build(cfg, "py312")
    made = result.record.image
    assert made is not None and made.platform == "linux/amd64" and [n for n, _, _ in made.layers][-2:] == ["layer", "handler"]
    assert made.base.startswith(lambda_standin + "@sha256:")  # FROM the stand-in, pinned by its id
    doc = json.loads(result.build_json.read_text())
    assert doc["image"]["config_digest"] == made.config_digest  # build.json names the image and its digest
    assert_conforms("build-record", doc)

    from validate.stage import from_build

    lines: list[str] = []
    report = from_build(cfg, "py312", smoke_level="2", on_line=lines.append)
    smoke = report.smoke
    assert report.ok, [f.as_json() for f in report.errors] + [smoke.log_tail if smoke else None]
    assert smoke is not None and smoke.image == made.tag and smoke.emulated is False
    snap = smoke.snapstart
    assert snap["snapstart"] is True and snap["init_to_snapshot_ms"] > 0 and snap["restore_to_first_answer_ms"] > 0
    hooks = snap["hooks"]
    assert hooks["registered_with"] == "snapshot_restore_py" and hooks["restores"] == 1 and hooks["snapshotting"] is True
    body = json.loads(smoke.handler_result["body"])
    assert body["status"] == "ok" and body["efs_tree"] == "/opt/hoist/efs" and body["on_path"] is True  # the heavy set from the image's own disk
    assert_conforms("validation-report", json.loads(json.dumps(report.as_json())))

    # a handler-only change: the next build writes only the handler's layer
    (project / "handler" / "app.py").write_text((project / "handler" / "app.py").read_text() + "\n# changed\n")
    again = build(cfg, "py312").record.image
    assert again is not None and again.written == ("handler",) and again.layers[:-1] == made.layers[:-1]

    # FROM a base whose runtime client knows nothing of SnapStart: validate says the hooks are not served, with the fix
    context = project / "nohooks"
    context.mkdir()
    (context / "nohooks.py").write_text(NO_HOOKS_CLIENT)
    (context / "Dockerfile").write_text(f'FROM {lambda_standin}\nCOPY nohooks.py /var/runtime/nohooks.py\n'
                                        'ENTRYPOINT ["/var/lang/bin/python3.12", "/var/runtime/nohooks.py"]\n')
    code, output = docker.build(context, f"{lambda_standin}-nohooks")
    assert code == 0, output[-2000:]
    path.write_text(path.read_text().replace(f'base_image = "{lambda_standin}"', f'base_image = "{lambda_standin}-nohooks"'))
    cfg = config.load(path)
    build(cfg, "py312")
    report = from_build(cfg, "py312", smoke_level="2")
    [finding] = [f for f in report.errors if f.rule == "smoke-init"]
    assert "does not serve SnapStart's hooks" in finding.message and "awslambdaric" in (finding.fix or "")


ARM_DOCKERFILE = """FROM {base}
COPY ric /var/runtime
ENV PYTHONPATH=/var/runtime:/opt/python LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime
ENTRYPOINT ["/var/lang/bin/python3.13", "-m", "awslambdaric"]
"""


def test_an_arm64_image_is_validated_on_its_own_cpu_under_qemu_and_says_so(project, wheelhouse, docker_daemon, emulated_arm64, tmp_path_factory):
    """The same flow for an arm64 target (python3.13), FROM the Debian trixie arm64 stand-in with awslambdaric's aarch64
    wheel: the image runs under QEMU, the hooks run in SnapStart's order, and the figures are marked emulated."""
    from tests.emulation_support import arm64_lambda_standin

    base = arm64_lambda_standin(emulated_arm64, tmp_path_factory.mktemp("arm-standin"))
    tag = f"{base}-ric"
    if not docker.image_exists(tag):
        context = tmp_path_factory.mktemp("arm-ric")
        shutil.copytree(runtime_client(lambda_target("arm", "python3.13", "arm64"), tmp_path_factory.mktemp("arm-ric-cache")), context / "ric")
        (context / "Dockerfile").write_text(ARM_DOCKERFILE.format(base=base))
        code, output = docker.build(context, tag, platform="linux/arm64")
        assert code == 0, output[-2000:]
    path = write_pipeline(project, wheelhouse, {'name = "test-fn"': 'name = "test-fn"\npackage = "image"',
                                                 'handler_dir = "handler"': f'handler_dir = "handler"\nbase_image = "{tag}"'})
    (project / "requirements" / "efs.in").write_text("purepkg\n")
    cfg = config.load(path)
    lock(cfg, "arm")
    made = build(cfg, "arm").record.image
    assert made is not None and made.platform == "linux/arm64"

    from validate.stage import from_build

    report = from_build(cfg, "arm", smoke_level="2")
    smoke = report.smoke
    assert report.ok, [f.as_json() for f in report.errors] + [smoke.log_tail if smoke else None]
    assert smoke.machine == "aarch64" and smoke.emulated is True and smoke.snapstart["emulated"] is True
    assert smoke.snapstart["hooks"]["registered_with"] == "snapshot_restore_py" and smoke.snapstart["hooks"]["restores"] == 1


HWCAP = """import struct
auxv = open('/proc/self/auxv', 'rb').read()
caps = dict(struct.unpack('QQ', auxv[i:i + 16]) for i in range(0, len(auxv), 16))
print('sve' if caps[16] & (1 << 22) else 'no-sve', 'paca' if caps[16] & (1 << 30) else 'no-paca')
"""


def test_an_arm64_container_emulates_the_cpu_the_import_check_does(docker_daemon, emulated_arm64, tmp_path_factory):
    """The environment validate and serve give an image's container makes binfmt's QEMU emulate a Neoverse N1 (no SVE, no
    pointer authentication: AT_HWCAP as QEMU reports it in the container), as the import check and the EFS smoke test
    do; without it QEMU's default "max" has both."""
    from runtime.function import FunctionSpec, container_environment
    from tests.emulation_support import arm64_lambda_standin

    base = arm64_lambda_standin(emulated_arm64, tmp_path_factory.mktemp("arm-standin"))
    spec = FunctionSpec(name="fn", runtime="python3.13", handler="app.handler", memory_mb=512, timeout_s=30)
    seen = {}
    for case, env in (("plain", {}), ("function", container_environment(spec, "127.0.0.1:9001", machine="aarch64"))):
        cmd = docker.run_command(base, ["-c", HWCAP], entrypoint="/var/lang/bin/python3.13", platform="linux/arm64", network="none", env=env)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        seen[case] = done.stdout.split()
    assert seen == {"plain": ["sve", "paca"], "function": ["no-sve", "no-paca"]}
