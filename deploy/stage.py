"""What `invoke deploy`, `invoke rollback` and `invoke teardown` call.

``Deployer.plan`` reads like the recipe (docs/design.md, "Deploy"):

1. build the target (a no-op when the locks and inputs are unchanged) and run
   validate's static checks on it;
2. plan the content-addressed uploads (handler zip, layer zip, model) and
   upload what the bucket lacks;
3. sync the EFS tree as an immutable version (sync stage, configured method);
4. render the template, lint it (cfn-lint + Hoist's rules), and create a change
   set against the stack's current state.

With ``dry_run`` steps 2 and 3 only report what they would do, and the change
set is discarded after it is shown. ``Deployer.apply`` executes the change set,
streams stack events, smoke-tests the API and, when that fails, points the
alias back to the version that was live before. Every AWS client is passed in
(``Clients``), so tests swap in stubs or moto's server.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.build import Progress as BuildProgress
from pipeline import aws, modelfolder
from pipeline.config import Config, DeployConfig
from pipeline.errors import DeployError

from . import alias, artifacts, lint, stack
from .smoke import SmokeResult, smoke
from .template import Release, dumps, render

DEPLOY_JSON_VERSION = 1
HISTORY = 5  # EFS versions of the last deploys, protected from efs-gc


@dataclass(frozen=True)
class Clients:
    s3: object
    cloudformation: object
    lambda_: object
    efs: object


def clients(dcfg: DeployConfig) -> Clients:
    sess = aws.session(dcfg.region)
    return Clients(*(aws.client(sess, s) for s in ("s3", "cloudformation", "lambda", "efs")))


class Progress(BuildProgress):
    """What the deployer reports: the build's steps and lines, and the stack's events."""

    def event(self, ev: dict) -> None:
        pass


@dataclass(frozen=True)
class SyncSummary:
    method: str
    version: str
    action: str  # up-to-date | transfer | resume | (datasync's actions)
    files: int
    bytes: int
    where: str
    done: bool = False


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


@dataclass(frozen=True)
class DeployResult:
    plan: DeployPlan
    state: stack.StackState
    smoke: SmokeResult | None
    rolled_back_to: str | None = None
    record: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.smoke is None or self.smoke.ok


def deploy_config(config: Config) -> DeployConfig:
    if config.deploy is None:
        raise DeployError("pipeline.toml has no [deploy] section", where=f"{config.path.name}: deploy",
                          fix="add [deploy] with stack_name, region, artifact_bucket, vpc_id and subnet_ids (README, Deploy)")
    return config.deploy


class Deployer:
    def __init__(self, config: Config, target_name: str | None, clients_: Clients, progress: Progress | None = None, *, poll_s: float = 5.0):
        self.config = config
        self.dcfg = deploy_config(config)
        self.tcfg = config.target(target_name)
        if self.tcfg.target.kind != "lambda":
            raise DeployError(f"target {self.tcfg.target.name!r} is not a Lambda target", where="--target", fix="deploy a [targets.*] with kind = \"lambda\"")
        self.aws = clients_
        self.progress = progress or Progress()
        self.poll_s = poll_s

    # -- plan ------------------------------------------------------------
    def plan(self, *, storage_only: bool = False, dry_run: bool = False) -> DeployPlan:
        state = stack.describe(self.aws.cloudformation, self.dcfg.stack_name)
        stack.change_set_type(state)  # a blocked stack fails here, before any work
        target_dir = self.config.build.output / self.tcfg.target.name
        target_dir.mkdir(parents=True, exist_ok=True)
        template_path = target_dir / ("template-storage.json" if storage_only else "template.json")
        if storage_only:
            template = render(self.config, None, storage_only=True)
            return self._change_set(state, template, template_path, storage_only=True, dry_run=dry_run, release=None, plan_=None, uploaded=(), sync=None, live=None)
        if self.dcfg.creates_file_system and "FileSystemId" not in state.outputs:
            raise DeployError(
                f"stack {self.dcfg.stack_name} creates the EFS file system, and it does not exist yet: there is nowhere to sync the tree",
                where=f"stack {self.dcfg.stack_name}",
                fix="run `invoke deploy --storage-only` first, mount the new file system where sync reaches it "
                    "(sync.bastion.efs_path, or sync.datasync.file_system_arn), then `invoke deploy`; or set deploy.file_system_id/access_point_id",
            )
        self._smoke_sample()  # the model folder's contract (and its sample) before any work
        build_doc = self._build_and_validate()
        plan_ = self._artifacts(build_doc)
        uploaded = ()
        if not dry_run:
            self.progress.step(f"uploading {len(plan_.missing)} of {len(plan_.uploads)} artifacts to s3://{plan_.bucket}")
            uploaded = tuple(u.name for u in artifacts.upload(self.aws.s3, plan_, on_line=self.progress.line))
        sync = self._sync(dry_run)
        target = self.tcfg.target
        release = Release(runtime=target.runtime, arch=target.arch, function_key=plan_.function_key, layer_key=plan_.layer_key,
                          efs_version=build_doc["sets"]["efs"]["content_hash"], model_prefix=plan_.model_prefix)
        live = alias.current(self.aws.lambda_, self.config.function.name) if state.exists else None
        template = render(self.config, release)
        return self._change_set(state, template, template_path, storage_only=False, dry_run=dry_run, release=release, plan_=plan_,
                                uploaded=uploaded, sync=sync, live=live, warnings=tuple(build_doc.get("warnings", ())))

    def _change_set(self, state, template, template_path, *, storage_only, dry_run, release, plan_, uploaded, sync, live, warnings=()) -> DeployPlan:
        body = dumps(template)
        tmp = template_path.with_name(template_path.name + ".tmp")
        tmp.write_text(body)
        tmp.replace(template_path)
        self.progress.step(f"linting {template_path.name} (cfn-lint + deploy/lint_rules)")
        findings = lint.check(template, self.dcfg.region, str(template_path.relative_to(self.config.root)) if template_path.is_relative_to(self.config.root) else str(template_path))
        warnings = warnings + tuple(f"cfn-lint {f}" for f in findings)
        self.progress.step(f"creating a change set for stack {self.dcfg.stack_name} ({stack.change_set_type(state)})")
        cs = stack.plan(self.aws.cloudformation, state, body, description=f"hoist deploy of {self.tcfg.target.name}" + (f", efs {release.efs_version[:16]}" if release else ""),
                        poll_s=min(self.poll_s, 2.0))
        return DeployPlan(target=self.tcfg.target.name, stack_name=self.dcfg.stack_name, storage_only=storage_only, dry_run=dry_run, release=release,
                          artifacts=plan_, uploaded=uploaded, sync=sync, before=state, live_version=live, change_set=cs, template_path=template_path, warnings=warnings)

    def _build_and_validate(self) -> dict:
        from builder.build import build
        from validate.stage import from_build

        self.progress.step(f"building {self.tcfg.target.describe()} (reused when the locks are unchanged)")
        result = build(self.config, self.tcfg.target.name, progress=self.progress)
        self.progress.step("validating the trees (static checks)")
        report = from_build(self.config, self.tcfg.target.name, smoke_level="none")
        if not report.ok:
            raise DeployError("validation found errors:\n  " + "\n  ".join(f"{f.where}: {f.message}" for f in report.errors[:10]),
                              where=f"target {self.tcfg.target.name}", fix=f"run `invoke validate --target {self.tcfg.target.name}` for the report, fix it, deploy again")
        return json.loads(result.build_json.read_text())

    def _artifacts(self, build_doc: dict) -> artifacts.ArtifactPlan:
        root = self.config.root
        arts = build_doc["artifacts"]
        fn = (root / arts["function_zip"]["path"], arts["function_zip"]["sha256"])
        layer = (root / arts["layer_zip"]["path"], arts["layer_zip"]["sha256"]) if "layer_zip" in arts else None
        self.progress.step(f"checking artifacts in s3://{self.dcfg.artifact_bucket}/{self.dcfg.artifact_prefix}/")
        return artifacts.plan_artifacts(self.aws.s3, self.dcfg.artifact_bucket, self.dcfg.artifact_prefix, fn, layer, self.dcfg.model_dir)

    def _sync(self, dry_run: bool) -> SyncSummary:
        from sync import stage as sync_stage

        method = self.config.sync.method
        target = self.tcfg.target.name
        if method == "datasync":
            dplan, ds = sync_stage.datasync_plan(self.config, target)
            summary = SyncSummary(method, dplan.version, dplan.action, len(dplan.upload) + len(dplan.copy), dplan.upload_bytes, dplan.where)
            if not dry_run and dplan.action != "up-to-date":
                self.progress.step(f"syncing EFS version {dplan.version[:16]} through DataSync")
                sync_stage.datasync_apply(dplan, ds, self.config, on_line=self.progress.line)
                summary = dataclasses.replace(summary, done=True)
            return summary
        splan, remote = sync_stage.plan(self.config, target, method)
        summary = SyncSummary(method, splan.version, splan.action, splan.files, splan.bytes, f"{splan.where}:{splan.dest}")
        if not dry_run and splan.action != "up-to-date":
            self.progress.step(f"syncing EFS version {splan.version[:16]} ({splan.files:,} files) to {splan.where}")
            sync_stage.apply(splan, remote, self.config, on_line=self.progress.line)
            summary = dataclasses.replace(summary, done=True)
        return summary

    def discard(self, plan: DeployPlan) -> None:
        stack.discard(self.aws.cloudformation, plan.change_set)

    # -- apply -----------------------------------------------------------
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

    def apply(self, plan: DeployPlan, *, smoke_test: bool = True) -> DeployResult:
        if plan.dry_run:
            raise DeployError("a dry-run plan cannot be applied", where="deploy", fix="plan again without --dry-run")
        cfn, lam = self.aws.cloudformation, self.aws.lambda_
        if plan.change_set.empty:
            self.progress.step(f"stack {plan.stack_name}: no changes")
        else:
            self.progress.step(f"executing change set ({len(plan.change_set.changes)} changes)")
        state = stack.execute(cfn, plan.change_set, on_event=self.progress.event, poll_s=self.poll_s)
        if plan.storage_only:
            return DeployResult(plan=plan, state=state, smoke=None)
        notes = []
        function, stack_version = state.outputs.get("FunctionName", self.config.function.name), state.outputs.get("FunctionVersion")
        if stack_version and alias.current(lam, function) != stack_version:
            # a rollback moved the alias since the stack last set it: converge back to what the stack says
            notes.append(f"alias {alias.ALIAS} pointed away from the stack's version {stack_version} (a rollback); moved it back")
            alias.point(lam, function, stack_version)
        result = None
        rolled_back = None
        if smoke_test:
            self.progress.step(f"smoke test: {state.outputs.get('ApiUrl')}")
            image, expect = self._smoke_sample()
            result = smoke(state.outputs["ApiUrl"], image, expect, on_line=self.progress.line)
            if not result.ok and plan.live_version and plan.live_version != stack_version:
                self.progress.step(f"smoke test failed: pointing {alias.ALIAS} back to version {plan.live_version}")
                alias.point(lam, function, plan.live_version)
                rolled_back = plan.live_version
        record = self._record(plan, state, result, rolled_back)
        return DeployResult(plan=plan, state=state, smoke=result, rolled_back_to=rolled_back, record=record, notes=tuple(notes))

    def _record(self, plan: DeployPlan, state: stack.StackState, result: SmokeResult | None, rolled_back: str | None) -> Path:
        """dist/deploy.json: what is live, for CI, rollback and efs-gc (which keeps these versions)."""
        path = self.config.build.output / "deploy.json"
        old = json.loads(path.read_text()) if path.is_file() else {}
        history = [plan.release.efs_version] + [v for v in old.get("efs_history", []) if v != plan.release.efs_version]
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
            "smoke": None if result is None else {"ok": result.ok, "message": result.message, "label": result.label, "seconds": result.seconds},
            "rolled_back_to": rolled_back,
            "efs_history": history[:HISTORY],
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
        return path


def protected_versions(config: Config) -> set[str]:
    """EFS versions the recent deploys use (dist/deploy.json): efs-gc keeps them."""
    path = config.build.output / "deploy.json"
    if not path.is_file():
        return set()
    return set(json.loads(path.read_text()).get("efs_history", []))


# -- rollback and teardown -------------------------------------------------
def plan_rollback(config: Config, clients_: Clients, to: str | None = None) -> alias.AliasMove:
    deploy_config(config)
    return alias.plan_rollback(clients_.lambda_, config.function.name, to)


def apply_rollback(config: Config, clients_: Clients, move: alias.AliasMove) -> alias.AliasMove:
    alias.point(clients_.lambda_, move.function, move.to.version)
    now = alias.current(clients_.lambda_, move.function)
    if now != move.to.version:
        raise DeployError(f"the alias points at {now}, not {move.to.version}, after the update", where=f"lambda {move.function}", fix="run `invoke rollback` again")
    return move


@dataclass(frozen=True)
class TeardownPlan:
    stack: str
    state: stack.StackState
    removed: tuple[tuple[str, str, str], ...]  # (logical id, type, physical id)
    retained: tuple[tuple[str, str, str], ...]
    delete_data: bool
    file_system_id: str | None  # the stack's own file system (deleted only with delete_data)


# DeletionPolicy Retain in the template; function versions go with the function regardless
RETAINED_TYPES = {"AWS::EFS::FileSystem", "AWS::Lambda::LayerVersion"}


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


def apply_teardown(config: Config, clients_: Clients, plan: TeardownPlan, progress: Progress | None = None, poll_s: float = 5.0) -> list[str]:
    """Delete the stack; then the layer versions it retained, and with delete_data the file system."""
    progress = progress or Progress()
    progress.step(f"deleting stack {plan.stack}")
    stack.delete(clients_.cloudformation, plan.stack, on_event=progress.event, poll_s=poll_s)
    done = [f"stack {plan.stack}"]
    for logical, kind, physical in plan.retained:
        if kind == "AWS::Lambda::LayerVersion" and physical:
            name, _, number = physical.rpartition(":")
            aws.call(clients_.lambda_, "delete_layer_version", error=DeployError, LayerName=name, VersionNumber=int(number))
            done.append(f"layer version {physical}")
    if plan.delete_data and plan.file_system_id:
        done += _delete_file_system(clients_.efs, plan.file_system_id, progress, poll_s)
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

