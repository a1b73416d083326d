"""The image shape's template: the same single stack, with an ECR repository first (scan on push, immutable tags, a
lifecycle that keeps what rollback needs), a PackageType Image function pinned by digest with SnapStart on published
versions, no VPC, EFS, mount target or sync role; cfn-lint and Hoist's rules pass, and the rules catch what SnapStart refuses."""
from __future__ import annotations

import copy
import json

import pytest

from deploy import lint as deploy_lint
from deploy.template import Release, dumps, lifecycle_policy, render
from tests.deploy_support import deploy_project, load

IMAGE_DEPLOY = '\n[deploy]\nstack_name = "hoist-test"\nregion = "eu-west-1"\nartifact_bucket = "hoist-artifacts"\n'
DIGEST = "sha256:" + "e" * 64


def _release(digest: str = DIGEST) -> Release:
    return Release(runtime="python3.13", arch="arm64", function_key="", layer_key=None, efs_version="", model_prefix="",
                   image_uri=f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/hoist/test-fn@{digest}")


@pytest.fixture
def image_cfg(tmp_path, wheelhouse):
    path = deploy_project(tmp_path / "img", wheelhouse, replace={'name = "test-fn"': 'name = "test-fn"\npackage = "image"'})
    text = path.read_text()
    path.write_text(text[: text.index("\n[deploy]")] + IMAGE_DEPLOY)  # no VPC, subnets or route tables
    return load(tmp_path / "img")


def _types(template: dict) -> set[str]:
    return {r["Type"] for r in template["Resources"].values()}


def test_the_image_stack_and_its_storage_part_pass_cfn_lint_and_the_project_rules(image_cfg):
    for template in (render(image_cfg, _release()), render(image_cfg, None, storage_only=True)):
        assert [str(f) for f in deploy_lint.lint(template, "eu-west-1")] == []


def test_the_repository_comes_first_and_alone(image_cfg):
    storage = render(image_cfg, None, storage_only=True)
    assert _types(storage) == {"AWS::ECR::Repository"}
    repo = storage["Resources"]["Repository"]["Properties"]
    assert repo["ImageScanningConfiguration"] == {"ScanOnPush": True} and repo["ImageTagMutability"] == "IMMUTABLE"
    rule = json.loads(repo["LifecyclePolicy"]["LifecyclePolicyText"])["rules"][0]
    # the live image and sync.keep (3) older ones: what rollback can reach
    assert rule["selection"]["countNumber"] == image_cfg.sync.keep + 1 == 4 and rule["action"] == {"type": "expire"}
    assert "RepositoryUri" in storage["Outputs"]
    full = render(image_cfg, _release())
    assert full["Resources"]["Repository"] == storage["Resources"]["Repository"]  # the same resource in both renderings


def test_the_function_is_an_image_with_snapstart_and_no_vpc_efs_or_sync(image_cfg):
    template = render(image_cfg, _release())
    fn = template["Resources"]["Function"]["Properties"]
    assert fn["PackageType"] == "Image" and fn["Code"] == {"ImageUri": _release().image_uri}
    assert fn["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    for absent in ("Runtime", "Handler", "Layers", "FileSystemConfigs", "VpcConfig"):
        assert absent not in fn
    assert not any(t.startswith(("AWS::EFS::", "AWS::EC2::")) for t in _types(template))
    assert "SyncRole" not in template["Resources"] and "DependsOn" not in template["Resources"]["Function"]
    env = fn["Environment"]["Variables"]
    assert "HOIST_EFS_TREE" not in env and "HOIST_MODEL_S3" not in env and env["HOIST_OUTPUT_S3"].startswith("s3://hoist-artifacts/")
    role = template["Resources"]["FunctionRole"]["Properties"]
    assert [p["Fn::Sub"] for p in role["ManagedPolicyArns"]] == ["arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]
    sids = {s["Sid"] for s in role["Policies"][0]["PolicyDocument"]["Statement"]}
    assert sids == {"WriteOutputs"}
    assert {"LiveAlias", "HttpApi", "Integration"} <= set(template["Resources"]) and template["Outputs"]["ImageUri"]["Value"] == _release().image_uri


def test_a_new_image_digest_publishes_a_new_version_and_the_same_one_renders_the_same_bytes(image_cfg):
    one, again = render(image_cfg, _release()), render(image_cfg, _release())
    assert dumps(one) == dumps(again)
    other = render(image_cfg, _release("sha256:" + "f" * 64))
    versions = lambda t: {k for k in t["Resources"] if k.startswith("FunctionVersion")}  # noqa: E731
    assert versions(one) != versions(other)


def test_the_rules_catch_what_snapstart_refuses_and_an_unpinned_image(image_cfg):
    template = render(image_cfg, _release())

    def broken(change) -> set[str]:
        doc = copy.deepcopy(template)
        change(doc["Resources"])
        return {f.rule for f in deploy_lint.lint(doc, "eu-west-1")}

    assert "E9008" in broken(lambda r: r["Function"]["Properties"].update(EphemeralStorage={"Size": 1024}))
    assert "E9008" in broken(lambda r: r["Function"]["Properties"].update(FileSystemConfigs=[{"Arn": "arn:aws:elasticfilesystem:eu-west-1:123456789012:access-point/fsap-0123456789abcdef0", "LocalMountPath": "/mnt/x"}]))
    assert "E9008" in broken(lambda r: r["Function"]["Properties"].update(Code={"ImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/hoist/test-fn:latest"}))
    assert "E9008" in broken(lambda r: r["Repository"]["Properties"].update(ImageTagMutability="MUTABLE"))
    assert "E9008" in broken(lambda r: r["Repository"]["Properties"].update(ImageScanningConfiguration={"ScanOnPush": False}))


def test_the_lifecycle_policy_expires_beyond_the_count():
    doc = json.loads(lifecycle_policy(5))
    assert doc["rules"][0]["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 5}
