"""Hoist's own cfn-lint rules: ``cfn-lint --append-rules deploy/lint_rules template.json``.

They check what cfn-lint does not check by itself and what a Lambda + EFS stack
gets wrong most often (docs/design.md, "Deploy"). cfn-lint loads rule files by
path, outside any package, so the rules and their helpers share this one file.
"""
from __future__ import annotations

import re

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
    tags = ["hoist", "iam"]

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


# E9002: NFS (2049) into the mount targets comes only from the function's security group.

NFS = 2049


def _covers_nfs(rule: dict) -> bool:
    if str(rule.get("IpProtocol")) in ("-1", "all"):
        return True
    try:
        return int(rule.get("FromPort", -1)) <= NFS <= int(rule.get("ToPort", -1))
    except (TypeError, ValueError):
        return False


class NfsFromFunctionOnly(CloudFormationLintRule):
    id = "E9002"
    shortdesc = "NFS ingress only from the function's security group"
    description = "Ingress reaching port 2049 must name the function's security group as its source, never a CIDR or prefix list."
    source_url = "https://docs.aws.amazon.com/lambda/latest/dg/configuration-filesystem.html"
    tags = ["hoist", "ec2", "efs"]

    def match(self, cfn):
        matches = []
        candidates = []
        for name, res in resources(cfn, "AWS::EC2::SecurityGroup").items():
            for i, rule in enumerate(props(res).get("SecurityGroupIngress", []) or []):
                if isinstance(rule, dict):
                    candidates.append((["Resources", name, "Properties", "SecurityGroupIngress", i], rule))
        for name, res in resources(cfn, "AWS::EC2::SecurityGroupIngress").items():
            candidates.append((["Resources", name, "Properties"], props(res)))
        for path, rule in candidates:
            if not _covers_nfs(rule):
                continue
            if rule.get("SourceSecurityGroupId") != {"Ref": "FunctionSecurityGroup"}:
                source = rule.get("CidrIp") or rule.get("CidrIpv6") or rule.get("SourcePrefixListId") or rule.get("SourceSecurityGroupId")
                matches.append(RuleMatch(path, f"{path[1]}: NFS ingress from {source!r}; allow 2049 only from {{'Ref': 'FunctionSecurityGroup'}}"))
        return matches


# E9003: the EFS file system is encrypted at rest.

class EfsEncrypted(CloudFormationLintRule):
    id = "E9003"
    shortdesc = "EFS encryption at rest"
    description = "AWS::EFS::FileSystem must set Encrypted: true (it cannot be turned on later without a new file system)."
    source_url = "https://docs.aws.amazon.com/efs/latest/ug/encryption-at-rest.html"
    tags = ["hoist", "efs"]

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
    tags = ["hoist", "lambda", "efs"]

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
    tags = ["hoist", "lambda", "efs"]

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
