"""The CloudFormation template: one stack holds the whole AWS side.

``render(config, release)`` returns the template as a dict; nothing here calls
AWS. The storage part (security groups, the file system, its mount targets and
access point, the gateway endpoints) can be rendered alone
(``storage_only=True``): a stack that creates its own file system needs it
before the first sync can put a tree on it (docs/design.md, "Deploy").

Logical ids are stable, so an unchanged input renders the same template and the
change set is empty. The function's published version carries a hash of
everything that defines it in its logical id: a new code zip, layer or EFS
version publishes a new version; the alias ``live`` stays on the version that
was live (``live_version``) until the deployer has tested the new one directly,
then a second change set moves it (``promoted``). Old versions are retained, so
a rollback can point the alias back at them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pipeline.config import Config, DeployConfig
from pipeline.layout import version_dir
from pipeline.routes import ROUTES
from pipeline.shapes import Shape, shape_of

from . import iam

ALIAS = "live"
# Lambda: the managed policy for ENIs in the VPC and CloudWatch Logs (lambda-facts.md, "EFS for Lambda")
VPC_ACCESS_POLICY = "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
BASIC_EXECUTION_POLICY = "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"  # logs only: no VPC
NFS_PORT = 2049
# CloudFormation's DeletionPolicy: like Retain, except that the stack operation that created the resource deletes it
# when it rolls back (CloudFormation user guide, "DeletionPolicy attribute"); UpdateReplacePolicy has no such value
RETAIN_EXCEPT_ON_CREATE = "RetainExceptOnCreate"


@dataclass(frozen=True)
class Release:
    """What one deploy puts live: content-addressed keys and versions."""

    runtime: str  # python3.13
    arch: str  # arm64 | x86_64
    function_key: str  # S3 key of the handler zip
    layer_key: str | None  # S3 key of the layer zip (None: no layer set)
    efs_version: str  # the EFS version's identity (envs/<identity> on the file system: the tree and its archives); "" for an image
    model_prefix: str  # S3 prefix of the model artifacts (<prefix>/models/<hash>/); "" for an image (the model is in it)
    image_uri: str | None = None  # the image shape: <repository uri>@sha256:<the registry's digest> (deploy/image.py)

    def fingerprint(self, resources: dict) -> str:
        """A hash of the release and of every property of the given resources (the function's and its layer's):
        any change that updates $LATEST (environment, VPC, memory, layer...) also publishes a new version."""
        doc = {**self.__dict__, "resources": resources}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def sub(text: str) -> dict:
    return {"Fn::Sub": text}


def ref(name: str) -> dict:
    return {"Ref": name}


def att(name: str, attr: str) -> dict:
    return {"Fn::GetAtt": [name, attr]}


def _zone_id(zone: str) -> str:
    return "MountTarget" + "".join(part.capitalize() for part in zone.replace("_", "-").split("-"))


def mount_targets(dcfg: DeployConfig, zones: dict[str, str] | None, live: dict[str, str] | None = None) -> dict[str, str]:
    """logical id -> subnet: one mount target per Availability Zone (EFS allows no more).

    ``zones`` maps each subnet to its zone (EC2 DescribeSubnets, read at plan
    time); None (a dry run without AWS) assumes every subnet is in its own zone.
    ``live`` maps a zone to the subnet its mount target is in now (EFS
    DescribeMountTargets): that zone keeps it, since a new SubnetId would
    replace the mount target, which EFS refuses (deploy/network.py)."""
    if not dcfg.creates_file_system:
        return {}
    if zones is None:
        return {f"MountTarget{i}": subnet for i, subnet in enumerate(dcfg.subnet_ids)}
    chosen: dict[str, str] = {}
    for subnet in dcfg.subnet_ids:  # the zone's live mount target's subnet, else the first subnet listed in the zone
        zone = zones[subnet]
        chosen.setdefault(_zone_id(zone), (live or {}).get(zone, subnet))
    return chosen


def mount_target_zone(logical_id: str, zones: dict[str, str] | None) -> str | None:
    """The zone a mount target's logical id stands for (None: not a zone-named mount target, or zones unknown)."""
    return next((zone for zone in set((zones or {}).values()) if _zone_id(zone) == logical_id), None)


def mount_target_ids(dcfg: DeployConfig, zones: dict[str, str] | None = None, live: dict[str, str] | None = None) -> list[str]:
    return list(mount_targets(dcfg, zones, live))


def _nfs_rule(kind: str, group, other_key: str, other, description: str) -> dict:
    return {"Type": f"AWS::EC2::SecurityGroup{kind}",
            "Properties": {"GroupId": group, "IpProtocol": "tcp", "FromPort": NFS_PORT, "ToPort": NFS_PORT, other_key: other, "Description": description}}


def _access_point(config: Config, dcfg: DeployConfig, uid: int, gid: int, name: str) -> dict:
    return {
        "Type": "AWS::EFS::AccessPoint",
        "Properties": {
            "FileSystemId": ref("FileSystem"),
            "PosixUser": {"Uid": str(uid), "Gid": str(gid)},
            # both access points share the root and its CreationInfo: whichever mounts first creates it owned by the
            # writer, mode 755, so the function (another uid) reads and never writes (lambda-facts.md, "EFS for Lambda")
            "RootDirectory": {"Path": config.efs.root,
                              "CreationInfo": {"OwnerUid": str(dcfg.writer_uid), "OwnerGid": str(dcfg.writer_gid), "Permissions": "755"}},
            "AccessPointTags": [{"Key": "Name", "Value": name}],
        },
    }


# every grant needs a mount target and some access point (its POSIX user, its root): no client mounts the bare root
THROUGH_AN_ACCESS_POINT = {"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}, "Null": {"elasticfilesystem:AccessPointArn": "false"}}
CLIENT_MOUNT, CLIENT_WRITE, CLIENT_ROOT = "elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite", "elasticfilesystem:ClientRootAccess"


def file_system_policy() -> dict:
    """Who may mount and write, as EFS evaluates it (docs/design.md, "Deploy"; docs/permissions.md, "What the file system policy holds").

    EFS allows a client action that *either* the caller's identity policy *or* this policy allows, and only an
    explicit deny in either beats an allow (EFS user guide, "Using IAM to control access to file systems"). So the
    allows here cannot keep out a role whose own policy grants EFS client actions: the two denies do. Nobody gets
    root (a root client could rewrite every version), and nobody mounts or writes without an access point (its POSIX
    user is fixed, whatever the client's uid). EFS evaluates only aws:SecureTransport, aws:SourceIp,
    elasticfilesystem:AccessPointArn, elasticfilesystem:AccessedViaMountTarget (and, for EFS Endpoints,
    elasticfilesystem:AccessedViaRegionalEndpoint) for NFS clients, so aws:PrincipalArn cannot pin the writer.
    The access points cannot be named here: they refer to the file system (a cycle)."""
    everyone = {"AWS": "*"}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadersMountWithTheirOwnGrant", "Effect": "Allow", "Principal": {"AWS": sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:root")},
             "Action": [CLIENT_MOUNT], "Condition": THROUGH_AN_ACCESS_POINT},
            {"Sid": "OnlyTheSyncRoleWrites", "Effect": "Allow", "Principal": {"AWS": att("SyncRole", "Arn")},
             "Action": [CLIENT_MOUNT, CLIENT_WRITE], "Condition": THROUGH_AN_ACCESS_POINT},
            {"Sid": "NobodyIsRoot", "Effect": "Deny", "Principal": everyone, "Action": CLIENT_ROOT},
            {"Sid": "NobodyWithoutAnAccessPoint", "Effect": "Deny", "Principal": everyone, "Action": [CLIENT_MOUNT, CLIENT_WRITE],
             "Condition": {"Null": {"elasticfilesystem:AccessPointArn": "true"}}},
            {"Sid": "RefuseWithoutTls", "Effect": "Deny", "Principal": everyone, "Action": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        ],
    }


def sync_role_trust() -> dict:
    """DataSync (its EFS location's FileSystemAccessRoleArn) and EC2 (the bastion's instance profile) assume the sync
    role. DataSync only for this account's tasks and locations in this region: the confused-deputy conditions of
    DataSync's guide (aws:SourceAccount and aws:SourceArn; "Cross-service confused deputy prevention")."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "DataSyncOfThisAccount", "Effect": "Allow", "Principal": {"Service": "datasync.amazonaws.com"}, "Action": "sts:AssumeRole",
         "Condition": {"StringEquals": {"aws:SourceAccount": sub("${AWS::AccountId}")},
                       "ArnLike": {"aws:SourceArn": sub("arn:${AWS::Partition}:datasync:${AWS::Region}:${AWS::AccountId}:*")}}},
        {"Sid": "TheBastion", "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"},
    ]}


def role_fence(dcfg: DeployConfig) -> dict:
    """With a CloudFormation service role (deploy/iam.py), every role of the stack carries the boundary the service
    role may create roles with, under the IAM path its rights are scoped to; without one, nothing."""
    if not dcfg.cloudformation_role_arn:
        return {}
    return {"Path": iam.stack_path(dcfg.stack_name), "PermissionsBoundary": iam.boundary_arn(dcfg.stack_name)}


def _storage(config: Config, dcfg: DeployConfig, zones: dict[str, str] | None, live: dict[str, str] | None = None) -> tuple[dict, dict | str, dict, dict]:
    """Security groups, file system and its policy, mount targets, access points, the sync role, endpoints;
    and the file system id/ARN and the function's access point ARN as template expressions."""
    name = config.function.name
    fs_id: dict | str
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
        },
        # the writers' group: put the bastion in it, and name it in DataSync's EFS location (Ec2Config); every client
        # that mounts needs its own path to 2049, and DataSync requires the mount targets' group to admit this one
        "SyncSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {"GroupDescription": f"{name}: EFS writers (bastion, DataSync), NFS to the mount targets", "VpcId": dcfg.vpc_id,
                           "Tags": [{"Key": "Name", "Value": f"{name}-efs-writers"}]},
        },
        # the writers' identity: DataSync's FileSystemAccessRoleArn, and the bastion's instance profile
        "SyncRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": f"{name}: writes EFS versions (file system policy grants ClientWrite to this role only)",
                "AssumeRolePolicyDocument": sync_role_trust(),
                **role_fence(dcfg),
            },
        },
        "SyncInstanceProfile": {"Type": "AWS::IAM::InstanceProfile",
                                "Properties": {"Roles": [ref("SyncRole")], **{k: v for k, v in role_fence(dcfg).items() if k == "Path"}}},
    }
    if dcfg.creates_file_system:
        res["MountTargetSecurityGroup"] = {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {"GroupDescription": f"{name}: EFS mount targets, NFS from the function and the writers only", "VpcId": dcfg.vpc_id,
                           "Tags": [{"Key": "Name", "Value": f"{name}-efs"}]},
        }
        mt_group: dict | str = ref("MountTargetSecurityGroup")
        res["FileSystem"] = {
            "Type": "AWS::EFS::FileSystem",
            # the trees outlive the stack: deleting it never deletes data (teardown --delete-data does); but a create
            # that rolls back deletes what it made, so a failed first deploy run again leaks no file system
            "DeletionPolicy": RETAIN_EXCEPT_ON_CREATE,
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "Encrypted": True,
                # bursting credits run dry under a burst of cold starts on a small file system (lambda-facts.md)
                "ThroughputMode": "elastic",
                "PerformanceMode": "generalPurpose",
                "FileSystemPolicy": file_system_policy(),
                "FileSystemTags": [{"Key": "Name", "Value": config.efs.file_system_name}],
            },
        }
        for logical, subnet in mount_targets(dcfg, zones, live).items():
            res[logical] = {
                "Type": "AWS::EFS::MountTarget",
                "Properties": {"FileSystemId": ref("FileSystem"), "SubnetId": subnet, "SecurityGroups": [mt_group]},
            }
        root_name = config.efs.root.strip("/").replace("/", "-") or "root"
        res["AccessPoint"] = _access_point(config, dcfg, dcfg.posix_uid, dcfg.posix_gid, f"{name}-{root_name}")
        res["WriterAccessPoint"] = _access_point(config, dcfg, dcfg.writer_uid, dcfg.writer_gid, f"{name}-{root_name}-writer")
        fs_id, fs_arn, ap_arn = ref("FileSystem"), att("FileSystem", "Arn"), att("AccessPoint", "Arn")
    else:
        mt_group = dcfg.mount_target_security_group_id
        fs_id = dcfg.file_system_id
        fs_arn = sub(f"arn:${{AWS::Partition}}:elasticfilesystem:${{AWS::Region}}:${{AWS::AccountId}}:file-system/{dcfg.file_system_id}")
        ap_arn = sub(f"arn:${{AWS::Partition}}:elasticfilesystem:${{AWS::Region}}:${{AWS::AccountId}}:access-point/{dcfg.access_point_id}")
    # separate resources: inline rules referring to each other's groups would be a cycle
    res["MountTargetIngress"] = _nfs_rule("Ingress", mt_group, "SourceSecurityGroupId", ref("FunctionSecurityGroup"), "NFS from the function")
    res["SyncIngress"] = _nfs_rule("Ingress", mt_group, "SourceSecurityGroupId", ref("SyncSecurityGroup"), "NFS from the writers (bastion, DataSync)")
    res["FunctionNfsEgress"] = _nfs_rule("Egress", ref("FunctionSecurityGroup"), "DestinationSecurityGroupId", mt_group, "NFS to the EFS mount targets")
    # a function in a VPC reaches S3 only through an endpoint or a NAT (lambda-facts.md, "Networking")
    for flag, logical, service in ((dcfg.s3_endpoint, "S3Endpoint", "s3"), (dcfg.dynamodb_endpoint, "DynamoDBEndpoint", "dynamodb")):
        if flag:
            res[logical] = {
                "Type": "AWS::EC2::VPCEndpoint",
                "Properties": {"VpcId": dcfg.vpc_id, "VpcEndpointType": "Gateway", "ServiceName": sub(f"com.amazonaws.${{AWS::Region}}.{service}"),
                               "RouteTableIds": list(dcfg.route_table_ids)},
            }
    return res, fs_id, fs_arn, ap_arn


def repository_name(config: Config) -> str:
    """The ECR repository of the function's images (lower case: ECR's and Docker's names take no capitals)."""
    return f"hoist/{config.function.name.lower()}"


def rollback_images(config: Config) -> int:
    """Images the lifecycle keeps: the live one and as many older ones as rollback reaches (sync.keep versions, as EFS
    keeps for the EFS shape); a retained function version whose image is gone could not be rolled back to."""
    return config.sync.keep + 1


def lifecycle_policy(keep: int) -> str:
    """ECR lifecycle: expire all but the newest ``keep`` images (ECR user guide, "Lifecycle policies")."""
    return json.dumps({"rules": [{"rulePriority": 1, "description": f"keep the newest {keep} images (rollback)",
                                  "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep},
                                  "action": {"type": "expire"}}]}, sort_keys=True)


def _image_storage(config: Config, dcfg: DeployConfig, shape: Shape) -> dict:
    """The image shape's storage: its repository (scan on push, immutable tags, the lifecycle); a security group only
    when the user gave a VPC. No file system, mount target, access point, sync role or endpoint."""
    res: dict = {
        "Repository": {
            "Type": "AWS::ECR::Repository",
            # the images of retained versions outlive a failed update; a create that rolls back removes what it made
            "DeletionPolicy": RETAIN_EXCEPT_ON_CREATE,
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "RepositoryName": repository_name(config),
                "ImageScanningConfiguration": {"ScanOnPush": True},
                # a tag names one image for ever: Hoist's tags are the image config's digest, so a re-push is a no-op
                "ImageTagMutability": "IMMUTABLE",
                "EncryptionConfiguration": {"EncryptionType": "AES256"},
                "LifecyclePolicy": {"LifecyclePolicyText": lifecycle_policy(rollback_images(config))},
                # Lambda pulls the image with the function's creation, as this account's lambda.amazonaws.com
                # (Lambda developer guide, "Amazon ECR permissions"); only from this account's functions
                "RepositoryPolicyText": {"Version": "2012-10-17", "Statement": [{
                    "Sid": "LambdaPullsForThisAccount", "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                    "Condition": {"StringLike": {"aws:sourceArn": sub("arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:*")}}}]},
            },
        },
    }
    if shape.needs_vpc:
        res["FunctionSecurityGroup"] = {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {"GroupDescription": f"{config.function.name} function ENIs", "VpcId": dcfg.vpc_id,
                           "SecurityGroupEgress": [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0", "Description": "HTTPS to AWS APIs"}],
                           "Tags": [{"Key": "Name", "Value": f"{config.function.name}-function"}]},
        }
    return res


# one JSON object per request, from the HTTP API's $context variables (API Gateway, "Customize HTTP API access logs")
ACCESS_LOG_FORMAT = {"requestId": "$context.requestId", "ip": "$context.identity.sourceIp", "requestTime": "$context.requestTime",
                     "routeKey": "$context.routeKey", "status": "$context.status", "responseLength": "$context.responseLength",
                     "latencyMs": "$context.responseLatency", "integrationLatencyMs": "$context.integrationLatency",
                     "integrationStatus": "$context.integrationStatus", "error": "$context.integrationErrorMessage"}


def _s3_arn(bucket: str, prefix: str) -> dict:
    return sub(f"arn:${{AWS::Partition}}:s3:::{bucket}/{prefix.strip('/')}/*")


def _model_key_statement(key_arn: str | None, region: str) -> list[dict]:
    """kms:Decrypt on the artifact bucket's KMS key, through S3 only: reading an SSE-KMS model object needs it."""
    if not key_arn:
        return []
    return [{"Sid": "DecryptModel", "Effect": "Allow", "Action": ["kms:Decrypt"], "Resource": sub(key_arn) if "${" in key_arn else key_arn,
             "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}}]


def _image_props(zip_props: dict, release: Release, shape: Shape) -> dict:
    """The function's properties for the image shape: PackageType Image pinned by the registry's digest, no runtime,
    handler or layer (the image's CMD and ENTRYPOINT), no EFS; SnapStart on published versions; a VPC only if asked."""
    if not release.image_uri or "@sha256:" not in release.image_uri:
        raise ValueError("an image function needs the image pinned by digest (<repository>@sha256:...)")
    drop = {"Runtime", "Handler", "Code", "Layers", "FileSystemConfigs", "Description"} | (set() if shape.needs_vpc else {"VpcConfig"})
    props = {k: v for k, v in zip_props.items() if k not in drop}
    props.update({"PackageType": "Image", "Code": {"ImageUri": release.image_uri}, "Description": f"hoist: image {release.image_uri.rsplit('@', 1)[-1][:23]}"})
    if shape.snapstart:
        props["SnapStart"] = {"ApplyOn": "PublishedVersions"}  # CloudFormation: AWS::Lambda::Function SnapStart
    return props


def _function(config: Config, dcfg: DeployConfig, release: Release, fs_arn, ap_arn, zones: dict[str, str] | None,
              live: dict[str, str] | None = None, model_key_arn: str | None = None, live_version: str | None = None) -> tuple[dict, str]:
    fn = config.function
    shape = shape_of(config)
    env = {**fn.environment, "HOIST_OUTPUT_S3": f"s3://{dcfg.artifact_bucket}/{dcfg.output_prefix}/"}  # the user's own, and where results go
    if shape.uses_efs:
        # the function mounts its access point, whose root (efs.root) it sees as the mount path
        efs_tree = version_dir(config.efs.mount_path, config.efs.root, release.efs_version, through_access_point=True) + "/site-packages"
        env.update({"HOIST_EFS_TREE": efs_tree, "HOIST_EFS_VERSION": release.efs_version,
                    "HOIST_MODEL_S3": f"s3://{dcfg.artifact_bucket}/{release.model_prefix.strip('/')}/"})
    # an image holds the tree and the model: its ENV names them (builder/image.py)
    targets = mount_target_ids(dcfg, zones, live) if shape.uses_efs else []
    efs_statements = [
        # read-only mount through this access point only
        {"Sid": "EfsMount", "Effect": "Allow", "Action": ["elasticfilesystem:ClientMount"], "Resource": fs_arn,
         "Condition": {"StringEquals": {"elasticfilesystem:AccessPointArn": ap_arn}}},
        {"Sid": "ReadModel", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": _s3_arn(dcfg.artifact_bucket, f"{dcfg.artifact_prefix}/models")},
    ] if shape.uses_efs else []
    res: dict = {
        "FunctionRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
                },
                "ManagedPolicyArns": [sub(VPC_ACCESS_POLICY if shape.needs_vpc else BASIC_EXECUTION_POLICY)],
                **role_fence(dcfg),
                "Policies": [{
                    "PolicyName": "hoist-function",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            *efs_statements,
                            {"Sid": "WriteOutputs", "Effect": "Allow", "Action": ["s3:PutObject"], "Resource": _s3_arn(dcfg.artifact_bucket, dcfg.output_prefix)},
                            *(_model_key_statement(model_key_arn, dcfg.region) if shape.uses_efs else []),
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
            # older function versions keep using their layer version: a rollback needs it (one a failed deploy made goes)
            "DeletionPolicy": RETAIN_EXCEPT_ON_CREATE,
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
    if shape.artifact == "image":
        props = _image_props(props, release, shape)
    if fn.reserved_concurrency != "unreserved":
        # a cap on environments is a cap on cold starts, each reading hundreds of MB from EFS (docs/cold-start.md, "Cost of a cold start")
        props["ReservedConcurrentExecutions"] = fn.reserved_concurrency
    # the function cannot mount EFS before a mount target exists in its subnets
    res["Function"] = {"Type": "AWS::Lambda::Function", "Properties": props}
    if shape.uses_efs:
        res["Function"]["DependsOn"] = [*targets, "FunctionNfsEgress"]
    version_id = "FunctionVersion" + release.fingerprint({"Function": props, "Layer": res.get("Layer", {}).get("Properties")})
    res[version_id] = {
        "Type": "AWS::Lambda::Version",
        "DeletionPolicy": RETAIN_EXCEPT_ON_CREATE,  # rollback points the alias back at older versions; a failed deploy's own goes
        "UpdateReplacePolicy": "Retain",
        "Properties": {"FunctionName": ref("Function"),
                       "Description": f"image {(release.image_uri or '').rsplit('@', 1)[-1][:23]}" if release.image_uri else
                       f"efs {release.efs_version[:16]} code {release.function_key.rsplit('/', 1)[-1][:16]}"},
    }
    # the alias stays on the version that is live until the new one passed its test (deploy/stage.py invokes the new
    # version directly, then promotes it with a second change set, ``promoted``); the first deploy has nothing live
    res["LiveAlias"] = {
        "Type": "AWS::Lambda::Alias",
        "Properties": {"FunctionName": ref("Function"), "FunctionVersion": live_version or att(version_id, "Version"), "Name": ALIAS},
    }
    res["HttpApi"] = {"Type": "AWS::ApiGatewayV2::Api", "Properties": {"Name": config.api_name, "ProtocolType": "HTTP",
                                                                         "Description": f"hoist: {fn.name}"}}
    res["Integration"] = {
        "Type": "AWS::ApiGatewayV2::Integration",
        "Properties": {"ApiId": ref("HttpApi"), "IntegrationType": "AWS_PROXY", "IntegrationUri": ref("LiveAlias"),
                       "PayloadFormatVersion": "2.0", "TimeoutInMillis": 30000},
    }
    for logical, method, path in ROUTES:
        res[f"{logical}Route"] = {"Type": "AWS::ApiGatewayV2::Route",
                                  "Properties": {"ApiId": ref("HttpApi"), "RouteKey": f"{method} {path}", "Target": sub("integrations/${Integration}")}}
        # one permission per route: the API may call the alias on these routes only (its one stage, $default, is "*" here:
        # the stage segment's form for $default is not verified, docs/untested.md, "What is not verified")
        res[f"{logical}Permission"] = {
            "Type": "AWS::Lambda::Permission",
            "Properties": {"Action": "lambda:InvokeFunction", "FunctionName": ref("LiveAlias"), "Principal": "apigateway.amazonaws.com",
                           "SourceArn": sub(f"arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{HttpApi}}/*/{method}{path}")},
        }
    # who called which route, when, with what status and latency: the HTTP API's access log (API Gateway developer
    # guide, "Configure logging for HTTP APIs"); its own log group, with the function's retention
    res["ApiLogGroup"] = {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Delete",
                          "Properties": {"LogGroupName": f"/aws/apigateway/{config.api_name}", "RetentionInDays": dcfg.log_retention_days}}
    res["ApiStage"] = {"Type": "AWS::ApiGatewayV2::Stage",
                       "Properties": {"ApiId": ref("HttpApi"), "StageName": "$default", "AutoDeploy": True,
                                      # per route, and a target rather than a ceiling (HTTP API throttling docs): it turns most
                                      # of a flood into 429s; reserved concurrency is the hard cap on environments
                                      "DefaultRouteSettings": {"ThrottlingRateLimit": config.api_rate_limit, "ThrottlingBurstLimit": config.api_burst_limit},
                                      "AccessLogSettings": {"DestinationArn": att("ApiLogGroup", "Arn"), "Format": json.dumps(ACCESS_LOG_FORMAT, sort_keys=True)}}}
    return res, version_id


def render(config: Config, release: Release | None, *, storage_only: bool = False, zones: dict[str, str] | None = None,
           live_mount_targets: dict[str, str] | None = None, model_key_arn: str | None = None, live_version: str | None = None) -> dict:
    """The stack's template. ``release`` may be None only with ``storage_only``; ``zones`` maps subnets to
    Availability Zones (None: unknown, each subnet taken as its own zone); ``live_mount_targets`` maps a zone to
    the subnet of the mount target it has now (kept: see mount_targets); ``model_key_arn``: the artifact bucket's KMS
    key, which the function's role may then decrypt with (deploy/artifacts.py, model_key_arn); ``live_version``: the
    version the alias ``live`` is on now, which it stays on (None: the first deploy, the alias starts on the release's
    version)."""
    dcfg = config.deploy
    if dcfg is None:
        raise ValueError("render needs [deploy] in the config")
    shape = shape_of(config)
    fs_arn: dict | str
    ap_arn: dict | str
    if shape.uses_efs:
        resources, fs_id, fs_arn, ap_arn = _storage(config, dcfg, zones, live_mount_targets)
        outputs = {
            "FileSystemId": {"Description": "EFS file system", "Value": fs_id},
            "AccessPointArn": {"Description": "EFS access point the function mounts", "Value": ap_arn},
            "SyncSecurityGroupId": {"Description": "security group of the writers (bastion, DataSync)", "Value": ref("SyncSecurityGroup")},
            "SyncRoleArn": {"Description": "role that writes EFS versions (DataSync FileSystemAccessRoleArn)", "Value": att("SyncRole", "Arn")},
            "SyncInstanceProfileArn": {"Description": "bastion instance profile (mount with -o tls,iam)", "Value": att("SyncInstanceProfile", "Arn")},
        }
    else:  # the image shape: the repository comes first, as the file system does for EFS (deploy/stage.py pushes between)
        resources, fs_arn, ap_arn = _image_storage(config, dcfg, shape), "", ""
        outputs = {"RepositoryUri": {"Description": "ECR repository the image is pushed to", "Value": att("Repository", "RepositoryUri")},
                   "RepositoryName": {"Description": "ECR repository", "Value": ref("Repository")}}
    if shape.uses_efs and dcfg.creates_file_system:
        outputs["WriterAccessPointArn"] = {"Description": "access point the writers mount (bastion, DataSync)", "Value": att("WriterAccessPoint", "Arn")}
        outputs["WriterAccessPointId"] = {"Description": "access point id for the bastion's mount (accesspoint=...)", "Value": ref("WriterAccessPoint")}
    if not storage_only:
        if release is None:
            raise ValueError("a full template needs a release")
        function, version_id = _function(config, dcfg, release, fs_arn, ap_arn, zones, live_mount_targets, model_key_arn, live_version)
        resources.update(function)
        outputs.update({
            "ApiUrl": {"Description": "HTTP API", "Value": sub("https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}")},
            "FunctionName": {"Description": "Lambda function", "Value": ref("Function")},
            "AliasArn": {"Description": "alias the API invokes", "Value": ref("LiveAlias")},
            "FunctionVersion": {"Description": "the release's published version (live once it passed its test)", "Value": att(version_id, "Version")},
        })
        if shape.uses_efs:
            outputs["EfsVersion"] = {"Description": "EFS dependency version (envs/<hash>)", "Value": release.efs_version}
        else:
            outputs["ImageUri"] = {"Description": "the image the release runs (pinned by the registry's digest)", "Value": release.image_uri}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"hoist: {config.function.name} ({('storage' if shape.uses_efs else 'image repository') if storage_only else 'function, layer, EFS and HTTP API' if shape.uses_efs else 'function image, SnapStart and HTTP API' if shape.snapstart else 'function image and HTTP API'})",
        "Resources": resources,
        "Outputs": outputs,
    }


def promoted(template: dict, version: str) -> dict:
    """The same template with the alias ``live`` on ``version``: the second change set of a deploy, once the version
    passed its test. Nothing else changes, so the change set modifies the alias only (UpdateAlias)."""
    doc = json.loads(json.dumps(template))
    doc["Resources"]["LiveAlias"]["Properties"]["FunctionVersion"] = str(version)
    return doc


def dumps(template: dict) -> str:
    """Stable JSON: the same template gives the same bytes (and an empty change set)."""
    return json.dumps(template, indent=1, sort_keys=True)
