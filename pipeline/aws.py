"""The one wrapper around boto3: sessions with botocore's retry modes, and AWS
error codes turned into PipelineErrors that say what happened and what to do.

Throttling and transient faults are retried by botocore itself ("standard"
mode: exponential backoff with jitter, up to ``MAX_ATTEMPTS``), which is what
AWS asks callers to do; everything that reaches ``call``'s handler has already
been retried and is reported once, in words.
"""
from __future__ import annotations

import os

from .errors import PipelineError

# attempts per call, the first included; AWS_MAX_ATTEMPTS (botocore's own variable) overrides
MAX_ATTEMPTS = 8

# what happened and how to fix it, for each group of AWS error codes: the one table of error meanings.
# ERRORS holds what a code means wherever it is met; CONTEXTS what it means more precisely where a
# stage meets it (the staging bucket, the artifact bucket...), over ERRORS. A stage names its context.
_EXPIRED = ("the AWS credentials have expired", "refresh them (aws sso login, or new session credentials) and run again")
_INVALID = ("the AWS credentials are not valid", "check AWS_PROFILE / AWS_ACCESS_KEY_ID")
_DENIED = ("AWS refused the request (missing permission)", "grant the caller this action on this resource (see docs/permissions.md, The deployer's permissions)")
_THROTTLED = ("AWS kept throttling the request after retries", "run again later, or raise AWS_MAX_ATTEMPTS")
_OTHER_REGION = ("the bucket is in another region", "set the region of the bucket in pipeline.toml, or use a bucket in this region")
ERRORS: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("ExpiredToken", "ExpiredTokenException", "RequestExpired"), _EXPIRED),
    **dict.fromkeys(("InvalidClientTokenId", "UnrecognizedClientException"), _INVALID),
    "SignatureDoesNotMatch": ("the AWS secret key does not match the access key", "check AWS_SECRET_ACCESS_KEY / the profile's credentials"),
    **dict.fromkeys(("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"), _DENIED),
    **dict.fromkeys(("Throttling", "ThrottlingException", "TooManyRequestsException"), _THROTTLED),
    "NoSuchBucket": ("the bucket does not exist", "create it, or fix the bucket name in pipeline.toml"),
    **dict.fromkeys(("PermanentRedirect", "AuthorizationHeaderMalformed"), _OTHER_REGION),
}
_MISSING_ARTIFACT_BUCKET = ("the artifact bucket does not exist", "create it (aws s3 mb s3://<bucket> --region <deploy.region>), or fix deploy.artifact_bucket")
CONTEXTS: dict[str, dict[str, tuple[str, str]]] = {
    "artifact-bucket": {  # deploy: the bucket of zips, model files and the release record
        "NoSuchBucket": _MISSING_ARTIFACT_BUCKET, "404": _MISSING_ARTIFACT_BUCKET,
        "403": ("AWS refused access to the artifact bucket", "grant the caller s3:ListBucket, s3:GetObject and s3:PutObject on it, or fix deploy.artifact_bucket"),
    },
    "cloudformation": {  # deploy: the stack and its change sets
        "InsufficientCapabilitiesException": ("the template needs IAM capabilities", "this is a Hoist bug: the deployer passes CAPABILITY_IAM"),
        "LimitExceededException": ("a CloudFormation account limit was reached", "delete unused stacks or change sets, or raise the quota"),
    },
    "lambda-alias": {  # deploy: the function's live alias and its versions (rollback)
        "ResourceNotFoundException": ("the function or its alias does not exist", "deploy first: invoke deploy"),
    },
    "datasync": {  # sync-efs: the staging bucket and DataSync's tasks
        "AccessDenied": ("AWS refused the request", "grant the caller s3:PutObject/GetObject/ListBucket on the staging prefix and datasync:* on its tasks and locations"),
        "AccessDeniedException": ("AWS refused the request", "grant the caller datasync:CreateTask/StartTaskExecution/Describe* and iam:PassRole for the DataSync roles"),
        "NoSuchBucket": ("the staging bucket does not exist", "create it, or fix sync.datasync.bucket"),
    },
}


def meanings(context: str | None = None) -> dict[str, tuple[str, str]]:
    """code -> (what, fix) where ``context`` meets AWS (None: anywhere)."""
    return {**ERRORS, **(CONTEXTS[context] if context else {})}


def session(region: str):
    """A boto3 session for ``region``; endpoints and credentials come from the usual AWS environment."""
    import boto3

    return boto3.session.Session(region_name=region)


def client(sess, service: str):
    from botocore.config import Config as BotoConfig

    attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or MAX_ATTEMPTS)
    return sess.client(service, config=BotoConfig(retries={"mode": "standard", "total_max_attempts": attempts}, user_agent_extra="hoist"))


def error_code(exc) -> str:
    return exc.response.get("Error", {}).get("Code", "") or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def call(client_, operation: str, *, error: type[PipelineError], context: str | None = None, default_fix: str = "read AWS's message",
         absent: tuple[str, ...] = (), **params):
    """One AWS call. An error is told by ``meanings(context)``;
    an error matching an entry of ``absent`` returns None: "404" (HeadObject), or
    "Code:text" when the code is shared ("ValidationError:does not exist")."""
    from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

    service = client_.meta.service_model.service_name
    try:
        return getattr(client_, operation)(**params)
    except (ClientError, ParamValidationError, BotoCoreError) as exc:
        if isinstance(exc, ClientError) and _absent(exc, absent):
            return None
        raise translate(exc, operation, service, error, context, default_fix) from None


def paginate(client_, operation: str, *, error: type[PipelineError], context: str | None = None, default_fix: str = "read AWS's message",
             starting_token: dict[str, str] | None = None, **params):
    """Every page of a paginated call, through boto3's paginator, fetched as they are read; errors as in ``call``.
    ``starting_token`` ({"NextToken": ...} as a page gave it) starts after a page already read."""
    from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError
    from botocore.paginate import TokenEncoder

    service = client_.meta.service_model.service_name
    if starting_token:
        params["PaginationConfig"] = {**params.get("PaginationConfig", {}), "StartingToken": TokenEncoder().encode(starting_token)}
    try:
        yield from client_.get_paginator(operation).paginate(**params)
    except (ClientError, ParamValidationError, BotoCoreError) as exc:
        raise translate(exc, operation, service, error, context, default_fix) from None


def pages(client_, operation: str, key: str, *, error: type[PipelineError], context: str | None = None,
          default_fix: str = "read AWS's message", **params):
    """Every item under ``key`` of every page of a list call, through boto3's paginator; errors as in ``call``."""
    for page in paginate(client_, operation, error=error, context=context, default_fix=default_fix, **params):
        yield from page.get(key, [])


def partition(region: str) -> str:
    """The ARN partition of a region: aws, aws-cn, aws-us-gov..."""
    import boto3

    return boto3.session.Session().get_partition_for_region(region)


def _absent(exc, absent: tuple[str, ...]) -> bool:
    code = error_code(exc)
    message = exc.response.get("Error", {}).get("Message") or code
    return any(code == c and text in message for c, _, text in (entry.partition(":") for entry in absent))


def translate(exc, operation: str, service: str, error: type[PipelineError], context: str | None, default_fix: str) -> PipelineError:
    """An exception of a call as one ``error`` in words (``meanings(context)``), for callers that read some codes themselves."""
    from botocore.exceptions import ClientError, ParamValidationError

    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message") or code
        table = meanings(context)
        if code == "301" or code == "PermanentRedirect":  # HeadBucket has no body: the region is in a header
            where = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
            code, message = "PermanentRedirect", f"the bucket lives in {where or 'another region'}"
        what, fix = table.get(code, (f"AWS error {code}", default_fix))
        return error(f"{what}: {operation} said {message}", where=f"{service}:{operation}", fix=fix)
    if isinstance(exc, ParamValidationError):
        return error(f"{operation} was called with invalid parameters: {exc}", where=service, fix="this is a Hoist bug: please report it with this message")
    return error(f"{operation} could not reach AWS: {exc}", where=service, fix="check network access, credentials (AWS_PROFILE) and the region")
