"""deploy = build, validate (static checks), sync, stack: the stages the deployer's plan needs, given to it as ``Steps``."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from builder import build as builder_build
from deploy import stage as deploy_stage
from deploy.stage import Clients, SyncSummary
from pipeline.config import Config
from pipeline.console import Progress
from pipeline.records import BuildRecord
from sync import stage as sync_stage
from validate import stage as validate_stage


class PipelineSteps:
    """The real stages behind deploy/stage.py's ``Steps``."""

    def __init__(self, config: Config, no_hot_set: bool = False):
        self.config = config
        self.no_hot_set = no_hot_set  # the user accepted a tree without its hot set (records.Manifest.hot_set_cost)

    def build(self, target_name: str, progress: Progress) -> BuildRecord:
        return builder_build.build(self.config, target_name, progress=progress).record

    def static_errors(self, record: BuildRecord) -> list[str]:
        report = validate_stage.from_build(self.config, record.target_name, smoke_level="none")
        return [f"{f.rule} {f.file or f.package or '(tree)'}: {f.message}" for f in report.errors]

    def plan_sync(self, target_name: str, method: str) -> tuple[SyncSummary, sync_stage.SyncJob]:
        job = sync_stage.plan_job(self.config, target_name, method, no_hot_set=self.no_hot_set)
        return summary(job), job

    def apply_sync(self, job: sync_stage.SyncJob, on_line: Callable[[str], None] | None) -> None:
        sync_stage.apply_job(job, self.config, on_line=on_line)


def summary(job: sync_stage.SyncJob) -> SyncSummary:
    """The deploy plan's line for a sync job: what goes where."""
    p: Any = job.plan
    if job.method == "datasync":
        return SyncSummary(job.method, p.version, p.action, len(p.upload) + len(p.copy), p.upload_bytes, p.where)
    return SyncSummary(job.method, p.version, p.action, p.files, p.bytes, f"{p.where}:{p.dest}")


class Deployer(deploy_stage.Deployer):
    """deploy/stage.py's Deployer over the real build, validate and sync stages."""

    def __init__(self, config: Config, target_name: str | None, clients_: Clients | None, progress: Progress | None = None, *, poll_s: float = 5.0,
                 sync_method: str | None = None, no_hot_set: bool = False):
        super().__init__(config, target_name, clients_, progress, poll_s=poll_s, sync_method=sync_method, steps=PipelineSteps(config, no_hot_set))


def plan_rollback(config: Config, clients_: Clients, to: str | None = None):
    """deploy's rollback plan, with sync's answer to whether the target's EFS version is still complete."""
    return deploy_stage.plan_rollback(config, clients_, to, efs_present=lambda version: sync_stage.version_complete(config, version))
