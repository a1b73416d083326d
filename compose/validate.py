"""validate a build = its locks checked against the requirements (builder), then its trees and smoke test (validate).

A build made from locks that pipeline.toml or the requirements have since outrun is refused with the lock's own
fix, as `invoke build` and `invoke deploy` refuse it: validating it would pass trees that are not what the project
now asks for. A build older than its lock is refused by validate itself (validate/stage.py, the lock's sha256).
"""
from __future__ import annotations

from builder.lock import current_locks
from pipeline.config import Config
from validate import stage as validate_stage
from validate.checks import ValidationReport


def validate_build(config: Config, target_name: str | None = None, **kwargs) -> ValidationReport:
    """`invoke validate` of a build: its locks current, then validate/stage.py's from_build."""
    tcfg = config.target(target_name)
    if config.build_json(tcfg.target.name).is_file():  # no build at all: from_build says to build, which locks first
        current_locks(config, tcfg)  # LockError, with `invoke lock --target ...` as the fix
    return validate_stage.from_build(config, target_name, **kwargs)
