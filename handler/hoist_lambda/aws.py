"""One S3 client per execution environment: creating a boto3 client costs
milliseconds (credentials, endpoint resolution), so each request reuses it."""
from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def s3() -> Any:
    import boto3

    return boto3.client("s3")
