"""The deployer cannot mint an administrator: the service role, its boundary, the OIDC trust, evaluated as IAM does.

Pages the model and these cases follow (besides tests/iam_model.py's):
- CloudFormation user guide, "CloudFormation service role": with RoleARN, CloudFormation uses the role's credentials for
  the stack's operations; whoever may pass the role may do what it can, so the role itself must be fenced.
- IAM user guide, "Permissions boundaries for IAM entities" (delegating responsibility): CreateRole allowed only with
  ``iam:PermissionsBoundary`` naming the boundary, DeleteRolePermissionsBoundary denied, and the boundary policy kept
  from edits (CreatePolicyVersion, SetDefaultPolicyVersion...); a bounded role can do only what both allow.
- IAM user guide, "Granting a user permissions to pass a role": ``iam:PassedToService``.
- Service Authorization Reference, CloudFormation: CreateChangeSet and DeleteStack take ``cloudformation:RoleArn``.
- GitHub docs, "OpenID Connect" reference and changelog 2026-04-23 ("Immutable subject claims for GitHub Actions OIDC
  tokens"): the ``sub`` of a repository using immutable claims carries owner and repository IDs; a name-only ``sub``
  can be minted again by whoever later holds the name.
- AWS managed policy AWSLambdaVPCAccessExecutionRole: logs:CreateLogGroup, CreateLogStream, PutLogEvents and the
  ec2 network-interface actions.
"""
from __future__ import annotations

import dataclasses
import re

import pytest

from deploy import iam
from deploy.template import render
from tests.deploy_support import EXISTING_FS, deploy_project, load, release
from tests.iam_model import ALLOW, DENY, IMPLICIT, Request, decide, resolve

ACCOUNT = "111122223333"
STACK = "hoist-test"
NAMES = {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT, "AWS::Region": "eu-west-1", "StackName": STACK, "FunctionName": "test-fn",
         "ArtifactBucket": "hoist-artifacts", "StagingBucket": "hoist-staging",
         "GitHubSubject": "repo:octo-org@1234/hoist@5678:environment:production"}
BOUNDARY = f"arn:aws:iam::{ACCOUNT}:policy/{STACK}-boundary"
STACK_ROLE = f"arn:aws:iam::{ACCOUNT}:role/hoist/{STACK}/{STACK}-FunctionRole-ABC"
CFN_ROLE = f"arn:aws:iam::{ACCOUNT}:role/{STACK}-cloudformation"
ROLE_ARN = f'\ncloudformation_role_arn = "{CFN_ROLE}"\n'


@pytest.fixture(scope="module")
def bootstrap():
    return resolve(iam.bootstrap(), NAMES)


def policy(bootstrap, role: str) -> dict:
    return bootstrap["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]


def as_service_role(bootstrap, action: str, resource: str = "*", **context) -> str:
    return decide(Request(CFN_ROLE, action, resource, context), identity=policy(bootstrap, "CloudFormationRole"), account=ACCOUNT)


def as_deployer(bootstrap, action: str, resource: str = "*", **context) -> str:
    return decide(Request(f"arn:aws:iam::{ACCOUNT}:role/{STACK}-deployer", action, resource, context), identity=policy(bootstrap, "DeployerRole"), account=ACCOUNT)


def test_the_committed_bootstrap_is_what_deploy_iam_renders():
    assert iam.BOOTSTRAP.read_text() == iam.dumps(iam.bootstrap()), "run: python3 -m deploy.iam"


@pytest.fixture(scope="module")
def templates(tmp_path_factory, wheelhouse):
    out = []
    for i, extra in enumerate(("", EXISTING_FS, ROLE_ARN + "dynamodb_endpoint = true\n")):
        root = tmp_path_factory.mktemp(f"t{i}")
        deploy_project(root, wheelhouse, extra)
        cfg = load(root)
        out += [render(cfg, release()), render(cfg, None, storage_only=True)]
    # the image shape (pipeline/shapes.py), here with the VPC the user gave: the repository, no EFS
    root = tmp_path_factory.mktemp("image")
    deploy_project(root, wheelhouse, replace={'name = "test-fn"': 'name = "test-fn"\npackage = "image"'})
    image_release = dataclasses.replace(release(), function_key="", layer_key=None, efs_version="", model_prefix="",
                                        image_uri="123456789012.dkr.ecr.eu-west-1.amazonaws.com/hoist/test-fn@sha256:" + "e" * 64)
    out += [render(load(root), image_release), render(load(root), None, storage_only=True)]
    assert "AWS::ECR::Repository" in {r["Type"] for r in out[-1]["Resources"].values()}
    return out


def test_every_resource_type_the_template_renders_is_covered_by_the_service_role(templates, bootstrap):
    used = {r["Type"] for t in templates for r in t["Resources"].values()}
    assert used <= set(iam.RESOURCE_TYPES), used - set(iam.RESOURCE_TYPES)
    needed = {a for actions in iam.schema_permissions(used).values() for a in actions if iam.iam_defines(a)}
    assert {"lambda:PutRuntimeManagementConfig", "lambda:PutFunctionRecursionConfig", "lambda:GetProvisionedConcurrencyConfig",
            "elasticfilesystem:UpdateFileSystemProtection", "elasticfilesystem:ModifyMountTargetSecurityGroups"} <= needed  # the examples
    missing = []
    for action in sorted(needed):
        if action in iam.NEVER:
            assert as_service_role(bootstrap, action, STACK_ROLE) == DENY, action  # listed by the schema, refused on purpose
            continue
        resource = {"iam": STACK_ROLE, "s3": "arn:aws:s3:::hoist-artifacts/hoist/artifacts/x.zip"}.get(action.split(":")[0], "*")
        context = {"iam:PermissionsBoundary": BOUNDARY, "iam:AWSServiceName": "elasticfilesystem.amazonaws.com"}
        if as_service_role(bootstrap, action, resource, **context) != ALLOW:
            missing.append(action)
    assert missing == []
    for action in iam.EXTRA["logs"]:  # HTTP API access logging (API Gateway, "Configure logging for HTTP APIs")
        assert as_service_role(bootstrap, action) == ALLOW, action


@pytest.mark.parametrize(
    ("action", "resource", "context", "expected"),
    [
        ("iam:CreateRole", STACK_ROLE, {"iam:PermissionsBoundary": BOUNDARY}, ALLOW),
        ("iam:CreateRole", STACK_ROLE, {}, DENY),  # no boundary
        ("iam:CreateRole", STACK_ROLE, {"iam:PermissionsBoundary": f"arn:aws:iam::{ACCOUNT}:policy/anything"}, DENY),
        ("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/admin", {"iam:PermissionsBoundary": BOUNDARY}, IMPLICIT),  # outside the stack's path
        ("iam:PutRolePermissionsBoundary", STACK_ROLE, {"iam:PermissionsBoundary": f"arn:aws:iam::{ACCOUNT}:policy/wider"}, DENY),
        ("iam:DeleteRolePermissionsBoundary", STACK_ROLE, {}, DENY),
        ("iam:AttachRolePolicy", STACK_ROLE, {"iam:PermissionsBoundary": BOUNDARY, "iam:PolicyARN": "arn:aws:iam::aws:policy/AdministratorAccess"}, ALLOW),
        ("iam:PutRolePolicy", f"arn:aws:iam::{ACCOUNT}:role/{STACK}-deployer", {}, IMPLICIT),
        ("iam:CreatePolicyVersion", BOUNDARY, {}, DENY),
        ("iam:SetDefaultPolicyVersion", BOUNDARY, {}, DENY),
        ("iam:PassRole", STACK_ROLE, {"iam:PassedToService": "lambda.amazonaws.com"}, ALLOW),
        ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin", {"iam:PassedToService": "lambda.amazonaws.com"}, IMPLICIT),
        ("iam:CreateUser", "*", {}, IMPLICIT),
        ("iam:CreatePolicy", "*", {}, IMPLICIT),
    ],
)
def test_the_service_role_creates_and_passes_only_bounded_roles_of_the_stack(bootstrap, action, resource, context, expected):
    assert as_service_role(bootstrap, action, resource, **context) == expected


def test_a_role_the_stack_creates_does_at_most_what_the_boundary_allows_whatever_its_own_policy(bootstrap):
    """The escalation a template could attempt: AdministratorAccess attached to a role of the stack (allowed, with the
    boundary): the role still cannot create roles, pass them or read secrets."""
    boundary = bootstrap["Resources"]["Boundary"]["Properties"]["PolicyDocument"]
    admin = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    for action in ("iam:CreateRole", "iam:PassRole", "iam:PutRolePolicy", "sts:AssumeRole", "secretsmanager:GetSecretValue",
                   "elasticfilesystem:ClientRootAccess", "cloudformation:CreateChangeSet", "lambda:UpdateFunctionCode"):
        assert decide(Request(STACK_ROLE, action), identity=admin, boundary=boundary, account=ACCOUNT) == IMPLICIT, action
    for action in ("s3:GetObject", "elasticfilesystem:ClientWrite", "logs:PutLogEvents", "ec2:CreateNetworkInterface"):
        assert decide(Request(STACK_ROLE, action), identity=admin, boundary=boundary, account=ACCOUNT) == ALLOW, action


def test_the_boundary_holds_everything_the_stacks_roles_are_granted(templates):
    boundary = iam.boundary_policy()
    # AWSLambdaVPCAccessExecutionRole's actions (AWS managed policy reference) and the roles' inline policies
    granted = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
               "ec2:DescribeSubnets", "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
               "elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"}  # the sync role's, from the file system policy
    for t in templates:
        for r in t["Resources"].values():
            if r["Type"] == "AWS::IAM::Role":
                granted |= {a for p in r["Properties"].get("Policies", []) for st in p["PolicyDocument"]["Statement"] for a in st["Action"]}
    for action in granted:
        assert decide(Request(STACK_ROLE, action), identity=boundary, account=ACCOUNT) == ALLOW, action


def test_with_a_service_role_the_stacks_roles_carry_the_boundary_the_service_role_requires(templates, bootstrap):
    fenced = templates[4]  # rendered with cloudformation_role_arn
    names = {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT}
    roles = {k: resolve(r["Properties"], names) for k, r in fenced["Resources"].items() if r["Type"] in ("AWS::IAM::Role", "AWS::IAM::InstanceProfile")}
    assert set(roles) == {"FunctionRole", "SyncRole", "SyncInstanceProfile"}
    for logical, props in roles.items():
        assert props["Path"] == f"/hoist/{STACK}/", logical
        if logical != "SyncInstanceProfile":
            assert props["PermissionsBoundary"] == BOUNDARY, logical
    # what CloudFormation's call then carries passes the service role's fence
    arn = f"arn:aws:iam::{ACCOUNT}:role{roles['FunctionRole']['Path']}{STACK}-FunctionRole-XYZ"
    assert as_service_role(bootstrap, "iam:CreateRole", arn, **{"iam:PermissionsBoundary": roles["FunctionRole"]["PermissionsBoundary"]}) == ALLOW
    unfenced = templates[0]
    assert "PermissionsBoundary" not in unfenced["Resources"]["FunctionRole"]["Properties"]


@pytest.mark.parametrize(
    ("action", "resource", "context", "expected"),
    [
        ("iam:CreateRole", "*", {}, IMPLICIT),
        ("iam:PutRolePolicy", "*", {}, IMPLICIT),
        ("iam:AttachRolePolicy", "*", {}, IMPLICIT),
        ("iam:PassRole", CFN_ROLE, {"iam:PassedToService": "cloudformation.amazonaws.com"}, ALLOW),
        ("iam:PassRole", CFN_ROLE, {"iam:PassedToService": "lambda.amazonaws.com"}, IMPLICIT),
        ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin", {"iam:PassedToService": "cloudformation.amazonaws.com"}, IMPLICIT),
        ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/hoist/{STACK}/{STACK}-SyncRole-X", {"iam:PassedToService": "datasync.amazonaws.com"}, ALLOW),
        ("cloudformation:CreateChangeSet", f"arn:aws:cloudformation:eu-west-1:{ACCOUNT}:stack/{STACK}/abc", {"cloudformation:RoleArn": CFN_ROLE}, ALLOW),
        ("cloudformation:CreateChangeSet", f"arn:aws:cloudformation:eu-west-1:{ACCOUNT}:stack/{STACK}/abc", {}, IMPLICIT),  # its own credentials: no
        ("cloudformation:CreateChangeSet", f"arn:aws:cloudformation:eu-west-1:{ACCOUNT}:stack/other/abc", {"cloudformation:RoleArn": CFN_ROLE}, IMPLICIT),
        ("cloudformation:ExecuteChangeSet", f"arn:aws:cloudformation:eu-west-1:{ACCOUNT}:stack/{STACK}/abc", {}, ALLOW),
        ("s3:PutObject", "arn:aws:s3:::hoist-artifacts/hoist/deploy.json", {}, ALLOW),
        ("s3:DeleteObject", "arn:aws:s3:::hoist-staging/hoist/staging/locks/x", {}, ALLOW),
        ("datasync:StartTaskExecution", f"arn:aws:datasync:eu-west-1:{ACCOUNT}:task/task-0123456789abcdef0", {}, ALLOW),
        ("lambda:UpdateAlias", f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:test-fn:live", {}, ALLOW),
        ("lambda:UpdateFunctionCode", f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:test-fn", {}, IMPLICIT),
        # the release's version is invoked (Qualifier: a qualified ARN) before the alias moves; no other function
        ("lambda:InvokeFunction", f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:test-fn:7", {}, ALLOW),
        ("lambda:InvokeFunction", f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:other-fn:7", {}, IMPLICIT),
    ],
)
def test_the_deployer_keeps_change_sets_s3_datasync_and_passing_the_one_service_role(bootstrap, action, resource, context, expected):
    assert as_deployer(bootstrap, action, resource, **context) == expected


# -- the OIDC trust: exactly one subject -----------------------------------------------------------

def assume(bootstrap, sub: str, aud: str = "sts.amazonaws.com") -> str:
    trust = bootstrap["Resources"]["DeployerRole"]["Properties"]["AssumeRolePolicyDocument"]
    provider = f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    context = {"token.actions.githubusercontent.com:sub": sub, "token.actions.githubusercontent.com:aud": aud}
    return decide(Request(provider, "sts:AssumeRoleWithWebIdentity", "*", context), resource_policy={"Statement": [
        {**st, "Principal": {"AWS": st["Principal"]["Federated"]}} for st in trust["Statement"]]}, account=ACCOUNT)


@pytest.mark.parametrize(
    ("sub", "aud", "expected"),
    [
        ("repo:octo-org@1234/hoist@5678:environment:production", "sts.amazonaws.com", ALLOW),
        ("repo:octo-org/hoist:environment:production", "sts.amazonaws.com", IMPLICIT),  # the name-only format: whoever holds the name later
        ("repo:octo-org@1234/hoist@5678:environment:staging", "sts.amazonaws.com", IMPLICIT),
        ("repo:octo-org@1234/hoist@5678:ref:refs/heads/main", "sts.amazonaws.com", IMPLICIT),
        ("repo:octo-org@1234/hoist@5678:pull_request", "sts.amazonaws.com", IMPLICIT),
        ("repo:octo-org@1234/hoist@5678:environment:production", "api://AzureADTokenExchange", IMPLICIT),
    ],
)
def test_the_deployer_trusts_exactly_the_release_environments_subject(bootstrap, sub, aud, expected):
    assert assume(bootstrap, sub, aud) == expected


@pytest.mark.parametrize(
    ("subject", "ok"),
    [("repo:octo-org@1234/hoist@5678:environment:production", True), ("repo:octo-org/hoist:environment:production", True),
     ("repo:octo-org/*:environment:production", False), ("repo:octo-org/hoist:*", False), ("repo:octo-org/hoist:ref:refs/heads/main", False)],
)
def test_the_subject_parameter_takes_one_environment_and_no_wildcard(subject, ok):
    pattern = iam.bootstrap()["Parameters"]["GitHubSubject"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, subject)) is ok
    assert "StringLike" not in str(iam.deployer_trust())


@pytest.mark.parametrize("action", ["ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchCheckLayerAvailability"])
def test_the_deployer_pushes_into_the_stacks_repositories_only(bootstrap, action):
    """docker push's calls (ECR user guide, "Pushing an image": the layer upload API and PutImage), on hoist/<function> only."""
    repo = f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/hoist/test-fn"
    assert as_deployer(bootstrap, action, repo) == ALLOW
    assert as_deployer(bootstrap, action, f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/someone-else") == IMPLICIT
    assert as_deployer(bootstrap, "ecr:GetAuthorizationToken") == ALLOW  # docker login's token
    assert as_deployer(bootstrap, "ecr:DeleteRepository", repo) == IMPLICIT  # teardown --delete-data is an administrator's, as the file system's deletion is
