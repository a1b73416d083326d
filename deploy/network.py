"""What the template needs to know about the VPC: the Availability Zone of each subnet.

EFS allows one mount target per zone, so two subnets in one zone get one mount
target between them (lambda-facts.md, "EFS for Lambda"). Read with EC2
DescribeSubnets (a boto3 paginator) at plan time; nothing is changed.
"""
from __future__ import annotations

from pipeline import aws
from pipeline.errors import DeployError

FIX = "grant the deployer ec2:DescribeSubnets, and check deploy.subnet_ids and deploy.region"


def subnet_zones(ec2, subnet_ids: tuple[str, ...], region: str) -> dict[str, str]:
    """subnet id -> Availability Zone, for every subnet in ``subnet_ids``; a clear error when they cannot be read."""
    from botocore.exceptions import BotoCoreError, ClientError

    zones: dict[str, str] = {}
    try:
        for page in ec2.get_paginator("describe_subnets").paginate(SubnetIds=list(subnet_ids)):
            for subnet in page.get("Subnets", []):
                zones[subnet["SubnetId"]] = subnet["AvailabilityZone"]
    except ClientError as exc:
        code = aws.error_code(exc)
        message = exc.response.get("Error", {}).get("Message") or code
        what, fix = aws.ERRORS.get(code, ("EC2 refused DescribeSubnets", FIX))
        if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
            fix = FIX
        if code == "InvalidSubnetID.NotFound":
            what, fix = f"a subnet of deploy.subnet_ids does not exist in {region}", "fix deploy.subnet_ids (aws ec2 describe-subnets --region " + region + ")"
        raise DeployError(f"could not read the subnets' Availability Zones (one mount target per zone): {what}: {message}",
                          where="ec2:DescribeSubnets", fix=fix) from None
    except BotoCoreError as exc:
        raise DeployError(f"could not read the subnets' Availability Zones (one mount target per zone): {exc}", where="ec2:DescribeSubnets", fix=FIX) from None
    missing = [s for s in subnet_ids if s not in zones]
    if missing:
        raise DeployError(f"EC2 did not return {', '.join(missing)}: their Availability Zones are unknown", where="ec2:DescribeSubnets",
                          fix=f"fix deploy.subnet_ids; the subnets must be in {region} and in deploy.vpc_id")
    return zones


def live_mount_targets(efs, file_system_id: str) -> dict[str, str]:
    """Availability Zone -> subnet of each mount target the file system has now (EFS DescribeMountTargets).

    ``AWS::EFS::MountTarget``'s SubnetId is "Update requires: Replacement" (CloudFormation template reference),
    CloudFormation creates a replacement before it deletes the old resource, and EFS allows one mount target per
    zone: so a zone keeps the subnet its mount target is in, whatever order ``subnet_ids`` lists."""
    found: dict[str, str] = {}
    for mt in aws.pages(efs, "describe_mount_targets", "MountTargets", error=DeployError, default_fix="grant the deployer elasticfilesystem:DescribeMountTargets",
                        FileSystemId=file_system_id):
        found[mt["AvailabilityZoneName"]] = mt["SubnetId"]
    return found


GATEWAY_SERVICES = {"s3_endpoint": "s3", "dynamodb_endpoint": "dynamodb"}


def gateway_endpoint_conflicts(ec2, vpc_id: str, route_table_ids: tuple[str, ...], region: str, wanted: tuple[str, ...],
                               own: set[str]) -> list[tuple[str, str, list[str]]]:
    """(setting, endpoint id, route tables) for each gateway endpoint of another owner that already routes a wanted
    service ("s3_endpoint", "dynamodb_endpoint") on one of ``route_table_ids``. A route table holds one route per
    destination, and a gateway endpoint's route's destination is the service's prefix list (Amazon VPC, "Gateway
    endpoints", routing): a second endpoint for the same service on the same table fails. ``own``: the stack's own
    endpoints (an update keeps them)."""
    out = []
    for setting in wanted:
        service = f"com.amazonaws.{region}.{GATEWAY_SERVICES[setting]}"
        filters = [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "service-name", "Values": [service]}, {"Name": "vpc-endpoint-type", "Values": ["Gateway"]}]
        for ep in aws.pages(ec2, "describe_vpc_endpoints", "VpcEndpoints", error=DeployError, default_fix="grant the deployer ec2:DescribeVpcEndpoints",
                            Filters=filters):
            shared = sorted(set(ep.get("RouteTableIds", [])) & set(route_table_ids))
            if ep["VpcEndpointId"] not in own and ep.get("State", "available").lower() not in ("deleted", "deleting", "rejected", "failed") and shared:
                out.append((setting, ep["VpcEndpointId"], shared))
    return out
