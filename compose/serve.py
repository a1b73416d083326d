"""serve = lock and build when needed, sync to the local folder, run the function behind the local API."""
from __future__ import annotations

from collections.abc import Callable

from builder.build import build
from builder.lock import current_locks, lock
from pipeline.config import Config
from pipeline.errors import LockError
from pipeline.records import manifest_path
from runtime import serve
from runtime.serve import Server
from sync import stage as sync_stage


def ensure_built(config: Config, target_name: str, say: Callable[[str], None]) -> None:
    """Lock and build the target when it has no build or its locks are stale (`invoke serve` right after a clone)."""
    tcfg = config.target(target_name)
    built = manifest_path(config.build.output / target_name / "efs").is_file()
    try:
        current_locks(config, tcfg)
        stale = False
    except LockError:
        stale = True
    if built and not stale:
        return
    why = "its locks are missing or stale" if stale else f"there is no build in {config.build.output / target_name}"
    say(f"target {target_name}: {why}; running `invoke lock --target {target_name}` and `invoke build --target {target_name}` first")
    locked = lock(config, target_name)
    say(f"locked {target_name}" + (" (resolved again)" if locked.resolved else " (locks current)"))
    result = build(config, target_name)
    say(f"built {target_name}: " + ", ".join(f"{name} {s.identity[:12]}" for name, s in result.sets.items()))


def sync_local(config: Config, target_name: str) -> str:
    """Sync the target's built EFS tree into the local sync folder as a version (sync-efs's own
    plan and apply, method local); its site-packages folder there."""
    plan, remote = sync_stage.plan(config, target_name, "local")
    sync_stage.apply(plan, remote, config)
    return f"{plan.dest}/site-packages"


def start(config: Config, target_name: str | None = None, port: int = 0, on_line: Callable[[str], None] | None = None,
          extra_env: dict[str, str] | None = None, build_if_needed: bool = True) -> Server:
    """`invoke serve`: the port and the model folder first, then lock/build, sync, and the function."""
    say = on_line or (lambda line: None)
    serve.port_free(port)  # before any build or init: a busy port is said at once
    tcfg = serve.pick_target(config, target_name)
    model_dir = serve.check_model(config, say)
    if build_if_needed:
        ensure_built(config, tcfg.target.name, say)
    efs_tree = sync_local(config, tcfg.target.name)
    return serve.run(config, tcfg, efs_tree, model_dir, port, say, extra_env)
