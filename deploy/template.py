"""The CloudFormation template: one stack holds the whole AWS side.

``render(config, release)`` returns the template as a dict; nothing here calls
AWS. The storage part (security groups, the file system, its mount targets and
access point, the gateway endpoints) can be rendered alone
(``storage_only=True``): a stack that creates its own file system needs it
before the first sync can put a tree on it (docs/design.md, "Deploy").

Logical ids are stable, so an unchanged input renders the same template and the
change set is empty. The function's published version carries a hash of
everything that defines it in its logical id: a new code zip, layer or EFS
version publishes a new version and moves the alias ``live``; old versions are
retained, so a rollback can point the alias back at them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pipeline.config import Config, DeployConfig

ALIAS = "live"
# Lambda: the managed policy for ENIs in the VPC and CloudWatch Logs (lambda-facts.md, "EFS for Lambda")
VPC_ACCESS_POLICY = "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
NFS_PORT = 2049


@dataclass(frozen=True)
class Release:
    """What one deploy puts live: content-addressed keys and versions."""

    runtime: str  # python3.13
    arch: str  # arm64 | x86_64
    function_key: str  # S3 key of the handler zip
    layer_key: str | None  # S3 key of the layer zip (None: no layer set)
    efs_version: str  # content hash of the EFS tree (envs/<hash> on the file system)
    model_prefix: str  # S3 prefix of the model artifacts (<prefix>/models/<hash>/)

    def fingerprint(self, extra: dict) -> str:
        doc = {**self.__dict__, **extra}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def sub(text: str) -> dict:
    return {"Fn::Sub": text}


def ref(name: str) -> dict:
    return {"Ref": name}


def att(name: str, attr: str) -> dict:
    return {"Fn::GetAtt": [name, attr]}


def mount_target_ids(dcfg: DeployConfig) -> list[str]:
    return [f"MountTarget{i}" for i in range(len(dcfg.subnet_ids))] if dcfg.creates_file_system else []


def _storage(config: Config, dcfg: DeployConfig) -> tuple[dict, dict, dict, dict]:
    """Security groups, file system, mount targets, access point, endpoints; and the
    file system id/ARN and access point ARN as template expressions."""
    name = config.function.name
    res: dict = {
        "FunctionSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": f"{name} function ENIs",
                "VpcId": dcfg.vpc_id,
                # HTTPS to S3 (through the gateway endpoint) and AWS APIs; NFS is a separate rule below
                "SecurityGroupEgress": [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0", "Description": "HTTPS to S3 and AWS APIs"}],
                "Tags": [{"Key": "Name", "Value": f"{name}-function"}],
            },
        }
    }
    if dcfg.creates_file_system:
        res["MountTargetSecurityGroup"] = {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {"GroupDescription": f"{name}: EFS mount targets, NFS from the function only", "VpcId": dcfg.vpc_id,
                           "Tags": [{"Key": "Name", "Value": f"{name}-efs"}]},
        }
        mt_group = ref("MountTargetSecurityGroup")
        res["FileSystem"] = {
            "Type": "AWS::EFS::FileSystem",
            # the trees outlive the stack: deleting it never deletes data (teardown --delete-data does)
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "Encrypted": True,
                # bursting credits run dry under a burst of cold starts on a small file system (lambda-facts.md)
                "ThroughputMode": "elastic",
                "PerformanceMode": "generalPurpose",
                "FileSystemTags": [{"Key": "Name", "Value": config.efs.file_system_name}],
            },
        }
        for i, subnet in enumerate(dcfg.subnet_ids):
            res[f"MountTarget{i}"] = {
                "Type": "AWS::EFS::MountTarget",
                "Properties": {"FileSystemId": ref("FileSystem"), "SubnetId": subnet, "SecurityGroups": [mt_group]},
            }
        res["AccessPoint"] = {
            "Type": "AWS::EFS::AccessPoint",
            "Properties": {
                "FileSystemId": ref("FileSystem"),
                "PosixUser": {"Uid": str(dcfg.posix_uid), "Gid": str(dcfg.posix_gid)},
                # without CreationInfo, mounting fails when the root folder does not exist yet
                "RootDirectory": {"Path": config.efs.root, "CreationInfo": {"OwnerUid": str(dcfg.posix_uid), "OwnerGid": str(dcfg.posix_gid), "Permissions": "755"}},
                "AccessPointTags": [{"Key": "Name", "Value": f"{name}-{config.efs.root.strip('/') or 'root'}"}],
            },
        }
        fs_id, fs_arn, ap_arn = ref("FileSystem"), att("FileSystem", "Arn"), att("AccessPoint", "Arn")
    else:
        mt_group = dcfg.mount_target_security_group_id or None
        fs_id = dcfg.file_system_id
        fs_arn = sub(f"arn:${{AWS::Partition}}:elasticfilesystem:${{AWS::Region}}:${{AWS::AccountId}}:file-system/{dcfg.file_system_id}")
        ap_arn = sub(f"arn:${{AWS::Partition}}:elasticfilesystem:${{AWS::Region}}:${{AWS::AccountId}}:access-point/{dcfg.access_point_id}")
    if mt_group:
        # separate resources: inline rules referring to each other's groups would be a cycle
        res["MountTargetIngress"] = {
            "Type": "AWS::EC2::SecurityGroupIngress",
            "Properties": {"GroupId": mt_group, "IpProtocol": "tcp", "FromPort": NFS_PORT, "ToPort": NFS_PORT,
                           "SourceSecurityGroupId": ref("FunctionSecurityGroup"), "Description": "NFS from the function"},
        }
        res["FunctionNfsEgress"] = {
            "Type": "AWS::EC2::SecurityGroupEgress",
            "Properties": {"GroupId": ref("FunctionSecurityGroup"), "IpProtocol": "tcp", "FromPort": NFS_PORT, "ToPort": NFS_PORT,
                           "DestinationSecurityGroupId": mt_group, "Description": "NFS to the EFS mount targets"},
        }
    else:
        # existing mount targets whose group is not given: allow NFS out; their group must allow it in
        res["FunctionNfsEgress"] = {
            "Type": "AWS::EC2::SecurityGroupEgress",
            "Properties": {"GroupId": ref("FunctionSecurityGroup"), "IpProtocol": "tcp", "FromPort": NFS_PORT, "ToPort": NFS_PORT,
                           "CidrIp": "0.0.0.0/0", "Description": "NFS to the existing EFS mount targets"},
        }
    # a function in a VPC reaches S3 only through an endpoint or a NAT (lambda-facts.md, "Networking")
    for flag, logical, service in ((dcfg.s3_endpoint, "S3Endpoint", "s3"), (dcfg.dynamodb_endpoint, "DynamoDBEndpoint", "dynamodb")):
        if flag:
            res[logical] = {
                "Type": "AWS::EC2::VPCEndpoint",
                "Properties": {"VpcId": dcfg.vpc_id, "VpcEndpointType": "Gateway", "ServiceName": sub(f"com.amazonaws.${{AWS::Region}}.{service}"),
                               "RouteTableIds": list(dcfg.route_table_ids)},
            }
    return res, fs_id, fs_arn, ap_arn


def _s3_arn(bucket: str, prefix: str) -> dict:
    return sub(f"arn:${{AWS::Partition}}:s3:::{bucket}/{prefix.strip('/')}/*")


def _function(config: Config, dcfg: DeployConfig, release: Release, fs_arn, ap_arn) -> tuple[dict, str]:
    fn = config.function
    efs_tree = f"{config.efs.mount_path.rstrip('/')}/envs/{release.efs_version}/site-packages"
    env = {
        "HOIST_EFS_TREE": efs_tree,
        "HOIST_EFS_VERSION": release.efs_version,
        "HOIST_MODEL_S3": f"s3://{dcfg.artifact_bucket}/{release.model_prefix.strip('/')}/",
        "HOIST_OUTPUT_S3": f"s3://{dcfg.artifact_bucket}/{dcfg.output_prefix}/",
    }
    mount_targets = mount_target_ids(dcfg)
    res: dict = {
        "FunctionRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
                },
                "ManagedPolicyArns": [sub(VPC_ACCESS_POLICY)],
                "Policies": [{
                    "PolicyName": "hoist-function",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            # read-only mount through this access point only
                            {"Sid": "EfsMount", "Effect": "Allow", "Action": ["elasticfilesystem:ClientMount"], "Resource": fs_arn,
                             "Condition": {"StringEquals": {"elasticfilesystem:AccessPointArn": ap_arn}}},
                            {"Sid": "ReadModel", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": _s3_arn(dcfg.artifact_bucket, f"{dcfg.artifact_prefix}/models")},
                            {"Sid": "WriteOutputs", "Effect": "Allow", "Action": ["s3:PutObject"], "Resource": _s3_arn(dcfg.artifact_bucket, dcfg.output_prefix)},
                        ],
                    },
                }],
            },
        },
        "LogGroup": {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "Properties": {"LogGroupName": f"/aws/lambda/{fn.name}", "RetentionInDays": dcfg.log_retention_days},
        },
    }
    layers = []
    if release.layer_key:
        res["Layer"] = {
            "Type": "AWS::Lambda::LayerVersion",
            # older function versions keep using their layer version: a rollback needs it
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {"LayerName": f"{fn.name}-deps", "Description": f"hoist layer {release.layer_key.rsplit('/', 1)[-1][:16]}",
                           "Content": {"S3Bucket": dcfg.artifact_bucket, "S3Key": release.layer_key},
                           "CompatibleRuntimes": [release.runtime], "CompatibleArchitectures": [release.arch]},
        }
        layers = [ref("Layer")]
    props = {
        "FunctionName": fn.name,
        "Description": f"hoist: EFS version {release.efs_version[:16]}",
        "Runtime": release.runtime,
        "Architectures": [release.arch],
        "Handler": fn.handler,
        "Code": {"S3Bucket": dcfg.artifact_bucket, "S3Key": release.function_key},
        "Role": att("FunctionRole", "Arn"),
        "MemorySize": fn.memory_mb,
        "Timeout": fn.timeout_s,
        "EphemeralStorage": {"Size": dcfg.ephemeral_storage_mb},
        "VpcConfig": {"SubnetIds": list(dcfg.subnet_ids), "SecurityGroupIds": [ref("FunctionSecurityGroup")]},
        "FileSystemConfigs": [{"Arn": ap_arn, "LocalMountPath": config.efs.mount_path}],
        "Environment": {"Variables": env},
        "LoggingConfig": {"LogGroup": ref("LogGroup")},
    }
    if layers:
        props["Layers"] = layers
    # the function cannot mount EFS before a mount target exists in its subnets
    res["Function"] = {"Type": "AWS::Lambda::Function", "DependsOn": [*mount_targets, "FunctionNfsEgress"], "Properties": props}
    version_id = "FunctionVersion" + release.fingerprint({"memory": fn.memory_mb, "timeout": fn.timeout_s, "handler": fn.handler,
                                                          "storage": dcfg.ephemeral_storage_mb, "mount": config.efs.mount_path})
    res[version_id] = {
        "Type": "AWS::Lambda::Version",
        "DeletionPolicy": "Retain",  # rollback points the alias back at older versions
        "UpdateReplacePolicy": "Retain",
        "Properties": {"FunctionName": ref("Function"), "Description": f"efs {release.efs_version[:16]} code {release.function_key.rsplit('/', 1)[-1][:16]}"},
    }
    res["LiveAlias"] = {
        "Type": "AWS::Lambda::Alias",
        "Properties": {"FunctionName": ref("Function"), "FunctionVersion": att(version_id, "Version"), "Name": ALIAS},
    }
    res["HttpApi"] = {"Type": "AWS::ApiGatewayV2::Api", "Properties": {"Name": config.api_name, "ProtocolType": "HTTP",
                                                                         "Description": f"hoist: {fn.name}"}}
    res["Integration"] = {
        "Type": "AWS::ApiGatewayV2::Integration",
        "Properties": {"ApiId": ref("HttpApi"), "IntegrationType": "AWS_PROXY", "IntegrationUri": ref("LiveAlias"),
                       "PayloadFormatVersion": "2.0", "TimeoutInMillis": 30000},
    }
    for logical, key in (("ClassifyRoute", "POST /classify"), ("HealthRoute", "GET /health")):
        res[logical] = {"Type": "AWS::ApiGatewayV2::Route",
                        "Properties": {"ApiId": ref("HttpApi"), "RouteKey": key, "Target": sub("integrations/${Integration}")}}
    res["ApiStage"] = {"Type": "AWS::ApiGatewayV2::Stage", "Properties": {"ApiId": ref("HttpApi"), "StageName": "$default", "AutoDeploy": True}}
    res["InvokePermission"] = {
        "Type": "AWS::Lambda::Permission",
        "Properties": {"Action": "lambda:InvokeFunction", "FunctionName": ref("LiveAlias"), "Principal": "apigateway.amazonaws.com",
                       "SourceArn": sub("arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${HttpApi}/*/*")},
    }
    return res, version_id


def render(config: Config, release: Release | None, *, storage_only: bool = False) -> dict:
    """The stack's template. ``release`` may be None only with ``storage_only``."""
    dcfg = config.deploy
    if dcfg is None:
        raise ValueError("render needs [deploy] in the config")
    resources, fs_id, fs_arn, ap_arn = _storage(config, dcfg)
    outputs = {
        "FileSystemId": {"Description": "EFS file system", "Value": fs_id},
        "AccessPointArn": {"Description": "EFS access point the function mounts", "Value": ap_arn},
    }
    if not storage_only:
        if release is None:
            raise ValueError("a full template needs a release")
        function, version_id = _function(config, dcfg, release, fs_arn, ap_arn)
        resources.update(function)
        outputs.update({
            "ApiUrl": {"Description": "HTTP API", "Value": sub("https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}")},
            "FunctionName": {"Description": "Lambda function", "Value": ref("Function")},
            "AliasArn": {"Description": "alias the API invokes", "Value": ref("LiveAlias")},
            "FunctionVersion": {"Description": "version behind the alias", "Value": att(version_id, "Version")},
            "EfsVersion": {"Description": "EFS dependency version (envs/<hash>)", "Value": release.efs_version},
        })
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"hoist: {config.function.name} ({'storage' if storage_only else 'function, layer, EFS and HTTP API'})",
        "Resources": resources,
        "Outputs": outputs,
    }


def dumps(template: dict) -> str:
    """Stable JSON: the same template gives the same bytes (and an empty change set)."""
    return json.dumps(template, indent=1, sort_keys=True)
