"""Hoist's own cfn-lint rules: ``cfn-lint --append-rules deploy/lint_rules template.json``.

They check what cfn-lint does not check by itself and what a Lambda + EFS stack
gets wrong most often (docs/design.md, "Deploy"). cfn-lint loads rule files by
path, outside any package, so the rules and their helpers share this one file.
"""
from __future__ import annotations

import re
from typing import ClassVar

from cfnlint.rules import CloudFormationLintRule, RuleMatch


def resources(cfn, kind: str) -> dict:
    return {name: r for name, r in (cfn.template.get("Resources") or {}).items() if isinstance(r, dict) and r.get("Type") == kind}


def props(resource: dict) -> dict:
    value = resource.get("Properties")
    return value if isinstance(value, dict) else {}


def names_resource(value, logical: str) -> bool:
    """True when ``value`` is Ref/GetAtt of ``logical``."""
    if isinstance(value, dict):
        if value.get("Ref") == logical:
            return True
        att = value.get("Fn::GetAtt")
        if isinstance(att, list) and att and att[0] == logical:
            return True
        if isinstance(att, str) and att.split(".")[0] == logical:
            return True
    return False


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


# E9001: IAM policies in the stack name actions and resources, never ``*``.

class IamNoWildcards(CloudFormationLintRule):
    id = "E9001"
    shortdesc = "No wildcard IAM actions or resources"
    description = ("Inline policies grant named actions on named resources; the VPC access managed policy covers ENIs and logs. "
                   "A '*' action (or service:*) or a bare '*' resource fails.")
    source_url = "https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html"
    tags: ClassVar[list[str]] = ["hoist", "iam"]

    def match(self, cfn):
        matches = []
        for name, res in resources(cfn, "AWS::IAM::Role").items():
            for i, policy in enumerate(as_list(props(res).get("Policies", []))):
                doc = policy.get("PolicyDocument", {}) if isinstance(policy, dict) else {}
                for j, st in enumerate(as_list(doc.get("Statement", []))):
                    if not isinstance(st, dict) or st.get("Effect") != "Allow":
                        continue
                    path = ["Resources", name, "Properties", "Policies", i, "PolicyDocument", "Statement", j]
                    for action in as_list(st.get("Action", [])):
                        if isinstance(action, str) and (action == "*" or action.endswith(":*")):
                            matches.append(RuleMatch(path + ["Action"], f"{name}: wildcard action {action!r}; name the actions the function needs"))
                    if "NotAction" in st:
                        matches.append(RuleMatch(path + ["NotAction"], f"{name}: NotAction grants everything else; name the actions"))
                    for resource in as_list(st.get("Resource", [])):
                        if resource == "*" or (isinstance(resource, str) and resource.endswith(":*")):
                            matches.append(RuleMatch(path + ["Resource"], f"{name}: wildcard resource {resource!r}; scope it to the file system, bucket prefix or log group"))
        return matches


# E9002: NFS (2049) into the mount targets comes only from the function's group and the writers' group, port 2049 alone.

NFS = 2049
# the groups that may reach the mount targets: readers (the function) and writers (bastion, DataSync)
NFS_CLIENTS = ("FunctionSecurityGroup", "SyncSecurityGroup")


def _covers_nfs(rule: dict) -> bool:
    if str(rule.get("IpProtocol")) in ("-1", "all"):
        return True
    try:
        return int(rule.get("FromPort", -1)) <= NFS <= int(rule.get("ToPort", -1))
    except (TypeError, ValueError):
        return False


def _exactly_nfs(rule: dict) -> bool:
    try:
        return str(rule.get("IpProtocol")) in ("tcp", "6") and int(rule.get("FromPort", -1)) == NFS == int(rule.get("ToPort", -1))
    except (TypeError, ValueError):
        return False


def _rules(cfn, kind: str) -> list[tuple[list, object, dict]]:
    """(path, group it belongs to, rule) for every ingress or egress rule, inline or separate."""
    key = "SecurityGroupIngress" if kind == "Ingress" else "SecurityGroupEgress"
    out: list[tuple[list, object, dict]] = []
    for name, res in resources(cfn, "AWS::EC2::SecurityGroup").items():
        for i, rule in enumerate(props(res).get(key, []) or []):
            if isinstance(rule, dict):
                out.append((["Resources", name, "Properties", key, i], {"Ref": name}, rule))
    for name, res in resources(cfn, f"AWS::EC2::SecurityGroup{kind}").items():
        out.append((["Resources", name, "Properties"], props(res).get("GroupId"), props(res)))
    return out


class NfsFromClientsOnly(CloudFormationLintRule):
    id = "E9002"
    shortdesc = "NFS ingress only from the function's and the writers' security groups"
    description = ("Ingress reaching port 2049 must be tcp 2049 alone, from {'Ref': 'FunctionSecurityGroup'} or {'Ref': 'SyncSecurityGroup'}; "
                   "never a CIDR, a prefix list, another group or a wider port range.")
    source_url = "https://docs.aws.amazon.com/lambda/latest/dg/configuration-filesystem.html"
    tags: ClassVar[list[str]] = ["hoist", "ec2", "efs"]

    def match(self, cfn):
        matches = []
        allowed = [{"Ref": g} for g in NFS_CLIENTS]
        for path, _, rule in _rules(cfn, "Ingress"):
            if not _covers_nfs(rule):
                continue
            source = rule.get("SourceSecurityGroupId")
            if source not in allowed:
                shown = rule.get("CidrIp") or rule.get("CidrIpv6") or rule.get("SourcePrefixListId") or source
                matches.append(RuleMatch(path, f"{path[1]}: NFS ingress from {shown!r}; allow 2049 only from {allowed[0]} or {allowed[1]}"))
            elif not _exactly_nfs(rule):
                matches.append(RuleMatch(path, f"{path[1]}: ingress from {source} opens more than tcp 2049; open exactly tcp 2049"))
        return matches


# E9006: every client of the file system (the function reads, the writers write) has a path to 2049.

def _egress_allows_nfs(cfn, group: str) -> bool:
    inline = props(resources(cfn, "AWS::EC2::SecurityGroup").get(group, {})).get("SecurityGroupEgress")
    if inline is None and not any(owner == {"Ref": group} for _, owner, _ in _rules(cfn, "Egress")):
        return True  # no egress rule at all: AWS's default allows everything out
    return any(owner == {"Ref": group} and _covers_nfs(rule) for _, owner, rule in _rules(cfn, "Egress"))


class EveryClientReachesNfs(CloudFormationLintRule):
    id = "E9006"
    shortdesc = "The function and the writers reach the mount targets on 2049"
    description = ("A bastion or DataSync's network interfaces in a group the mount targets do not admit cannot write the tree; "
                   "the stack needs SyncSecurityGroup, and the mount targets' group must admit FunctionSecurityGroup and SyncSecurityGroup "
                   "on 2049 while each allows 2049 out.")
    source_url = "https://docs.aws.amazon.com/datasync/latest/userguide/create-efs-location.html"
    tags: ClassVar[list[str]] = ["hoist", "ec2", "efs"]

    def match(self, cfn):
        if not resources(cfn, "AWS::EFS::MountTarget") and not any(
                (props(r).get("FileSystemConfigs")) for r in resources(cfn, "AWS::Lambda::Function").values()):
            return []
        groups = resources(cfn, "AWS::EC2::SecurityGroup")
        matches = []
        targets: list = []
        for res in resources(cfn, "AWS::EFS::MountTarget").values():
            targets += [g for g in as_list(props(res).get("SecurityGroups", [])) if g not in targets]
        for _, owner, rule in _rules(cfn, "Ingress"):
            if _covers_nfs(rule) and owner not in targets:
                targets.append(owner)
        if not targets:
            return [RuleMatch(["Resources"], "no security group admits 2049 into the mount targets: nothing can mount the file system")]
        for client in NFS_CLIENTS:
            if client not in groups:
                matches.append(RuleMatch(["Resources"], f"no {client}: " + ("the function" if client.startswith("Function") else "the bastion and DataSync")
                                         + " would have no security group with a path to 2049"))
                continue
            for target in targets:
                if not any(owner == target and _covers_nfs(rule) and rule.get("SourceSecurityGroupId") == {"Ref": client}
                           for _, owner, rule in _rules(cfn, "Ingress")):
                    matches.append(RuleMatch(["Resources", client], f"{client}: the mount targets' group {target} does not admit it on 2049"))
            if not _egress_allows_nfs(cfn, client):
                matches.append(RuleMatch(["Resources", client], f"{client}: its egress rules do not allow 2049 out"))
        return matches


# E9007: the file system has a policy: writes only by a named principal, TLS required, nobody root, nothing without an
# access point. EFS allows what *either* the caller's own IAM policy or this policy allows: only a Deny here limits a
# role whose own policy grants EFS client actions (an administrator), so the two denies are required.

EVERYONE = ({"AWS": "*"}, "*")
MOUNT_OR_WRITE = {"elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"}


def _actions(st: dict) -> set[str]:
    return {a for a in as_list(st.get("Action", [])) if isinstance(a, str)}


def _denies_to_everyone(st: dict) -> bool:
    return st.get("Effect") == "Deny" and st.get("Principal") in EVERYONE


def _denies_root(statements: list[dict]) -> bool:
    return any(_denies_to_everyone(st) and not st.get("Condition") and _actions(st) & {"*", "elasticfilesystem:*", "elasticfilesystem:ClientRootAccess"}
               for st in statements)


def _denies_without_access_point(statements: list[dict]) -> bool:
    return any(_denies_to_everyone(st) and (st.get("Condition") or {}) == {"Null": {"elasticfilesystem:AccessPointArn": "true"}}
               and (_actions(st) >= MOUNT_OR_WRITE or _actions(st) & {"*", "elasticfilesystem:*"}) for st in statements)


class FileSystemPolicy(CloudFormationLintRule):
    id = "E9007"
    shortdesc = "EFS file system policy: TLS only, nobody root, nothing without an access point, writes by a named principal"
    description = ("Without a FileSystemPolicy EFS lets every client that reaches 2049 write. The policy must deny aws:SecureTransport false, "
                   "deny ClientRootAccess to everyone, deny ClientMount and ClientWrite to everyone when elasticfilesystem:AccessPointArn is null, "
                   "and grant ClientWrite (or ClientRootAccess) only to a principal named by a role's ARN, never '*' or the account.")
    source_url = "https://docs.aws.amazon.com/efs/latest/ug/iam-access-control-nfs-efs.html"
    tags: ClassVar[list[str]] = ["hoist", "efs", "iam"]

    def match(self, cfn):
        matches = []
        roles = set(resources(cfn, "AWS::IAM::Role"))
        for name, res in resources(cfn, "AWS::EFS::FileSystem").items():
            path = ["Resources", name, "Properties", "FileSystemPolicy"]
            policy = props(res).get("FileSystemPolicy")
            if not isinstance(policy, dict):
                matches.append(RuleMatch(path[:-1], f"{name}: no FileSystemPolicy: any client that reaches 2049 may write every version"))
                continue
            statements = [st for st in as_list(policy.get("Statement", [])) if isinstance(st, dict)]
            if not any(st.get("Effect") == "Deny" and (st.get("Condition") or {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)
                       for st in statements):
                matches.append(RuleMatch(path, f"{name}: the policy must deny requests whose aws:SecureTransport is false"))
            if not _denies_root(statements):
                matches.append(RuleMatch(path, f"{name}: the policy must deny elasticfilesystem:ClientRootAccess to every principal (AWS: '*'): "
                                               "a role whose own IAM policy grants it could otherwise rewrite every version as root"))
            if not _denies_without_access_point(statements):
                matches.append(RuleMatch(path, f"{name}: the policy must deny ClientMount and ClientWrite to every principal when "
                                               "elasticfilesystem:AccessPointArn is null (Null: true): no client mounts the bare root"))
            for j, st in enumerate(statements):
                actions = [a for a in as_list(st.get("Action", [])) if isinstance(a, str)]
                if st.get("Effect") != "Allow" or not any(a in ("*", "elasticfilesystem:*", "elasticfilesystem:ClientWrite", "elasticfilesystem:ClientRootAccess") for a in actions):
                    continue
                principal = st.get("Principal")
                named = as_list(principal.get("AWS") if isinstance(principal, dict) else principal)
                if not named or not all(_ref_target(p) in roles for p in named):
                    matches.append(RuleMatch([*path, "Statement", j], f"{name}: statement {j} lets {named!r} write; grant ClientWrite to the sync role only"))
        return matches


def _ref_target(value) -> str | None:
    """The logical id a GetAtt ...Arn names (a role of this stack), else None."""
    if isinstance(value, dict):
        att = value.get("Fn::GetAtt")
        if isinstance(att, list) and len(att) == 2 and att[1] == "Arn":
            return att[0]
        if isinstance(att, str) and att.endswith(".Arn"):
            return att.split(".")[0]
    return None


# E9003: the EFS file system is encrypted at rest.

class EfsEncrypted(CloudFormationLintRule):
    id = "E9003"
    shortdesc = "EFS encryption at rest"
    description = "AWS::EFS::FileSystem must set Encrypted: true (it cannot be turned on later without a new file system)."
    source_url = "https://docs.aws.amazon.com/efs/latest/ug/encryption-at-rest.html"
    tags: ClassVar[list[str]] = ["hoist", "efs"]

    def match(self, cfn):
        return [RuleMatch(["Resources", name, "Properties"], f"{name}: set Encrypted: true")
                for name, res in resources(cfn, "AWS::EFS::FileSystem").items() if props(res).get("Encrypted") is not True]


# E9004: the function mounts EFS through the access point, at a /mnt/... path.

# Lambda's pattern for LocalMountPath (lambda-facts.md, "EFS for Lambda")
MOUNT_PATH = re.compile(r"^/mnt/[a-zA-Z0-9-_.]+$")


def _is_access_point(arn, access_points: set[str]) -> bool:
    if any(names_resource(arn, ap) for ap in access_points):
        return True
    text = arn.get("Fn::Sub") if isinstance(arn, dict) else arn
    return isinstance(text, str) and ":access-point/fsap-" in text


class FileSystemConfig(CloudFormationLintRule):
    id = "E9004"
    shortdesc = "FileSystemConfigs use the access point and a /mnt path"
    description = "A function with FileSystemConfigs mounts an EFS access point (not the file system) at /mnt/<name>."
    source_url = "https://docs.aws.amazon.com/lambda/latest/dg/configuration-filesystem.html"
    tags: ClassVar[list[str]] = ["hoist", "lambda", "efs"]

    def match(self, cfn):
        matches = []
        access_points = set(resources(cfn, "AWS::EFS::AccessPoint"))
        for name, res in resources(cfn, "AWS::Lambda::Function").items():
            configs = props(res).get("FileSystemConfigs")
            if configs is None:
                continue
            if not isinstance(configs, list) or len(configs) != 1:
                matches.append(RuleMatch(["Resources", name, "Properties", "FileSystemConfigs"], f"{name}: exactly one FileSystemConfig (Lambda allows one)"))
                continue
            fsc = configs[0] if isinstance(configs[0], dict) else {}
            path = ["Resources", name, "Properties", "FileSystemConfigs", 0]
            if not _is_access_point(fsc.get("Arn"), access_points):
                matches.append(RuleMatch(path + ["Arn"], f"{name}: FileSystemConfigs Arn must be an EFS access point (GetAtt AccessPoint.Arn or an access-point/fsap-... ARN)"))
            mount = fsc.get("LocalMountPath")
            if not (isinstance(mount, str) and MOUNT_PATH.match(mount)):
                matches.append(RuleMatch(path + ["LocalMountPath"], f"{name}: LocalMountPath {mount!r} must match /mnt/<name>"))
            if not props(res).get("VpcConfig"):
                matches.append(RuleMatch(["Resources", name, "Properties"], f"{name}: a function that mounts EFS needs VpcConfig"))
        return matches


# E9005: the function depends on every mount target of the stack's file system.

class MountTargetsFirst(CloudFormationLintRule):
    id = "E9005"
    shortdesc = "Mount targets before the function"
    description = ("CloudFormation creates resources in parallel; a function with FileSystemConfigs created before the mount targets "
                   "fails to mount. List every AWS::EFS::MountTarget in the function's DependsOn.")
    source_url = "https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-lambda-function.html"
    tags: ClassVar[list[str]] = ["hoist", "lambda", "efs"]

    def match(self, cfn):
        matches = []
        targets = set(resources(cfn, "AWS::EFS::MountTarget"))
        for name, res in resources(cfn, "AWS::Lambda::Function").items():
            if not (res.get("Properties") or {}).get("FileSystemConfigs"):
                continue
            depends = res.get("DependsOn", [])
            depends = {depends} if isinstance(depends, str) else set(depends)
            missing = sorted(targets - depends)
            if missing:
                matches.append(RuleMatch(["Resources", name], f"{name}: DependsOn lacks mount target(s) {', '.join(missing)}"))
        return matches


# E9008: SnapStart's exclusions, and an image pinned by digest.

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


class SnapStartAndImages(CloudFormationLintRule):
    id = "E9008"
    shortdesc = "SnapStart without EFS or large /tmp; images pinned by digest"
    description = ("SnapStart excludes EFS (FileSystemConfigs) and ephemeral storage over 512 MB; a PackageType Image function names its image "
                   "by digest (a tag can move, and an immutable repository's tag is still not what the version ran); its repository scans on push "
                   "and has immutable tags.")
    source_url = "https://docs.aws.amazon.com/lambda/latest/dg/snapstart.html"
    tags: ClassVar[list[str]] = ["hoist", "lambda", "snapstart", "ecr"]

    def match(self, cfn):
        matches = []
        for name, res in resources(cfn, "AWS::Lambda::Function").items():
            p = props(res)
            snap = (p.get("SnapStart") or {}).get("ApplyOn") == "PublishedVersions"
            where = ["Resources", name, "Properties"]
            if snap and p.get("FileSystemConfigs"):
                matches.append(RuleMatch(where + ["FileSystemConfigs"], f"{name}: SnapStart cannot be used with EFS (FileSystemConfigs)"))
            size = (p.get("EphemeralStorage") or {}).get("Size")
            if snap and isinstance(size, int) and size > 512:
                matches.append(RuleMatch(where + ["EphemeralStorage"], f"{name}: SnapStart takes at most 512 MB of ephemeral storage, found {size}"))
            if p.get("PackageType") == "Image":
                uri = (p.get("Code") or {}).get("ImageUri")
                if not (isinstance(uri, str) and DIGEST.search(uri)):
                    matches.append(RuleMatch(where + ["Code", "ImageUri"], f"{name}: ImageUri must end in @sha256:<digest>, found {uri!r}"))
        for name, res in resources(cfn, "AWS::ECR::Repository").items():
            p = props(res)
            if p.get("ImageTagMutability") != "IMMUTABLE":
                matches.append(RuleMatch(["Resources", name, "Properties"], f"{name}: ImageTagMutability must be IMMUTABLE"))
            if (p.get("ImageScanningConfiguration") or {}).get("ScanOnPush") is not True:
                matches.append(RuleMatch(["Resources", name, "Properties"], f"{name}: ImageScanningConfiguration ScanOnPush must be true"))
        return matches
