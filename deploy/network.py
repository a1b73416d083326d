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
