"""A pipeline project with a [deploy] section, and the release the template tests render."""
from __future__ import annotations

from pathlib import Path

from deploy.template import Release
from pipeline import config
from tests.conftest import write_pipeline

DEPLOY = """
[deploy]
stack_name = "hoist-test"
region = "eu-west-1"
artifact_bucket = "hoist-artifacts"
vpc_id = "vpc-0123456789abcdef0"
subnet_ids = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
route_table_ids = ["rtb-0123456789abcdef0"]
"""
EXISTING_FS = """
file_system_id = "fs-0123456789abcdef0"
access_point_id = "fsap-0123456789abcdef0"
mount_target_security_group_id = "sg-0123456789abcdef0"
"""


def deploy_project(root: Path, wheelhouse: Path, extra: str = "", replace: dict[str, str] | None = None) -> Path:
    """Write pipeline.toml (the tests' one) plus [deploy]; ``extra`` lines go into [deploy].
    Creates the requirement files and handler folder when ``root`` has none."""
    (root / "requirements").mkdir(parents=True, exist_ok=True)
    for name, text in (("efs.in", "purepkg\n"), ("layer.in", "layerpkg\n")):
        if not (root / "requirements" / name).exists():
            (root / "requirements" / name).write_text(text)
    (root / "handler").mkdir(exist_ok=True)
    if not (root / "handler" / "app.py").exists():  # function.handler = "app.handler" names it: pipeline.toml's load checks that it is there
        (root / "handler" / "app.py").write_text("def handler(event, context):\n    return {}\n")
    path = write_pipeline(root, wheelhouse, replace)
    path.write_text(path.read_text() + DEPLOY + extra)
    return path


def release(efs_version: str = "c" * 64, function_sha: str = "a" * 64) -> Release:
    return Release(runtime="python3.13", arch="arm64", function_key=f"hoist/artifacts/{function_sha}.zip", layer_key="hoist/artifacts/" + "b" * 64 + ".zip",
                   efs_version=efs_version, model_prefix="hoist/models/" + "d" * 32)


def load(root: Path):
    return config.load(root / "pipeline.toml")
