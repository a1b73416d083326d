"""serve = lock and build when needed, sync to the local folder, run the function behind the local API.

The shape (pipeline/shapes.py) decides what runs: the efs shape's synced tree on this machine's CPython, or the
image shape's built image in Docker (built first: a no-op when it is current, so a handler or model edit reaches it)."""
from __future__ import annotations

import platform
from collections.abc import Callable

from builder.build import build
from builder.lock import current_locks, lock
from pipeline import docker, emulation
from pipeline.config import Config, TargetConfig
from pipeline.errors import LockError, ServeError
from pipeline.records import ImageRecord, load_build_record, manifest_path
from pipeline.shapes import shape_of
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
    """`invoke serve`: the port and the model folder first, then lock/build, sync, and the function; for the image
    shape, Docker first, then lock (when needed) and build, and the image's container (start_image)."""
    say = on_line or (lambda line: None)
    serve.port_free(port)  # before any build or init: a busy port is said at once
    if shape_of(config).serves == "image":
        return start_image(config, target_name, port, say, extra_env, build_if_needed)
    tcfg = serve.pick_target(config, target_name)
    if not target_name and tcfg.target.name != config.target().target.name:
        default = config.target().target
        say(f"serving target {tcfg.target.name} ({tcfg.target.describe()}): the default target {default.name} runs on {default.machine}, "
            f"this machine is {tcfg.target.machine} (`--target` picks another)")
    model_dir = serve.check_model(config, say)
    if build_if_needed:
        ensure_built(config, tcfg.target.name, say)
    efs_tree = sync_local(config, tcfg.target.name)
    return serve.run(config, tcfg, efs_tree, model_dir, port, say, extra_env)


def image_target(config: Config, name: str | None) -> TargetConfig:
    """The image target to serve: the one asked for, else the default. An image of another CPU runs under QEMU, so
    unlike a tree (serve.pick_target) it is never swapped for `local`; what Docker and QEMU need is checked first."""
    tcfg = config.target(name) if name else config.target()
    target = tcfg.target
    if why := docker.daemon_problem():
        fix = ("install Docker (apt-get install docker.io), start its daemon (dockerd) and run `invoke serve` again" if why == docker.NO_COMMAND
               else "start the Docker daemon (dockerd, or `systemctl start docker`) and run `invoke serve` again")
        raise ServeError(f'target {target.name} is served as its image ([function] package = "image"), which runs in Docker: {why}', where="docker", fix=fix)
    if target.machine != platform.machine() and (why := emulation.binfmt_problem(target.machine)):
        raise ServeError(f"the image of target {target.name} is for {target.machine}; this machine is {platform.machine()}, so it runs under QEMU: {why}",
                         where=f"--target {target.name}",
                         fix=f"make QEMU run {target.machine} code as the message says (apt-get install qemu-user-static binfmt-support; "
                             f"update-binfmts --enable qemu-{target.machine}), or serve a target of this machine's CPU with --target")
    return tcfg


def built_image(config: Config, target_name: str, say: Callable[[str], None], build_if_needed: bool = True) -> ImageRecord:
    """The target's image, locked (when its locks are missing or stale) and built first: a build that is current is a
    no-op, and an edit of the handler or the model rewrites only their layer."""
    if build_if_needed:
        try:
            current_locks(config, config.target(target_name))
        except LockError:
            say(f"target {target_name}: its locks are missing or stale; running `invoke lock --target {target_name}` first")
            lock(config, target_name)
        record = build(config, target_name).record
    else:
        path = config.build_json(target_name)
        if not path.is_file():
            raise ServeError(f"target {target_name} has no build ({path} is missing)", where=f"--target {target_name}", fix=f"run `invoke build --target {target_name}`")
        record = load_build_record(path, config.root)
    if record.image is None:
        raise ServeError(f'the build of target {target_name} names no image, and [function] package is "image"', where=str(config.build_json(target_name)),
                         fix=f"run `invoke build --target {target_name}` (it builds the image for this shape)")
    image = record.image
    say(f"image {image.tag} ({image.platform}): " + (f"this build wrote its layers {', '.join(image.written)}" if image.written else "up to date, nothing written"))
    return image


def start_image(config: Config, target_name: str | None, port: int, say: Callable[[str], None], extra_env: dict[str, str] | None = None,
                build_if_needed: bool = True) -> Server:
    """The image shape's serve: the target, Docker (and QEMU), the image built when needed, then the container behind the gateway."""
    tcfg = image_target(config, target_name)
    model_dir = serve.check_model(config, say)
    image = built_image(config, tcfg.target.name, say, build_if_needed)
    return serve.run_image(config, tcfg, image, model_dir, port, say, extra_env)
