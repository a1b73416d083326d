"""The Docker builder: install the lock inside the Lambda base image.

The builder image (docker/Dockerfile) is the Lambda base image of the target
plus a compiler, built through pipeline/docker.py with the tag and ``--platform``
always explicit. pip runs in a container of it: wheels are installed as they
are, sdists are compiled against the runtime's own glibc and CPython. The
container runs as the user who owns the output (``SUDO_UID`` when run under
sudo), with ``--network host`` (the daemon here has no bridge), and a cache
folder bind-mounted so a second build downloads nothing. Local ``file://``
artifacts of the lock are mounted read-only at the same path.
"""
from __future__ import annotations

import hashlib
import os
import platform
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from pipeline import docker, emulation
from pipeline.errors import BuildError
from pipeline.files import bytecode_tag
from pipeline.targets import Target, image_ref_problem

from .bytecode import BytecodeResult, parse_failures
from .lock import LockFile

DOCKERFILE_DIR = Path(__file__).resolve().parent.parent / "docker"
BINFMT_DIR = emulation.BINFMT_DIR  # qemu-<machine> here lets Docker run foreign CPUs
TAIL = 25


class DockerUnavailable(BuildError):
    """Docker cannot be used here (no daemon, no image, no qemu): `auto` falls back to native."""


def _owner() -> tuple[int, int]:
    """Whose files these are: the sudo caller's, or ours."""
    if os.geteuid() == 0 and os.environ.get("SUDO_UID"):
        return int(os.environ["SUDO_UID"]), int(os.environ.get("SUDO_GID", os.environ["SUDO_UID"]))
    return os.getuid(), os.getgid()


def _check_daemon() -> None:
    why = docker.unreachable()
    if why:
        raise DockerUnavailable(
            f"no Docker daemon answers ({why.splitlines()[0][:200]})",
            where=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
            fix="start Docker (e.g. `dockerd --bridge=none --iptables=false --ip-forward=false &`), or build with --builder native",
        )


def check_base_image(ref: str) -> None:
    """Pinned means a tag or a digest, and not `latest`."""
    problem = image_ref_problem(ref)
    if problem:
        raise BuildError(problem, where="build.base_image", fix="use a versioned tag such as public.ecr.aws/lambda/python:3.13-arm64, or better its @sha256 digest")


@dataclass
class DockerInstaller:
    """The Docker builder behind the interface build.py uses (install, bytecode)."""

    target: Target
    base_image: str
    cache_dir: Path
    progress_line: object = None
    name: str = "docker"
    built_on_target: bool = True
    image_id: str = ""
    python_version: str = ""

    # ------------------------------------------------------------ image

    @property
    def tag(self) -> str:
        key = hashlib.sha256((DOCKERFILE_DIR / "Dockerfile").read_bytes() + self.base_image.encode()).hexdigest()[:12]
        return f"hoist-builder:{self.target.python}-{self.target.machine}-{key}"

    @property
    def identity(self) -> str:
        return f"docker:{self.image_id}"

    def prepare(self, on_line=None) -> None:
        """Daemon, qemu for a foreign CPU, the builder image: DockerUnavailable if any is missing."""
        check_base_image(self.base_image)
        _check_daemon()
        if self.target.machine != platform.machine() and emulation.binfmt_problem(self.target.machine, BINFMT_DIR):
            raise DockerUnavailable(
                f"building for {self.target.machine} on this {platform.machine()} machine needs qemu registered with binfmt_misc",
                where=str(BINFMT_DIR / f"qemu-{self.target.machine}"),
                fix="apt-get install qemu-user-static binfmt-support (or docker run --privileged tonistiigi/binfmt --install all), or build natively",
            )
        image_id = docker.inspect(self.tag)
        if image_id is None:
            tail: deque[str] = deque(maxlen=TAIL)

            def said(line: str) -> None:
                tail.append(line)
                if on_line and line.strip():
                    on_line(line)

            code, _ = docker.build(DOCKERFILE_DIR, self.tag, buildargs={"BASE_IMAGE": self.base_image}, platform=self.target.docker_platform,
                                   network="host", on_line=said)
            image_id = docker.inspect(self.tag) if code == 0 else None
            if image_id is None:
                reason = next((x.strip() for x in reversed(tail) if x.strip()), f"exit {code}")
                raise DockerUnavailable(
                    f"could not build the builder image {self.tag} FROM {self.base_image} for {self.target.docker_platform}: {reason[:300]}\n  last output:\n"
                    + "\n".join("    " + x.rstrip() for x in tail if x.strip()),
                    where="docker/Dockerfile",
                    fix=f"make {self.base_image} available (docker pull --platform {self.target.docker_platform} {self.base_image} where a registry is reachable), or set build.base_image",
                )
        self.image_id = image_id

    # ------------------------------------------------------------ running

    def _run(self, command: list[str], volumes: list[docker.Mount], what: str, on_line=None, env: dict | None = None) -> str:
        uid, gid = _owner()
        tail: deque[str] = deque(maxlen=TAIL)

        def said(line: str) -> None:
            tail.append(line)
            if on_line and line.strip():
                on_line(line)

        code, _ = docker.run(
            self.tag, command, name=docker.container_name("hoist-build"), entrypoint="", user=f"{uid}:{gid}", network="host", platform=self.target.docker_platform,
            env={"HOME": "/tmp", "PIP_CACHE_DIR": "/cache", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONHASHSEED": "0", "PIP_NO_INPUT": "1", **(env or {})},
            mounts=volumes, workdir="/tmp", on_line=said,
        )
        if code != 0:
            raise BuildError(
                f"{what} failed inside the container (exit {code}, image {self.tag})\n  last output:\n" + "\n".join("    " + x for x in tail),
                where=f"docker builder, {self.target.describe()}",
                fix="read pip's error above: a package that does not build needs its system headers in docker/Dockerfile, or a version with a wheel",
            )
        return "\n".join(tail)

    def _mounts_for(self, lock: LockFile) -> list[docker.Mount]:
        folders = {str(Path(unquote(url.path)).parent) for url in (urlparse(pkg.url) for pkg in lock.packages) if url.scheme == "file"}
        return [docker.Mount(folder, folder) for folder in sorted(folders)]

    def install(self, lock: LockFile, target: Target, dest: Path, on_line=None) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        uid, gid = _owner()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # the container writes as the owner; hand it the folders it writes
            for folder in (dest, self.cache_dir):
                os.chown(folder, uid, gid)
        if not lock.packages:
            return
        volumes = [
            docker.Mount(dest, "/out", read_only=False),
            docker.Mount(lock.path.parent.resolve(), "/lock"),
            docker.Mount(self.cache_dir.resolve(), "/cache", read_only=False),
            *self._mounts_for(lock),
        ]
        command = ["/var/lang/bin/python3", "-m", "pip", "install", "--no-deps", "--require-hashes", "--no-compile", "--progress-bar", "off",
                   "--target", "/out", "-r", f"/lock/{lock.path.name}"]
        self._run(command, volumes, f"pip install -r {lock.path.name}", on_line)

    def bytecode(self, tree: Path, on_line=None, store=None, digests=None) -> BytecodeResult:
        """compileall by the image's own CPython, unchecked-hash, as the native builder does (every source: ``store``, the
        native builder's bytecode cache, is not used)."""
        out = self._run(["/var/lang/bin/python3", "-c", "import platform; print('HOIST_PYTHON', platform.python_version())"], [], "reading the image's Python version")
        version = next((line.split()[1] for line in out.splitlines() if line.startswith("HOIST_PYTHON ")), "")
        volumes = [docker.Mount(tree, "/out/site-packages", read_only=False)]
        code_out = self._run_tolerant(["/var/lang/bin/python3", "-I", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                                       "-s", "/out/site-packages", "/out/site-packages"], volumes, on_line)
        tag = bytecode_tag(version)
        written = sum(1 for _ in tree.rglob(f"*.{tag}.pyc"))
        return BytecodeResult(compiled=True, python=version, files=written, failed=parse_failures(code_out, "/out/site-packages"))

    def _run_tolerant(self, command, volumes, on_line) -> str:
        """compileall exits 1 when a source does not compile; that is reported, not fatal."""
        try:
            return self._run(command, volumes, "compileall", on_line)
        except BuildError as exc:
            if "exit 1," in exc.what:
                return exc.what
            raise
