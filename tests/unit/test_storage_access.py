"""Who may mount, write and be root on the stack's file system, and who may assume the sync role, as AWS evaluates it.

No test here reaches AWS: the rendered policies are evaluated by tests/iam_model.py (IAM's documented evaluation)
with the request context EFS documents for NFS clients, and nothing else:

- EFS user guide, "Using IAM to control access to file systems" (efs/latest/ug/iam-access-control-nfs-efs.html): an
  Allow in *either* the identity policy *or* the file system policy allows a client action; the actions are
  ClientMount (read), ClientWrite and ClientRootAccess; EFS provides aws:SecureTransport, aws:SourceIp,
  elasticfilesystem:AccessPointArn and elasticfilesystem:AccessedViaMountTarget for NFS clients, and "no other
  condition keys are enforced".
- EFS user guide, "Permissions for EFS Endpoints" (efs-networking-endpoint-permissions.html), the newer way to mount:
  a connection through an EFS Endpoint needs each client action under both ``elasticfilesystem`` and
  ``elasticfilesystem-endpoint``; an existing deny on an ``elasticfilesystem`` client action applies to it too; the
  endpoint actions add the key elasticfilesystem:AccessedViaRegionalEndpoint (Service Authorization Reference,
  "Amazon Elastic File System Endpoint").
- AWS managed policy AmazonElasticFileSystemClientReadWriteAccess: ClientMount, ClientWrite and
  DescribeMountTargets on every resource.
- DataSync user guide, "Cross-service confused deputy prevention": the role DataSync assumes should trust
  datasync.amazonaws.com only with aws:SourceAccount and aws:SourceArn.
"""
from __future__ import annotations

import pytest

from deploy.template import file_system_policy, render, sync_role_trust
from tests.deploy_support import deploy_project, load, release
from tests.iam_model import ALLOW, DENY, IMPLICIT, Request, decide, resolve

ACCOUNT = "111122223333"
REGION = "eu-west-1"
FS_ARN = f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:file-system/fs-0123456789abcdef0"
READER_AP = f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:access-point/fsap-0000000000000000a"
WRITER_AP = f"arn:aws:elasticfilesystem:{REGION}:{ACCOUNT}:access-point/fsap-0000000000000000b"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/"
NAMES = {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::URLSuffix": "amazonaws.com",
         "SyncRole.Arn": ROLE + "hoist-test-SyncRole-X", "FunctionRole.Arn": ROLE + "hoist-test-FunctionRole-X",
         "FileSystem.Arn": FS_ARN, "AccessPoint.Arn": READER_AP, "WriterAccessPoint.Arn": WRITER_AP}
# the keys EFS evaluates for NFS clients (the mount-target path, and the EFS Endpoint path's own); nothing else
EFS_NFS_KEYS = {"aws:SecureTransport", "aws:SourceIp", "elasticfilesystem:AccessPointArn", "elasticfilesystem:AccessedViaMountTarget",
                "elasticfilesystem:AccessedViaRegionalEndpoint"}
CLIENT_READ_WRITE = {"Statement": [{"Effect": "Allow", "Action": ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite",
                                                                  "elasticfilesystem:DescribeMountTargets"], "Resource": "*"}]}
ADMIN = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, wheelhouse):
    root = tmp_path_factory.mktemp("stack")
    deploy_project(root, wheelhouse)
    return resolve(render(load(root), release())["Resources"], NAMES)


def efs(stack: dict, who: str, identity, action: str, access_point: str | None, *, tls: bool = True, path: str = "mount target") -> str:
    """EFS's decision on one client action. ``path``: "mount target" or "endpoint" (EFS Endpoints)."""
    context = {"aws:SecureTransport": tls, "aws:SourceIp": "198.51.100.7",  # TEST-NET-2: a documentation address
               "elasticfilesystem:AccessedViaMountTarget": path == "mount target"}
    if path == "endpoint":
        context["elasticfilesystem:AccessedViaRegionalEndpoint"] = True
    if access_point:
        context["elasticfilesystem:AccessPointArn"] = access_point
    assert set(context) <= EFS_NFS_KEYS
    policy = stack["FileSystem"]["Properties"]["FileSystemPolicy"]
    principal = NAMES[f"{who}.Arn"] if f"{who}.Arn" in NAMES else ROLE + who
    boundary = stack.get(who, {}).get("Properties", {}).get("PermissionsBoundary")
    bound = _boundary(boundary)

    def one(name: str) -> str:
        return decide(Request(principal, f"{name}:{action}", FS_ARN, context), identity=identity, resource_policy=policy, boundary=bound, account=ACCOUNT)

    if path == "endpoint":
        both = [one("elasticfilesystem"), one("elasticfilesystem-endpoint")]
        return DENY if DENY in both else ALLOW if both == [ALLOW, ALLOW] else IMPLICIT
    return one("elasticfilesystem")


def _boundary(arn):
    if arn is None:
        return None
    from deploy.iam import boundary_policy

    return resolve(boundary_policy(), NAMES)


def _function_identity(stack: dict) -> list:
    return [p["PolicyDocument"] for p in stack["FunctionRole"]["Properties"]["Policies"]]


def test_the_file_system_policy_uses_only_the_condition_keys_efs_evaluates():
    keys = {k for st in file_system_policy()["Statement"] for tests in (st.get("Condition") or {}).values() for k in tests}
    assert keys <= EFS_NFS_KEYS, keys - EFS_NFS_KEYS


# (who, their own policy, action, access point, tls, path, expected)
CASES = [
    # the function: ClientMount through its own access point only, read-only
    ("FunctionRole", "function", "ClientMount", "reader", True, "mount target", ALLOW),
    ("FunctionRole", "function", "ClientMount", "reader", False, "mount target", DENY),  # no TLS
    ("FunctionRole", "function", "ClientMount", "writer", True, "mount target", IMPLICIT),  # not its access point
    ("FunctionRole", "function", "ClientMount", None, True, "mount target", DENY),  # the bare root
    ("FunctionRole", "function", "ClientWrite", "reader", True, "mount target", IMPLICIT),
    ("FunctionRole", "function", "ClientRootAccess", "reader", True, "mount target", DENY),
    # the sync role: no EFS grant of its own; the file system policy lets it mount and write through an access point
    ("SyncRole", None, "ClientMount", "writer", True, "mount target", ALLOW),
    ("SyncRole", None, "ClientWrite", "writer", True, "mount target", ALLOW),
    ("SyncRole", None, "ClientWrite", "writer", False, "mount target", DENY),
    ("SyncRole", None, "ClientWrite", None, True, "mount target", DENY),  # not without an access point
    ("SyncRole", None, "ClientRootAccess", "writer", True, "mount target", DENY),
    ("SyncRole", None, "ClientWrite", "writer", True, "endpoint", IMPLICIT),  # EFS Endpoints: denied unless granted
    # an administrator (Action "*"): no root, no bare root, no plain NFS...
    ("admin", "admin", "ClientRootAccess", "writer", True, "mount target", DENY),
    ("admin", "admin", "ClientRootAccess", None, True, "mount target", DENY),
    ("admin", "admin", "ClientMount", None, True, "mount target", DENY),
    ("admin", "admin", "ClientWrite", None, True, "mount target", DENY),
    ("admin", "admin", "ClientWrite", "writer", False, "mount target", DENY),
    ("admin", "admin", "ClientRootAccess", "writer", True, "endpoint", DENY),  # the deny holds on EFS Endpoints too
    ("admin", "admin", "ClientWrite", None, True, "endpoint", DENY),
    # ...but a role whose own policy grants ClientWrite still writes through the writer access point (README says so)
    ("admin", "admin", "ClientWrite", "writer", True, "mount target", ALLOW),
    ("admin", "admin", "ClientWrite", "writer", True, "endpoint", ALLOW),
    ("readwrite", "readwrite", "ClientWrite", "writer", True, "mount target", ALLOW),
    ("readwrite", "readwrite", "ClientWrite", None, True, "mount target", DENY),
    ("readwrite", "readwrite", "ClientRootAccess", "writer", True, "mount target", DENY),
    # a role of the account with no EFS grant: the account-wide statement delegates to its own policy, which says nothing
    ("nobody", None, "ClientMount", "reader", True, "mount target", IMPLICIT),
    ("nobody", None, "ClientWrite", "writer", True, "mount target", IMPLICIT),
]


@pytest.mark.parametrize(("who", "grant", "action", "ap", "tls", "path", "expected"), CASES,
                         ids=[f"{c[0]}-{c[2]}-{c[3] or 'no-ap'}-{'tls' if c[4] else 'plain'}-{c[5].replace(' ', '')}" for c in CASES])
def test_efs_decides_each_client_action_as_the_readme_claims(stack, who, grant, action, ap, tls, path, expected):
    identity = {"function": _function_identity(stack), "admin": ADMIN, "readwrite": CLIENT_READ_WRITE, None: None}[grant]
    access_point = {"reader": READER_AP, "writer": WRITER_AP, None: None}[ap]
    assert efs(stack, who, identity, action, access_point, tls=tls, path=path) == expected


def test_the_policy_names_no_principal_key_efs_would_ignore():
    """aws:PrincipalArn is not among EFS's keys: a deny 'unless the principal is the writer' cannot be written."""
    text = str(file_system_policy())
    assert "aws:PrincipalArn" not in text and "aws:userid" not in text


# -- the sync role's trust: DataSync of this account only -----------------------------------------

TASK = f"arn:aws:datasync:{REGION}:{ACCOUNT}:task/task-0123456789abcdef0"


@pytest.mark.parametrize(
    ("service", "context", "expected"),
    [
        ("datasync.amazonaws.com", {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": TASK}, ALLOW),
        ("datasync.amazonaws.com", {"aws:SourceAccount": "444455556666", "aws:SourceArn": TASK.replace(ACCOUNT, "444455556666")}, IMPLICIT),
        ("datasync.amazonaws.com", {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": TASK.replace(REGION, "us-east-1")}, IMPLICIT),
        ("datasync.amazonaws.com", {}, IMPLICIT),  # no source named: refused, not trusted
        ("ec2.amazonaws.com", {}, ALLOW),  # the bastion's instance profile
        ("lambda.amazonaws.com", {"aws:SourceAccount": ACCOUNT}, IMPLICIT),
    ],
)
def test_only_this_accounts_datasync_in_this_region_and_ec2_assume_the_sync_role(service, context, expected):
    trust = resolve(sync_role_trust(), NAMES)
    assert decide(Request(service, "sts:AssumeRole", ROLE + "hoist-test-SyncRole-X", context), resource_policy=trust, account=ACCOUNT) == expected


def test_the_rendered_sync_role_carries_that_trust(stack):
    assert stack["SyncRole"]["Properties"]["AssumeRolePolicyDocument"] == resolve(sync_role_trust(), NAMES)
