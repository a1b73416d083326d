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
    proc = subprocess.Popen(DOCKERD, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
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


def standin_image(python_prefix: Path, version: str, extra_elves: list[Path], workdir: Path) -> str:
    """Build (once) and return the tag of an image with CPython ``version`` at /var/lang."""
    key = hashlib.sha256(f"{python_prefix}|{version}|{sorted(map(str, extra_elves))}".encode()).hexdigest()[:12]
    tag = f"hoist-test/lambda-python:{version}-x86_64-{key}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag
    root = workdir / "rootfs"
    shutil.copytree(python_prefix, root / "var" / "lang", symlinks=True, ignore=shutil.ignore_patterns("test", "tests", "idlelib", "tkinter", "__pycache__", "*.a"))
    elves = [root / "var" / "lang" / "bin" / f"python{version}", *(root / "var" / "lang" / "lib" / f"python{version}" / "lib-dynload").glob("*.so"), *extra_elves]
    for lib in _needed_libs(elves):
        real = lib.resolve()
        for dest_dir in (root / "lib64", root / "usr" / "lib64"):
            dest_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real, dest_dir / lib.name)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    for d in ("var/task", "var/runtime", "opt", "mnt", "etc"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    tar_path = workdir / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(root, arcname=".")
    subprocess.run(
        ["docker", "import",
         "--change", "ENV LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
         "--change", "ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
         "--change", "ENV LANG=en_US.UTF-8",
         "--change", "WORKDIR /var/task",
         str(tar_path), tag],
        check=True, capture_output=True,
    )
    os.remove(tar_path)
    return tag
