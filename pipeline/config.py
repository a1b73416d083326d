"""Load and check pipeline.toml, the one file that describes a deployment.

The schema is declared once, below, as pydantic models: one class per TOML
table, one annotated line per key (type, default, limits, an example). Unknown
keys and tables are errors naming the closest known key (``memory`` under
``[function]`` says ``memory_mb``). Everything is checked here, before any
download; every problem found is reported at once, each with its key, what was
found and the fix.

Adding a key: add one line to the section's model, e.g. under ``DeployConfig``
``alarm_email: Str = ""``, or with limits
``retries: Int = Field(3, ge=0, le=10, description="0-10 retries", examples=[3])``.
Readers get ``config.deploy.alarm_email``. A new table is a new model used as a
field of its parent (``slim: SlimConfig = SlimConfig()`` in ``PipelineFile``),
then copied onto ``Config`` in ``load``.
"""
from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationInfo, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .records import build_record_path
from .targets import Target, facts, image_ref_problem, lambda_target, local_target

# TOML has real types: "2048" is not a number here, nor 1 a boolean
Int = Annotated[int, Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]

# Lambda's own pattern for FileSystemConfigs.LocalMountPath (lambda-facts.md)
MOUNT_PATH_RE = r"^/mnt/[a-zA-Z0-9-_.]+$"
FUNCTION_NAME_RE = r"^[a-zA-Z0-9-_]{1,64}$"
HANDLER_RE = r"[A-Za-z_]\w*([./][A-Za-z_]\w*)*\.[A-Za-z_]\w*"  # folders/module.function (awslambdaric reads / as .)
INDEX_NAME_RE = r"^[a-z0-9][a-z0-9-]*$"
SET_NAMES = ("efs", "layer")
SYNC_METHODS = ("local", "bastion", "datasync")
# AWS's id shapes, checked before any call so a typo fails here, not in a rollback
AWS_ID_RE = {"vpc": r"vpc-[0-9a-f]{8,17}", "subnet": r"subnet-[0-9a-f]{8,17}", "rtb": r"rtb-[0-9a-f]{8,17}",
             "fs": r"fs-[0-9a-f]{8,40}", "fsap": r"fsap-[0-9a-f]{8,40}", "sg": r"sg-[0-9a-f]{8,17}"}
AWS_ID_NAMES = {"vpc": "VPC", "subnet": "subnet", "rtb": "route table", "fs": "EFS file system", "fsap": "EFS access point", "sg": "security group"}
STACK_NAME_RE = r"^[A-Za-z][A-Za-z0-9-]{0,127}$"
BUCKET_RE = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
# CloudWatch Logs' allowed retention values
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)


def _problem(what: str, fix: str, key: str = "") -> PydanticCustomError:
    """A check's failure: the message and its fix travel to the error report. ``key``: the dotted key it is about,
    for a check of the whole file (a field's own check is located by pydantic)."""
    return PydanticCustomError("hoist", "{what}", {"what": what, "fix": fix, **({"key": key} if key else {})})


def _aws_id(kind: str, optional: bool = False) -> Any:
    """An AWS id field; an optional one may be "" (not set)."""
    extra: dict[str, Any] = {"default": ""} if optional else {}
    pattern = f"^({AWS_ID_RE[kind]})?$" if optional else f"^{AWS_ID_RE[kind]}$"
    return Field(pattern=pattern, description=f"an AWS {kind}-... id", examples=[f"{kind}-0123456789abcdef0"], **extra)


@cache
def aws_regions() -> frozenset[str]:
    """Every region botocore knows, read from its bundled endpoints file: offline, and without a session, so a
    missing AWS_PROFILE or a broken ~/.aws/config never stops a command that does not talk to AWS."""
    from botocore.loaders import create_loader

    endpoints = create_loader().load_data("endpoints")
    return frozenset(region for partition in endpoints["partitions"] for region in partition["regions"])


# Lambda cannot mount EFS here: "Amazon EFS for Lambda is available in all commercial Regions except Asia Pacific
# (New Zealand), Asia Pacific (Taipei), Asia Pacific (Malaysia), Mexico (Central), Asia Pacific (Thailand), and Canada
# West (Calgary)" (Lambda Developer Guide, "Configuring file system access for Lambda functions", Supported Regions)
NO_EFS_FOR_LAMBDA = {"ap-southeast-6": "Asia Pacific (New Zealand)", "ap-east-2": "Asia Pacific (Taipei)", "ap-southeast-5": "Asia Pacific (Malaysia)",
                     "mx-central-1": "Mexico (Central)", "ap-southeast-7": "Asia Pacific (Thailand)", "ca-west-1": "Canada West (Calgary)"}


# and SnapStart is not there: "Lambda SnapStart is available in all commercial Regions except Asia Pacific (New Zealand)
# and Asia Pacific (Taipei)" (Lambda Developer Guide, "Improving startup performance with Lambda SnapStart", Supported Regions)
NO_SNAPSTART = {"ap-southeast-6": "Asia Pacific (New Zealand)", "ap-east-2": "Asia Pacific (Taipei)"}


def _check_shape_region(region: str, package: str, snapstart: bool) -> None:
    """What the shape needs of [deploy] region: EFS for Lambda (the efs shape), SnapStart (an image with SnapStart)."""
    if package == "efs" and region in NO_EFS_FOR_LAMBDA:
        raise _problem(f"Lambda cannot mount EFS in {region} ({NO_EFS_FOR_LAMBDA[region]}), and package = \"efs\" puts the heavy set there: "
                       "the function would have no tree",
                       "deploy to a region where Lambda supports EFS (every other commercial region, e.g. the nearest one), with the artifact bucket "
                       'there too; or set package = "image" under [function] (no EFS)', key="deploy.region")
    if package == "image" and snapstart and region in NO_SNAPSTART:
        raise _problem(f"Lambda SnapStart is not available in {region} ({NO_SNAPSTART[region]}), and this image function uses it",
                       "set snapstart = false under [function] (the image then initializes at each cold start), or deploy to another commercial region",
                       key="deploy.region")


def _check_region(value: str) -> str:
    if value not in aws_regions():
        close = difflib.get_close_matches(value, sorted(aws_regions()), n=3, cutoff=0.6)
        raise _problem(f"unknown AWS region {value!r}" + (f"; did you mean {' or '.join(map(repr, close))}?" if close else ""),
                       f'set region = "{close[0] if close else "eu-west-1"}" (botocore lists {len(aws_regions())} regions)')
    return value


def _table() -> Any:
    """An absent table: validated into its model like a written one (paths relative to the root)."""
    return {}


def _root(info: ValidationInfo) -> Path | None:
    return info.context.get("root") if isinstance(info.context, dict) else None


class Section(BaseModel):
    """A TOML table: unknown keys are errors, values are immutable once loaded."""

    # validate_default: defaults pass the same validators (paths become relative to pipeline.toml)
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# ---------------------------------------------------------------- the schema


class Index(Section):
    """A package index besides PyPI. With ``packages`` it serves only those."""

    name: Str = Field(pattern=INDEX_NAME_RE, description="lower-case letters, digits and dashes", examples=["pytorch-cpu"])
    url: Str = Field(pattern=r"^(https?|file)://", description="an https://, http:// or file:// address", examples=["https://download.pytorch.org/whl/cpu"])
    packages: tuple[Str, ...] = ()

    @field_validator("packages")
    @classmethod
    def _canonical(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(canonicalize_name(p) for p in value)


def _requirements_list(value: tuple[str, ...]) -> tuple[str, ...]:
    for line in value:
        try:
            Requirement(line)
        except InvalidRequirement:
            raise _problem(f"{line!r} is not a requirement", 'write pins such as "torch==2.13.0+cpu"') from None
    return value


class TargetSpec(Section):
    kind: Literal["lambda", "local"] = Field("lambda", examples=["lambda"])
    runtime: Str | None = None  # lambda: a Lambda Python runtime (runtimes.json)
    arch: Str | None = None  # lambda: x86_64 | arm64
    python: Str | None = Field(None, pattern=r"^3\.\d+$", description="a Python version", examples=["3.11"])  # local: default the running one
    override: tuple[Str, ...] = ()  # pins replacing the .in ones for this target only
    exclude: tuple[Str, ...] = ()  # packages this target leaves out
    index: tuple[Index, ...] = ()  # indexes of this target only ([[targets.<name>.index]])
    find_links: tuple[Str, ...] = ()  # wheel folders or pages of this target only
    pip_config_find_links: Bool = False  # add find-links from pip's own configuration
    torch_backend: Literal["cpu"] | None = Field(None, description="uv's --torch-backend; Lambda has no GPU", examples=["cpu"])
    allow_gpu: Bool = False  # opt out of refusing nvidia-*, triton and CUDA builds in a Lambda lock

    @field_validator("override")
    @classmethod
    def _override(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _requirements_list(value)

    @field_validator("exclude")
    @classmethod
    def _canonical(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(canonicalize_name(p) for p in value)

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, value: str | None) -> str | None:
        runtimes = list(facts()["runtimes"])
        if value is not None and value not in runtimes:
            raise _problem(f"unknown runtime {value!r}; Lambda's Python runtimes are {', '.join(runtimes)}", 'set runtime = "python3.13" (or another listed runtime)')
        return value

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str | None) -> str | None:
        arches = list(facts()["architectures"])
        if value is not None and value not in arches:
            raise _problem(f"unknown architecture {value!r}; Lambda offers {', '.join(arches)}", 'set arch = "arm64" or arch = "x86_64"')
        return value

    @model_validator(mode="after")
    def _lambda_needs_runtime_and_arch(self) -> TargetSpec:
        if self.kind == "lambda":
            missing = [k for k in ("runtime", "arch") if getattr(self, k) is None]
            if missing:
                raise _problem(f"a Lambda target needs {' and '.join(missing)}", 'add runtime = "python3.13" and arch = "arm64" (or kind = "local" for this machine)')
        elif self.runtime or self.arch:
            raise _problem("runtime and arch describe Lambda targets; a local target is this machine", 'remove them, or set kind = "lambda"')
        return self


class SetSpec(Section):
    requirements: Str | None = None  # default requirements/<set>.in


class SetsSpec(Section):
    efs: SetSpec = Field(description="the heavy packages, mounted from EFS", examples=[{"requirements": "requirements/efs.in"}])
    layer: SetSpec | None = None


class EfsConfig(Section):
    file_system_name: Str
    mount_path: Str = Field(pattern=MOUNT_PATH_RE, description="a single directory under /mnt (Lambda's pattern)", examples=["/mnt/hoist"])
    root: Str = Field("/hoist", pattern=r"^/", description="an absolute path inside the file system", examples=["/hoist"])  # holds envs/ and models/


# the variables Hoist's stack sets (deploy/template.py) and serve's function gets: not the user's to set
SET_BY_HOIST = frozenset({"HOIST_EFS_TREE", "HOIST_EFS_VERSION", "HOIST_MODEL_S3", "HOIST_MODEL_DIR", "HOIST_OUTPUT_S3"})
LAMBDA_RESERVED = frozenset({"TZ"})  # besides AWS_*, _* and LAMBDA_* (lambda-facts.md; AWS's reserved keys)
ENVIRONMENT_BYTES = 4096  # Lambda's limit for all of a function's variables (lambda-facts.md, limits)
HOIST_ENVIRONMENT_BYTES = 1024  # room for Hoist's own (paths under the mount, an S3 bucket and prefixes)


class FunctionConfig(Section):
    name: Str = Field(pattern=FUNCTION_NAME_RE, description="1-64 letters, digits, - or _", examples=["hoist-classifier"])
    memory_mb: Int = Field(3008, ge=128, le=10240, description="Lambda's 128-10240 MB", examples=[3008])
    timeout_s: Int = Field(60, ge=1, le=900, description="Lambda's 1-900 s", examples=[60])
    # <module>.<function>, as Lambda's Python runtime reads it: the module's path in the handler folder, with . or / between
    # folders (https://docs.aws.amazon.com/lambda/latest/dg/python-handler.html#naming); load() checks that the file is there
    handler: Str = Field("app.handler", description="<module>.<function>: a file of the handler folder and its function", examples=["app.handler"])
    # caps concurrent environments, and so the cold starts a flood of requests causes (the API's throttling is only a
    # target); "unreserved" leaves the function in the account's shared pool (an account whose concurrency quota is
    # under 110 cannot reserve any: Lambda keeps 100 unreserved)
    reserved_concurrency: Any = Field(10, description='1-10000 (0 would stop every invocation), or "unreserved"', examples=[10])
    # variables of the function's own: the handler's settings (HOIST_PREFETCH, HOIST_HYDRATE) or yours;
    # deploy puts them in the function's environment, serve in the local function's
    environment: dict[Str, Str] = Field(default_factory=dict, description="NAME = \"value\" pairs, names not set by Lambda or Hoist",
                                        examples=[{"HOIST_PREFETCH": "relocs"}])
    # the shape (pipeline/shapes.py): "efs", the heavy set on EFS (the default); "image", every set, the handler and the
    # model in one container image, snapshotted by SnapStart (no VPC, EFS or sync)
    package: Literal["efs", "image"] = Field("efs", description='"efs" (the default) or "image"', examples=["image"])
    # SnapStart on published versions; default: on for an image, off for EFS (SnapStart excludes EFS: lambda-facts.md, SnapStart)
    snapstart: Bool | None = None

    @field_validator("handler")
    @classmethod
    def _module_dot_function(cls, value: str) -> str:
        if not re.fullmatch(HANDLER_RE, value):
            module = value.rsplit(".", 1)[0] if value.endswith((".py", ".")) else value
            example = f"{module}.handler" if re.fullmatch(r"[A-Za-z_]\w*([./][A-Za-z_]\w*)*", module) else "app.handler"
            raise _problem(f"handler {value!r} is not <module>.<function>: Lambda imports the module (a .py file in the handler folder, build.handler_dir) "
                           "and calls the function named after the last dot",
                           f'set handler = "{example}" (the function handler(event, context) in {example.rsplit(".", 1)[0].replace(".", "/")}.py)')
        return value

    @field_validator("reserved_concurrency")
    @classmethod
    def _reserved(cls, value: Any) -> int | str:
        """One check with one message (a union type would report each of its arms, in pydantic's words)."""
        if value == "unreserved" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10000):
            return value
        raise _problem(f"reserved_concurrency = {_toml(value)}: expected a whole number from 1 to 10000 (0 would stop every invocation), or \"unreserved\"",
                       'set reserved_concurrency = 10, or reserved_concurrency = "unreserved" to leave the function in the account\'s shared pool')

    @field_validator("environment")
    @classmethod
    def _own_variables(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]+", name):  # Lambda's key pattern
                fixed = re.sub(r"[^a-zA-Z0-9_]", "_", name)
                fixed = fixed if fixed[:1].isalpha() else "MY_" + fixed.lstrip("_")
                fixed = fixed if len(fixed) > 1 else fixed + "_VALUE"
                raise _problem(f"{name!r} is not a name Lambda takes: a letter, then at least one more letter, digit or _",
                               f"rename it in [function] environment, e.g. {fixed} = {_toml(value[name])} (and read that name in the handler)")
            if name in SET_BY_HOIST or name in LAMBDA_RESERVED or name.startswith(("AWS_", "_", "LAMBDA_")):
                raise _problem(f"{name} is set by {'Hoist' if name in SET_BY_HOIST else 'Lambda'} itself",
                               f"remove it from [function] environment ({name} = {_toml(value[name])})")
        size = sum(len(k) + len(v) for k, v in value.items())
        if size > ENVIRONMENT_BYTES - HOIST_ENVIRONMENT_BYTES:
            raise _problem(f"{size:,} bytes of variables: Lambda takes 4 KB in all, and Hoist's own take up to {HOIST_ENVIRONMENT_BYTES}",
                           f"shorten or drop some of [function] environment, to {ENVIRONMENT_BYTES - HOIST_ENVIRONMENT_BYTES:,} bytes of names and values at most")
        return value


class ApiConfig(Section):
    name: Str = Field(min_length=1, max_length=128, description="1-128 characters", examples=["hoist-api"])
    # the HTTP API stage's throttling (DefaultRouteSettings): it applies to each route on its own (two routes: up to twice
    # the rate across the API), and API Gateway treats it as a target, not a ceiling (HTTP API throttling docs)
    throttle_rate: Annotated[float, Strict()] = Field(50.0, gt=0, description="steady requests per second for each route (a target, not a ceiling), more than 0",
                                                      examples=[50])
    throttle_burst: Int = Field(100, ge=1, description="a burst of requests for each route, at least 1", examples=[100])


class BuildConfig(Section):
    builder: Literal["native", "docker", "auto"] = Field("native", examples=["native"])
    output: Path = Path("dist")  # relative to pipeline.toml's folder
    handler_dir: Path = Path("handler")
    base_image: Str | None = None  # Docker builder: the Lambda base image (default: the runtime's)
    # false: the explicit opt-out where no runtime for the target can run the import check (no verified slimming, no hot set)
    import_check: Bool = True

    @field_validator("output", "handler_dir")
    @classmethod
    def _under_root(cls, value: Path, info: ValidationInfo) -> Path:
        root = _root(info)
        return root / value if root else value

    @field_validator("base_image")
    @classmethod
    def _pinned(cls, value: str | None) -> str | None:
        if value is not None and (problem := image_ref_problem(value)):
            raise _problem(problem, "use a versioned tag such as public.ecr.aws/lambda/python:3.13-arm64, or that tag with its digest as "
                                    "`docker inspect --format '{{index .RepoDigests 0}}' <image>` prints it after a pull; where no registry is "
                                    "reachable, an image that is here (a stand-in: docs/tests.md)")
        return value


class BastionConfig(Section):
    host: Str
    user: Str
    port: Int = Field(22, ge=1, le=65535, examples=[22])
    identity_file: Str
    known_hosts: Str = "~/.ssh/known_hosts"
    efs_path: Str = Field(pattern=r"^/", description="an absolute path on the bastion", examples=["/mnt/efs"])  # where the bastion mounts the file system
    through_access_point: Bool = True  # mounted through the writer access point: efs_path is efs.root (pipeline/layout.py)

    @field_validator("identity_file", "known_hosts")
    @classmethod
    def _home(cls, value: str) -> str:
        return os.path.expanduser(value)


class DataSyncConfig(Section):
    bucket: Str
    prefix: Str = "hoist-staging"
    region: Str
    file_system_arn: Str
    subnet_arn: Str
    security_group_arns: tuple[Str, ...]
    s3_role_arn: Str
    access_point_arn: Str | None = None
    file_system_role_arn: Str | None = None
    # staged versions (<prefix>/envs/, <prefix>/markers/) expire after this many days (a lifecycle rule; the completeness records never)
    expire_staged_days: Int = Field(30, ge=1, examples=[30])

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return _check_region(value)

    @field_validator("prefix")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip("/")


class SyncLocal(Section):
    path: Path = Path(".hoist-efs")  # the folder standing in for the mount (method local)

    @field_validator("path")
    @classmethod
    def _under_root(cls, value: Path, info: ValidationInfo) -> Path:
        root = _root(info)
        return root / value if root else value


class SyncConfig(Section):
    method: Literal["local", "bastion", "datasync"] = Field("local", examples=["local"])
    keep: Int = Field(3, ge=1, description="the newest versions efs-gc keeps, at least 1", examples=[3])
    stale_lock_s: Int = Field(3600, ge=1, examples=[3600])
    bwlimit_kbps: Int = Field(0, ge=0, description="rsync --bwlimit; 0: no limit", examples=[0])
    local: SyncLocal = Field(default_factory=_table)
    bastion: BastionConfig | None = None
    datasync: DataSyncConfig | None = None

    @property
    def local_path(self) -> Path:
        return self.local.path

    @model_validator(mode="after")
    def _method_has_its_table(self) -> SyncConfig:
        if self.method == "bastion" and self.bastion is None:
            raise _problem("sync method bastion needs [sync.bastion]", "add [sync.bastion] with host, user, identity_file and efs_path")
        if self.method == "datasync" and self.datasync is None:
            raise _problem("sync method datasync needs [sync.datasync]", "add [sync.datasync] with bucket, region, file_system_arn, subnet_arn, security_group_arns and s3_role_arn")
        return self


class DeployConfig(Section):
    """Where and how `invoke deploy` puts the stack (the AWS side of pipeline.toml)."""

    stack_name: Str = Field(pattern=STACK_NAME_RE, description="a letter, then letters, digits and -", examples=["hoist-demo"])
    region: Str
    artifact_bucket: Str = Field(pattern=BUCKET_RE, description="3-63 lowercase letters, digits, dots and hyphens", examples=["my-hoist-artifacts"])
    artifact_prefix: Str = "hoist"  # handler/layer zips and the model, under content-addressed keys
    output_prefix: Str = "hoist/outputs"  # the handler writes results under s3://<artifact_bucket>/<output_prefix>/
    vpc_id: Str = _aws_id("vpc", optional=True)  # required for package = "efs" (PipelineFile checks), optional for an image
    subnet_ids: tuple[Annotated[Str, _aws_id("subnet")], ...] = Field((), description="subnet-... ids", examples=[["subnet-0123456789abcdef0"]])
    route_table_ids: tuple[Annotated[Str, _aws_id("rtb")], ...] = ()
    s3_endpoint: Bool = True  # Gateway endpoint on route_table_ids (off when the VPC already has one)
    dynamodb_endpoint: Bool = False
    ephemeral_storage_mb: Int = Field(512, ge=512, le=10240, description="Lambda's 512-10240 MB (512: its default); a model from HOIST_MODEL_S3 is downloaded to /tmp", examples=[512])
    log_retention_days: Int = Field(14, description="a value CloudWatch Logs accepts", examples=[14])
    # the function's access point's POSIX user, and the writer's, which owns the versions (never the function's uid)
    posix_uid: Int = Field(1000, ge=1, le=4294967294, description="1-4294967294 (0 is root)", examples=[1000])
    posix_gid: Int = Field(1000, ge=1, le=4294967294, description="1-4294967294 (0 is root)", examples=[1000])
    writer_uid: Int = Field(1001, ge=1, le=4294967294, description="1-4294967294 (0 is root), not posix_uid", examples=[1001])
    writer_gid: Int = Field(1001, ge=1, le=4294967294, description="1-4294967294 (0 is root)", examples=[1001])
    file_system_id: Str = _aws_id("fs", optional=True)  # an existing file system instead of the stack's own
    access_point_id: Str = _aws_id("fsap", optional=True)
    mount_target_security_group_id: Str = _aws_id("sg", optional=True)  # existing mount targets' group: the stack adds NFS from the function
    # the CloudFormation service role (deploy/policies/bootstrap.json): CloudFormation acts as it, so the deployer needs
    # no IAM rights; the stack's roles then carry the boundary <stack_name>-boundary and live under /hoist/<stack_name>/
    cloudformation_role_arn: Str | None = Field(None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$",
                                                description="an IAM role ARN (the bootstrap stack's CloudFormationRoleArn output)",
                                                examples=["arn:aws:iam::123456789012:role/hoist-demo-cloudformation"])
    # the [model] folder (set by load from [model] dir, not written here): uploaded to <artifact_prefix>/models/<hash>/
    model_dir: Path | None = None
    smoke_image: Path | None = None  # with smoke_expect; neither: the model folder's sample.json
    smoke_expect: Str = ""

    @model_validator(mode="before")
    @classmethod
    def _model_dir_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model_dir" in data:
            raise _problem("deploy.model_dir moved: one setting names the model folder for serve, validate and deploy",
                           f'remove it from [deploy] and write [model] dir = "{data["model_dir"]}"')
        return data

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return _check_region(value)  # what the shape needs of the region: PipelineFile._what_snapstart_refuses

    @field_validator("artifact_prefix", "output_prefix")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip("/")

    @field_validator("model_dir", "smoke_image")
    @classmethod
    def _under_root(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        root = _root(info)
        return root / value if root and value is not None else value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise _problem(f"log_retention_days {value} is not a value CloudWatch Logs accepts", f"one of {', '.join(map(str, LOG_RETENTION_DAYS))}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeployConfig:
        if (self.smoke_image is None) != (not self.smoke_expect):
            raise _problem("smoke_image and smoke_expect go together", "set both, or neither to use the model folder's sample.json (image and label)")
        if self.vpc_id and (self.s3_endpoint or self.dynamodb_endpoint) and not self.route_table_ids:  # no VPC (an image): no endpoint
            raise _problem("a gateway endpoint (s3_endpoint/dynamodb_endpoint) needs the subnets' route tables in route_table_ids",
                           'list them (route_table_ids = ["rtb-..."]), or set s3_endpoint = false when the VPC already has an S3 endpoint')
        if bool(self.file_system_id) != bool(self.access_point_id):
            raise _problem("an existing file system needs both file_system_id and access_point_id", "set both, or neither to let the stack create them")
        if self.file_system_id and not self.mount_target_security_group_id:
            raise _problem("an existing file system needs its mount targets' security group, so the stack can open 2049 to the function and the writers",
                           'set mount_target_security_group_id = "sg-..." (the group on its mount targets)')
        if self.writer_uid == self.posix_uid:
            raise _problem(f"writer_uid {self.writer_uid} equals posix_uid: the function would own its versions and could write them",
                           "give the writer its own uid, e.g. writer_uid = 1001 with posix_uid = 1000")
        return self

    @property
    def creates_file_system(self) -> bool:
        return not self.file_system_id


class ModelConfig(Section):
    """The model folder: model.pt (TorchScript), labels.json, preprocess.json; serve, validate and deploy use it."""

    dir: Path = Field(Path("model/artifacts"), description="a folder, relative to pipeline.toml", examples=["model/artifacts"])

    @field_validator("dir")
    @classmethod
    def _under_root(cls, value: Path, info: ValidationInfo) -> Path:
        root = _root(info)
        return root / value if root else value


def _relative_globs(value: tuple[str, ...]) -> tuple[str, ...]:
    bad = [v for v in value if not v or v.startswith("/")]
    if bad:
        raise _problem(f"globs must be relative to the tree, found {bad!r}", 'e.g. keep = ["skimage/**/*.pyi"]')
    return value


class KeepSpec(Section):
    keep: tuple[Str, ...] = Field((), description="globs relative to the tree", examples=[["skimage/**/*.pyi"]])

    @field_validator("keep")
    @classmethod
    def _relative(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _relative_globs(value)


class SlimSpec(Section):
    """[slim]: what the user says about slimming (builder/slim_rules.toml holds the rules)."""

    enabled: Bool = Field(True, description="a bool: true, or false for no slimming at all", examples=[True])
    disable: tuple[Str, ...] = Field((), description="rule names of builder/slim_rules.toml", examples=[["type-stubs"]])  # checked by the build
    keep: tuple[Str, ...] = Field((), description="globs relative to the tree", examples=[["skimage/**/*.pyi"]])  # every set
    sets: dict[str, KeepSpec] = Field(default_factory=dict)  # [slim.sets.<set>] keep
    packages: dict[str, KeepSpec] = Field(default_factory=dict)  # [slim.packages.<distribution>] keep: only that package's files

    @field_validator("keep")
    @classmethod
    def _relative(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _relative_globs(value)


class WaiverSpec(Section):
    rule: Str = Field(description="a validate rule", examples=["needed-libraries"])
    files: Str = Field(pattern=r"^[^:]+:.+$", description="<set>:<glob>, as findings name files", examples=["efs:sklearn/**/_openmp*.so"])
    reason: Str = Field(pattern=r"\S", description="why the finding is safe to accept; printed on every run", examples=["only the OpenMP backend needs it"])


class ValidateSpec(Section):
    waive: tuple[WaiverSpec, ...] = ()  # static findings accepted, each with its reason


class PipelineFile(Section):
    """pipeline.toml as a whole: every table it may hold."""

    version: Literal[1] = Field(1, description="the config version this Hoist reads", examples=[1])
    default_target: Str | None = None  # default: the first target
    targets: dict[str, TargetSpec] = Field(min_length=1, description="at least one [targets.<name>] table",
                                           examples=[{"lambda": {"kind": "lambda", "runtime": "python3.13", "arch": "arm64"}}])
    sets: SetsSpec
    index: tuple[Index, ...] = ()  # indexes every target uses
    find_links: tuple[Str, ...] = ()
    no_index: Bool = False  # True: only find_links and [[index]], never PyPI
    efs: EfsConfig | None = None  # required for package = "efs" (checked below); an image has no file system
    function: FunctionConfig
    api: ApiConfig
    build: BuildConfig = Field(default_factory=_table)
    sync: SyncConfig = Field(default_factory=_table)
    deploy: DeployConfig | None = None
    model: ModelConfig = Field(default_factory=_table)
    slim: SlimSpec = Field(default_factory=_table)
    validate_: ValidateSpec = Field(default_factory=_table, alias="validate")  # `validate` would shadow BaseModel.validate

    @model_validator(mode="after")
    def _what_snapstart_refuses(self) -> PipelineFile:
        """What Lambda refuses for a SnapStart function by configuration, said here and not at publish time
        (lambda-facts.md, SnapStart: mutually exclusive with EFS; ephemeral storage at most 512 MB)."""
        fn = self.function
        if fn.package == "efs" and self.efs is None:
            raise _problem('package = "efs" (the default) puts the heavy set on an EFS file system, and there is no [efs] table',
                           'add [efs] with file_system_name = "..." and mount_path = "/mnt/hoist", or set package = "image" under [function]', key="efs")
        if fn.snapstart and fn.package == "efs":
            raise _problem("SnapStart cannot snapshot a function that mounts EFS (Lambda refuses the pair), and package = \"efs\" mounts the heavy set",
                           'set package = "image" under [function] (every set in a container image, no EFS), or remove snapstart = true', key="function.snapstart")
        if self.deploy and fn.package == "image" and fn.snapstart is not False and self.deploy.ephemeral_storage_mb > 512:
            raise _problem(f"SnapStart takes at most 512 MB of ephemeral storage, and [deploy] ephemeral_storage_mb is {self.deploy.ephemeral_storage_mb}",
                           "set ephemeral_storage_mb = 512 under [deploy] (the image's model needs no /tmp), or snapstart = false under [function]",
                           key="deploy.ephemeral_storage_mb")
        if self.deploy:
            _check_shape_region(self.deploy.region, fn.package, fn.package == "image" and fn.snapstart is not False)
        if self.deploy and fn.package == "efs" and not (self.deploy.vpc_id and self.deploy.subnet_ids):
            raise _problem("a function that mounts EFS runs in a VPC: [deploy] needs vpc_id and subnet_ids",
                           'set vpc_id = "vpc-..." and subnet_ids = ["subnet-..."] under [deploy], or package = "image" under [function] (no VPC)', key="deploy.vpc_id")
        return self

    @model_validator(mode="after")
    def _datasync_through_the_writer(self) -> PipelineFile:
        """The stack's own file system admits writes only through the writer access point, by the sync role (its policy):
        a DataSync location without them would fail at mount time, late and obscurely."""
        ds = self.sync.datasync
        if self.deploy and self.deploy.creates_file_system and ds and not (ds.access_point_arn and ds.file_system_role_arn):
            raise _problem("[sync.datasync] needs access_point_arn and file_system_role_arn for the stack's file system: its policy admits writes "
                           "only through the writer access point, by the sync role",
                           "set access_point_arn = <WriterAccessPointArn> and file_system_role_arn = <SyncRoleArn> (the storage stack's outputs)")
        return self


# ---------------------------------------------------------------- what the stages read


@dataclass(frozen=True)
class DependencySet:
    name: str  # "efs" | "layer"
    requirements: Path  # the .in file
    lines: tuple[str, ...]  # its requirement lines, comments stripped

    def names(self) -> set[str]:
        return {canonicalize_name(Requirement(line).name) for line in self.lines}


@dataclass(frozen=True)
class TargetConfig:
    target: Target
    override: tuple[str, ...] = ()  # pins replacing the .in ones for this target
    exclude: tuple[str, ...] = ()  # packages this target leaves out
    pip_config_find_links: bool = False  # add find-links from pip's own configuration
    indexes: tuple[Index, ...] = ()  # this target's own indexes (after the global ones)
    find_links: tuple[str, ...] = ()  # this target's own find-links
    torch_backend: str | None = None  # uv --torch-backend ("cpu")
    allow_gpu: bool = False  # True: a Lambda lock may hold nvidia-*, triton, CUDA builds


@dataclass(frozen=True)
class SlimConfig:
    """What the user says about slimming: off, rules turned off, files kept (globs relative to the tree)."""

    enabled: bool = True
    disable: tuple[str, ...] = ()  # rule names of builder/slim_rules.toml (checked by the build)
    keep: tuple[str, ...] = ()  # every set
    set_keep: dict[str, tuple[str, ...]] = field(default_factory=dict)  # [slim.sets.<set>] keep
    package_keep: dict[str, tuple[str, ...]] = field(default_factory=dict)  # [slim.packages.<distribution>] keep, only that package's files


@dataclass(frozen=True)
class Waiver:
    """A static finding the user accepts, by rule and file pattern ("<set>:<path glob>"), with the reason shown on every run."""

    rule: str
    files: str
    reason: str


@dataclass(frozen=True)
class Config:
    path: Path
    root: Path
    default_target: str
    targets: dict[str, TargetConfig]
    sets: dict[str, DependencySet]
    indexes: tuple[Index, ...]
    find_links: tuple[str, ...]
    no_index: bool  # True: only find_links and [[index]], never PyPI
    efs: EfsConfig
    function: FunctionConfig
    api_name: str
    build: BuildConfig
    sync: SyncConfig
    deploy: DeployConfig | None = None
    api_rate_limit: float = 50.0  # HTTP API stage: steady requests per second
    api_burst_limit: int = 100  # HTTP API stage: burst
    model_dir: Path | None = None  # [model] dir: the model folder serve, validate and deploy use (None: model/artifacts under root)
    model_dir_set: bool = False  # [model] dir given explicitly: a missing folder is an error at load, a broken one at build
    raw: dict = field(repr=False, default_factory=dict)
    slim: SlimConfig = field(default_factory=SlimConfig)
    waivers: tuple[Waiver, ...] = ()

    def target(self, name: str | None = None) -> TargetConfig:
        name = name or self.default_target
        if name not in self.targets:
            close = difflib.get_close_matches(name, sorted(self.targets), n=1)
            raise ConfigError(
                f"no target named {name!r}; defined: {', '.join(sorted(self.targets))}",
                where=f"{self.path.name}: --target",
                fix=(f"did you mean --target {close[0]}? " if close else "")
                + f"pass --target with one of those names, or add [targets.{name}] to {self.path.name}",
            )
        return self.targets[name]

    def lock_path(self, set_name: str, target_name: str) -> Path:
        return self.root / "requirements" / f"{set_name}.{target_name}.lock"

    def build_json(self, target_name: str) -> Path:
        """The build summary of one target: building one never touches another's."""
        return build_record_path(self.build.output, target_name)


# ---------------------------------------------------------------- errors


def _unwrap(annotation: Any) -> Any:
    """The model or container inside Optional[...] / Annotated[...]."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model of the table at ``loc`` (() is the whole file), or None."""
    current: Any = PipelineFile
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {info.alias or name: info for name, info in current.model_fields.items()}  # as written in the file
            if part not in fields:
                return None
            current = fields[part].annotation
        elif typing.get_origin(current) in (dict, tuple, list):
            args = typing.get_args(current)
            current = args[1] if typing.get_origin(current) is dict else args[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _key(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _toml(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | int | float | bool | list | tuple) else str(value)


@dataclass(frozen=True)
class Problem:
    key: str  # dotted, as written in pipeline.toml
    what: str
    fix: str
    typo_of: str = ""  # an unknown key close to this known one (its dotted name)
    kind: str = ""  # pydantic's error type


def _explain(error: Any, raw: dict | None = None) -> Problem:
    """One pydantic error in pipeline.toml's words: the key, what is wrong, the fix (``raw``: the file as read)."""
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith(("function-", "lax-", "strict-"))))
    key = _key(loc)
    kind = error["type"]
    if kind == "hoist":
        return Problem(error["ctx"].get("key") or key, error["ctx"]["what"], error["ctx"]["fix"])
    parent = loc[:-1]
    if kind == "extra_forbidden":
        name = str(loc[-1])
        model = _model_at(parent)
        known = [info.alias or name for name, info in model.model_fields.items()] if model else []
        table = f"[{_key(parent)}]" if parent else "the top level"
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if isinstance(error.get("input"), dict):
            what = f"unknown table [{key}]" + (f"; did you mean [{_key((*parent, close[0]))}]?" if close else "")
            fix = f"rename it to [{_key((*parent, close[0]))}]" if close else f"remove it; {table} holds: " + ", ".join(f"[{_key((*parent, k))}]" for k in known)
        else:
            what = f"unknown key {name!r} in {table}" + (f"; did you mean {close[0]!r}?" if close else "")
            fix = f"rename it: {close[0]} = {_toml(error.get('input'))}" if close else f"remove it; {table} knows: {', '.join(known)}"
            if close and close[0] in _table_at(raw, parent):  # renaming would set it twice: TOML refuses a duplicate key
                fix = f"remove the line {name} = {_toml(error.get('input'))}; {table} already sets {close[0]}"
        return Problem(key, what, fix, typo_of=_key((*parent, close[0])) if close else "")
    # the field's own description and example make the fix (a list element: its list's)
    field_loc = loc[:-1] if loc and isinstance(loc[-1], int) else loc
    model = _model_at(field_loc[:-1]) if field_loc else None
    info = {i.alias or n: i for n, i in model.model_fields.items()}.get(str(field_loc[-1])) if model and field_loc else None
    example = info.examples[0] if info and info.examples else None
    hint = info.description if info and info.description else ""
    name = str(field_loc[-1]) if field_loc else key
    if kind == "missing":
        if isinstance(example, dict) or (info and _model_at(field_loc)):
            return Problem(key, f"missing table [{key}]", f"add [{key}]" + (f" ({hint})" if hint else ""))
        return Problem(key, f"missing key {key!r}", f"add {name} = {_toml(example) if example is not None else '...'} under [{_key(parent)}]")
    found = error.get("input")
    aws = next((k for k, rx in AWS_ID_RE.items() if (error.get("ctx") or {}).get("pattern") in (f"^{rx}$", f"^({rx})?$")), None)
    said_hint = f"an AWS {aws}-... id" if aws and not hint else hint  # a list's element: its own field has no description
    what = f"{key} = {'a table' if isinstance(found, dict) else _toml(found)}: {_in_our_words(kind, error, said_hint)}"
    if kind == "string_pattern_mismatch" and aws:  # a placeholder such as "subnet-..." or a mistyped id
        digits = AWS_ID_RE[aws].rsplit("{", 1)[1].rstrip("}").replace(",", " to ")
        return Problem(key, what, f"set {key} to the id of an existing {AWS_ID_NAMES[aws]} of your account ({aws}- and {digits} hex digits),"
                                  f" e.g. {_toml(f'{aws}-0123456789abcdef0')}")
    choices = typing.get_args(_unwrap(info.annotation)) if info and typing.get_origin(_unwrap(info.annotation)) is Literal else ()
    if kind in ("bool_type", "bool_parsing") or (kind == "literal_error" and choices):
        said = " or ".join(f"{name} = {_toml(c)}" for c in (choices or (True, False)))
        return Problem(key, what, f"set {said}" + (f" ({hint})" if hint else "") + (f" under [{_key(parent)}]" if parent else ""), kind=kind)
    if example is None or isinstance(example, dict):
        example = _example(kind, found, info)
        if example is not None and field_loc != loc:  # an element: the example is its list
            example = [example]
    fix = f"set {key}" + (f" to {hint}" if hint else "") + (f", e.g. {name} = {_toml(example)}" if example is not None else "")
    return Problem(key, what, fix, kind=kind)


def _in_our_words(kind: str, error: Any, hint: str) -> str:
    """What is wrong with a value, said for a TOML file: pydantic's own messages name regular expressions,
    Python classes and "value error"s, and speak of validation instead of the file."""
    ctx = {k: _toml(int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in (error.get("ctx") or {}).items()}  # gt=0 on a float: 0, not 0.0
    quoted = isinstance(error.get("input"), str)
    said = {
        "string_pattern_mismatch": f"expected {hint}" if hint else "not of the form this key takes",
        "int_type": "expected a whole number" + (", written without quotes" if quoted else ""),
        "int_parsing": "expected a whole number",
        "int_from_float": "expected a whole number, not a fraction",
        "float_type": "expected a number" + (", written without quotes" if quoted else ""),
        "float_parsing": "expected a number",
        "bool_type": "expected true or false" + (", written without quotes" if quoted else ""),
        "bool_parsing": "expected true or false",
        "string_type": "expected a string, in quotes",
        "literal_error": "expected " + str((error.get("ctx") or {}).get("expected", "")).replace("'", '"'),
        "less_than_equal": f"more than {ctx.get('le')}, the most this key takes",
        "less_than": f"expected less than {ctx.get('lt')}",
        "greater_than_equal": f"less than {ctx.get('ge')}, the least this key takes",
        "greater_than": f"expected more than {ctx.get('gt')}",
        "string_too_short": f"expected at least {ctx.get('min_length')} character(s)",
        "string_too_long": f"expected at most {ctx.get('max_length')} characters",
        "too_short": f"expected at least {ctx.get('min_length')} item(s)",
        "too_long": f"expected at most {ctx.get('max_length')} items",
        "tuple_type": "expected a list, in brackets",
        "list_type": "expected a list, in brackets",
        "dict_type": "expected a table",
        "model_type": "expected a table",
        "model_attributes_type": "expected a table",
        "path_type": "expected a path, in quotes",
    }.get(kind)
    if said is not None:
        return said
    msg = str(error["msg"])
    if kind == "value_error":  # a validator's ValueError: its own text, without pydantic's prefix
        msg = msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


def _example(kind: str, found: Any, info: Any) -> Any:
    """A value of the right kind for a key that declares no example: the value found, fixed where that is clear, else the default."""
    if kind == "string_type" and isinstance(found, int | float) and not isinstance(found, bool):
        return str(found)  # 3 -> "3"
    if kind in ("int_type", "int_parsing") and isinstance(found, str) and found.strip().isdigit():
        return int(found)  # "2048" -> 2048
    if kind in ("tuple_type", "list_type") and isinstance(found, str | int | float):
        return [str(found)]  # "torch" -> ["torch"]
    default = getattr(info, "default", None)
    if isinstance(default, str | int | float | bool) and not (isinstance(default, str) and not default):
        return default
    if isinstance(default, tuple):
        return ["..."]
    return None


def _table_at(raw: dict | None, loc: tuple) -> dict:
    """The table of the raw document at ``loc`` ({} where there is none)."""
    node: Any = raw or {}
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return {}
    return node if isinstance(node, dict) else {}


def _config_error(exc: PydanticValidationError, path: Path, raw: dict | None = None) -> ConfigError:
    problems = [_explain(e, raw) for e in exc.errors()]
    # a misspelt required key also shows up as a missing one: say the typo once
    typos = {p.typo_of for p in problems if p.typo_of}  # a problem of no key is never a typo's shadow
    problems = [p for p in problems if not (p.what.startswith("missing") and p.key in typos)]
    # a list whose every element failed is also "too short after validation": the elements' problems say it
    with_elements = {p.key.rsplit("[", 1)[0] for p in problems if p.key.endswith("]")}
    problems = [p for p in problems if not (p.key in with_elements and p.kind == "too_short")]
    if len(problems) == 1:
        return ConfigError(problems[0].what, where=f"{path.name}: {problems[0].key}" if problems[0].key else path.name, fix=problems[0].fix)
    lines = "\n".join(f"  - {p.key}: {p.what}\n      fix: {p.fix}" for p in problems)
    return ConfigError(f"{len(problems)} problems:\n{lines}", where=path.name, fix="correct each key as its fix says")


# ---------------------------------------------------------------- loading


def read_requirements(path: Path, key: str, config_path: Path) -> tuple[str, ...]:
    """Requirement lines of a .in file; options belong in pipeline.toml, not here."""
    where = f"{config_path.name}: {key}"
    if not path.is_file():
        raise ConfigError(
            f"requirements file {path} does not exist",
            where=where,
            fix=f"create {path} with one requirement per line (e.g. 'torch==2.9.1'), or point {key} at an existing file",
        )
    lines = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            raise ConfigError(
                f"{path.name}:{number}: option line {line!r} is not supported in a dependency set",
                where=where,
                fix="declare indexes and find-links in pipeline.toml ([[index]], find_links, or per target [[targets.<name>.index]]) so the locks record them",
            )
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            raise ConfigError(f"{path.name}:{number}: {line!r} is not a valid requirement ({exc})", where=where, fix="write it as a PEP 508 requirement, e.g. 'torch==2.9.1'") from None
        lines.append(line)
    return tuple(lines)


def _target(name: str, spec: TargetSpec) -> TargetConfig:
    if spec.kind == "lambda":
        assert spec.runtime and spec.arch  # checked by TargetSpec
        target = lambda_target(name, spec.runtime, spec.arch)
    else:
        target = local_target(name, spec.python)
    return TargetConfig(target=target, override=spec.override, exclude=spec.exclude, pip_config_find_links=spec.pip_config_find_links,
                        indexes=spec.index, find_links=spec.find_links, torch_backend=spec.torch_backend, allow_gpu=spec.allow_gpu)


def _shown(folder: Path, root: Path) -> str:
    return str(folder.relative_to(root)) if folder.is_relative_to(root) else str(folder)


def _check_handler(handler: str, handler_dir: Path, root: Path, path: Path) -> None:
    """The handler's module is a file of the handler folder, and defines the function (when that can be read off its source)."""
    import ast

    module, function = handler.rsplit(".", 1)
    parts = module.replace("/", ".").split(".")
    folder = _shown(handler_dir, root)
    if not handler_dir.is_dir():
        raise ConfigError(f"the handler folder {folder} does not exist", where=f"{path.name}: build.handler_dir",
                          fix=f"create {folder}/ with {'/'.join(parts)}.py in it, or set handler_dir under [build] to the folder holding it")
    candidates = [handler_dir.joinpath(*parts[:-1], parts[-1] + ".py"), handler_dir.joinpath(*parts, "__init__.py")]
    source = next((c for c in candidates if c.is_file()), None)
    if source is None:
        found = sorted(p.stem for p in handler_dir.glob("*.py"))  # the modules a handler names most often: the folder's own files
        close = difflib.get_close_matches(module.replace("/", "."), found, n=1, cutoff=0.6)
        raise ConfigError(f"handler {handler!r}: there is no {_shown(candidates[0], root)} (the handler folder is build.handler_dir, {folder})",
                          where=f"{path.name}: function.handler",
                          fix=f'set handler = "{close[0]}.{function}"' if close else
                          f"create {_shown(candidates[0], root)} with def {function}(event, context)" + (f", or name a module of {folder}: {', '.join(found)}" if found else ""))
    try:
        tree = ast.parse(source.read_bytes())
    except (SyntaxError, ValueError):
        return  # the function's init says where (serve, validate's smoke test)
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            if any(a.name == "*" for a in node.names):
                return  # a star import may define it
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif not isinstance(node, ast.Expr):
            return  # defined under an if, try or with: cannot tell without running it
    if function not in names:
        functions = sorted(n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and not n.name.startswith("_"))
        close = difflib.get_close_matches(function, functions, n=1, cutoff=0.6)
        if function == "py" and functions:  # "app.py": the file, not <module>.<function>
            close = ["handler" if "handler" in functions else functions[0]]
        raise ConfigError(f"handler {handler!r}: {_shown(source, root)} defines no {function}",
                          where=f"{path.name}: function.handler",
                          fix=f'set handler = "{module}.{close[0]}"' if close else
                          f"add def {function}(event, context) to {_shown(source, root)}" + (f", or name one of its functions ({', '.join(functions)})" if functions else ""))


def _check_model_dir(folder: Path, root: Path, path: Path) -> None:
    """[model] dir, when written, names a folder that is there (without it, model/artifacts is used when present)."""
    if folder.is_dir():
        return
    shown = _shown(folder, root)
    siblings = sorted(d.name for d in folder.parent.iterdir() if d.is_dir()) if folder.parent.is_dir() else []
    close = difflib.get_close_matches(folder.name, siblings, n=1, cutoff=0.6)
    fix = (f'set dir = "{_shown(folder.parent / close[0], root)}" under [model]' if close else
           f"put the model folder (model.pt, labels.json, preprocess.json) at {shown}, or remove dir from [model]: without it, "
           "model/artifacts is used when it exists, and the tasks that need no model run without one")
    raise ConfigError(f"the model folder {shown} {'is a file, not a folder' if folder.exists() else 'does not exist'}", where=f"{path.name}: model.dir", fix=fix)


def _toml_excerpt(text: str, message: str) -> str:
    """The line tomllib's ``message`` points at ("(at line N, column M)"), with a caret under the column; "" when it names none."""
    found = re.search(r"\(at line (\d+), column (\d+)\)", message)
    lines = text.splitlines()
    if not found or not 1 <= int(found[1]) <= len(lines):
        return ""
    number, column = int(found[1]), int(found[2])
    prefix = f"    {number} | "
    return f"\n{prefix}{lines[number - 1]}\n{' ' * (len(prefix) + column - 1)}^"


def load(path: str | Path = "pipeline.toml") -> Config:
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"{path} does not exist", where=str(path), fix="run from the project folder, or pass --config PATH")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}{_toml_excerpt(text, str(exc))}", where=path.name, fix=f"fix the syntax in {path.name} at the line shown") from None
    root = path.parent
    try:
        doc = PipelineFile.model_validate(raw, context={"root": root})
    except PydanticValidationError as exc:
        raise _config_error(exc, path, raw) from None

    targets = {name: _target(name, spec) for name, spec in doc.targets.items()}
    default_target = doc.default_target or next(iter(targets))
    if default_target not in targets:
        close = difflib.get_close_matches(default_target, list(targets), n=1, cutoff=0.5) or list(targets)
        raise ConfigError(f"default_target {default_target!r} is not defined; the targets are {', '.join(targets)}", where=f"{path.name}: default_target",
                          fix=f'set default_target = "{close[0]}", or add [targets.{default_target}]')

    sets: dict[str, DependencySet] = {}
    for name in SET_NAMES:
        spec = getattr(doc.sets, name)
        if spec is None:
            continue
        req = root / (spec.requirements or f"requirements/{name}.in")
        sets[name] = DependencySet(name=name, requirements=req, lines=read_requirements(req, f"sets.{name}.requirements", path))
    if len(sets) == 2:
        both = sets["efs"].names() & sets["layer"].names()
        if both:
            raise ConfigError(
                f"{', '.join(sorted(both))} listed in both sets ({sets['efs'].requirements.name} and {sets['layer'].requirements.name}); each package lands in exactly one set",
                where=f"{path.name}: sets",
                fix="remove the line from one of the two .in files (a package the other set needs is found there on sys.path)",
            )
    unknown_sets = sorted(set(doc.slim.sets) - set(sets))
    if unknown_sets:
        raise ConfigError(f"[slim.sets.{unknown_sets[0]}]: no such dependency set", where=f"{path.name}: slim.sets.{unknown_sets[0]}", fix=f"use one of {', '.join(sets)}")
    _check_handler(doc.function.handler, doc.build.handler_dir, root, path)
    if "dir" in (raw.get("model") or {}):
        _check_model_dir(doc.model.dir, root, path)
    return Config(
        path=path,
        root=root,
        default_target=default_target,
        targets=targets,
        sets=sets,
        indexes=doc.index,
        find_links=doc.find_links,
        no_index=doc.no_index,
        # an image never mounts EFS: without [efs] the stages that name a mount path (the tree smoke test) get Lambda's usual one
        efs=doc.efs or EfsConfig(file_system_name=doc.function.name, mount_path="/mnt/hoist", root="/hoist"),
        function=doc.function,
        api_name=doc.api.name,
        build=doc.build,
        sync=doc.sync,
        deploy=doc.deploy.model_copy(update={"model_dir": doc.model.dir}) if doc.deploy else None,
        model_dir=doc.model.dir,
        model_dir_set="dir" in (raw.get("model") or {}),
        slim=SlimConfig(enabled=doc.slim.enabled, disable=doc.slim.disable, keep=doc.slim.keep,
                        set_keep={name: spec.keep for name, spec in doc.slim.sets.items()},
                        package_keep={str(canonicalize_name(name)): spec.keep for name, spec in doc.slim.packages.items()}),
        waivers=tuple(Waiver(rule=w.rule, files=w.files, reason=w.reason) for w in doc.validate_.waive),
        api_rate_limit=float(doc.api.throttle_rate),
        api_burst_limit=doc.api.throttle_burst,
        raw=raw,
    )


def keep_line(files: list[str]) -> str:
    """The `keep = [...]` line of [slim.packages.<name>] that keeps ``files``: one glob per top folder and suffix."""
    globs = sorted({f"{f.split('/', 1)[0]}/**/*{Path(f).suffix}" if "/" in f and Path(f).suffix else f for f in files})
    return "keep = [" + ", ".join(f'"{g}"' for g in globs) + "]"
