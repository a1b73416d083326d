"""The deployer's CloudFormation call sequence, checked call by call with botocore's Stubber.

moto's CloudFormation cannot stand in for AWS here (it skips API Gateway v2
resources and aliases and drops FileSystemConfigs), so these tests pin down
what the deployer asks and how it reads the answers: change set type, waiting,
events, failures and rollbacks, and AWS errors in words.
"""
from __future__ import annotations

import datetime

import pytest
from botocore.stub import ANY

from deploy import stack
from pipeline import aws
from pipeline.errors import DeployError

NAME = "hoist-test"
CS_ARN = f"arn:aws:cloudformation:eu-west-1:123456789012:changeSet/hoist-x/{'1' * 8}"
STACK_ARN = f"arn:aws:cloudformation:eu-west-1:123456789012:stack/{NAME}/{'2' * 8}"
T0 = datetime.datetime(2026, 11, 25, 8, 0, tzinfo=datetime.UTC)


@pytest.fixture
def cfn(stubbed):
    return stubbed("cloudformation")


def stack_doc(status, outputs=None, reason=""):
    doc = {"StackName": NAME, "StackId": STACK_ARN, "CreationTime": T0, "StackStatus": status}
    if outputs:
        doc["Outputs"] = [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]
    if reason:
        doc["StackStatusReason"] = reason
    return {"Stacks": [doc]}


def event(n, logical, status, kind="AWS::Lambda::Function", reason=""):
    ev = {"StackId": STACK_ARN, "EventId": f"ev-{n}", "StackName": NAME, "LogicalResourceId": logical, "ResourceType": kind, "Timestamp": T0, "ResourceStatus": status}
    if reason:
        ev["ResourceStatusReason"] = reason
    return ev


def missing(stub):
    stub.add_client_error("describe_stacks", "ValidationError", f"Stack with id {NAME} does not exist", expected_params={"StackName": NAME})


def change_set_created(stub, kind, changes, pending=1):
    stub.add_response("create_change_set", {"Id": CS_ARN, "StackId": STACK_ARN},
                      {"StackName": NAME, "ChangeSetName": ANY, "ChangeSetType": kind, "TemplateBody": "{}", "Capabilities": ["CAPABILITY_IAM"], "Description": ANY, "Tags": ANY})
    for _ in range(pending):
        stub.add_response("describe_change_set", {"ChangeSetId": CS_ARN, "Status": "CREATE_PENDING", "Changes": []}, {"ChangeSetName": CS_ARN, "StackName": NAME})
    stub.add_response("describe_change_set", {"ChangeSetId": CS_ARN, "Status": "CREATE_COMPLETE", "Changes": changes}, {"ChangeSetName": CS_ARN, "StackName": NAME})


def resource_change(action, logical, kind, replacement=None, names=()):
    rc = {"Action": action, "LogicalResourceId": logical, "ResourceType": kind, "Details": [{"Target": {"Attribute": "Properties", "Name": n}} for n in names]}
    if replacement:
        rc["Replacement"] = replacement
    return {"Type": "Resource", "ResourceChange": rc}


def test_a_new_stack_is_a_create_change_set_read_in_full(cfn):
    client, stub = cfn
    missing(stub)
    change_set_created(stub, "CREATE", [resource_change("Add", "Function", "AWS::Lambda::Function"), resource_change("Add", "FileSystem", "AWS::EFS::FileSystem")], pending=2)
    state = stack.describe(client, NAME)
    assert state.status is None and not state.exists
    plan = stack.plan(client, state, "{}", poll_s=0)
    assert plan.change_set_type == "CREATE" and plan.change_set_id == CS_ARN
    assert [(c.action, c.logical_id) for c in plan.changes] == [("Add", "Function"), ("Add", "FileSystem")]


def test_an_update_lists_modifications_and_replacements_across_pages(cfn):
    client, stub = cfn
    stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE", {"FunctionVersion": "3"}), {"StackName": NAME})
    stub.add_response("create_change_set", {"Id": CS_ARN, "StackId": STACK_ARN})
    stub.add_response("describe_change_set", {"ChangeSetId": CS_ARN, "Status": "CREATE_COMPLETE", "NextToken": "page2",
                                              "Changes": [resource_change("Modify", "Function", "AWS::Lambda::Function", "False", ["Environment", "Code"])]})
    stub.add_response("describe_change_set", {"ChangeSetId": CS_ARN, "Status": "CREATE_COMPLETE", "Changes": [resource_change("Add", "FunctionVersionabc", "AWS::Lambda::Version"),
                                                                                                             resource_change("Modify", "Layer", "AWS::Lambda::LayerVersion", "True")]},
                      {"ChangeSetName": CS_ARN, "StackName": NAME, "NextToken": "page2"})
    state = stack.describe(client, NAME)
    plan = stack.plan(client, state, "{}", poll_s=0)
    assert plan.change_set_type == "UPDATE"
    assert [(c.action, c.logical_id, c.replacement) for c in plan.changes] == [("Modify", "Function", "False"), ("Add", "FunctionVersionabc", ""), ("Modify", "Layer", "True")]
    assert plan.changes[0].details == ("Code", "Environment")


def test_no_changes_is_an_empty_plan_and_the_change_set_is_deleted(cfn):
    client, stub = cfn
    stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE"), {"StackName": NAME})
    stub.add_response("create_change_set", {"Id": CS_ARN, "StackId": STACK_ARN})
    stub.add_response("describe_change_set", {"ChangeSetId": CS_ARN, "Status": "FAILED", "StatusReason": "The submitted information didn't contain changes. Submit different information to create a change set."})
    stub.add_response("delete_change_set", {}, {"ChangeSetName": CS_ARN, "StackName": NAME})
    plan = stack.plan(client, stack.describe(client, NAME), "{}", poll_s=0)
    assert plan.empty and plan.change_set_id is None


def test_executing_an_empty_plan_only_reads_the_stack(cfn):
    client, stub = cfn
    stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE", {"ApiUrl": "https://x"}), {"StackName": NAME})
    state = stack.execute(client, stack.ChangeSetPlan(stack=NAME, change_set_type="UPDATE", change_set_id=None, changes=()))
    assert state.outputs == {"ApiUrl": "https://x"}


def test_a_rejected_change_set_says_why(cfn):
    client, stub = cfn
    stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE"), {"StackName": NAME})
    stub.add_response("create_change_set", {"Id": CS_ARN, "StackId": STACK_ARN})
    stub.add_response("describe_change_set", {"ChangeSetId": CS_ARN, "Status": "FAILED", "StatusReason": "Template error: instance of Fn::GetAtt references undefined resource Nope"})
    with pytest.raises(DeployError) as err:
        stack.plan(client, stack.describe(client, NAME), "{}", poll_s=0)
    assert "undefined resource Nope" in str(err.value)


def test_execute_streams_events_oldest_first_until_complete(cfn):
    client, stub = cfn
    plan = stack.ChangeSetPlan(stack=NAME, change_set_type="UPDATE", change_set_id=CS_ARN, changes=(stack.Change("Modify", "Function", "AWS::Lambda::Function", "False"),))
    stub.add_response("describe_stack_events", {"StackEvents": [event(1, NAME, "UPDATE_COMPLETE", "AWS::CloudFormation::Stack")]}, {"StackName": NAME})
    stub.add_response("execute_change_set", {}, {"ChangeSetName": CS_ARN, "StackName": NAME})
    stub.add_response("describe_stack_events", {"StackEvents": [event(3, "Function", "UPDATE_IN_PROGRESS"), event(2, NAME, "UPDATE_IN_PROGRESS", "AWS::CloudFormation::Stack"), event(1, NAME, "UPDATE_COMPLETE")]})
    stub.add_response("describe_stacks", stack_doc("UPDATE_IN_PROGRESS"))
    stub.add_response("describe_stack_events", {"StackEvents": [event(5, NAME, "UPDATE_COMPLETE", "AWS::CloudFormation::Stack"), event(4, "Function", "UPDATE_COMPLETE"), event(3, "Function", "UPDATE_IN_PROGRESS")]})
    stub.add_response("describe_stacks", stack_doc("UPDATE_COMPLETE", {"FunctionVersion": "4"}))
    seen = []
    state = stack.execute(client, plan, on_event=lambda ev: seen.append(ev["EventId"]), poll_s=0)
    assert seen == ["ev-2", "ev-3", "ev-4", "ev-5"]  # each once, oldest first, none from before the execution
    assert state.status == "UPDATE_COMPLETE" and state.outputs["FunctionVersion"] == "4"


def test_a_failed_update_reports_the_first_failure_reasons_and_that_it_rolled_back(cfn):
    client, stub = cfn
    plan = stack.ChangeSetPlan(stack=NAME, change_set_type="UPDATE", change_set_id=CS_ARN, changes=(stack.Change("Modify", "Function", "AWS::Lambda::Function", "False"),))
    stub.add_response("describe_stack_events", {"StackEvents": []})
    stub.add_response("execute_change_set", {})
    stub.add_response("describe_stack_events", {"StackEvents": [
        event(4, NAME, "UPDATE_ROLLBACK_COMPLETE", "AWS::CloudFormation::Stack"),
        event(3, "Layer", "UPDATE_FAILED", "AWS::Lambda::LayerVersion", "Resource update cancelled"),
        event(2, "Function", "UPDATE_FAILED", reason="The provided execution role does not have permissions to call CreateNetworkInterface on EC2"),
    ]})
    stub.add_response("describe_stacks", stack_doc("UPDATE_ROLLBACK_COMPLETE"))
    with pytest.raises(DeployError) as err:
        stack.execute(client, plan, poll_s=0)
    text = str(err.value)
    assert "UPDATE_ROLLBACK_COMPLETE" in text and "CreateNetworkInterface" in text and "cancelled" not in text
    assert "previous version live" in text


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ("ROLLBACK_COMPLETE", "invoke teardown"),
        ("UPDATE_ROLLBACK_FAILED", "continue-update-rollback"),
        ("UPDATE_IN_PROGRESS", "another operation is running"),
        ("DELETE_FAILED", "teardown"),
    ],
)
def test_a_stack_in_a_state_no_change_set_can_start_from_is_one_clear_error(cfn, status, words):
    client, stub = cfn
    stub.add_response("describe_stacks", stack_doc(status, reason="earlier failure"))
    state = stack.describe(client, NAME)
    with pytest.raises(DeployError) as err:
        stack.plan(client, state, "{}", poll_s=0)
    assert status in str(err.value) and words in str(err.value)


def test_review_in_progress_is_created_again_and_discard_removes_the_placeholder(cfn):
    client, stub = cfn
    stub.add_response("describe_stacks", stack_doc("REVIEW_IN_PROGRESS"))
    assert stack.change_set_type(stack.describe(client, NAME)) == "CREATE"
    plan = stack.ChangeSetPlan(stack=NAME, change_set_type="CREATE", change_set_id=CS_ARN, changes=())
    stub.add_response("delete_change_set", {}, {"ChangeSetName": CS_ARN, "StackName": NAME})
    stub.add_response("describe_stacks", stack_doc("REVIEW_IN_PROGRESS"))
    stub.add_response("delete_stack", {}, {"StackName": NAME})
    stack.discard(client, plan)


def test_delete_waits_until_the_stack_is_gone(cfn):
    client, stub = cfn
    stub.add_response("describe_stack_events", {"StackEvents": [event(1, NAME, "UPDATE_COMPLETE", "AWS::CloudFormation::Stack")]})
    stub.add_response("delete_stack", {}, {"StackName": NAME})
    stub.add_response("describe_stack_events", {"StackEvents": [event(2, NAME, "DELETE_IN_PROGRESS", "AWS::CloudFormation::Stack"), event(1, NAME, "UPDATE_COMPLETE")]})
    stub.add_response("describe_stacks", stack_doc("DELETE_IN_PROGRESS"))
    stub.add_client_error("describe_stack_events", "ValidationError", f"Stack [{NAME}] does not exist")
    stub.add_client_error("describe_stacks", "ValidationError", f"Stack with id {NAME} does not exist")
    assert stack.delete(client, NAME, poll_s=0).status is None


@pytest.mark.parametrize(
    ("code", "http", "words"),
    [
        ("ExpiredToken", 403, "credentials have expired"),
        ("AccessDenied", 403, "missing permission"),
        ("Throttling", 400, "throttling"),
        ("InsufficientCapabilitiesException", 400, "CAPABILITY_IAM"),
    ],
)
def test_aws_errors_come_back_as_one_message_with_a_fix(cfn, code, http, words):
    client, stub = cfn
    stub.add_client_error("create_change_set", code, "AWS said no", http_status_code=http)
    with pytest.raises(DeployError) as err:
        stack.plan(client, stack.StackState(name=NAME, status="UPDATE_COMPLETE"), "{}", poll_s=0)
    assert words in str(err.value) and "fix:" in str(err.value) and "create_change_set" in str(err.value)


def test_throttling_is_retried_with_backoff_before_it_is_reported(monkeypatch):
    """botocore's standard retry mode: a throttled call is repeated; only then the error is ours."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = aws.client(aws.session("eu-west-1"), "cloudformation")
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": aws.MAX_ATTEMPTS}
    calls = []
    monkeypatch.setattr("time.sleep", lambda s: None)  # the backoff, not its wait

    def throttled(request, **_):
        calls.append(request)
        from botocore.awsrequest import AWSResponse

        return AWSResponse(request.url, 400, {}, _Raw(b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>"))

    client.meta.events.register("before-send.cloudformation.DescribeStacks", throttled)
    with pytest.raises(DeployError) as err:
        stack.describe(client, NAME)
    assert len(calls) == aws.MAX_ATTEMPTS and "throttling" in str(err.value)


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body

    def read(self, *_):
        return self.body


def test_the_template_body_limit_is_checked_before_calling(cfn):
    client, _ = cfn
    with pytest.raises(DeployError) as err:
        stack.plan(client, stack.StackState(name=NAME, status=None), "x" * 60_000, poll_s=0)
    assert "51,200" in str(err.value)


def test_a_service_role_is_passed_as_role_arn_so_cloudformation_acts_as_it(cfn):
    """CloudFormation user guide, "CloudFormation service role": RoleARN on CreateChangeSet makes CloudFormation use
    the role's credentials for the stack's operations; the deployer then needs no IAM rights (deploy/iam.py)."""
    client, stub = cfn
    role = "arn:aws:iam::123456789012:role/hoist-test-cloudformation"
    stub.add_response("create_change_set", {"Id": CS_ARN, "StackId": STACK_ARN},
                      {"StackName": NAME, "ChangeSetName": ANY, "ChangeSetType": "CREATE", "TemplateBody": "{}", "Capabilities": ["CAPABILITY_IAM"],
                       "Description": ANY, "Tags": ANY, "RoleARN": role})
    stub.add_response("describe_change_set", {"ChangeSetId": CS_ARN, "Status": "CREATE_COMPLETE", "Changes": []}, {"ChangeSetName": CS_ARN, "StackName": NAME})
    plan = stack.plan(client, stack.StackState(name=NAME, status=None), "{}", poll_s=0, role_arn=role)
    assert plan.change_set_id == CS_ARN


def test_a_rollback_target_with_a_replaced_access_point_or_a_collected_efs_version_is_refused(stubbed):
    """Issue 23, 16. A published version's configuration, FileSystemConfigs included, is fixed (Lambda Developer
    Guide, "Function versions": a version's code and settings are locked); ListVersionsByFunction returns each
    version's FileSystemConfigs and Environment. Pointing the alias at a version whose access point was replaced,
    or whose EFS version efs-gc removed, would leave the function without its tree."""
    from deploy import alias

    lam, stub = stubbed("lambda")
    old_ap = "arn:aws:elasticfilesystem:eu-west-1:123456789012:access-point/fsap-00000000000000001"
    new_ap = "arn:aws:elasticfilesystem:eu-west-1:123456789012:access-point/fsap-00000000000000002"

    def version(n, ap, efs):
        return {"FunctionName": "fn", "Version": str(n), "Description": f"release {n}", "Environment": {"Variables": {"HOIST_EFS_VERSION": efs}},
                "FileSystemConfigs": [{"Arn": ap, "LocalMountPath": "/mnt/hoist"}]}

    listing = {"Versions": [{"FunctionName": "fn", "Version": "$LATEST"}, version(1, old_ap, "a" * 64), version(2, new_ap, "b" * 64), version(3, new_ap, "c" * 64)]}

    def expect():
        stub.add_response("get_alias", {"Name": "live", "FunctionVersion": "3"}, {"FunctionName": "fn", "Name": "live"})
        stub.add_response("list_versions_by_function", listing, {"FunctionName": "fn"})

    expect()
    with pytest.raises(DeployError) as err:
        alias.plan_rollback(lam, "fn", "1", access_point_arn=new_ap)
    assert "fsap-00000000000000001" in str(err.value) and "replaced" in str(err.value) and "--to" in str(err.value)
    expect()
    with pytest.raises(DeployError) as err:
        alias.plan_rollback(lam, "fn", None, access_point_arn=new_ap, efs_present=lambda v: v != "b" * 64)
    assert "bbbbbbbbbbbbbbbb" in str(err.value) and "collected" in str(err.value) and "sync-efs" in str(err.value)
    expect()
    move = alias.plan_rollback(lam, "fn", None, access_point_arn=new_ap, efs_present=lambda v: True)
    assert move.to.version == "2" and move.to.access_point_arn == new_ap


def test_a_kms_encrypted_artifact_bucket_gives_the_function_kms_decrypt_on_its_key_or_is_refused(stubbed, tmp_path, wheelhouse):
    """Issue 23, 4. Reading an SSE-KMS object needs kms:Decrypt on its key (S3 User Guide, "Using server-side
    encryption with AWS KMS keys"); GetBucketEncryption names the bucket's default key (KMSMasterKeyID: key id,
    key ARN or alias; absent for the AWS managed aws/s3 key, whose key policy admits the account through S3)."""
    from deploy.artifacts import model_key_arn
    from deploy.template import render
    from tests.deploy_support import deploy_project, load, release

    s3, stub = stubbed("s3")
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

    def encryption(algorithm, key_id=None):
        default = {"SSEAlgorithm": algorithm, **({"KMSMasterKeyID": key_id} if key_id else {})}
        stub.add_response("get_bucket_encryption", {"ServerSideEncryptionConfiguration": {"Rules": [{"ApplyServerSideEncryptionByDefault": default}]}},
                          {"Bucket": "hoist-artifacts"})

    encryption("aws:kms", key)
    assert model_key_arn(s3, "hoist-artifacts", "eu-west-1") == key
    encryption("AES256")
    assert model_key_arn(s3, "hoist-artifacts", "eu-west-1") is None
    encryption("aws:kms")  # the AWS managed key
    assert model_key_arn(s3, "hoist-artifacts", "eu-west-1") is None
    encryption("aws:kms", "1234abcd-12ab-34cd-56ef-1234567890ab")
    assert model_key_arn(s3, "hoist-artifacts", "eu-west-1") == "arn:aws:kms:eu-west-1:${AWS::AccountId}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    encryption("aws:kms", "alias/org-default")
    with pytest.raises(DeployError) as err:
        model_key_arn(s3, "hoist-artifacts", "eu-west-1")
    assert "alias" in str(err.value) and "describe-key" in str(err.value)

    deploy_project(tmp_path, wheelhouse)
    template = render(load(tmp_path), release(), model_key_arn=key)
    statements = template["Resources"]["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    decrypt = next(s for s in statements if s.get("Sid") == "DecryptModel")
    assert decrypt["Action"] == ["kms:Decrypt"] and decrypt["Resource"] == key and decrypt["Condition"]["StringEquals"]["kms:ViaService"] == "s3.eu-west-1.amazonaws.com"
    plain = render(load(tmp_path), release())
    assert not any(s.get("Sid") == "DecryptModel" for s in plain["Resources"]["FunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"])


def test_datasync_settings_that_name_another_file_system_or_access_point_than_the_stack_are_found(tmp_path, wheelhouse):
    """Issue 23, 1: after a teardown and deploy the stack's file system is a new one (DeletionPolicy Retain keeps the old
    one and does not re-adopt it); [sync.datasync] still naming the old one would sync where the function does not look."""
    from deploy.stage import datasync_mismatch
    from tests.deploy_support import deploy_project, load

    fs, ap = "arn:aws:elasticfilesystem:eu-west-1:123456789012:file-system/fs-0123456789abcdef0", "arn:aws:elasticfilesystem:eu-west-1:123456789012:access-point/fsap-0123456789abcdef0"
    datasync = (f'[sync.datasync]\nbucket = "b-staging"\nregion = "eu-west-1"\nfile_system_arn = "{fs}"\naccess_point_arn = "{ap}"\n'
                'file_system_role_arn = "arn:aws:iam::123456789012:role/sync"\nsubnet_arn = "arn:aws:ec2:eu-west-1:123456789012:subnet/subnet-0123"\n'
                'security_group_arns = ["arn:aws:ec2:eu-west-1:123456789012:security-group/sg-0123"]\ns3_role_arn = "arn:aws:iam::123456789012:role/s3"\n\n[efs]')
    deploy_project(tmp_path, wheelhouse, replace={"[efs]": datasync})
    cfg = load(tmp_path)
    assert datasync_mismatch(cfg, {"FileSystemId": "fs-0123456789abcdef0", "WriterAccessPointArn": ap}) == []
    found = datasync_mismatch(cfg, {"FileSystemId": "fs-0fedcba9876543210", "WriterAccessPointArn": ap.replace("abcdef0", "abcdef9")})
    assert len(found) == 2 and "fs-0fedcba9876543210" in found[0] and "abcdef9" in found[1]
