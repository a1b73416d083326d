"""One error family for the pipeline.

Every message says *where* (stage and file/key), *what* (observed against
expected) and the *fix* (a command or flag). tasks.py turns these into
``invoke.Exit`` so users see the message without a traceback.
"""
from __future__ import annotations

import signal


class PipelineError(Exception):
    """Base of every error a user can act on."""

    stage = "pipeline"

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.stage}"
        if self.where:
            head += f" ({self.where})"
        text = f"{head}: {self.what}"
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class ConfigError(PipelineError):
    stage = "config"


class LockError(PipelineError):
    stage = "lock"


class BuildError(PipelineError):
    stage = "build"


class ValidationError(PipelineError):
    """validate could not run (no build, bad options); findings are not errors of this kind."""

    stage = "validate"


class InterpreterNotFound(PipelineError):
    stage = "interpreter"


class CommandError(PipelineError):
    """A subprocess we depend on failed; carries the tail of its output."""

    stage = "command"

    def __init__(self, what: str, *, output_tail: str = "", returncode: int | None = None, **kw):
        self.output_tail = output_tail
        self.returncode = returncode
        if output_tail:
            what = f"{what}\n  last output:\n" + "\n".join("    " + line for line in output_tail.splitlines())
        super().__init__(what, **kw)


class DeployError(PipelineError):
    stage = "deploy"


class SyncError(PipelineError):
    stage = "sync-efs"


class SyncInterrupted(SyncError):
    """A signal stopped the sync; what held the version (its lock, a DataSync execution) was released."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; the version's lock was released and nothing was marked complete",
                         fix="run the same command again: it resumes the version at once, without sending again what arrived")


class ServeError(PipelineError):
    stage = "serve"


class BenchError(PipelineError):
    """A benchmark cannot start on this machine (a missing system library or device); the fix says what to install."""

    stage = "bench"
