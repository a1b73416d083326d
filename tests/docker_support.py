"""A real Docker daemon and a stand-in Lambda base image, made by the tests.

No registry is reachable here, so the image is assembled from this machine's
own CPython (a pyenv build) and the libraries it links, and imported with
`docker import`: /var/lang/bin/python3.X as in the Lambda image, with its
LD_LIBRARY_PATH. The daemon runs without a bridge network; containers use
--network host only.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

DOCKERD = ["dockerd", "--bridge=none", "--iptables=false", "--ip-forward=false"]


def docker_answers() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "version", "--format", "{{.Server.Version}}"], capture_output=True).returncode == 0


def start_daemon(log: Path) -> subprocess.Popen | None:
    """Start dockerd unless one answers; fail loudly when it cannot be had."""
    if docker_answers():
        return None
    if not shutil.which("dockerd") or not shutil.which("docker"):
        raise RuntimeError("docker is not installed: apt-get install docker.io (the docker-marked tests need a real daemon)")
    with open(log, "w") as out:  # the daemon keeps its own copy of the descriptor
        proc = subprocess.Popen(DOCKERD, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(120):
        if docker_answers():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise RuntimeError(f"dockerd did not come up; its log:\n{log.read_text()[-3000:]}")


def _needed_libs(files: list[Path]) -> set[Path]:
    libs = set()
    for f in files:
        out = subprocess.run(["ldd", str(f)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else (parts[0] if parts and parts[0].startswith("/") else None)
            if path and path.startswith("/") and not path.startswith(str(f.parent)):
                libs.add(Path(path))
    return libs


TOOLCHAIN = ["dash", "coreutils", "gcc", "libc6-dev", "ca-certificates"]


def _installed(pkg: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return out.returncode == 0 and "install ok installed" in out.stdout


def _closure(roots: list[str]) -> set[str]:
    """Installed Debian packages the roots depend on, recursively."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        pkg = todo.pop()
        if pkg in seen or not _installed(pkg):
            continue
        seen.add(pkg)
        deps = subprocess.run(["dpkg-query", "-W", "-f=${Depends},${Pre-Depends}", pkg], capture_output=True, text=True).stdout
        for group in deps.split(","):
            for alt in group.split("|"):
                name = alt.strip().split(" ")[0].split(":")[0]
                if name and _installed(name):
                    todo.append(name)
                    break
    return seen


def _inside(root: Path, dest: Path) -> bool:
    """Never write through a symlink to outside the root file system (an absolute
    link copied from this machine would point at this machine's own files)."""
    return not dest.is_symlink() and not dest.exists() and dest.parent.resolve().is_relative_to(root.resolve())


def _put(root: Path, src: Path, dest: Path) -> None:
    real_parent = dest.parent.resolve()  # follows links made relative below, even dangling ones
    if not real_parent.is_relative_to(root.resolve()):
        return
    real_parent.mkdir(parents=True, exist_ok=True)
    if not _inside(root, dest):
        return
    if src.is_symlink():
        link = os.readlink(src)
        if os.path.isabs(link):  # keep it inside the image: make it relative to the root
            link = os.path.relpath(root / link.lstrip("/"), dest.parent)
        os.symlink(link, dest)
    else:
        shutil.copy2(src, dest)


def _copy_packages(root: Path, packages: set[str]) -> None:
    for pkg in sorted(packages):
        listed = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True).stdout.split("\n")
        for path in listed:
            src = Path(path)
            if not path or (src.is_dir() and not src.is_symlink()) or not (src.exists() or src.is_symlink()):
                continue
            _put(root, src, root / path.lstrip("/"))


def standin_image(python_prefix: Path, version: str, extra_elves: list[Path], workdir: Path, toolchain: bool = False) -> str:
    """Build (once) and return the tag of an image with CPython ``version`` at
    /var/lang; with ``toolchain``, also /bin/sh and gcc (for building sdists)."""
    # the extra ELF files by name and content, not by path: they come from a fresh temporary folder in each session,
    # and a key with their paths had built (and left behind) a new image every session
    elves_key = sorted((p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in extra_elves)
    key = hashlib.sha256(f"{python_prefix}|{version}|{elves_key}|{toolchain}".encode()).hexdigest()[:12]
    tag = f"hoist-test/lambda-python:{version}-x86_64-{key}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag
    root = workdir / "rootfs"
    if toolchain:
        _copy_packages(root, _closure(TOOLCHAIN))
        for certs in ("/etc/ssl/certs", "/usr/lib/ssl"):
            for src in sorted(Path(certs).rglob("*")) if Path(certs).is_dir() else ():
                if src.is_file() or src.is_symlink():
                    _put(root, src, root / str(src).lstrip("/"))
    shutil.copytree(python_prefix, root / "var" / "lang", symlinks=True, ignore=shutil.ignore_patterns("test", "tests", "idlelib", "tkinter", "__pycache__", "*.a"))
    elves = [root / "var" / "lang" / "bin" / f"python{version}", *(root / "var" / "lang" / "lib" / f"python{version}" / "lib-dynload").glob("*.so"), *extra_elves]
    for lib in _needed_libs(elves):
        for dest_dir in (root / "lib64", root / "usr" / "lib64"):
            _put(root, lib.resolve(), dest_dir / lib.name)
    (root / "tmp").mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    for d in ("var/task", "var/runtime", "opt", "mnt", "etc"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    if toolchain and _inside(root, root / "bin" / "sh"):
        os.symlink("dash", root / "bin" / "sh")
    tar_path = workdir / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(root, arcname=".")
    subprocess.run(
        ["docker", "import",
         "--change", "ENV LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
         "--change", "ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin:/usr/sbin:/sbin",
         "--change", "ENV LANG=en_US.UTF-8",
         "--change", "WORKDIR /var/task",
         str(tar_path), tag],
        check=True, capture_output=True,
    )
    os.remove(tar_path)
    return tag


# a python3.12 x86_64 Lambda target: what replaces "[sets.efs]" in tests/conftest.py's PIPELINE for lambda_standin's tests
PY312 = '[targets.py312]\nkind = "lambda"\nruntime = "python3.12"\narch = "x86_64"\n\n[sets.efs]'
RIC_DOCKERFILE = """FROM {base}
COPY ric /var/runtime
ENV PYTHONPATH=/var/runtime:/opt/python LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime
ENTRYPOINT ["/var/lang/bin/python3.12", "-m", "awslambdaric"]
"""


@pytest.fixture(scope="session")
def lambda_standin(docker_daemon, tmp_path_factory) -> str:
    """A stand-in for AWS's python3.12 x86_64 base image: this machine's CPython 3.12 at /var/lang, awslambdaric 4.2.2
    (with snapshot_restore_py) at /var/runtime, the client as ENTRYPOINT; its tag. One per session, shared by the image
    shape's tests (validate, serve)."""
    from pipeline import docker
    from pipeline.interpreters import find_python
    from pipeline.targets import lambda_target
    from runtime.function import runtime_client

    cache = tmp_path_factory.mktemp("ric-cache")
    ric = runtime_client(lambda_target("py312", "python3.12", "x86_64"), cache)
    python = find_python("3.12")
    prefix = Path(python.path).resolve().parent.parent
    base = standin_image(prefix, "3.12", sorted(ric.rglob("*.so")), tmp_path_factory.mktemp("standin"))
    tag = f"{base}-ric"
    if not docker.image_exists(tag):
        context = tmp_path_factory.mktemp("ric-image")
        shutil.copytree(ric, context / "ric")
        (context / "Dockerfile").write_text(RIC_DOCKERFILE.format(base=base))
        code, output = docker.build(context, tag)
        assert code == 0, output[-2000:]
    return tag
