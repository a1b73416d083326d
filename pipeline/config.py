"""Load and check pipeline.toml, the one file that describes a deployment.

Everything is checked here, before any download: a bad key fails with the key,
what was found, what is allowed and how to fix it.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import ConfigError
from .targets import Target, facts, image_ref_problem, lambda_target, local_target

# Lambda's own pattern for FileSystemConfigs.LocalMountPath (lambda-facts.md)
MOUNT_PATH_RE = re.compile(r"^/mnt/[a-zA-Z0-9-_.]+$")
FUNCTION_NAME_RE = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")
INDEX_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
SET_NAMES = ("efs", "layer")


@dataclass(frozen=True)
class Index:
    """A package index besides PyPI. With ``packages`` it serves only those."""

    name: str
    url: str
    packages: tuple[str, ...] = ()


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


@dataclass(frozen=True)
class EfsConfig:
    file_system_name: str
    mount_path: str
    root: str  # directory inside the file system holding envs/ and models/


@dataclass(frozen=True)
class FunctionConfig:
    name: str
    memory_mb: int
    timeout_s: int
    handler: str


@dataclass(frozen=True)
class BuildConfig:
    builder: str
    output: Path
    handler_dir: Path
    base_image: str | None = None  # Docker builder: the Lambda base image (default: the runtime's)


@dataclass(frozen=True)
class BastionConfig:
    host: str
    user: str
    port: int
    identity_file: str
    known_hosts: str
    efs_path: str  # where the bastion mounts the file system


@dataclass(frozen=True)
class DataSyncConfig:
    bucket: str
    prefix: str
    region: str
    file_system_arn: str
    subnet_arn: str
    security_group_arns: tuple[str, ...]
    s3_role_arn: str
    access_point_arn: str | None = None
    file_system_role_arn: str | None = None


@dataclass(frozen=True)
class SyncConfig:
    method: str  # local | bastion | datasync
    keep: int  # newest versions efs-gc keeps
    local_path: Path  # the folder standing in for the mount (method local)
    stale_lock_s: int
    bwlimit_kbps: int = 0  # rsync --bwlimit; 0: no limit
    bastion: BastionConfig | None = None
    datasync: DataSyncConfig | None = None


@dataclass(frozen=True)
class DeployConfig:
    """Where and how `invoke deploy` puts the stack (the AWS side of pipeline.toml)."""

    stack_name: str
    region: str
    artifact_bucket: str  # handler/layer zips and the model, under content-addressed keys
    artifact_prefix: str
    output_prefix: str  # the handler writes results under s3://<artifact_bucket>/<output_prefix>/
    vpc_id: str
    subnet_ids: tuple[str, ...]
    route_table_ids: tuple[str, ...] = ()
    s3_endpoint: bool = True  # Gateway endpoint on route_table_ids (off when the VPC already has one)
    dynamodb_endpoint: bool = False
    ephemeral_storage_mb: int = 2048  # /tmp: the hydrated tree lives there (lambda-facts.md, Limits)
    log_retention_days: int = 14
    posix_uid: int = 1000
    posix_gid: int = 1000
    file_system_id: str = ""  # an existing file system instead of the stack's own
    access_point_id: str = ""
    mount_target_security_group_id: str = ""  # existing mount targets' group: the stack adds NFS from the function
    model_dir: Path | None = None  # model.pt, labels.json, preprocess.json: uploaded to <artifact_prefix>/models/<hash>/
    smoke_image: Path | None = None
    smoke_expect: str = ""

    @property
    def creates_file_system(self) -> bool:
        return not self.file_system_id


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
    sync: SyncConfig | None = None
    deploy: DeployConfig | None = None
    raw: dict = field(repr=False, default_factory=dict)
    slim: SlimConfig = field(default_factory=SlimConfig)
    waivers: tuple[Waiver, ...] = ()

    def target(self, name: str | None = None) -> TargetConfig:
        name = name or self.default_target
        if name not in self.targets:
            raise ConfigError(
                f"no target named {name!r}; defined: {', '.join(sorted(self.targets))}",
                where=f"{self.path.name}: --target",
                fix=f"pass --target with one of those names, or add [targets.{name}] to {self.path.name}",
            )
        return self.targets[name]

    def lock_path(self, set_name: str, target_name: str) -> Path:
        return self.root / "requirements" / f"{set_name}.{target_name}.lock"


def _where(path: Path, key: str) -> str:
    return f"{path.name}: {key}"


def _get(table: dict, key: str, typ, path: Path, prefix: str, default=None, required=False):
    full = f"{prefix}.{key}" if prefix else key
    if key not in table:
        if required:
            raise ConfigError(f"missing key {full!r}", where=_where(path, full), fix=f"add {key} = ... under [{prefix}]")
        return default
    value = table[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        name = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ConfigError(f"{full} must be a {name}, found {value!r}", where=_where(path, full), fix=f"set {full} to a {name}")
    return value


def read_requirements(path: Path, key: str, config_path: Path) -> tuple[str, ...]:
    """Requirement lines of a .in file; options belong in pipeline.toml, not here."""
    if not path.is_file():
        raise ConfigError(
            f"requirements file {path} does not exist",
            where=_where(config_path, key),
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
                where=_where(config_path, key),
                fix="declare indexes and find-links in pipeline.toml ([[index]], find_links) so every set and target uses them",
            )
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            raise ConfigError(
                f"{path.name}:{number}: {line!r} is not a valid requirement ({exc})",
                where=_where(config_path, key),
                fix="write it as a PEP 508 requirement, e.g. 'torch==2.9.1'",
            ) from None
        lines.append(line)
    return tuple(lines)


def _parse_target(name: str, table: dict, path: Path) -> TargetConfig:
    prefix = f"targets.{name}"
    runtimes = facts()["runtimes"]
    arches = facts()["architectures"]
    kind = _get(table, "kind", str, path, prefix, default="lambda")
    if kind == "lambda":
        runtime = _get(table, "runtime", str, path, prefix, required=True)
        if runtime not in runtimes:
            raise ConfigError(
                f"unknown runtime {runtime!r}; Lambda's Python runtimes are {', '.join(runtimes)}",
                where=_where(path, f"{prefix}.runtime"),
                fix='set runtime = "python3.13" (or another listed runtime)',
            )
        arch = _get(table, "arch", str, path, prefix, required=True)
        if arch not in arches:
            raise ConfigError(
                f"unknown architecture {arch!r}; Lambda offers {', '.join(arches)}",
                where=_where(path, f"{prefix}.arch"),
                fix='set arch = "arm64" or arch = "x86_64"',
            )
        target = lambda_target(name, runtime, arch)
    elif kind == "local":
        python = _get(table, "python", str, path, prefix)
        if python is not None and not re.fullmatch(r"3\.\d+", python):
            raise ConfigError(f"python must look like '3.11', found {python!r}", where=_where(path, f"{prefix}.python"), fix='set python = "3.11"')
        target = local_target(name, python)
    else:
        raise ConfigError(f"unknown target kind {kind!r}", where=_where(path, f"{prefix}.kind"), fix='set kind = "lambda" or kind = "local"')
    override = _get(table, "override", list, path, prefix, default=[])
    for line in override:
        try:
            Requirement(line)
        except (InvalidRequirement, TypeError):
            raise ConfigError(f"override {line!r} is not a requirement", where=_where(path, f"{prefix}.override"), fix='write pins such as "torch==2.13.0+cpu"') from None
    exclude = _get(table, "exclude", list, path, prefix, default=[])
    return TargetConfig(
        target=target,
        override=tuple(override),
        exclude=tuple(canonicalize_name(x) for x in exclude),
        pip_config_find_links=_get(table, "pip_config_find_links", bool, path, prefix, default=False),
    )


def _parse_indexes(raw: list, path: Path) -> tuple[Index, ...]:
    indexes = []
    for i, table in enumerate(raw):
        prefix = f"index[{i}]"
        name = _get(table, "name", str, path, prefix, required=True)
        if not INDEX_NAME_RE.match(name):
            raise ConfigError(f"index name {name!r} must be lower-case letters, digits and dashes", where=_where(path, f"{prefix}.name"), fix='e.g. name = "pytorch-cpu"')
        url = _get(table, "url", str, path, prefix, required=True)
        if not re.match(r"^(https?|file)://", url):
            raise ConfigError(f"index url {url!r} must start with https://, http:// or file://", where=_where(path, f"{prefix}.url"), fix='e.g. url = "https://download.pytorch.org/whl/cpu"')
        packages = tuple(canonicalize_name(p) for p in _get(table, "packages", list, path, prefix, default=[]))
        indexes.append(Index(name=name, url=url, packages=packages))
    return tuple(indexes)


def load(path: str | Path = "pipeline.toml") -> Config:
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"{path} does not exist", where=str(path), fix="run from the project folder, or pass --config PATH")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", where=path.name, fix="fix the syntax at the line shown") from None
    root = path.parent

    version = _get(raw, "version", int, path, "", default=1)
    if version != 1:
        raise ConfigError(f"config version {version} is not supported (this Hoist reads version 1)", where=_where(path, "version"), fix="set version = 1")

    targets_raw = _get(raw, "targets", dict, path, "", required=True)
    targets = {name: _parse_target(name, table, path) for name, table in targets_raw.items()}
    default_target = _get(raw, "default_target", str, path, "", default=next(iter(targets), ""))
    if default_target not in targets:
        raise ConfigError(f"default_target {default_target!r} is not defined", where=_where(path, "default_target"), fix=f"use one of {', '.join(targets)}")

    sets_raw = _get(raw, "sets", dict, path, "", required=True)
    sets: dict[str, DependencySet] = {}
    for name, table in sets_raw.items():
        if name not in SET_NAMES:
            raise ConfigError(
                f"unknown dependency set {name!r}; sets are 'efs' (heavy, mounted from EFS) and 'layer' (light, a Lambda layer)",
                where=_where(path, f"sets.{name}"),
                fix="rename the table to [sets.efs] or [sets.layer]",
            )
        req = root / _get(table, "requirements", str, path, f"sets.{name}", default=f"requirements/{name}.in")
        sets[name] = DependencySet(name=name, requirements=req, lines=read_requirements(req, f"sets.{name}.requirements", path))
    if "efs" not in sets:
        raise ConfigError("no [sets.efs]: the heavy packages need a set", where=_where(path, "sets"), fix='add [sets.efs] with requirements = "requirements/efs.in"')
    if len(sets) == 2:
        both = sets["efs"].names() & sets["layer"].names()
        if both:
            raise ConfigError(
                f"{', '.join(sorted(both))} pinned in both sets ({sets['efs'].requirements.name} and {sets['layer'].requirements.name}); each package lands in exactly one set",
                where=_where(path, "sets"),
                fix="remove the line from one of the two .in files (a package the other set needs is found there on sys.path)",
            )

    indexes = _parse_indexes(_get(raw, "index", list, path, "", default=[]), path)
    find_links = tuple(_get(raw, "find_links", list, path, "", default=[]))
    no_index = _get(raw, "no_index", bool, path, "", default=False)

    efs_raw = _get(raw, "efs", dict, path, "", required=True)
    mount = _get(efs_raw, "mount_path", str, path, "efs", required=True)
    if not MOUNT_PATH_RE.match(mount):
        raise ConfigError(
            f"mount path {mount!r} does not match Lambda's pattern ^/mnt/[a-zA-Z0-9-_.]+$",
            where=_where(path, "efs.mount_path"),
            fix='use a single directory under /mnt, e.g. mount_path = "/mnt/hoist"',
        )
    efs = EfsConfig(
        file_system_name=_get(efs_raw, "file_system_name", str, path, "efs", required=True),
        mount_path=mount,
        root=_get(efs_raw, "root", str, path, "efs", default="/hoist"),
    )
    if not efs.root.startswith("/"):
        raise ConfigError(f"efs.root {efs.root!r} must be absolute inside the file system", where=_where(path, "efs.root"), fix='e.g. root = "/hoist"')

    fn_raw = _get(raw, "function", dict, path, "", required=True)
    fn_name = _get(fn_raw, "name", str, path, "function", required=True)
    if not FUNCTION_NAME_RE.match(fn_name):
        raise ConfigError(f"function name {fn_name!r} must be 1-64 letters, digits, - or _", where=_where(path, "function.name"), fix='e.g. name = "hoist-classifier"')
    memory = _get(fn_raw, "memory_mb", int, path, "function", default=3008)
    if not 128 <= memory <= 10240:
        raise ConfigError(f"memory_mb {memory} is outside Lambda's 128-10240 MB", where=_where(path, "function.memory_mb"), fix="pick a value from 128 to 10240")
    timeout = _get(fn_raw, "timeout_s", int, path, "function", default=60)
    if not 1 <= timeout <= 900:
        raise ConfigError(f"timeout_s {timeout} is outside Lambda's 1-900 s", where=_where(path, "function.timeout_s"), fix="pick a value from 1 to 900")
    function = FunctionConfig(name=fn_name, memory_mb=memory, timeout_s=timeout, handler=_get(fn_raw, "handler", str, path, "function", default="app.handler"))

    api_raw = _get(raw, "api", dict, path, "", required=True)
    api_name = _get(api_raw, "name", str, path, "api", required=True)
    if not 1 <= len(api_name) <= 128:
        raise ConfigError(f"api name {api_name!r} must be 1-128 characters", where=_where(path, "api.name"), fix='e.g. name = "hoist-api"')

    build_raw = _get(raw, "build", dict, path, "", default={})
    builder = _get(build_raw, "builder", str, path, "build", default="native")
    if builder not in ("native", "docker", "auto"):
        raise ConfigError(f"unknown builder {builder!r}", where=_where(path, "build.builder"), fix='set builder = "native", "docker" or "auto"')
    base_image = _get(build_raw, "base_image", str, path, "build")
    if base_image is not None and (problem := image_ref_problem(base_image)):
        raise ConfigError(problem, where=_where(path, "build.base_image"), fix="use a versioned tag such as public.ecr.aws/lambda/python:3.13-arm64, or its @sha256 digest")
    build = BuildConfig(
        builder=builder,
        output=root / _get(build_raw, "output", str, path, "build", default="dist"),
        handler_dir=root / _get(build_raw, "handler_dir", str, path, "build", default="handler"),
        base_image=base_image,
    )
    sync = _parse_sync(_get(raw, "sync", dict, path, "", default={}), path, root)
    deploy = _parse_deploy(raw["deploy"], path, root) if "deploy" in raw else None
    slim = _parse_slim(_get(raw, "slim", dict, path, "", default={}), path, tuple(sets))
    waivers = _parse_waivers(_get(raw, "validate", dict, path, "", default={}), path)
    return Config(
        slim=slim,
        waivers=waivers,
        sync=sync,
        deploy=deploy,
        path=path,
        root=root,
        default_target=default_target,
        targets=targets,
        sets=sets,
        indexes=indexes,
        find_links=find_links,
        no_index=no_index,
        efs=efs,
        function=function,
        api_name=api_name,
        build=build,
        raw=raw,
    )


SYNC_METHODS = ("local", "bastion", "datasync")


def _parse_sync(raw: dict, path: Path, root: Path) -> SyncConfig:
    method = _get(raw, "method", str, path, "sync", default="local")
    if method not in SYNC_METHODS:
        raise ConfigError(f"unknown sync method {method!r}", where=_where(path, "sync.method"), fix='set method = "local", "bastion" or "datasync"')
    keep = _get(raw, "keep", int, path, "sync", default=3)
    if keep < 1:
        raise ConfigError(f"sync.keep must be at least 1, found {keep}", where=_where(path, "sync.keep"), fix="keep = 3 keeps the three newest versions")
    local_raw = _get(raw, "local", dict, path, "sync", default={})
    bastion = None
    if "bastion" in raw or method == "bastion":
        b = _get(raw, "bastion", dict, path, "sync", required=method == "bastion") or {}
        pre = "sync.bastion"
        efs_path = _get(b, "efs_path", str, path, pre, required=True)
        if not efs_path.startswith("/"):
            raise ConfigError(f"efs_path {efs_path!r} must be absolute on the bastion", where=_where(path, f"{pre}.efs_path"), fix='e.g. efs_path = "/mnt/efs"')
        bastion = BastionConfig(
            host=_get(b, "host", str, path, pre, required=True),
            user=_get(b, "user", str, path, pre, required=True),
            port=_get(b, "port", int, path, pre, default=22),
            identity_file=os.path.expanduser(_get(b, "identity_file", str, path, pre, required=True)),
            known_hosts=os.path.expanduser(_get(b, "known_hosts", str, path, pre, default="~/.ssh/known_hosts")),
            efs_path=efs_path,
        )
    datasync = None
    if "datasync" in raw or method == "datasync":
        d = _get(raw, "datasync", dict, path, "sync", required=method == "datasync") or {}
        pre = "sync.datasync"
        datasync = DataSyncConfig(
            bucket=_get(d, "bucket", str, path, pre, required=True),
            prefix=_get(d, "prefix", str, path, pre, default="hoist-staging").strip("/"),
            region=_get(d, "region", str, path, pre, required=True),
            file_system_arn=_get(d, "file_system_arn", str, path, pre, required=True),
            subnet_arn=_get(d, "subnet_arn", str, path, pre, required=True),
            security_group_arns=tuple(_get(d, "security_group_arns", list, path, pre, required=True)),
            s3_role_arn=_get(d, "s3_role_arn", str, path, pre, required=True),
            access_point_arn=_get(d, "access_point_arn", str, path, pre),
            file_system_role_arn=_get(d, "file_system_role_arn", str, path, pre),
        )
    return SyncConfig(
        method=method,
        keep=keep,
        local_path=root / _get(local_raw, "path", str, path, "sync.local", default=".hoist-efs"),
        stale_lock_s=_get(raw, "stale_lock_s", int, path, "sync", default=3600),
        bwlimit_kbps=_get(raw, "bwlimit_kbps", int, path, "sync", default=0),
        bastion=bastion,
        datasync=datasync,
    )


# AWS's id shapes, checked before any call so a typo fails here, not in a rollback
AWS_ID_RE = {"vpc": re.compile(r"^vpc-[0-9a-f]{8,17}$"), "subnet": re.compile(r"^subnet-[0-9a-f]{8,17}$"), "rtb": re.compile(r"^rtb-[0-9a-f]{8,17}$"),
             "fs": re.compile(r"^fs-[0-9a-f]{8,40}$"), "fsap": re.compile(r"^fsap-[0-9a-f]{8,40}$"), "sg": re.compile(r"^sg-[0-9a-f]{8,17}$")}
STACK_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Lambda's /tmp (EphemeralStorage) and CloudWatch Logs' allowed retention values
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)


def _parse_deploy(raw, path: Path, root: Path) -> DeployConfig:
    pre = "deploy"
    if not isinstance(raw, dict):
        raise ConfigError(f"[deploy] must be a table, found {raw!r}", where=_where(path, pre), fix="write it as a [deploy] section")

    def ids(key: str, kind: str, required: bool = False) -> tuple[str, ...]:
        values = tuple(_get(raw, key, list, path, pre, default=[], required=required))
        bad = [v for v in values if not (isinstance(v, str) and AWS_ID_RE[kind].match(v))]
        if bad or (required and not values):
            raise ConfigError(f"{pre}.{key} must list {kind}-... ids, found {list(values)!r}", where=_where(path, f"{pre}.{key}"), fix=f'e.g. {key} = ["{kind}-0123456789abcdef0"]')
        return values

    def one_id(key: str, kind: str, required: bool = False) -> str:
        value = _get(raw, key, str, path, pre, default="", required=required)
        if (value or required) and not AWS_ID_RE[kind].match(value):
            raise ConfigError(f"{pre}.{key} {value!r} is not a {kind}-... id", where=_where(path, f"{pre}.{key}"), fix=f'e.g. {key} = "{kind}-0123456789abcdef0"')
        return value

    stack = _get(raw, "stack_name", str, path, pre, required=True)
    if not STACK_NAME_RE.match(stack):
        raise ConfigError(f"stack name {stack!r} must start with a letter and hold only letters, digits and -", where=_where(path, f"{pre}.stack_name"), fix='e.g. stack_name = "hoist-demo"')
    bucket = _get(raw, "artifact_bucket", str, path, pre, required=True)
    if not BUCKET_RE.match(bucket):
        raise ConfigError(f"bucket name {bucket!r} is not a valid S3 bucket name", where=_where(path, f"{pre}.artifact_bucket"), fix="3-63 lowercase letters, digits, dots and hyphens")
    subnets = ids("subnet_ids", "subnet", required=True)
    tables = ids("route_table_ids", "rtb")
    s3_endpoint = _get(raw, "s3_endpoint", bool, path, pre, default=True)
    dynamodb_endpoint = _get(raw, "dynamodb_endpoint", bool, path, pre, default=False)
    if (s3_endpoint or dynamodb_endpoint) and not tables:
        raise ConfigError(
            "a gateway endpoint (s3_endpoint/dynamodb_endpoint) needs the subnets' route tables",
            where=_where(path, f"{pre}.route_table_ids"),
            fix='list them (route_table_ids = ["rtb-..."]), or set s3_endpoint = false when the VPC already has an S3 endpoint',
        )
    storage = _get(raw, "ephemeral_storage_mb", int, path, pre, default=2048)
    if not 512 <= storage <= 10240:
        raise ConfigError(f"ephemeral_storage_mb {storage} is outside Lambda's 512-10240 MB", where=_where(path, f"{pre}.ephemeral_storage_mb"), fix="the hydrated tree lives in /tmp: 2048 fits the demo")
    retention = _get(raw, "log_retention_days", int, path, pre, default=14)
    if retention not in LOG_RETENTION_DAYS:
        raise ConfigError(f"log_retention_days {retention} is not a value CloudWatch Logs accepts", where=_where(path, f"{pre}.log_retention_days"), fix=f"one of {', '.join(map(str, LOG_RETENTION_DAYS))}")
    fs_id = one_id("file_system_id", "fs")
    ap_id = one_id("access_point_id", "fsap")
    if bool(fs_id) != bool(ap_id):
        raise ConfigError("an existing file system needs both file_system_id and access_point_id", where=_where(path, pre), fix="set both, or neither to let the stack create them")
    image = _get(raw, "smoke_image", str, path, pre, default="model/samples/digit.png")
    return DeployConfig(
        stack_name=stack,
        region=_get(raw, "region", str, path, pre, required=True),
        artifact_bucket=bucket,
        artifact_prefix=_get(raw, "artifact_prefix", str, path, pre, default="hoist").strip("/"),
        output_prefix=_get(raw, "output_prefix", str, path, pre, default="hoist/outputs").strip("/"),
        vpc_id=one_id("vpc_id", "vpc", required=True),
        subnet_ids=subnets,
        route_table_ids=tables,
        s3_endpoint=s3_endpoint,
        dynamodb_endpoint=dynamodb_endpoint,
        ephemeral_storage_mb=storage,
        log_retention_days=retention,
        posix_uid=_get(raw, "posix_uid", int, path, pre, default=1000),
        posix_gid=_get(raw, "posix_gid", int, path, pre, default=1000),
        file_system_id=fs_id,
        access_point_id=ap_id,
        mount_target_security_group_id=one_id("mount_target_security_group_id", "sg"),
        model_dir=root / _get(raw, "model_dir", str, path, pre, default="model/artifacts"),
        smoke_image=root / image,
        smoke_expect=_get(raw, "smoke_expect", str, path, pre, default="3"),
    )


# ------------------------------------------------------------ [slim], [validate] (issue 13)


def keep_line(files: list[str]) -> str:
    """The `keep = [...]` line of [slim.packages.<name>] that keeps ``files``: one glob per top folder and suffix."""
    globs = sorted({f"{f.split('/', 1)[0]}/**/*{Path(f).suffix}" if "/" in f and Path(f).suffix else f for f in files})
    return "keep = [" + ", ".join(f'"{g}"' for g in globs) + "]"


def _globs(table: dict, key: str, path: Path, prefix: str) -> tuple[str, ...]:
    values = _get(table, key, list, path, prefix, default=[])
    bad = [v for v in values if not isinstance(v, str) or not v or v.startswith("/")]
    if bad:
        raise ConfigError(f"{prefix}.{key} must list globs relative to the tree, found {bad!r}", where=_where(path, f"{prefix}.{key}"), fix='e.g. keep = ["skimage/**/*.pyi"]')
    return tuple(values)


def _parse_slim(raw: dict, path: Path, set_names: tuple[str, ...]) -> SlimConfig:
    known = {"enabled", "disable", "keep", "sets", "packages"}
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in [slim]", where=_where(path, "slim"), fix=f"use {', '.join(sorted(known))}")
    disable = _get(raw, "disable", list, path, "slim", default=[])
    if any(not isinstance(d, str) for d in disable):
        raise ConfigError(f"slim.disable must list rule names, found {disable!r}", where=_where(path, "slim.disable"), fix='e.g. disable = ["type-stubs"]')
    set_keep = {}
    for name, table in _get(raw, "sets", dict, path, "slim", default={}).items():
        if name not in set_names:
            raise ConfigError(f"[slim.sets.{name}]: no such dependency set", where=_where(path, f"slim.sets.{name}"), fix=f"use one of {', '.join(set_names)}")
        set_keep[name] = _globs(table if isinstance(table, dict) else {}, "keep", path, f"slim.sets.{name}")
    package_keep = {str(canonicalize_name(name)): _globs(table if isinstance(table, dict) else {}, "keep", path, f"slim.packages.{name}")
                    for name, table in _get(raw, "packages", dict, path, "slim", default={}).items()}
    return SlimConfig(enabled=_get(raw, "enabled", bool, path, "slim", default=True), disable=tuple(disable), keep=_globs(raw, "keep", path, "slim"),
                      set_keep=set_keep, package_keep=package_keep)


def _parse_waivers(raw: dict, path: Path) -> tuple[Waiver, ...]:
    waivers = []
    for i, table in enumerate(_get(raw, "waive", list, path, "validate", default=[])):
        prefix = f"validate.waive[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{prefix} must be a table", where=_where(path, prefix), fix='waive = [{ rule = "needed-libraries", files = "efs:pkg/_ext*.so", reason = "..." }]')
        files = _get(table, "files", str, path, prefix, required=True)
        if ":" not in files:
            raise ConfigError(f"{prefix}.files {files!r} must be <set>:<glob>, as findings name files", where=_where(path, f"{prefix}.files"), fix='e.g. files = "efs:sklearn/**/_openmp*.so"')
        reason = _get(table, "reason", str, path, prefix, required=True)
        if not reason.strip():
            raise ConfigError(f"{prefix}.reason is empty", where=_where(path, f"{prefix}.reason"), fix="say why the finding is safe to accept; it is printed on every run")
        waivers.append(Waiver(rule=_get(table, "rule", str, path, prefix, required=True), files=files, reason=reason))
    return tuple(waivers)
