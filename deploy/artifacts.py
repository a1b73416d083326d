"""Content-addressed uploads to the artifact bucket: plan, then upload what is missing.

Keys are named by the SHA-256 of the bytes (``<prefix>/artifacts/<sha256>.zip``,
``<prefix>/models/<hash>/<file>``): a key that exists already holds exactly
these bytes, so it is never uploaded again, and an unchanged zip keeps the same
key, so the template (and the function) do not change. S3 writes an object
whole or not at all, so an interrupted upload leaves nothing that looks done.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline import aws
from pipeline.errors import DeployError
from pipeline.files import sha256_file

MODEL_FILES = ("model.pt", "labels.json", "preprocess.json", "metrics.json")  # what handler/app.py loads


@dataclass(frozen=True)
class Upload:
    name: str  # what it is: function.zip, layer.zip, model/model.pt
    path: Path
    key: str
    sha256: str
    bytes: int
    present: bool | None  # already in the bucket under this key; None: not checked (a dry run without AWS)


@dataclass(frozen=True)
class ArtifactPlan:
    bucket: str
    function_key: str
    layer_key: str | None
    model_prefix: str
    uploads: tuple[Upload, ...]

    @property
    def missing(self) -> tuple[Upload, ...]:
        return tuple(u for u in self.uploads if not u.present)


def model_files(model_dir: Path) -> list[tuple[str, Path, str]]:
    """(name, path, sha256) of the model's files; the model's hash names them all."""
    files = [(name, model_dir / name) for name in MODEL_FILES if (model_dir / name).is_file()]
    missing = [n for n in MODEL_FILES[:3] if not (model_dir / n).is_file()]
    if missing:
        raise DeployError(f"the model folder lacks {', '.join(missing)}", where=str(model_dir), fix="run `python model/train.py`, or set [model] dir in pipeline.toml to a folder with model.pt, labels.json and preprocess.json")
    return [(name, path, sha256_file(path)) for name, path in files]


def plan_artifacts(s3, bucket: str, prefix: str, function_zip: tuple[Path, str], layer_zip: tuple[Path, str] | None, model_dir: Path) -> ArtifactPlan:
    """What goes where; reads the bucket (HeadBucket, HeadObject), changes nothing. With ``s3`` None
    (no AWS credentials) nothing is read and every upload's presence is unknown."""
    # HeadBucket first: HeadObject answers a bare 404 for a missing bucket, and 301 names another region
    if s3 is not None:
        aws.call(s3, "head_bucket", error=DeployError, context="artifact-bucket", Bucket=bucket)
    wanted = [("function.zip", function_zip[0], f"{prefix}/artifacts/{function_zip[1]}.zip", function_zip[1])]
    if layer_zip:
        wanted.append(("layer.zip", layer_zip[0], f"{prefix}/artifacts/{layer_zip[1]}.zip", layer_zip[1]))
    files = model_files(model_dir)
    model_hash = hashlib.sha256(json.dumps([(n, h) for n, _, h in files]).encode()).hexdigest()
    model_prefix = f"{prefix}/models/{model_hash[:32]}"
    wanted += [(f"model/{name}", path, f"{model_prefix}/{name}", digest) for name, path, digest in files]
    uploads = []
    for name, path, key, digest in wanted:
        if not path.is_file():
            raise DeployError(f"{path} does not exist", where=name, fix="run `invoke build`")
        if s3 is None:
            present = None
        else:
            present = aws.call(s3, "head_object", error=DeployError, context="artifact-bucket", absent=("404", "NoSuchKey"), Bucket=bucket, Key=key) is not None
        uploads.append(Upload(name=name, path=path, key=key, sha256=digest, bytes=path.stat().st_size, present=present))
    return ArtifactPlan(bucket=bucket, function_key=wanted[0][2], layer_key=wanted[1][2] if layer_zip else None, model_prefix=model_prefix, uploads=tuple(uploads))


def upload(s3, plan: ArtifactPlan, on_line=None) -> list[Upload]:
    """Upload what the bucket lacks; returns the uploads made."""
    done = []
    for u in plan.missing:
        if on_line:
            on_line(f"uploading {u.name} ({u.bytes / 1e6:,.1f} MB) to s3://{plan.bucket}/{u.key}")
        # upload_file goes multipart for large files; S3 makes the object visible only when complete
        try:
            s3.upload_file(str(u.path), plan.bucket, u.key, ExtraArgs={"Metadata": {"sha256": u.sha256}})
        except Exception as exc:  # boto3's S3Transfer wraps ClientErrors in its own exception
            raise DeployError(f"uploading {u.name} to s3://{plan.bucket}/{u.key} failed: {exc}", where="s3:upload", fix="check the bucket, its region and s3:PutObject on the artifact prefix") from None
        done.append(u)
    return done


def model_key_arn(s3, bucket: str, region: str) -> str | None:
    """The customer managed KMS key the artifact bucket encrypts new objects with by default, as the ARN the
    function's role needs kms:Decrypt on to read the model (S3 User Guide, "Using server-side encryption with AWS
    KMS keys": reading an SSE-KMS object needs kms:Decrypt on its key). None: SSE-S3, or the AWS managed key aws/s3,
    whose key policy admits the account's principals through S3. A key named by an alias is refused: IAM authorizes
    kms:Decrypt on the key's ARN, not on an alias."""
    got = aws.call(s3, "get_bucket_encryption", error=DeployError, context="artifact-bucket", absent=("ServerSideEncryptionConfigurationNotFoundError",),
                   Bucket=bucket)
    for rule in (got or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", []):
        default = rule.get("ApplyServerSideEncryptionByDefault", {})
        if not default.get("SSEAlgorithm", "").startswith("aws:kms"):
            continue
        key = default.get("KMSMasterKeyID", "")
        if not key or key in ("alias/aws/s3",) or key.endswith(":alias/aws/s3"):
            return None
        if "alias/" in key:
            raise DeployError(f"the artifact bucket {bucket} encrypts with KMS key {key}, named by an alias: the function's role needs kms:Decrypt on "
                              "the key itself to read the model, and an alias cannot be granted", where=f"s3://{bucket} default encryption",
                              fix=f"set the bucket's default encryption to the key's ARN (aws kms describe-key --key-id {key} --query KeyMetadata.Arn), then deploy")
        if key.startswith("arn:"):
            return key
        return f"arn:{aws.partition(region)}:kms:{region}:${{AWS::AccountId}}:key/{key}"  # a bare key id is in this account and region
    return None
