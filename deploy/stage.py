"""What `invoke deploy`, `invoke rollback` and `invoke teardown` call.

Plan, confirm, apply (docs/design.md, "Deploy"). ``Deployer.plan`` changes
nothing remote except creating the change set:

1. build the target (a no-op when the locks and inputs are unchanged) and run
   validate's static checks on it;
2. read which content-addressed artifacts (handler zip, layer zip, model) the
   bucket lacks, and plan the EFS sync (which version, what is there already);
3. read the subnets' Availability Zones (one mount target per zone), render
   the template, lint it (cfn-lint + Hoist's rules), and create a change set
   against the stack's current state.

``Deployer.apply`` runs after the user confirmed (or ``--yes``): it uploads
what is missing, syncs the EFS version, executes the change set (which
publishes the release's version and leaves the alias ``live`` where it is),
tests that version directly (Lambda Invoke with the version as the Qualifier
and the API's events), and only when it passes moves the alias with a second
change set; then it smoke-tests the API and, when that fails, points the
alias back to the version that was live before. A version that failed its
test stays published and not live: the next deploy, even a no-op, tests it
again instead of moving ``live`` onto it. What is live is recorded in
``dist/deploy.json`` and in the artifact bucket. A dry run without AWS
credentials (``clients_`` None) still builds, validates, renders and lints;
what it could not check is listed in the plan (``unchecked``). Every AWS
client is passed in (``Clients``), so tests swap in stubs or moto's server.

The other stages (build, validate, sync) reach the deployer only through
``Steps``, passed in by the one composer above the stages
(``compose/deploy.py``): this module imports no other stage.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline import aws, modelfolder
from pipeline.config import Config, DeployConfig
from pipeline.console import Progress
from pipeline.errors import DeployError
from pipeline.files import atomic_write_json, atomic_write_text
from pipeline.records import BuildRecord, RecordError, load_build_record, load_manifest
from pipeline.shapes import shape_of

from . import alias, artifacts, lint, network, stack
from . import image as image_step
from .smoke import SmokeResult, check_version, smoke
from .stack import StackState
from .template import Release, dumps, promoted, render, repository_name
from .template import mount_target_zone as template_zone

DEPLOY_JSON_VERSION = 1
HISTORY = 5  # EFS versions of the last deploys, protected from efs-gc
RECORD_NAME = "deploy.json"  # dist/deploy.json and s3://<artifact_bucket>/<artifact_prefix>/deploy.json


@dataclass(frozen=True)
class Clients:
    s3: Any
    cloudformation: Any
    lambda_: Any
    efs: Any
    ec2: Any = None
    ecr: Any = None  # the image shape: the repository's images, the login token


def clients(dcfg: DeployConfig) -> Clients:
    sess = aws.session(dcfg.region)
    return Clients(*(aws.client(sess, s) for s in ("s3", "cloudformation", "lambda", "efs", "ec2", "ecr")))


def has_credentials(region: str) -> bool:
    """Whether boto3 finds credentials (environment, profile, SSO, instance role); nothing is called."""
    try:
        return aws.session(region).get_credentials() is not None
    except Exception:  # a broken profile is "no credentials" for a dry run; a real deploy reports it on its first call
        return False


@dataclass(frozen=True)
class SyncSummary:
    method: str
    version: str
    action: str  # up-to-date | transfer | resume | unknown (not checked offline)
    files: int
    bytes: int
    where: str
    done: bool = False


class Steps(Protocol):
    """What a deploy needs of the other stages; compose/deploy.py gives it (tests may give their own)."""

    def build(self, target_name: str, progress: Progress) -> BuildRecord:
        """Build the target (a no-op when unchanged) and return its record."""
        ...

    def static_errors(self, record: BuildRecord) -> list[str]:
        """validate's static checks of a build: one line per error (empty: none)."""
        ...

    def plan_sync(self, target_name: str, method: str) -> tuple[SyncSummary, Any]:
        """What syncing the build's EFS tree by ``method`` would do (reads, writes nothing), and the job to apply."""
        ...

    def apply_sync(self, job: Any, on_line: Any) -> None:
        """Apply a job plan_sync returned."""
        ...


@dataclass(frozen=True)
class DeployPlan:
    target: str
    stack_name: str
    storage_only: bool
    dry_run: bool
    release: Release | None
    artifacts: artifacts.ArtifactPlan | None
    uploaded: tuple[str, ...]
    sync: SyncSummary | None
    before: stack.StackState
    live_version: str | None  # the alias's version before this deploy
    change_set: stack.ChangeSetPlan
    template_path: Path
    warnings: tuple[str, ...] = ()
    unchecked: tuple[str, ...] = ()  # what a dry run without AWS could not check
    sync_job: Any = field(default=None, repr=False, compare=False)  # what Steps.plan_sync returned for Steps.apply_sync
    image: image_step.ImagePush | None = None  # the image shape: what apply pushes before the change set runs

    @property
    def untested(self) -> str | None:
        """The stack's published version when the alias is not on it (it failed its test, or a rollback moved the
        alias away): apply tests it again before ``live`` moves to it. None when the alias is on it, or no stack yet."""
        version = self.before.outputs.get("FunctionVersion")
        return version if version and self.live_version and version != self.live_version and not self.storage_only else None

    @property
    def has_work(self) -> bool:
        """Anything to do on apply: stack changes, missing uploads, an EFS version to sync, or a version to test and promote."""
        return (not self.change_set.empty or bool(self.artifacts and self.artifacts.missing)
                or bool(self.sync and self.sync.action != "up-to-date") or self.untested is not None or bool(self.image and self.image.digest is None))


@dataclass(frozen=True)
class DeployResult:
    plan: DeployPlan
    state: stack.StackState
    smoke: SmokeResult | None  # the failed check, or the last that passed (the API's)
    rolled_back_to: str | None = None
    record: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    version_test: SmokeResult | None = None  # the release's version invoked directly, before the alias moved
    live: str | None = None  # the version the alias is on afterwards

    @property
    def ok(self) -> bool:
        return all(r is None or r.ok for r in (self.smoke, self.version_test))


def deploy_config(config: Config) -> DeployConfig:
    if config.deploy is None:
        raise DeployError("pipeline.toml has no [deploy] section", where=f"{config.path.name}: deploy",
                          fix="add [deploy] with stack_name, region, artifact_bucket, vpc_id, subnet_ids and route_table_ids (the subnets' route tables, "
                              "for the S3 gateway endpoint; or s3_endpoint = false): docs/deploy.md, First deploy on AWS")
    return config.deploy


OFFLINE = "offline"


class Deployer:
    def __init__(self, config: Config, target_name: str | None, clients_: Clients | None, progress: Progress | None = None, *, poll_s: float = 5.0,
                 sync_method: str | None = None, steps: Steps):
        self.steps = steps
        self.config = config
        self.dcfg = deploy_config(config)
        self.tcfg = config.target(target_name)
        if self.tcfg.target.kind != "lambda":
            raise DeployError(f"target {self.tcfg.target.name!r} is not a Lambda target", where="--target", fix="deploy a [targets.*] with kind = \"lambda\"")
        self.aws = clients_
        self.progress = progress or Progress()
        self.poll_s = poll_s
        assert config.sync is not None
        self.sync_method = sync_method or config.sync.method
        self.shape = shape_of(config)

    @property
    def offline(self) -> bool:
        return self.aws is None

    def _clients(self) -> Clients:
        if self.aws is None:
            raise DeployError("no AWS credentials were found", where="deploy", fix="set AWS_PROFILE (or run aws sso login / configure-aws-credentials), or preview with --dry-run")
        return self.aws

    # -- plan: reads, renders, lints, creates the change set; nothing else changes ---------------
    def plan(self, *, storage_only: bool = False, dry_run: bool = False) -> DeployPlan:
        if self.offline and not dry_run:
            self._clients()
        unchecked: list[str] = []
        if self.aws is None:
            state = stack.StackState(name=self.dcfg.stack_name, status=None)
            unchecked.append(f"the state of stack {self.dcfg.stack_name} and its change set (CloudFormation)")
        else:
            state = stack.describe(self.aws.cloudformation, self.dcfg.stack_name)
            stack.change_set_type(state)  # a blocked stack fails here, before any work
        target_dir = self.config.build.output / self.tcfg.target.name
        target_dir.mkdir(parents=True, exist_ok=True)
        template_path = target_dir / ("template-storage.json" if storage_only else "template.json")
        if storage_only and ("FunctionName" in state.outputs or "ApiUrl" in state.outputs):
            raise DeployError(
                f"stack {self.dcfg.stack_name} holds the function and the API: a storage-only template would remove them",
                where=f"stack {self.dcfg.stack_name}", fix="run `invoke deploy` (the full template keeps the storage as it is)")
        if not self.shape.uses_efs:
            return self._plan_image(state, template_path, storage_only=storage_only, dry_run=dry_run, unchecked=unchecked)
        zones = self._zones(unchecked)
        mounts = self._live_mount_targets(state, zones)
        self._check_gateway_endpoints(state, unchecked)
        if storage_only:
            template = render(self.config, None, storage_only=True, zones=zones, live_mount_targets=mounts)
            return self._change_set(state, template, template_path, storage_only=True, dry_run=dry_run, release=None, plan_=None, sync=None,
                                    live=None, unchecked=tuple(unchecked), zones=zones, mounts=mounts)
        fs_missing = self.dcfg.creates_file_system and "FileSystemId" not in state.outputs
        if fs_missing and not dry_run:
            raise DeployError(f"stack {self.dcfg.stack_name} creates the EFS file system, and it does not exist yet: there is nowhere to sync the tree",
                              where=f"stack {self.dcfg.stack_name}",
                              fix="run `invoke deploy --storage-only` first, set up the writers (docs/deploy.md, First deploy on AWS), then `invoke deploy`; "
                                  "or set deploy.file_system_id/access_point_id")
        if fs_missing:
            unchecked.append("the EFS side: the stack's file system does not exist yet" + (" (or could not be read offline)" if self.offline else "")
                             + ", so the sync is not planned; `invoke deploy --storage-only` creates it")
        mismatch = datasync_mismatch(self.config, state.outputs) if self.sync_method == "datasync" else []
        if mismatch:
            raise DeployError("[sync.datasync] names another file system or access point than the stack's: " + "; ".join(mismatch)
                              + " (after a teardown and deploy, the stack's file system is a new one)", where="[sync.datasync]",
                              fix="copy the stack's outputs into [sync.datasync]: file_system_arn (FileSystemId), access_point_arn (WriterAccessPointArn)")
        self._smoke_sample()  # the model folder's contract (and its sample) before any work
        record = self._build_and_validate()
        plan_ = self._artifacts(record, unchecked)
        sync, job = self._plan_sync(record, unchecked, reach=not fs_missing)
        target = self.tcfg.target
        release = Release(runtime=target.runtime or "", arch=target.arch or "", function_key=plan_.function_key, layer_key=plan_.layer_key,
                          efs_version=record.sets["efs"].identity, model_prefix=plan_.model_prefix)
        live = alias.current(self.aws.lambda_, self.config.function.name) if self.aws is not None and state.exists else None
        key = None
        if self.aws is None:
            unchecked.append(f"whether s3://{self.dcfg.artifact_bucket} encrypts with a KMS key the function's role must decrypt the model with")
        else:
            key = artifacts.model_key_arn(self.aws.s3, self.dcfg.artifact_bucket, self.dcfg.region)
        # the alias stays where it is until the release's version passed its own test (apply promotes it)
        template = render(self.config, release, zones=zones, live_mount_targets=mounts, model_key_arn=key, live_version=live)
        return self._change_set(state, template, template_path, storage_only=False, dry_run=dry_run, release=release, plan_=plan_, sync=sync, live=live,
                                warnings=record.warnings + self._local_sync_warning(), unchecked=tuple(unchecked), sync_job=job, zones=zones, mounts=mounts)

    def _plan_image(self, state: StackState, template_path: Path, *, storage_only: bool, dry_run: bool, unchecked: list[str]) -> DeployPlan:
        """The image shape: the repository first (``--storage-only``, as the file system for EFS), then the image the
        registry holds or will hold, then the function pinned by its digest. Reads only: apply pushes."""
        if storage_only:
            template = render(self.config, None, storage_only=True)
            return self._change_set(state, template, template_path, storage_only=True, dry_run=dry_run, release=None, plan_=None, sync=None,
                                    live=None, unchecked=tuple(unchecked))
        repository = state.outputs.get("RepositoryUri", "")
        if not repository and not dry_run:
            raise DeployError(f"stack {self.dcfg.stack_name} has no image repository yet: there is nowhere to push the image, and the function "
                              "cannot be created before its image is in the repository", where=f"stack {self.dcfg.stack_name}",
                              fix="run `invoke deploy --storage-only` first (it creates the repository), then `invoke deploy`")
        self._smoke_sample()
        record = self._build_and_validate()
        if record.image is None:
            raise DeployError(f"the build of target {self.tcfg.target.name} has no image", where=str(record.path),
                              fix=f'run `invoke build --target {self.tcfg.target.name}` ([function] package = "image" builds one)')
        tag = record.image.tag.rsplit(":", 1)[1]
        digest = None
        if self.aws is None or not repository:
            unchecked.append(f"whether the repository holds image {tag} already (it is listed as to push; the function is pinned by the digest the push reports)")
        else:
            self.progress.step(f"reading whether {repository} holds image {tag}")
            digest = image_step.registry_digest(self.aws.ecr, repository_name(self.config), tag)
        push = image_step.ImagePush(record=record.image, repository=repository, digest=digest)
        target = self.tcfg.target
        # until the push says, the digest is the image's config digest: the change set is made again with the registry's (apply)
        uri = f"{repository or '<RepositoryUri>'}@{digest or record.image.config_digest}"
        release = Release(runtime=target.runtime or "", arch=target.arch or "", function_key="", layer_key=None, efs_version="", model_prefix="", image_uri=uri)
        live = alias.current(self.aws.lambda_, self.config.function.name) if self.aws is not None and state.exists else None
        template = render(self.config, release, live_version=live)
        plan = self._change_set(state, template, template_path, storage_only=False, dry_run=dry_run, release=release, plan_=None, sync=None, live=live,
                                warnings=record.warnings, unchecked=tuple(unchecked))
        return dataclasses.replace(plan, image=push)

    def _push(self, plan: DeployPlan) -> DeployPlan:
        """Push the image, then pin what the registry reports: when its digest is not the one planned with, the change set
        is made again with it and must touch the same resources as the one confirmed (the version's id aside)."""
        assert plan.image is not None and plan.release is not None and self.aws is not None
        self.progress.step(f"logging in to {plan.image.repository.split('/', 1)[0]} (ECR GetAuthorizationToken)")
        image_step.ecr_login(self.aws.ecr)
        self.progress.step(f"pushing image {plan.image.tag} to {plan.image.repository} (layers the registry holds are not sent)")
        pushed = image_step.push(plan.image.record, plan.image.repository, on_line=self.progress.line)
        pushed_image = dataclasses.replace(plan.image, digest=pushed.digest)
        if plan.release.image_uri == pushed.uri:
            return dataclasses.replace(plan, image=pushed_image)
        release = dataclasses.replace(plan.release, image_uri=pushed.uri)
        template = render(self.config, release, live_version=plan.live_version)
        stack.discard(self.aws.cloudformation, plan.change_set)
        again = self._change_set(plan.before, template, plan.template_path, storage_only=False, dry_run=False, release=release, plan_=None, sync=None,
                                 live=plan.live_version, warnings=plan.warnings, unchecked=plan.unchecked)
        if _change_shape(again.change_set) != _change_shape(plan.change_set):
            stack.discard(self.aws.cloudformation, again.change_set)
            raise DeployError("with the registry's digest the change set changes other resources than the one confirmed; it was deleted, nothing changed "
                              "(the image stays pushed)", where=f"stack {self.dcfg.stack_name}", fix="run `invoke deploy` again: the plan then pins the pushed digest")
        return dataclasses.replace(again, image=pushed_image)

    def _local_sync_warning(self) -> tuple[str, ...]:
        """sync method local writes a folder on this machine: right only where that folder is the stack's file system, mounted here."""
        if self.sync_method != "local":
            return ()
        return (f"sync method local writes the EFS version into {self.config.sync.local_path} on this machine: that must be the stack's file "
                "system mounted here through the writer access point, or the function finds nothing; otherwise set [sync] method = "
                '"bastion" or "datasync" (docs/deploy.md, First deploy on AWS), or pass --sync-method',)

    def _zones(self, unchecked: list[str]) -> dict[str, str] | None:
        if not self.dcfg.creates_file_system:
            return None
        if self.aws is None or self.aws.ec2 is None:
            unchecked.append("the subnets' Availability Zones (EC2 DescribeSubnets): one mount target per subnet was assumed; "
                             "two subnets in one zone get one mount target")
            return None
        self.progress.step(f"reading the Availability Zones of {len(self.dcfg.subnet_ids)} subnet(s)")
        return network.subnet_zones(self.aws.ec2, self.dcfg.subnet_ids, self.dcfg.region)

    def _live_mount_targets(self, state: StackState, zones: dict[str, str] | None) -> dict[str, str] | None:
        """Zone -> subnet of the stack's file system's mount targets now: each zone keeps its subnet (deploy/network.py)."""
        fs = state.outputs.get("FileSystemId")
        if not self.dcfg.creates_file_system or zones is None or self.aws is None or not fs:
            return None
        self.progress.step(f"reading the mount targets of {fs} (a zone keeps its subnet)")
        return network.live_mount_targets(self.aws.efs, fs)

    def _check_gateway_endpoints(self, state: StackState, unchecked: list[str]) -> None:
        """s3_endpoint/dynamodb_endpoint on route tables that already route the service through another endpoint: refused here."""
        wanted = tuple(s for s in ("s3_endpoint", "dynamodb_endpoint") if getattr(self.dcfg, s))
        if not wanted:
            return
        if self.aws is None or self.aws.ec2 is None:
            unchecked.append("whether the route tables already route S3/DynamoDB through another gateway endpoint (EC2 DescribeVpcEndpoints)")
            return
        own = {r[2] for r in self._stack_resources(state) if r[1] == "AWS::EC2::VPCEndpoint"}
        conflicts = network.gateway_endpoint_conflicts(self.aws.ec2, self.dcfg.vpc_id, self.dcfg.route_table_ids, self.dcfg.region, wanted, own)
        if conflicts:
            lines = "; ".join(f"{ep} already routes {network.GATEWAY_SERVICES[setting]} for {', '.join(tables)}" for setting, ep, tables in conflicts)
            settings = sorted({setting for setting, _, _ in conflicts})
            raise DeployError(f"the VPC has gateway endpoints on these route tables already ({lines}): a route table holds one route per "
                              "service prefix list, so the stack's own endpoint would fail", where=f"[deploy] {', '.join(settings)}",
                              fix=" and ".join(f"set {s} = false" for s in settings) + " in [deploy]: the function reaches the service through the existing endpoint "
                                  "(check its policy admits the artifact bucket)")

    def _stack_resources(self, state: StackState) -> list[tuple[str, str, str]]:
        if self.aws is None or not state.exists:
            return []
        return [(r["LogicalResourceId"], r["ResourceType"], r.get("PhysicalResourceId", "")) for r in stack.resources(self.aws.cloudformation, state.name)]

    def _change_set(self, state, template, template_path, *, storage_only, dry_run, release, plan_, sync, live, warnings=(), unchecked=(), sync_job=None,
                    zones=None, mounts=None) -> DeployPlan:
        body = dumps(template)
        atomic_write_text(template_path, body)
        self.progress.step(f"linting {template_path.name} (cfn-lint + deploy/lint_rules)")
        findings = lint.check(template, self.dcfg.region, str(template_path.relative_to(self.config.root)) if template_path.is_relative_to(self.config.root) else str(template_path))
        warnings = warnings + tuple(f"cfn-lint {f}" for f in findings)
        if self.aws is None:
            cs = stack.ChangeSetPlan(stack=self.dcfg.stack_name, change_set_type=OFFLINE, change_set_id=None, changes=())
        else:
            self.progress.step(f"creating a change set for stack {self.dcfg.stack_name} ({stack.change_set_type(state)})")
            cs = stack.plan(self.aws.cloudformation, state, body, description=f"hoist deploy of {self.tcfg.target.name}" + (f", efs {release.efs_version[:16]}" if release else ""),
                            poll_s=min(self.poll_s, 2.0), role_arn=self.dcfg.cloudformation_role_arn)
            self._refuse_mount_target_replacement(cs, zones, mounts)
        if not self.dcfg.cloudformation_role_arn:
            warnings += ("no deploy.cloudformation_role_arn: CloudFormation acts with your own credentials, which then need the right to "
                         "create roles (docs/permissions.md, The deployer's permissions); set it to the bootstrap stack's CloudFormationRoleArn",)
        return DeployPlan(target=self.tcfg.target.name, stack_name=self.dcfg.stack_name, storage_only=storage_only, dry_run=dry_run, release=release,
                          artifacts=plan_, uploaded=(), sync=sync, before=state, live_version=live, change_set=cs, template_path=template_path,
                          warnings=warnings, unchecked=tuple(unchecked), sync_job=sync_job)

    def _refuse_mount_target_replacement(self, cs: stack.ChangeSetPlan, zones, mounts) -> None:
        assert self.aws is not None
        problems = stack.mount_target_conflicts(cs, set(mounts or {}), lambda logical: template_zone(logical, zones))
        if not problems:
            return
        stack.discard(self.aws.cloudformation, cs)
        where = ", ".join(f"{zone}: {subnet}" for zone, subnet in sorted((mounts or {}).items()))
        raise DeployError("the change set would create a second mount target in a zone, which EFS refuses (one per Availability Zone): " + "; ".join(problems)
                          + "; the change set was deleted, nothing changed", where=f"stack {self.dcfg.stack_name}",
                          fix=f"keep each zone's mount target subnet in deploy.subnet_ids ({where}); to move a zone to another subnet, delete its mount "
                              "target first (aws efs delete-mount-target --mount-target-id <id>; the function loses its mount in that zone meanwhile), then deploy")

    def _build_and_validate(self) -> BuildRecord:
        self.progress.step(f"building {self.tcfg.target.describe()} (reused when the locks are unchanged)")
        record = self.steps.build(self.tcfg.target.name, self.progress)
        self.progress.step("validating the trees (static checks)")
        errors = self.steps.static_errors(record)
        if errors:
            shown = errors[:10]
            more = len(errors) - len(shown)
            raise DeployError(f"validation found {len(errors)} error(s); nothing was uploaded, synced or changed:\n  " + "\n  ".join(shown)
                              + (f"\n  ... and {more} more" if more > 0 else ""),
                              where=f"target {self.tcfg.target.name}", fix=f"run `invoke validate --target {self.tcfg.target.name}` for the report, fix it, deploy again")
        return record

    def _artifacts(self, record: BuildRecord, unchecked: list[str]) -> artifacts.ArtifactPlan:
        arts = record.artifacts
        fn = (arts["function_zip"].path, arts["function_zip"].sha256)
        layer = (arts["layer_zip"].path, arts["layer_zip"].sha256) if "layer_zip" in arts else None
        model_dir = self.dcfg.model_dir or self.config.root / "model" / "artifacts"  # config.load always sets it
        if self.aws is None:
            unchecked.append(f"which artifacts s3://{self.dcfg.artifact_bucket}/{self.dcfg.artifact_prefix}/ holds already (all are listed as to upload)")
            return artifacts.plan_artifacts(None, self.dcfg.artifact_bucket, self.dcfg.artifact_prefix, fn, layer, model_dir)
        self.progress.step(f"checking artifacts in s3://{self.dcfg.artifact_bucket}/{self.dcfg.artifact_prefix}/")
        return artifacts.plan_artifacts(self.aws.s3, self.dcfg.artifact_bucket, self.dcfg.artifact_prefix, fn, layer, model_dir)

    def _plan_sync(self, record: BuildRecord, unchecked: list[str], reach: bool = True) -> tuple[SyncSummary, Any]:
        """What the sync will do (reads the EFS side or the staging bucket; writes nothing). ``reach`` False: the
        file system does not exist yet, so only the version is named."""
        method, target = self.sync_method, self.tcfg.target.name
        if not reach or (self.offline and method != "local"):
            if "efs" not in record.sets:
                raise DeployError(f"the build of target {target} has no EFS set", where=str(record.path), fix=f"run `invoke build --target {target}`")
            efs = load_manifest(record.sets["efs"].manifest)
            cost = efs.hot_set_cost()
            if cost:  # checked by the sync's plan where it is reached; said here where it is not
                unchecked.append(f"{cost}; a real deploy refuses it unless --no-hot-set")
            if reach:
                unchecked.append(f"whether EFS version {efs.identity[:16]} is on the file system already ({method} is not reached offline)")
            why = "not reached offline" if reach else "no file system yet"
            return SyncSummary(method, efs.identity, "unknown", efs.files_count, efs.bytes, f"{method} ({why})"), None
        return self.steps.plan_sync(target, method)

    def _apply_sync(self, plan: DeployPlan) -> SyncSummary | None:
        if plan.sync is None or plan.sync_job is None or plan.sync.action == "up-to-date":
            return plan.sync
        self.progress.step(f"syncing EFS version {plan.sync.version[:16]} ({plan.sync.files:,} files) via {plan.sync.method} to {plan.sync.where}")
        self.steps.apply_sync(plan.sync_job, self.progress.line)
        return dataclasses.replace(plan.sync, done=True)

    def discard(self, plan: DeployPlan) -> None:
        if self.aws is not None:
            stack.discard(self.aws.cloudformation, plan.change_set)

    def _smoke_sample(self) -> tuple[Path, str]:
        """What the smoke test classifies and expects: [deploy] smoke_image/smoke_expect, else the model folder's sample.json."""
        assert self.dcfg.model_dir is not None
        found = modelfolder.sample(self.dcfg.model_dir)
        if self.dcfg.smoke_image is not None:
            return self.dcfg.smoke_image, self.dcfg.smoke_expect
        if found is None:
            raise DeployError("the model folder has no sample.json, so the smoke test has no image and label to check", where=str(self.dcfg.model_dir / "sample.json"),
                              fix='add sample.json ({"image": "sample.jpg", "label": "<its label>"}) beside an image, or set [deploy] smoke_image and smoke_expect')
        return found

    # -- apply: after the user confirmed ------------------------------------------------------
    def apply(self, plan: DeployPlan, *, smoke_test: bool = True) -> DeployResult:
        if plan.dry_run:
            raise DeployError("a dry-run plan cannot be applied", where="deploy", fix="plan again without --dry-run")
        c = self._clients()
        cfn, lam = c.cloudformation, c.lambda_
        if plan.image is not None and plan.image.digest is None:  # the image before the function that runs it
            plan = self._push(plan)
        if plan.artifacts and plan.artifacts.missing:
            self.progress.step(f"uploading {len(plan.artifacts.missing)} of {len(plan.artifacts.uploads)} artifacts to s3://{plan.artifacts.bucket}")
            uploaded = tuple(u.name for u in artifacts.upload(c.s3, plan.artifacts, on_line=self.progress.line))
            plan = dataclasses.replace(plan, uploaded=uploaded)
        # the version is on EFS, verified and marked, before the function points at it
        plan = dataclasses.replace(plan, sync=self._apply_sync(plan))
        if plan.change_set.empty:
            self.progress.step(f"stack {plan.stack_name}: no changes")
        else:
            self.progress.step(f"executing change set ({len(plan.change_set.changes)} changes)")
        state = stack.execute(cfn, plan.change_set, on_event=self.progress.event, poll_s=self.poll_s)
        if plan.storage_only:
            return DeployResult(plan=plan, state=state, smoke=None)
        function, candidate = state.outputs.get("FunctionName", self.config.function.name), state.outputs.get("FunctionVersion")
        live = alias.current(lam, function)
        notes: list[str] = []
        tested = None
        if smoke_test:  # one sample and one read of the build's manifest for both tests
            image, expect = self._smoke_sample()
            archives = self._has_archives()
        if candidate and live and candidate != live:
            # the release's version is published, the alias still on the live one: test the version itself first
            if smoke_test:
                self.progress.step(f"testing version {candidate} directly (Invoke, Qualifier {candidate}, the API's events) before {alias.ALIAS} moves from {live}")
                tested = check_version(lam, function, candidate, image, expect, on_line=self.progress.line, archives=archives)
                if not tested.ok:
                    notes.append(f"version {candidate} failed its test: alias {alias.ALIAS} stays on version {live}; the next deploy tests it again "
                                 "(or publishes a fixed release)")
                    record = self._record(plan, state, tested, None, live)
                    return DeployResult(plan=plan, state=state, smoke=None, version_test=tested, record=record, notes=tuple(notes), live=live)
            state = self._promote(plan, state, candidate)
            notes.append(f"alias {alias.ALIAS} moved from version {live} to {candidate}" + (" after its test passed" if tested else " (not tested: --no-smoke)"))
        result = None
        rolled_back = None
        if smoke_test:
            self.progress.step(f"smoke test: {state.outputs.get('ApiUrl')}")
            result = smoke(state.outputs["ApiUrl"], image, expect, on_line=self.progress.line, archives=archives)
            if not result.ok and live and live != candidate:
                self.progress.step(f"smoke test failed: pointing {alias.ALIAS} back to version {live}")
                alias.point(lam, function, live)
                rolled_back = live
        now = rolled_back or candidate or live
        record = self._record(plan, state, result, rolled_back, now)
        return DeployResult(plan=plan, state=state, smoke=result, rolled_back_to=rolled_back, record=record, notes=tuple(notes), version_test=tested, live=now)

    def _promote(self, plan: DeployPlan, state: stack.StackState, version: str) -> stack.StackState:
        """Move the alias to ``version`` through the stack: a second change set of the same template with the alias
        on it (deploy/template.py, ``promoted``), so the stack keeps naming what is live and a later deploy's change
        set is empty. Checked afterwards with GetAlias."""
        assert self.aws is not None
        body = dumps(promoted(json.loads(plan.template_path.read_text()), version))
        atomic_write_text(plan.template_path, body)  # what the stack now holds: the next plan renders the same
        self.progress.step(f"promoting version {version}: a change set that moves alias {alias.ALIAS} only")
        cs = stack.plan(self.aws.cloudformation, state, body, description=f"hoist promote version {version} to {alias.ALIAS}",
                        poll_s=min(self.poll_s, 2.0), role_arn=self.dcfg.cloudformation_role_arn)
        others = [c.logical_id for c in cs.changes if c.logical_id != "LiveAlias"]
        if others:
            stack.discard(self.aws.cloudformation, cs)
            raise DeployError(f"the promotion's change set would change more than the alias: {', '.join(others)}; it was deleted, the alias did not move",
                              where=f"stack {self.dcfg.stack_name}", fix="the stack changed since the deploy's change set ran: run `invoke deploy` again")
        state = stack.execute(self.aws.cloudformation, cs, on_event=self.progress.event, poll_s=self.poll_s)
        function = state.outputs.get("FunctionName", self.config.function.name)
        now = alias.current(self.aws.lambda_, function)
        if now != version:
            raise DeployError(f"alias {alias.ALIAS} is on version {now}, not {version}, after the promotion", where=f"lambda {function}",
                              fix="run `invoke deploy` again: it tests the version and promotes it")
        return state

    def _has_archives(self) -> bool:
        """Whether the built EFS version has archives: then its init must hydrate (the smoke test checks it)."""
        try:
            record = load_build_record(self.config.build_json(self.tcfg.target.name), self.config.root)
            return bool(load_manifest(record.sets["efs"].manifest).archive_index)
        except (OSError, KeyError, RecordError):
            return False

    def _record(self, plan: DeployPlan, state: stack.StackState, result: SmokeResult | None, rolled_back: str | None, live: str | None) -> Path:
        """What is live, for CI, rollback and efs-gc (which keeps these versions): dist/deploy.json, and the same
        document in the artifact bucket, so a CI run (whose dist/ is gone) and the bastion read the same history."""
        assert plan.release is not None and self.aws is not None
        path = self.config.build.output / RECORD_NAME
        old_local = json.loads(path.read_text()) if path.is_file() else {}
        old_remote = read_remote_record(self.dcfg, self.aws.s3) or {}
        earlier = [*old_remote.get("efs_history", []), *old_local.get("efs_history", [])]
        own = [plan.release.efs_version] if plan.release.efs_version else []  # an image has no EFS version
        history = own + [v for i, v in enumerate(earlier) if v != plan.release.efs_version and v not in earlier[:i]]
        doc = {
            "version": DEPLOY_JSON_VERSION,
            "stack": plan.stack_name,
            "target": plan.target,
            "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "outputs": state.outputs,
            "efs_version": plan.release.efs_version,
            "function_key": plan.release.function_key,
            "layer_key": plan.release.layer_key,
            "model_prefix": plan.release.model_prefix,
            "image_uri": plan.release.image_uri,
            "smoke": None if result is None else {"ok": result.ok, "message": result.message, "label": result.label, "seconds": result.seconds},
            "rolled_back_to": rolled_back,
            "live_version": live,  # the alias's version afterwards (the stack's FunctionVersion is the release's, tested or not)
            "efs_history": history[:HISTORY],
        }
        body = atomic_write_json(path, doc, sort_keys=True)
        aws.call(self.aws.s3, "put_object", error=DeployError, context="artifact-bucket", Bucket=self.dcfg.artifact_bucket, Key=record_key(self.dcfg),
                 Body=body.encode(), ContentType="application/json")
        return path


def _change_shape(cs: stack.ChangeSetPlan) -> set[tuple[str, str, str]]:
    """What a change set does, with the published version's logical id (named by a hash of the release) made generic."""
    return {(c.action, "FunctionVersion" if c.logical_id.startswith("FunctionVersion") else c.logical_id, c.resource_type) for c in cs.changes}


def datasync_mismatch(config: Config, outputs: dict[str, str]) -> list[str]:
    """Where [sync.datasync] and the stack disagree on the file system or the writer access point (empty: they agree,
    or the stack does not say): DataSync would write a version where the function does not look."""
    ds = config.sync.datasync if config.sync else None
    if ds is None:
        return []
    found = []
    fs = outputs.get("FileSystemId")
    if fs and ds.file_system_arn.rsplit("/", 1)[-1] != fs:
        found.append(f"file_system_arn {ds.file_system_arn} is not the stack's {fs}")
    ap = outputs.get("WriterAccessPointArn")
    if ap and ds.access_point_arn != ap:
        found.append(f"access_point_arn {ds.access_point_arn} is not the stack's WriterAccessPointArn {ap}")
    return found


def record_key(dcfg: DeployConfig) -> str:
    return f"{dcfg.artifact_prefix}/{RECORD_NAME}"


def read_remote_record(dcfg: DeployConfig, s3) -> dict | None:
    """The record in the artifact bucket; None when there is none yet."""
    got = aws.call(s3, "get_object", error=DeployError, context="artifact-bucket", absent=("NoSuchKey", "404"), Bucket=dcfg.artifact_bucket, Key=record_key(dcfg))
    return None if got is None else json.loads(got["Body"].read())


def protected_versions(config: Config, s3=None) -> set[str]:
    """EFS versions the recent deploys use: efs-gc keeps them. Read from dist/deploy.json and, given an S3
    client, from the record in the artifact bucket (what a CI release wrote); a bucket that cannot be read
    is an error, never "nothing is protected"."""
    path = config.build.output / RECORD_NAME
    found = set(json.loads(path.read_text()).get("efs_history", [])) if path.is_file() else set()
    if s3 is not None and config.deploy is not None:
        found |= set((read_remote_record(config.deploy, s3) or {}).get("efs_history", []))
    return found


# -- rollback and teardown -------------------------------------------------
def plan_rollback(config: Config, clients_: Clients, to: str | None = None, efs_present=None) -> alias.AliasMove:
    """Where rollback would move the alias; refused when the target mounts a replaced access point (the stack's
    AccessPointArn now) or when ``efs_present`` says its EFS version was collected."""
    dcfg = deploy_config(config)
    current = stack.describe(clients_.cloudformation, dcfg.stack_name).outputs.get("AccessPointArn")
    return alias.plan_rollback(clients_.lambda_, config.function.name, to, access_point_arn=current, efs_present=efs_present)


def apply_rollback(config: Config, clients_: Clients, move: alias.AliasMove) -> alias.AliasMove:
    alias.point(clients_.lambda_, move.function, move.to.version)
    now = alias.current(clients_.lambda_, move.function)
    if now != move.to.version:
        raise DeployError(f"the alias points at {now}, not {move.to.version}, after the update", where=f"lambda {move.function}", fix="run `invoke rollback` again")
    return move


@dataclass(frozen=True)
class TeardownPlan:
    stack: str
    state: StackState
    removed: tuple[tuple[str, str, str], ...]  # (logical id, type, physical id)
    retained: tuple[tuple[str, str, str], ...]
    delete_data: bool
    file_system_id: str | None  # the stack's own file system (deleted only with delete_data)


# DeletionPolicy Retain in the template; function versions go with the function regardless
RETAINED_TYPES = {"AWS::EFS::FileSystem", "AWS::Lambda::LayerVersion", "AWS::ECR::Repository"}


def plan_teardown(config: Config, clients_: Clients, delete_data: bool = False) -> TeardownPlan:
    dcfg = deploy_config(config)
    cfn = clients_.cloudformation
    state = stack.describe(cfn, dcfg.stack_name)
    if state.status is None:
        raise DeployError(f"stack {dcfg.stack_name} does not exist", where=f"stack {dcfg.stack_name}", fix="nothing to tear down; check deploy.stack_name and deploy.region")
    rows = [(r["LogicalResourceId"], r["ResourceType"], r.get("PhysicalResourceId", "")) for r in stack.resources(cfn, dcfg.stack_name)]
    retained = tuple(r for r in rows if r[1] in RETAINED_TYPES)
    removed = tuple(r for r in rows if r not in retained)
    fs = next((r[2] for r in rows if r[1] == "AWS::EFS::FileSystem"), None)
    return TeardownPlan(stack=dcfg.stack_name, state=state, removed=removed, retained=retained, delete_data=delete_data, file_system_id=fs)


def layer_name(config: Config) -> str:
    return f"{config.function.name}-deps"  # deploy/template.py names the layer so


def layer_versions(lam, name: str) -> list[str]:
    """Every version ARN of the stack's layer (paginated); none when the layer does not exist."""
    return [v["LayerVersionArn"] for v in aws.pages(lam, "list_layer_versions", "LayerVersions", error=DeployError, LayerName=name)]


def apply_teardown(config: Config, clients_: Clients, plan: TeardownPlan, progress: Progress | None = None, poll_s: float = 5.0) -> list[str]:
    """Delete the stack; then the layer versions it retained, and with delete_data the file system."""
    progress = progress or Progress()
    progress.step(f"deleting stack {plan.stack}")
    stack.delete(clients_.cloudformation, plan.stack, on_event=progress.event, poll_s=poll_s)
    done = [f"stack {plan.stack}"]
    # every release retained its layer version (rollbacks need them), not only the one the stack lists now
    for arn in layer_versions(clients_.lambda_, layer_name(config)):
        name, _, number = arn.rpartition(":")
        aws.call(clients_.lambda_, "delete_layer_version", error=DeployError, LayerName=name, VersionNumber=int(number))
        done.append(f"layer version {arn}")
    if plan.delete_data and plan.file_system_id:
        done += _delete_file_system(clients_.efs, plan.file_system_id, progress, poll_s)
    repository = next((r[2] for r in plan.retained if r[1] == "AWS::ECR::Repository"), None)
    if plan.delete_data and repository and clients_.ecr is not None:  # its images go with it (force)
        aws.call(clients_.ecr, "delete_repository", error=DeployError, context="ecr", repositoryName=repository, force=True)
        done.append(f"image repository {repository} (its images are gone)")
    return done


def _delete_file_system(efs, fs_id: str, progress: Progress, poll_s: float) -> list[str]:
    call = lambda op, **kw: aws.call(efs, op, error=DeployError, **kw)  # noqa: E731
    done = []
    for ap in call("describe_access_points", FileSystemId=fs_id).get("AccessPoints", []):
        call("delete_access_point", AccessPointId=ap["AccessPointId"])
        done.append(f"access point {ap['AccessPointId']}")
    for mt in call("describe_mount_targets", FileSystemId=fs_id).get("MountTargets", []):
        call("delete_mount_target", MountTargetId=mt["MountTargetId"])
        done.append(f"mount target {mt['MountTargetId']}")
    for _ in range(120):  # a file system with mount targets cannot be deleted
        if not call("describe_mount_targets", FileSystemId=fs_id).get("MountTargets"):
            break
        progress.line(f"waiting for the mount targets of {fs_id} to go")
        time.sleep(poll_s)
    call("delete_file_system", FileSystemId=fs_id)
    done.append(f"file system {fs_id} (its data is gone)")
    return done

