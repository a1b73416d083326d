"""The one place the pipeline drives Docker: the builder, the smoke test, the
import check and the emulated stand-in image all go through here.

It drives the ``docker`` command (through pipeline/proc.py), not the SDK: the
smoke test's function runs as a ``docker run`` process whose output is read as
it prints and whose end is a process's end, ``docker import --platform`` has no
SDK call, and the tests' daemon fixture and the user's fix ("no docker
command: install Docker") speak of the command. Containers run on the host's
network or none (the daemon here has no bridge); images are referred to by tag.
The argument lists are built by pure functions (``run_args``, ``build_args``),
so what each caller asks of Docker is tested without a daemon.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import proc
from .errors import CommandError

NO_COMMAND = "no docker command: install Docker (apt-get install docker.io) and start its daemon"


@dataclass(frozen=True)
class Mount:
    """A host folder seen at ``inside`` in the container."""

    host: str | os.PathLike[str]
    inside: str
    read_only: bool = True

    def arg(self) -> str:
        return f"{os.fspath(self.host)}:{self.inside}:{'ro' if self.read_only else 'rw'}"


def command() -> str:
    """The docker command: the one on PATH, else the bare name (whose absence running it then says)."""
    return shutil.which("docker") or "docker"


def container_name(prefix: str) -> str:
    """A fresh container name, so the container can be removed by name whatever happens to its process."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def unreachable() -> str | None:
    """Why no Docker daemon answers, in a few words (no command; the CLI's last line), or None when one does."""
    docker = shutil.which("docker")
    if not docker:
        return "no docker command"
    try:
        info = proc.capture([docker, "version", "--format", "{{.Server.Os}}"], timeout=60)
    except (OSError, proc.TimeoutExpired) as exc:
        return str(exc)
    if info.returncode != 0:
        return (info.stderr.strip().splitlines() or ["no output"])[-1]
    return None


def daemon_problem() -> str | None:
    """Why containers cannot run here (no docker command, no daemon), with what to do; None when they can."""
    if not shutil.which("docker"):
        return NO_COMMAND
    why = unreachable()
    if why:
        return f"the Docker daemon does not answer ({why}): start it (dockerd) and run again"
    return None


def inspect(ref: str, fmt: str = "{{.Id}}") -> str | None:
    """``docker image inspect --format fmt ref``, stripped; None when the image is not here."""
    out = proc.capture([command(), "image", "inspect", "--format", fmt, ref])
    return out.stdout.strip() if out.returncode == 0 else None


def image_exists(ref: str) -> bool:
    return inspect(ref) is not None


def pull(ref: str, platform: str) -> proc.CompletedProcess[str]:
    return proc.capture([command(), "pull", "--platform", platform, ref])


def import_tar(tar: Path, tag: str, *, platform: str, changes: Sequence[str] = ()) -> proc.CompletedProcess[str]:
    """``docker import`` of a root file system's tar as ``tag`` for ``platform``, with Dockerfile ``changes``."""
    cmd = [command(), "import", "--platform", platform]
    for change in changes:
        cmd += ["--change", change]
    return proc.capture([*cmd, str(tar), tag])


def remove(container: str) -> None:
    """Remove the container, running or not; nothing when it is gone already."""
    proc.capture([command(), "rm", "-f", container])


def build_args(context: Path, tag: str, *, dockerfile: str = "Dockerfile", buildargs: Mapping[str, str] | None = None,
               platform: str | None = None, network: str = "host") -> list[str]:
    """The ``docker build`` argument list (without the command): never pulls, removes intermediate containers."""
    args = ["build", "--tag", tag, "--file", str(context / dockerfile), "--network", network, "--rm", "--force-rm"]
    if platform:
        args += ["--platform", platform]
    for key, value in (buildargs or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    return [*args, str(context)]


def build(context: Path, tag: str, *, dockerfile: str = "Dockerfile", buildargs: Mapping[str, str] | None = None, platform: str | None = None,
          network: str = "host", on_line: Callable[[str], None] | None = None) -> tuple[int, str]:
    """Build an image with the classic builder (the one the daemon's API offers everywhere); (exit code, output)."""
    args = build_args(context, tag, dockerfile=dockerfile, buildargs=buildargs, platform=platform, network=network)
    return proc.run([command(), *args], what=f"docker build {tag}", env={"DOCKER_BUILDKIT": "0"}, on_line=on_line, check=False)


def run_args(image: str, argv: Sequence[str], *, name: str | None = None, entrypoint: str | None = None, platform: str | None = None,
             network: str = "none", mounts: Sequence[Mount] = (), env: Mapping[str, str] | None = None, user: str | None = None,
             workdir: str | None = None, memory_mb: int | None = None, remove: bool = True) -> list[str]:
    """The ``docker run`` argument list (without the command). ``entrypoint=""`` clears the image's."""
    args = ["run"]
    if remove:
        args.append("--rm")
    if name:
        args += ["--name", name]
    args += ["--network", network]
    if platform:
        args += ["--platform", platform]
    if memory_mb:
        args += ["--memory", f"{memory_mb}m"]
    if user:
        args += ["--user", user]
    if workdir:
        args += ["--workdir", workdir]
    if entrypoint is not None:
        args += ["--entrypoint", entrypoint]
    for m in mounts:
        args += ["-v", m.arg()]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    return [*args, image, *argv]


def run_command(image: str, argv: Sequence[str], **kw: Any) -> list[str]:
    """The whole ``docker run`` command line, for a caller that starts it itself (proc.start, proc.capture)."""
    return [command(), *run_args(image, argv, **kw)]


def run(image: str, argv: Sequence[str], *, name: str, on_line: Callable[[str], None] | None = None, **kw: Any) -> tuple[int, str]:
    """Run a container to its end, its output streamed to ``on_line``; (exit code, output). The container is
    removed afterwards, also when this process is interrupted (the CLI's end does not stop the container)."""
    try:
        return proc.run(run_command(image, argv, name=name, remove=False, **kw), what=f"docker run {image}", on_line=on_line, check=False)
    finally:
        remove(name)


# ---------------------------------------------------------------- images as files, and registries (the image shape)


def save(ref: str, dest: Path) -> None:
    """``docker save`` of ``ref`` to ``dest`` (a tar with manifest.json, the config and uncompressed layers)."""
    proc.run([command(), "save", "--output", str(dest), ref], what=f"docker save {ref}")


def load(tar: Path) -> str:
    """``docker load`` of an image tar (docker save's format); the daemon's last line ("Loaded image: ...")."""
    out = proc.capture([command(), "load", "--input", str(tar)])
    if out.returncode != 0:
        raise CommandError(f"docker load {tar.name} failed", output_tail=out.stderr.strip()[-2000:], returncode=out.returncode)
    return (out.stdout.strip().splitlines() or [""])[-1]


def tag(source: str, dest: str) -> None:
    proc.run([command(), "tag", source, dest], what=f"docker tag {dest}")


def push(ref: str, on_line: Callable[[str], None] | None = None) -> str:
    """``docker push`` of ``ref``; the registry's manifest digest (sha256:...), read off push's last line."""
    _, output = proc.run([command(), "push", ref], what=f"docker push {ref}", on_line=on_line)
    return push_digest(output, ref)


def push_digest(output: str, ref: str) -> str:
    """The digest in ``docker push``'s summary line ("<tag>: digest: sha256:<hex> size: <n>")."""
    for line in reversed(output.splitlines()):
        words = line.replace(":", " ").split()
        if "digest" in words:
            at = words.index("digest")
            if len(words) > at + 2 and words[at + 1] == "sha256":
                return f"sha256:{words[at + 2]}"
    raise CommandError(f"docker push {ref} printed no digest", output_tail=output[-2000:])


def login(registry: str, username: str, password: str) -> None:
    """``docker login`` with the password on stdin (never in the process list): ECR's token from GetAuthorizationToken."""
    out = proc.capture([command(), "login", "--username", username, "--password-stdin", registry], input=password)
    if out.returncode != 0:
        raise CommandError(f"docker login {registry} failed", output_tail=out.stderr.strip()[-2000:], returncode=out.returncode)


def load_layout(layout: Path, image_id: str) -> None:
    """An image layout folder (builder/image.py's: the OCI blobs and docker save's index) into the daemon, unless the
    daemon has ``image_id`` (sha256:<config digest>) already; unchanged layers are not stored twice."""
    import tarfile
    import tempfile

    if inspect(image_id) == image_id:
        return
    with tempfile.NamedTemporaryFile(dir=layout.parent, prefix=".image-load-", suffix=".tar") as tmp:
        with tarfile.open(fileobj=tmp, mode="w") as tar:
            for path in sorted(layout.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    tar.add(path, arcname=path.relative_to(layout).as_posix())
        tmp.flush()
        load(Path(tmp.name))
    if inspect(image_id) != image_id:
        raise CommandError(f"docker load of {layout} did not give the image {image_id}", where=str(layout),
                           fix="run `invoke build` again (the layout was changed or is incomplete)")
