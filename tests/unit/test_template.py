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
    assert fs["Properties"]["Encrypted"] is True and fs["Properties"]["ThroughputMode"] == "elastic" and fs["DeletionPolicy"] == "RetainExceptOnCreate"
    ap = res["AccessPoint"]["Properties"]
    assert ap["PosixUser"] == {"Uid": "1000", "Gid": "1000"} and ap["RootDirectory"]["Path"] == "/hoist"
    assert ap["RootDirectory"]["CreationInfo"]["Permissions"] == "755"
    ingress = res["MountTargetIngress"]["Properties"]
    assert (ingress["FromPort"], ingress["ToPort"], ingress["SourceSecurityGroupId"]) == (2049, 2049, {"Ref": "FunctionSecurityGroup"})
    fn = res["Function"]
    props = fn["Properties"]
    assert set(fn["DependsOn"]) >= {"MountTarget0", "MountTarget1"}
    assert props["FileSystemConfigs"] == [{"Arn": {"Fn::GetAtt": ["AccessPoint", "Arn"]}, "LocalMountPath": "/mnt/test"}]
    assert props["Architectures"] == ["arm64"] and props["Runtime"] == "python3.13" and props["EphemeralStorage"] == {"Size": 512}  # the tree is not copied to /tmp: Lambda's free default
    env = props["Environment"]["Variables"]
    assert env["HOIST_EFS_TREE"] == "/mnt/test/envs/" + "c" * 64 + "/site-packages"  # sync/efs.py's layout
    assert env["HOIST_EFS_VERSION"] == "c" * 64 and env["HOIST_MODEL_S3"] == "s3://hoist-artifacts/hoist/models/" + "d" * 32 + "/"
    assert "HOIST_PREFETCH" not in env  # the handler's default unless [function] environment says otherwise
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


# -- writers and readers: identities, network paths, the file system policy ---------------------------

def test_the_function_reads_as_its_own_uid_and_only_the_sync_role_writes(cfg):
    res = render(cfg, release())["Resources"]
    reader, writer = res["AccessPoint"]["Properties"], res["WriterAccessPoint"]["Properties"]
    assert reader["PosixUser"] == {"Uid": "1000", "Gid": "1000"} and writer["PosixUser"] == {"Uid": "1001", "Gid": "1001"}
    # one root for both, created (whoever mounts first) owned by the writer, 755: the function reads, never writes
    for ap in (reader, writer):
        assert ap["RootDirectory"] == {"Path": "/hoist", "CreationInfo": {"OwnerUid": "1001", "OwnerGid": "1001", "Permissions": "755"}}
    policy = res["FileSystem"]["Properties"]["FileSystemPolicy"]
    grants = {st["Sid"]: st for st in policy["Statement"]}
    assert grants["OnlyTheSyncRoleWrites"]["Principal"] == {"AWS": {"Fn::GetAtt": ["SyncRole", "Arn"]}}
    writers = [st for st in policy["Statement"] if st["Effect"] == "Allow" and "elasticfilesystem:ClientWrite" in st["Action"]]
    assert writers == [grants["OnlyTheSyncRoleWrites"]]
    assert grants["ReadersMountWithTheirOwnGrant"]["Action"] == ["elasticfilesystem:ClientMount"]
    for st in (grants["ReadersMountWithTheirOwnGrant"], grants["OnlyTheSyncRoleWrites"]):  # only through an access point, never the bare root
        assert st["Condition"]["Null"] == {"elasticfilesystem:AccessPointArn": "false"}
    deny = grants["RefuseWithoutTls"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    function_actions = {a for st in res["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"] for a in st["Action"]}
    assert not {a for a in function_actions if a.startswith("elasticfilesystem:") and a != "elasticfilesystem:ClientMount"}
    trust = {st["Principal"]["Service"] for st in res["SyncRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]}
    assert trust == {"datasync.amazonaws.com", "ec2.amazonaws.com"} and res["SyncInstanceProfile"]["Properties"]["Roles"] == [{"Ref": "SyncRole"}]
    # who may do what, as EFS evaluates it: tests/unit/test_storage_access.py


def test_every_writer_and_the_function_have_their_own_path_to_2049(cfg, existing_cfg):
    for template in (render(cfg, release()), render(existing_cfg, release()), render(cfg, None, storage_only=True)):
        res = template["Resources"]
        sources = {(r["Properties"]["GroupId"] if isinstance(r["Properties"]["GroupId"], str) else r["Properties"]["GroupId"]["Ref"], r["Properties"]["SourceSecurityGroupId"]["Ref"])
                   for r in res.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"}
        target = "sg-0123456789abcdef0" if "FileSystem" not in res else "MountTargetSecurityGroup"
        assert sources == {(target, "FunctionSecurityGroup"), (target, "SyncSecurityGroup")}
        assert {"SyncSecurityGroupId", "SyncRoleArn", "SyncInstanceProfileArn"} <= set(template["Outputs"])


def _no_sync_ingress(r):
    del r["SyncIngress"]


def _sync_group_without_nfs_out(r):
    r["SyncSecurityGroup"]["Properties"]["SecurityGroupEgress"] = [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0"}]


def _sync_ingress_all_ports(r):
    r["SyncIngress"]["Properties"].update({"IpProtocol": "-1", "FromPort": -1, "ToPort": -1})


def _nfs_from_another_group(r):
    r["SyncIngress"]["Properties"]["SourceSecurityGroupId"] = "sg-0fedcba9876543210"


def _no_file_system_policy(r):
    del r["FileSystem"]["Properties"]["FileSystemPolicy"]


def _everyone_in_the_account_writes(r):
    st = r["FileSystem"]["Properties"]["FileSystemPolicy"]["Statement"][1]
    st["Principal"] = {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}


def _statement(r, sid):
    statements = r["FileSystem"]["Properties"]["FileSystemPolicy"]["Statement"]
    return statements, next(i for i, st in enumerate(statements) if st["Sid"] == sid)


def _plain_nfs_allowed(r):
    statements, i = _statement(r, "RefuseWithoutTls")
    del statements[i]


def _root_allowed(r):
    statements, i = _statement(r, "NobodyIsRoot")
    del statements[i]


def _root_denied_only_to_one_role(r):
    statements, i = _statement(r, "NobodyIsRoot")
    statements[i]["Principal"] = {"AWS": {"Fn::GetAtt": ["FunctionRole", "Arn"]}}


def _bare_root_allowed(r):
    statements, i = _statement(r, "NobodyWithoutAnAccessPoint")
    del statements[i]


def _bare_root_denied_for_mounts_only(r):
    statements, i = _statement(r, "NobodyWithoutAnAccessPoint")
    statements[i]["Action"] = ["elasticfilesystem:ClientMount"]


@pytest.mark.parametrize(
    ("change", "rule"),
    [(_no_sync_ingress, "E9006"), (_sync_group_without_nfs_out, "E9006"), (_sync_ingress_all_ports, "E9002"), (_nfs_from_another_group, "E9002"),
     (_no_file_system_policy, "E9007"), (_everyone_in_the_account_writes, "E9007"), (_plain_nfs_allowed, "E9007"), (_root_allowed, "E9007"),
     (_root_denied_only_to_one_role, "E9007"), (_bare_root_allowed, "E9007"), (_bare_root_denied_for_mounts_only, "E9007")],
)
def test_the_writer_rules_catch_the_template_that_breaks_them(cfg, change, rule):
    good = render(cfg, release())
    assert rule not in rules_hit(good)
    assert rule in rules_hit(_broken(good, change))


def test_two_subnets_in_one_zone_share_a_mount_target(cfg):
    zones = {"subnet-0123456789abcdef0": "eu-west-1a", "subnet-0123456789abcdef1": "eu-west-1a"}
    t = render(cfg, release(), zones=zones)
    targets = {k: r["Properties"]["SubnetId"] for k, r in t["Resources"].items() if r["Type"] == "AWS::EFS::MountTarget"}
    assert targets == {"MountTargetEuWest1a": "subnet-0123456789abcdef0"}
    assert t["Resources"]["Function"]["DependsOn"] == ["MountTargetEuWest1a", "FunctionNfsEgress"]
    assert t["Resources"]["Function"]["Properties"]["VpcConfig"]["SubnetIds"] == list(zones)  # the function still uses both subnets
    assert [str(f) for f in deploy_lint.lint(t, "eu-west-1")] == []


def test_the_version_moves_with_every_function_property(tmp_path, wheelhouse, cfg):
    def version_id(c) -> str:
        return next(k for k, r in render(c, release())["Resources"].items() if r["Type"] == "AWS::Lambda::Version")

    base = version_id(cfg)
    for i, extra in enumerate(('output_prefix = "elsewhere"\n', "ephemeral_storage_mb = 4096\n", 'subnet_ids = ["subnet-0123456789abcdef0"]\n')):
        deploy_project(tmp_path / str(i), wheelhouse, extra if "subnet_ids" not in extra else "")
        if "subnet_ids" in extra:
            path = tmp_path / str(i) / "pipeline.toml"
            path.write_text(path.read_text().replace('subnet_ids = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]', extra.strip()))
        assert version_id(load(tmp_path / str(i))) != base, extra
    deploy_project(tmp_path / "rc", wheelhouse, replace={'name = "test-fn"': 'name = "test-fn"\nreserved_concurrency = 5'})
    rc = load(tmp_path / "rc")
    assert version_id(rc) != base and render(rc, release())["Resources"]["Function"]["Properties"]["ReservedConcurrentExecutions"] == 5


def test_the_function_reserves_ten_environments_unless_told_otherwise(tmp_path, wheelhouse, cfg):
    """The API's throttling is a target, not a ceiling: reserved concurrency is the hard cap on environments, and so on
    concurrent cold starts (Lambda, "Configuring reserved concurrency")."""
    assert render(cfg, release())["Resources"]["Function"]["Properties"]["ReservedConcurrentExecutions"] == 10
    deploy_project(tmp_path / "u", wheelhouse, replace={'name = "test-fn"': 'name = "test-fn"\nreserved_concurrency = "unreserved"'})
    assert "ReservedConcurrentExecutions" not in render(load(tmp_path / "u"), release())["Resources"]["Function"]["Properties"]
    deploy_project(tmp_path / "bad", wheelhouse, replace={'name = "test-fn"': 'name = "test-fn"\nreserved_concurrency = "none"'})
    with pytest.raises(ConfigError) as err:
        load(tmp_path / "bad")
    assert "reserved_concurrency" in str(err.value) and "unreserved" in str(err.value)


def test_the_api_writes_an_access_log_line_per_request_to_its_own_log_group(cfg):
    """HTTP API access logging: the stage names a CloudWatch Logs group by ARN and a format of $context variables
    (API Gateway developer guide, "Configure logging for HTTP APIs")."""
    res = render(cfg, release())["Resources"]
    logs = res["ApiStage"]["Properties"]["AccessLogSettings"]
    assert logs["DestinationArn"] == {"Fn::GetAtt": ["ApiLogGroup", "Arn"]}
    fmt = json.loads(logs["Format"])
    assert {"$context.requestId", "$context.routeKey", "$context.status", "$context.identity.sourceIp"} <= set(fmt.values())
    group = res["ApiLogGroup"]
    assert group["Type"] == "AWS::Logs::LogGroup" and group["Properties"]["RetentionInDays"] == 14
    assert group["Properties"]["LogGroupName"] != res["LogGroup"]["Properties"]["LogGroupName"]


def test_the_api_may_invoke_the_alias_on_its_routes_only_and_is_throttled(tmp_path, wheelhouse, cfg):
    res = render(cfg, release())["Resources"]
    arns = sorted(r["Properties"]["SourceArn"]["Fn::Sub"].rsplit("}/", 1)[1] for r in res.values() if r["Type"] == "AWS::Lambda::Permission")
    assert arns == ["*/GET/health", "*/POST/classify"]
    assert res["ApiStage"]["Properties"]["DefaultRouteSettings"] == {"ThrottlingRateLimit": 50.0, "ThrottlingBurstLimit": 100}
    deploy_project(tmp_path / "t", wheelhouse, replace={'name = "test-api"': 'name = "test-api"\nthrottle_rate = 5\nthrottle_burst = 10'})
    settings = render(load(tmp_path / "t"), release())["Resources"]["ApiStage"]["Properties"]["DefaultRouteSettings"]
    assert settings == {"ThrottlingRateLimit": 5.0, "ThrottlingBurstLimit": 10}


@pytest.mark.parametrize(
    ("extra", "replace", "key"),
    [("writer_uid = 1000\n", {}, "writer_uid"), ("posix_uid = 0\n", {}, "posix_uid"),
     ("", {'name = "test-fn"': 'name = "test-fn"\nreserved_concurrency = 0'}, "reserved_concurrency"),
     ("", {'name = "test-api"': 'name = "test-api"\nthrottle_burst = 0'}, "api.throttle"),
     ('file_system_id = "fs-0123456789abcdef0"\naccess_point_id = "fsap-0123456789abcdef0"\n', {}, "mount_target_security_group_id")],
)
def test_identity_and_limit_errors_name_the_key(tmp_path, wheelhouse, extra, replace, key):
    deploy_project(tmp_path, wheelhouse, extra, replace)
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert key in str(err.value) and "fix:" in str(err.value)


@pytest.mark.moto
def test_mount_targets_per_zone_from_ec2_and_a_clear_error_when_zones_cannot_be_read(tmp_path, wheelhouse, moto_server, monkeypatch):
    from botocore.stub import Stubber

    from deploy.network import subnet_zones
    from pipeline import aws

    for key, value in {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    ec2 = aws.client(aws.session("eu-west-1"), "ec2")
    vpc = ec2.create_vpc(CidrBlock="198.18.0.0/16")["Vpc"]["VpcId"]  # RFC 2544 benchmarking range, inside moto only
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"198.18.{i}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
               for i, zone in enumerate(("eu-west-1a", "eu-west-1b", "eu-west-1a"))]
    deploy_project(tmp_path / "p", wheelhouse)
    path = tmp_path / "p" / "pipeline.toml"
    path.write_text(path.read_text().replace('vpc_id = "vpc-0123456789abcdef0"', f'vpc_id = "{vpc}"')
                    .replace('subnet_ids = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]', f"subnet_ids = {json.dumps(subnets)}"))
    cfg = load(tmp_path / "p")
    zones = subnet_zones(ec2, cfg.deploy.subnet_ids, "eu-west-1")
    assert zones == dict(zip(subnets, ("eu-west-1a", "eu-west-1b", "eu-west-1a"), strict=True))
    t = render(cfg, release(), zones=zones)
    targets = {k: r["Properties"]["SubnetId"] for k, r in t["Resources"].items() if r["Type"] == "AWS::EFS::MountTarget"}
    assert targets == {"MountTargetEuWest1a": subnets[0], "MountTargetEuWest1b": subnets[1]}
    assert [str(f) for f in deploy_lint.lint(t, "eu-west-1")] == []

    with pytest.raises(DeployError) as err:
        subnet_zones(ec2, (subnets[0], "subnet-0123456789abcdef9"), "eu-west-1")
    assert "Availability Zones" in str(err.value) and "deploy.subnet_ids" in str(err.value)
    with Stubber(ec2) as stub:
        stub.add_client_error("describe_subnets", "UnauthorizedOperation", "You are not authorized to perform this operation.")
        with pytest.raises(DeployError) as err:
            subnet_zones(ec2, tuple(subnets), "eu-west-1")
    assert "one mount target per zone" in str(err.value) and "ec2:DescribeSubnets" in str(err.value).split("fix:")[1]


def test_the_functions_own_variables_reach_its_environment_beside_hoists(tmp_path, wheelhouse):
    deploy_project(tmp_path, wheelhouse, replace={'name = "test-fn"': 'name = "test-fn"\nenvironment = { HOIST_PREFETCH = "relocs", MY_SETTING = "x" }'})
    env = render(load(tmp_path), release())["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    assert env["HOIST_PREFETCH"] == "relocs" and env["MY_SETTING"] == "x" and env["HOIST_EFS_TREE"].endswith("/site-packages")


# -- what a failed deploy leaves behind -------------------------------------------------------------
# CloudFormation user guide, "DeletionPolicy attribute": Retain keeps the resource whenever the stack would delete it,
# including when the stack operation that created it rolls back; RetainExceptOnCreate "behaves like Retain for stack
# operations, except for the stack operation that initially created the resource": that operation's rollback deletes it.
# No DeletionPolicy (or Delete) deletes it. UpdateReplacePolicy takes Delete, Retain or Snapshot only.

def _left_behind(resource: dict, event: str) -> bool:
    policy = resource.get("DeletionPolicy", "Delete")
    if event == "the operation that created it rolled back":
        return policy == "Retain"
    if event in ("the stack was deleted", "a later update removed it"):
        return policy in ("Retain", "RetainExceptOnCreate")
    raise ValueError(event)


def test_a_failed_first_create_leaks_nothing_and_a_teardown_keeps_the_data(cfg):
    res = render(cfg, release())["Resources"]
    version = next(k for k, r in res.items() if r["Type"] == "AWS::Lambda::Version")
    for logical in ("FileSystem", "Layer", version):
        # a first deploy that rolls back (the IAM race, a quota) is run again: nothing of the first attempt stays
        assert not _left_behind(res[logical], "the operation that created it rolled back"), logical
        # the trees, layer versions and function versions outlive the stack and later releases (rollback, efs-gc)
        assert _left_behind(res[logical], "the stack was deleted") and _left_behind(res[logical], "a later update removed it"), logical
        assert res[logical]["UpdateReplacePolicy"] in ("Delete", "Retain", "Snapshot")
    assert not _left_behind(res["LogGroup"], "the stack was deleted")


def test_the_docs_say_throttling_is_per_route_and_a_target(cfg):
    """API Gateway developer guide, "Throttle requests to your HTTP APIs" (http-api-throttling.html): the stage's default
    route settings apply to each route, and throttling is best effort, a target rather than a ceiling. With Hoist's
    routes the API as a whole can pass len(ROUTES) times the rate; the help and the docs ("Cost of a cold start") must say so."""
    from pipeline.config import ApiConfig
    from pipeline.routes import ROUTES

    res = render(cfg, release())["Resources"]
    routes = [r for r in res.values() if r["Type"] == "AWS::ApiGatewayV2::Route"]
    assert len(routes) == len(ROUTES) == 2 and "RouteSettings" not in res["ApiStage"]["Properties"]  # every route takes the default
    help_text = ApiConfig.model_fields["throttle_rate"].description or ""
    assert "each route" in help_text and "not a ceiling" in help_text
    docs = " ".join((Path(__file__).parents[2] / "docs" / "cold-start.md").read_text().split())
    assert "apply to **each route** on its own (Hoist has two, so up to twice `throttle_rate` across the API)" in docs
    assert "**a target, not a guaranteed ceiling**" in docs
