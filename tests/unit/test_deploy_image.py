"""The deployer's plan for the image shape, offline and with the stack read: the repository first (--storage-only), the
push only at apply, the function pinned by digest. The push itself against a real registry: tests/integration/test_image_push.py."""
from __future__ import annotations

import json

import pytest

from deploy import lint as deploy_lint
from deploy import stack
from deploy.stage import Clients, Deployer
from pipeline.errors import DeployError
from pipeline.records import BuildRecord, ImageRecord
from tests.conftest import REPO
from tests.deploy_support import deploy_project, load

CONFIG_DIGEST = "sha256:" + "c" * 64


class FakeSteps:
    """What compose/deploy.py gives the deployer, for an image build that is already made (no Docker here)."""

    def __init__(self, root):
        self.image = ImageRecord(layout=root / "dist" / "arm" / "image", tag="hoist/test-fn:" + "c" * 12, config_digest=CONFIG_DIGEST,
                                 manifest_digest="sha256:" + "d" * 64, base="hoist-test/base:1@sha256:" + "0" * 64, platform="linux/arm64",
                                 bytes=1000, layers=(("base-0", "sha256:" + "1" * 64, 500), ("handler", "sha256:" + "2" * 64, 500)))
        self.built = 0

    def build(self, target_name, progress):
        self.built += 1
        return BuildRecord(target={"name": target_name}, builder="native", builder_detail="native", sets={}, artifacts={}, image=self.image)

    def static_errors(self, record):
        return []

    def plan_sync(self, target_name, method):
        raise AssertionError("an image is never synced")

    def apply_sync(self, job, on_line):
        raise AssertionError("an image is never synced")


@pytest.fixture
def image_project(tmp_path, wheelhouse):
    import shutil

    path = deploy_project(tmp_path, wheelhouse, replace={'name = "test-fn"': 'name = "test-fn"\npackage = "image"'})
    text = path.read_text()
    path.write_text(text[: text.index("vpc_id")])  # [deploy] without a VPC
    shutil.copytree(REPO / "model" / "artifacts", tmp_path / "model" / "artifacts")
    return load(tmp_path)


def test_the_offline_dry_run_renders_and_lints_the_repository_then_the_image_function_and_pushes_nothing(image_project, monkeypatch):
    monkeypatch.setattr("deploy.image.push", lambda *a, **k: pytest.fail("nothing is pushed while planning"))
    steps = FakeSteps(image_project.root)
    deployer = Deployer(image_project, "arm", None, steps=steps)
    storage = deployer.plan(storage_only=True, dry_run=True)
    assert {r["Type"] for r in json.loads(storage.template_path.read_text())["Resources"].values()} == {"AWS::ECR::Repository"}
    assert steps.built == 0  # the repository needs no build
    plan = deployer.plan(dry_run=True)
    template = json.loads(plan.template_path.read_text())
    fn = template["Resources"]["Function"]["Properties"]
    assert fn["PackageType"] == "Image" and fn["Code"]["ImageUri"] == f"<RepositoryUri>@{CONFIG_DIGEST}" and fn["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert [str(f) for f in deploy_lint.lint(template, "eu-west-1") if f.level == "error"] == []
    assert plan.image is not None and plan.image.digest is None and plan.has_work and plan.sync is None and plan.artifacts is None
    assert any("to push" in u for u in plan.unchecked)
    assert not any(t.startswith(("AWS::EFS", "AWS::EC2")) for t in {r["Type"] for r in template["Resources"].values()})


def test_a_full_deploy_before_the_repository_exists_asks_for_storage_first(image_project, monkeypatch):
    monkeypatch.setattr(stack, "describe", lambda cfn, name: stack.StackState(name=name, status=None))
    deployer = Deployer(image_project, "arm", Clients(s3=None, cloudformation=None, lambda_=None, efs=None), steps=FakeSteps(image_project.root))
    with pytest.raises(DeployError) as err:
        deployer.plan()
    assert "no image repository" in str(err.value) and "invoke deploy --storage-only" in str(err.value)
