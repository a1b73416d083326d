"""The CloudFormation template: cfn-lint passes it, Hoist's rules catch each mistake they exist for."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import lint as deploy_lint
from deploy.template import dumps, render
from pipeline.errors import ConfigError, DeployError
from tests.deploy_support import EXISTING_FS, deploy_project, load, release


@pytest.fixture
def cfg(tmp_path, wheelhouse):
    deploy_project(tmp_path / "new", wheelhouse)
    return load(tmp_path / "new")


@pytest.fixture
def existing_cfg(tmp_path, wheelhouse):
    deploy_project(tmp_path / "existing", wheelhouse, EXISTING_FS)
    return load(tmp_path / "existing")


def rules_hit(template: dict) -> set[str]:
    return {f.rule for f in deploy_lint.lint(template, "eu-west-1")}


def test_full_storage_and_existing_fs_templates_pass_cfn_lint_and_the_project_rules(cfg, existing_cfg):
    for template in (render(cfg, release()), render(cfg, None, storage_only=True), render(existing_cfg, release())):
        assert [str(f) for f in deploy_lint.lint(template, "eu-west-1")] == []


def test_the_stack_holds_what_the_seed_procedure_clicked_together(cfg):
    t = render(cfg, release())
    res = t["Resources"]
    types = sorted(r["Type"] for r in res.values())
    for kind in ("AWS::EFS::FileSystem", "AWS::EFS::AccessPoint", "AWS::IAM::Role", "AWS::Lambda::LayerVersion", "AWS::Lambda::Function",
                 "AWS::Lambda::Version", "AWS::Lambda::Alias", "AWS::ApiGatewayV2::Api", "AWS::Lambda::Permission", "AWS::Logs::LogGroup", "AWS::EC2::VPCEndpoint"):
        assert kind in types, kind
    assert types.count("AWS::EFS::MountTarget") == 2  # one per subnet
    fs = res["FileSystem"]
    assert fs["Properties"]["Encrypted"] is True and fs["Properties"]["ThroughputMode"] == "elastic" and fs["DeletionPolicy"] == "Retain"
    ap = res["AccessPoint"]["Properties"]
    assert ap["PosixUser"] == {"Uid": "1000", "Gid": "1000"} and ap["RootDirectory"]["Path"] == "/hoist"
    assert ap["RootDirectory"]["CreationInfo"]["Permissions"] == "755"
    ingress = res["MountTargetIngress"]["Properties"]
    assert (ingress["FromPort"], ingress["ToPort"], ingress["SourceSecurityGroupId"]) == (2049, 2049, {"Ref": "FunctionSecurityGroup"})
    fn = res["Function"]
    props = fn["Properties"]
    assert set(fn["DependsOn"]) >= {"MountTarget0", "MountTarget1"}
    assert props["FileSystemConfigs"] == [{"Arn": {"Fn::GetAtt": ["AccessPoint", "Arn"]}, "LocalMountPath": "/mnt/test"}]
    assert props["Architectures"] == ["arm64"] and props["Runtime"] == "python3.13" and props["EphemeralStorage"] == {"Size": 2048}
    env = props["Environment"]["Variables"]
    assert env["HOIST_EFS_TREE"] == "/mnt/test/envs/" + "c" * 64 + "/site-packages"  # sync/efs.py's layout
    assert env["HOIST_EFS_VERSION"] == "c" * 64 and env["HOIST_MODEL_S3"] == "s3://hoist-artifacts/hoist/models/" + "d" * 32 + "/"
    routes = sorted(r["Properties"]["RouteKey"] for r in res.values() if r["Type"] == "AWS::ApiGatewayV2::Route")
    assert routes == ["GET /health", "POST /classify"]
    assert res["Integration"]["Properties"]["IntegrationUri"] == {"Ref": "LiveAlias"}  # the API calls the alias, so rollback moves it
    assert res["LiveAlias"]["Properties"]["Name"] == "live"
    assert {"ApiUrl", "FunctionName", "FileSystemId", "AccessPointArn"} <= set(t["Outputs"])
    statements = res["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    mount = next(s for s in statements if s["Sid"] == "EfsMount")
    assert mount["Resource"] == {"Fn::GetAtt": ["FileSystem", "Arn"]}
    assert mount["Condition"]["StringEquals"]["elasticfilesystem:AccessPointArn"] == {"Fn::GetAtt": ["AccessPoint", "Arn"]}


def test_same_input_same_bytes_and_a_new_efs_version_publishes_a_new_function_version(cfg):
    assert dumps(render(cfg, release())) == dumps(render(cfg, release()))
    versions = lambda t: [k for k, r in t["Resources"].items() if r["Type"] == "AWS::Lambda::Version"]  # noqa: E731
    a, b = render(cfg, release()), render(cfg, release(efs_version="e" * 64))
    assert versions(a) != versions(b) and len(versions(a)) == len(versions(b)) == 1
    c = render(cfg, release(function_sha="f" * 64))
    assert versions(c) != versions(a)


def test_the_storage_part_is_identical_in_both_renderings(cfg):
    """A storage-first stack is later updated by the full template: its resources must not change."""
    storage, full = render(cfg, None, storage_only=True), render(cfg, release())
    for name, resource in storage["Resources"].items():
        assert full["Resources"][name] == resource, name
    assert not any(r["Type"].startswith("AWS::Lambda") for r in storage["Resources"].values())


def test_existing_file_system_is_referenced_not_created(existing_cfg):
    t = render(existing_cfg, release())
    res = t["Resources"]
    assert not any(r["Type"].startswith("AWS::EFS") for r in res.values())
    assert res["MountTargetIngress"]["Properties"]["GroupId"] == "sg-0123456789abcdef0"
    arn = res["Function"]["Properties"]["FileSystemConfigs"][0]["Arn"]["Fn::Sub"]
    assert arn.endswith(":access-point/fsap-0123456789abcdef0")


def _broken(template: dict, change) -> dict:
    t = copy.deepcopy(template)
    change(t["Resources"])
    return t


def _wildcard_action(r):
    r["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][1]["Action"] = ["s3:*"]


def _wildcard_resource(r):
    r["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][2]["Resource"] = "*"


def _nfs_from_anywhere(r):
    r["MountTargetIngress"]["Properties"].pop("SourceSecurityGroupId")
    r["MountTargetIngress"]["Properties"]["CidrIp"] = "0.0.0.0/0"


def _inline_nfs_ingress(r):
    r["MountTargetSecurityGroup"]["Properties"]["SecurityGroupIngress"] = [{"IpProtocol": "tcp", "FromPort": 2000, "ToPort": 2100, "CidrIp": "203.0.113.0/24"}]  # TEST-NET-3: a public documentation range


def _unencrypted(r):
    r["FileSystem"]["Properties"]["Encrypted"] = False


def _mount_the_file_system(r):
    r["Function"]["Properties"]["FileSystemConfigs"][0]["Arn"] = {"Fn::GetAtt": ["FileSystem", "Arn"]}


def _mount_outside_mnt(r):
    r["Function"]["Properties"]["FileSystemConfigs"][0]["LocalMountPath"] = "/efs/hoist"


def _no_depends_on(r):
    r["Function"]["DependsOn"] = ["FunctionNfsEgress"]


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (_wildcard_action, "E9001"),
        (_wildcard_resource, "E9001"),
        (_nfs_from_anywhere, "E9002"),
        (_inline_nfs_ingress, "E9002"),
        (_unencrypted, "E9003"),
        (_mount_the_file_system, "E9004"),
        (_mount_outside_mnt, "E9004"),
        (_no_depends_on, "E9005"),
    ],
)
def test_each_project_rule_catches_the_template_that_breaks_it(cfg, change, rule):
    good = render(cfg, release())
    assert rule not in rules_hit(good)
    assert rule in rules_hit(_broken(good, change))


def test_a_lint_error_stops_the_deploy_with_the_rule_and_the_command(cfg):
    with pytest.raises(DeployError) as err:
        deploy_lint.check(_broken(render(cfg, release()), _unencrypted), "eu-west-1", "dist/arm/template.json")
    assert "E9003" in str(err.value) and "cfn-lint --append-rules deploy/lint_rules" in str(err.value)


def test_cfn_lint_command_line_loads_the_rules_with_append_rules(cfg, tmp_path):
    """The documented shell form: cfn-lint --append-rules deploy/lint_rules template.json."""
    cli = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")
    assert cli, "cfn-lint is not installed: python3 -m pip install -r requirements/tooling.txt"
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(dumps(render(cfg, release())))
    bad.write_text(json.dumps(_broken(render(cfg, release()), _no_depends_on)))
    ok = subprocess.run([cli, "--append-rules", str(deploy_lint.RULES_DIR), "--regions", "eu-west-1", "--", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = subprocess.run([cli, "--append-rules", str(deploy_lint.RULES_DIR), "--regions", "eu-west-1", "--", str(bad)], capture_output=True, text=True)
    assert broken.returncode != 0 and "E9005" in broken.stdout


@pytest.mark.parametrize(
    ("extra", "replace", "key"),
    [
        ('file_system_id = "fs-0123456789abcdef0"\n', {}, "access_point_id"),
        ("ephemeral_storage_mb = 100\n", {}, "ephemeral_storage_mb"),
        ("log_retention_days = 10\n", {}, "log_retention_days"),
        ("", {}, None),
    ],
)
def test_deploy_section_errors_name_the_key(tmp_path, wheelhouse, extra, replace, key):
    deploy_project(tmp_path, wheelhouse, extra, replace)
    if key is None:
        path = tmp_path / "pipeline.toml"
        path.write_text(path.read_text().replace('"subnet-0123456789abcdef1"', '"subnet-nope"'))
        key = "subnet_ids"
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert key in str(err.value) and "fix:" in str(err.value)
