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

# what happened and how to fix it, for each group of AWS error codes; a stage may add or override codes
_EXPIRED = ("the AWS credentials have expired", "refresh them (aws sso login, or new session credentials) and run again")
_INVALID = ("the AWS credentials are not valid", "check AWS_PROFILE / AWS_ACCESS_KEY_ID")
_DENIED = ("AWS refused the request (missing permission)", "grant the caller this action on this resource (see README, Deploy: the deployer's permissions)")
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


def call(client_, operation: str, *, error: type[PipelineError], errors: dict[str, tuple[str, str]] | None = None, default_fix: str = "read AWS's message",
         absent: tuple[str, ...] = (), **params):
    """One AWS call. ``errors`` adds stage-specific (what, fix) pairs to ``ERRORS``;
    an error matching an entry of ``absent`` returns None: "404" (HeadObject), or
    "Code:text" when the code is shared ("ValidationError:does not exist")."""
    from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

    service = client_.meta.service_model.service_name
    try:
        return getattr(client_, operation)(**params)
    except (ClientError, ParamValidationError, BotoCoreError) as exc:
        if isinstance(exc, ClientError) and _absent(exc, absent):
            return None
        raise _translate(exc, operation, service, error, errors, default_fix) from None


def pages(client_, operation: str, key: str, *, error: type[PipelineError], errors: dict[str, tuple[str, str]] | None = None,
          default_fix: str = "read AWS's message", **params):
    """Every item under ``key`` of every page of a list call, through boto3's paginator; errors as in ``call``."""
    from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

    service = client_.meta.service_model.service_name
    try:
        for page in client_.get_paginator(operation).paginate(**params):
            yield from page.get(key, [])
    except (ClientError, ParamValidationError, BotoCoreError) as exc:
        raise _translate(exc, operation, service, error, errors, default_fix) from None


def partition(region: str) -> str:
    """The ARN partition of a region: aws, aws-cn, aws-us-gov..."""
    import boto3

    return boto3.session.Session().get_partition_for_region(region)


def _absent(exc, absent: tuple[str, ...]) -> bool:
    code = error_code(exc)
    message = exc.response.get("Error", {}).get("Message") or code
    return any(code == c and text in message for c, _, text in (entry.partition(":") for entry in absent))


def _translate(exc, operation: str, service: str, error: type[PipelineError], errors: dict[str, tuple[str, str]] | None, default_fix: str) -> PipelineError:
    from botocore.exceptions import ClientError, ParamValidationError

    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message") or code
        table = {**ERRORS, **(errors or {})}
        if code == "301" or code == "PermanentRedirect":  # HeadBucket has no body: the region is in a header
            where = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
            code, message = "PermanentRedirect", f"the bucket lives in {where or 'another region'}"
        what, fix = table.get(code, (f"AWS error {code}", default_fix))
        return error(f"{what}: {operation} said {message}", where=f"{service}:{operation}", fix=fix)
    if isinstance(exc, ParamValidationError):
        return error(f"{operation} was called with invalid parameters: {exc}", where=service, fix="this is a Hoist bug: please report it with this message")
    return error(f"{operation} could not reach AWS: {exc}", where=service, fix="check network access, credentials (AWS_PROFILE) and the region")
