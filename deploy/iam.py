"""Who deploys the stack, with which rights, and the ceiling on the roles the stack creates.

An administrator creates these once, from ``deploy/policies/bootstrap.json`` (a CloudFormation template this module
renders; ``python3 -m deploy.iam`` writes it again, and a test fails when the file is stale):

- ``Boundary``: the permissions boundary every role of Hoist's stack carries (``PermissionsBoundary``). A role's
  effective rights are what both its policies and its boundary allow (IAM user guide, "Permissions boundaries for
  IAM entities"), so a role created through the stack can never hold more than the function and the writers need.
- ``CloudFormationRole``: the service role CloudFormation assumes for the stack (``RoleARN`` on CreateChangeSet;
  CloudFormation user guide, "CloudFormation service role"). It holds what the resource types' handlers need, taken
  from the ``handlers.*.permissions`` of the resource-provider schemas cfn-lint bundles, for the types Hoist's
  template renders (``RESOURCE_TYPES``). Its IAM rights are fenced: it creates and changes roles named for the stack
  only with ``iam:PermissionsBoundary`` naming the boundary, may not remove a boundary nor edit the boundary policy,
  and passes only the stack's roles (under the IAM path ``/hoist/<stack>/``). ``RoleARN`` alone would only move the escalation into
  the service role.
- ``DeployerRole``: what CI assumes through GitHub's OIDC provider: the change-set calls on the stack (only with
  that service role), S3 on the artifact and staging buckets, DataSync, the reads planning does, the alias, and
  ``iam:PassRole`` on the service role (to CloudFormation) and on the stack's roles to DataSync. No ``iam:CreateRole``,
  ``PutRolePolicy`` or ``AttachRolePolicy``: it cannot mint a role. It trusts exactly one OIDC subject.

This module only builds documents; nothing here calls AWS.
"""
from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

BOOTSTRAP = Path(__file__).with_name("policies") / "bootstrap.json"
# the resource types deploy/template.py renders (full, storage-only, existing file system); a test renders them all
# and fails on a type missing here
RESOURCE_TYPES = (
    "AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Integration", "AWS::ApiGatewayV2::Route", "AWS::ApiGatewayV2::Stage",
    "AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupEgress", "AWS::EC2::SecurityGroupIngress", "AWS::EC2::VPCEndpoint",
    "AWS::ECR::Repository",  # the image shape (pipeline/shapes.py)
    "AWS::EFS::AccessPoint", "AWS::EFS::FileSystem", "AWS::EFS::MountTarget",
    "AWS::IAM::InstanceProfile", "AWS::IAM::Role",
    "AWS::Lambda::Alias", "AWS::Lambda::Function", "AWS::Lambda::LayerVersion", "AWS::Lambda::Permission", "AWS::Lambda::Version",
    "AWS::Logs::LogGroup",
)
SCHEMA_REGION = "us-east-1"  # cfn-lint's schemas per region differ little; this one has every type above
# an IAM action name: service prefix, colon, a name (some schemas list S3 operations such as s3:REST.PUT.OBJECT, which
# no policy can name)
ACTION = re.compile(r"^[a-z0-9-]+:[A-Za-z0-9]+$")

# the actions that create or change a role's rights: allowed only with the boundary (IAM's iam:PermissionsBoundary
# condition key; Service Authorization Reference, "AWS Identity and Access Management")
WITH_BOUNDARY = ("iam:CreateRole", "iam:PutRolePermissionsBoundary", "iam:PutRolePolicy", "iam:AttachRolePolicy",
                 "iam:DetachRolePolicy", "iam:DeleteRolePolicy")
# never: a role without its boundary, or a boundary policy edited into an administrator's
NEVER = ("iam:DeleteRolePermissionsBoundary",)
BOUNDARY_EDITS = ("iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion", "iam:SetDefaultPolicyVersion")
# service-linked roles the handlers may create the first time an account uses the service
SERVICE_LINKED = ("elasticfilesystem.amazonaws.com", "ops.apigateway.amazonaws.com", "lambda.amazonaws.com")
# what the schemas do not list but the documentation asks of whoever deploys the resource:
EXTRA = {
    # turning on an HTTP API stage's access log (API Gateway developer guide, "Configure logging for HTTP APIs")
    "logs": ("logs:CreateLogDelivery", "logs:PutResourcePolicy", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery", "logs:CreateLogGroup",
             "logs:DescribeResourcePolicies", "logs:GetLogDelivery", "logs:ListLogDeliveries", "logs:DescribeLogGroups"),
    # CloudFormation waits for a VPC function's network interfaces only with it (lambda-facts.md, "EFS for Lambda")
    "ec2": ("ec2:DescribeNetworkInterfaces",),
    # creating a function from an image: whoever creates it needs these on the repository (Lambda developer guide,
    # "Create a Lambda function using a container image", Amazon ECR permissions)
    "ecr": ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"),
}

# what the stack's own roles do, at most: the boundary
BOUNDARY_ACTIONS = (
    # AWSLambdaVPCAccessExecutionRole (AWS managed policy reference): logs and the function's network interfaces
    "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
    "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets", "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
    # the function reads its tree and its model, writes outputs; the writers write versions (never ClientRootAccess)
    "elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite",
    "s3:GetObject", "s3:PutObject",
)


def sub(text: str) -> dict:
    return {"Fn::Sub": text}


# the stack's roles and instance profile live under this IAM path (deploy/template.py sets it; CloudFormation's
# generated names may cut the stack's name short, a path is kept whole)
def stack_path(stack_name: str) -> str:
    return f"/hoist/{stack_name}/"


def boundary_arn(stack_name: str) -> dict:
    return sub(f"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:policy/{stack_name}-boundary")


BOUNDARY_ARN = boundary_arn("${StackName}")
STACK_ROLES = sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:role/hoist/${StackName}/*")
STACK_PROFILES = sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:instance-profile/hoist/${StackName}/*")
CFN_ROLE_ARN = sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${StackName}-cloudformation")
STACK_ARN = sub("arn:${AWS::Partition}:cloudformation:${AWS::Region}:${AWS::AccountId}:stack/${StackName}/*")


def schema_permissions(types: Iterable[str]) -> dict[str, set[str]]:
    """type -> the actions its handlers (create, read, update, delete, list) list, as cfn-lint bundles the schemas."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    out: dict[str, set[str]] = {}
    for kind in types:
        schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema(SCHEMA_REGION, kind).schema
        out[kind] = {a for handler in (schema.get("handlers") or {}).values() for a in handler.get("permissions", [])}
    return out


def iam_defines(action: str) -> bool:
    """Whether IAM defines the action (cfn-lint's copy of the Service Authorization Reference, the list its rule
    W3037 checks). Some schemas list names IAM has no action for (apigateway:TagResource, s3:REST.PUT.OBJECT): a
    policy naming them grants nothing, so they are left out."""
    service, _, name = action.partition(":")
    return bool(ACTION.match(action)) and name.lower() in _iam_actions().get(service.lower(), {}).get("Actions", {})


@functools.cache
def _iam_actions() -> dict:
    from cfnlint.data import AdditionalSpecs
    from cfnlint.helpers import load_resource

    return load_resource(AdditionalSpecs, "Policies.json")


def boundary_policy() -> dict:
    return {"Version": "2012-10-17", "Statement": [{"Sid": "AtMostWhatHoistsRolesDo", "Effect": "Allow", "Action": list(BOUNDARY_ACTIONS), "Resource": "*"}]}


def service_role_policy(types: Iterable[str]) -> dict:
    wanted = set().union(*schema_permissions(types).values()) | {a for extra in EXTRA.values() for a in extra}
    actions = sorted({a for a in wanted if iam_defines(a)}, key=lambda a: (a.lower(), a))
    actions = [a for i, a in enumerate(actions) if a.lower() not in {b.lower() for b in actions[:i]}]  # s3:getObject is s3:GetObject
    iam = {a for a in actions if a.startswith("iam:")}
    s3 = [a for a in actions if a.startswith("s3:")]
    rest = [a for a in actions if a not in iam and a not in s3]
    other_iam = sorted(iam - set(WITH_BOUNDARY) - set(NEVER) - {"iam:PassRole", "iam:CreateServiceLinkedRole"})
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "WhatTheResourceHandlersList", "Effect": "Allow", "Action": rest, "Resource": "*"},
        {"Sid": "ReadTheArtifacts", "Effect": "Allow", "Action": s3, "Resource": sub("arn:${AWS::Partition}:s3:::${ArtifactBucket}/*")},
        {"Sid": "RolesOnlyWithTheBoundary", "Effect": "Allow", "Action": list(WITH_BOUNDARY), "Resource": STACK_ROLES,
         "Condition": {"StringEquals": {"iam:PermissionsBoundary": BOUNDARY_ARN}}},
        {"Sid": "TheStacksRolesAndProfiles", "Effect": "Allow", "Action": other_iam, "Resource": [STACK_ROLES, STACK_PROFILES]},
        # the function's role to Lambda, the sync role to its instance profile: bounded roles only, wherever they go
        {"Sid": "PassOnlyTheStacksRoles", "Effect": "Allow", "Action": "iam:PassRole", "Resource": STACK_ROLES},
        {"Sid": "ServiceLinkedRoles", "Effect": "Allow", "Action": "iam:CreateServiceLinkedRole", "Resource": "*",
         "Condition": {"StringEquals": {"iam:AWSServiceName": list(SERVICE_LINKED)}}},
        {"Sid": "NoRoleWithoutTheBoundary", "Effect": "Deny", "Action": ["iam:CreateRole", "iam:PutRolePermissionsBoundary"], "Resource": "*",
         "Condition": {"StringNotEquals": {"iam:PermissionsBoundary": BOUNDARY_ARN}}},
        {"Sid": "NoBoundaryRemoved", "Effect": "Deny", "Action": list(NEVER), "Resource": "*"},
        {"Sid": "TheBoundaryStaysAsItIs", "Effect": "Deny", "Action": list(BOUNDARY_EDITS), "Resource": BOUNDARY_ARN},
    ]}


def deployer_policy() -> dict:
    """What `invoke deploy --sync-method datasync` calls itself (CloudFormation does the rest, as the service role)."""
    bucket = lambda name, path="": sub(f"arn:${{AWS::Partition}}:s3:::${{{name}}}{path}")  # noqa: E731
    datasync = "arn:${AWS::Partition}:datasync:${AWS::Region}:${AWS::AccountId}"
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ChangeSetsOnlyAsTheServiceRole", "Effect": "Allow", "Action": ["cloudformation:CreateChangeSet", "cloudformation:DeleteStack"],
         "Resource": STACK_ARN, "Condition": {"StringEquals": {"cloudformation:RoleArn": CFN_ROLE_ARN}}},
        {"Sid": "TheStack", "Effect": "Allow", "Resource": STACK_ARN,
         "Action": ["cloudformation:DescribeChangeSet", "cloudformation:ExecuteChangeSet", "cloudformation:DeleteChangeSet", "cloudformation:DescribeStacks",
                    "cloudformation:DescribeStackEvents", "cloudformation:ListStackResources"]},
        {"Sid": "PassTheServiceRoleToCloudFormation", "Effect": "Allow", "Action": "iam:PassRole", "Resource": CFN_ROLE_ARN,
         "Condition": {"StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}}},
        {"Sid": "PassTheStacksRolesToDataSync", "Effect": "Allow", "Action": "iam:PassRole", "Resource": STACK_ROLES,
         "Condition": {"StringEquals": {"iam:PassedToService": "datasync.amazonaws.com"}}},
        {"Sid": "Buckets", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetEncryptionConfiguration",  # a KMS key to grant
                                                          "s3:GetLifecycleConfiguration", "s3:PutLifecycleConfiguration"],  # the staging prefix's expiry
         "Resource": [bucket("ArtifactBucket"), bucket("StagingBucket")]},
        {"Sid": "ArtifactsModelAndRecord", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": bucket("ArtifactBucket", "/*")},
        {"Sid": "Staging", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:GetObjectAttributes"],
         "Resource": bucket("StagingBucket", "/*")},
        {"Sid": "PlanReadsAndDataSyncChecks", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "elasticfilesystem:DescribeFileSystems", "elasticfilesystem:DescribeMountTargets",
                    "elasticfilesystem:DescribeAccessPoints", "datasync:CreateLocationS3", "datasync:CreateLocationEfs", "datasync:CreateTask",
                    "datasync:ListLocations", "datasync:ListTasks", "datasync:TagResource", "datasync:ListTagsForResource",
                    "ec2:DescribeVpcEndpoints"]},  # an S3 gateway endpoint already on the route tables
        {"Sid": "DataSyncTasks", "Effect": "Allow", "Resource": [sub(f"{datasync}:task/*"), sub(f"{datasync}:task/*/execution/*"), sub(f"{datasync}:location/*")],
         "Action": ["datasync:DescribeTask", "datasync:StartTaskExecution", "datasync:DeleteTask", "datasync:DescribeTaskExecution",
                    "datasync:CancelTaskExecution", "datasync:DeleteLocation"]},
        # the image shape: docker login (a registry-wide token) and docker push into the stack's repositories (hoist/<function>)
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "PushTheImage", "Effect": "Allow",
         "Action": ["ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage",
                    "ecr:BatchGetImage", "ecr:DescribeImages"],
         "Resource": sub("arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/hoist/*")},
        {"Sid": "TheAlias", "Effect": "Allow", "Action": ["lambda:GetAlias", "lambda:UpdateAlias", "lambda:ListVersionsByFunction"],
         "Resource": [sub("arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${FunctionName}"),
                      sub("arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${FunctionName}:*")]},
        # the release's version is invoked directly (Qualifier = its number) before the alias moves to it; a qualified
        # ARN is the resource (Lambda developer guide, "Resources and conditions for Lambda actions")
        {"Sid": "TestTheReleasesVersion", "Effect": "Allow", "Action": "lambda:InvokeFunction",
         "Resource": sub("arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${FunctionName}:*")},
    ]}


OIDC = "token.actions.githubusercontent.com"
# an exact subject for one environment, in either of GitHub's formats, never a wildcard
SUBJECT_PATTERN = r"^repo:[^*?:]+/[^*?:]+:environment:[^*?:]+$"


def deployer_trust() -> dict:
    """GitHub's OIDC provider, for exactly one subject: the release's environment, in the format the repository sends
    (docs/deploy.md, "Releasing from GitHub Actions": how to tell which)."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "TheReleaseEnvironmentOfOneRepository", "Effect": "Allow", "Action": "sts:AssumeRoleWithWebIdentity",
        "Principal": {"Federated": sub(f"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:oidc-provider/{OIDC}")},
        "Condition": {"StringEquals": {f"{OIDC}:aud": "sts.amazonaws.com", f"{OIDC}:sub": {"Ref": "GitHubSubject"}}},
    }]}


def bootstrap(types: Iterable[str] = RESOURCE_TYPES) -> dict:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "hoist: the deployer (GitHub OIDC), the CloudFormation service role and the boundary of the stack's roles (deploy/iam.py)",
        "Parameters": {
            "StackName": {"Type": "String", "AllowedPattern": "^[A-Za-z][A-Za-z0-9-]{0,80}$", "Description": "[deploy] stack_name"},
            "FunctionName": {"Type": "String", "Description": "[function] name"},
            "ArtifactBucket": {"Type": "String", "Description": "[deploy] artifact_bucket"},
            "StagingBucket": {"Type": "String", "Description": "[sync.datasync] staging bucket (may be the artifact bucket)"},
            "GitHubSubject": {"Type": "String", "AllowedPattern": SUBJECT_PATTERN,
                              "Description": "the exact OIDC sub of the release environment, e.g. repo:OWNER@ID/REPO@ID:environment:production"},
        },
        "Resources": {
            "Boundary": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {
                "ManagedPolicyName": sub("${StackName}-boundary"), "Description": "hoist: at most what the stack's roles do",
                "PolicyDocument": boundary_policy()}},
            "CloudFormationRole": {"Type": "AWS::IAM::Role", "Properties": {
                "RoleName": sub("${StackName}-cloudformation"), "Description": "hoist: CloudFormation acts as this role for the stack",
                "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "cloudformation.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
                "Policies": [{"PolicyName": "hoist-stack", "PolicyDocument": service_role_policy(types)}]}},
            "DeployerRole": {"Type": "AWS::IAM::Role", "Properties": {
                "RoleName": sub("${StackName}-deployer"), "Description": "hoist: the release workflow (GitHub OIDC)",
                "MaxSessionDuration": 7200,  # the release job's role-duration-seconds fits (tests/unit/test_workflows.py)
                "AssumeRolePolicyDocument": deployer_trust(),
                "Policies": [{"PolicyName": "hoist-deploy", "PolicyDocument": deployer_policy()}]}},
        },
        "Outputs": {
            "PermissionsBoundaryArn": {"Description": "[deploy] permissions_boundary_arn", "Value": {"Ref": "Boundary"}},
            "CloudFormationRoleArn": {"Description": "[deploy] cloudformation_role_arn", "Value": {"Fn::GetAtt": ["CloudFormationRole", "Arn"]}},
            "DeployerRoleArn": {"Description": "the environment's variable HOIST_DEPLOY_ROLE_ARN", "Value": {"Fn::GetAtt": ["DeployerRole", "Arn"]}},
        },
    }


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":  # python3 -m deploy.iam: write deploy/policies/bootstrap.json again
    BOOTSTRAP.parent.mkdir(exist_ok=True)
    BOOTSTRAP.write_text(dumps(bootstrap()))
    sys.stdout.write(f"wrote {BOOTSTRAP}\n")
