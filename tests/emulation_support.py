"""aarch64 on this x86_64 machine: qemu-user-static registered with binfmt_misc,
and the Debian root + stand-in image of pipeline/emulation.py, prepared once.

The root is cached outside the clone (``~/.cache/hoist``, or $HOIST_CACHE), so
a fresh clone in CI pays the ~8 minute debootstrap only when the cache is
empty. What cannot be had fails the test that needs it; nothing is skipped.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipeline import emulation
from pipeline.interpreters import find_python

PACKAGES = {"qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support", "debootstrap": "debootstrap"}


def install_missing() -> None:
    """apt-get install what emulation needs, as root; otherwise say how."""
    missing = sorted({pkg for cmd, pkg in PACKAGES.items() if not (shutil.which(cmd) or os.path.exists(f"/usr/sbin/{cmd}"))})
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"the aarch64 tests need {' '.join(missing)}: apt-get install {' '.join(missing)} (as root)")
    subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq " + " ".join(missing), shell=True, check=True, capture_output=True)


def prepare() -> None:
    """What `invoke test` runs before pytest: the packages, binfmt and the root, with progress."""
    install_missing()
    found = emulation.emulated_python("3.13", "aarch64", on_line=lambda line: print("   ", line, flush=True))
    print(f"aarch64 CPython {found.python} ready in {found.root}", flush=True)


@pytest.fixture(scope="session")
def emulated_arm64() -> emulation.EmulatedPython:
    """CPython 3.13 for aarch64 (Debian trixie), run through qemu (in a chroot: the tests run as root)."""
    install_missing()
    return emulation.emulated_python("3.13", "aarch64")


CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
GCC_ABSENT = """#!/bin/sh
echo "gcc: this stand-in of the Lambda image has no compiler (tests/emulation_support.py): only wheels install in it" >&2
exit 1
"""


def arm64_lambda_standin(found: emulation.EmulatedPython, workdir: Path) -> str:
    """A stand-in for public.ecr.aws/lambda/python:3.13-arm64 (no registry is reachable here), for the Docker builder.

    The Debian trixie arm64 root of ``found`` (its /var/lang/bin/python3.13 is
    Debian's CPython 3.13) plus what the builder's image relies on:
    /var/lang/bin/python3, and pip, unpacked on this machine from the pip wheel
    Debian ships in the root (pure Python; Debian's python3 has no pip module of
    its own; its bytecode compiled here), and this machine's CA bundle (PyPI is reached through this
    machine's network, whose certificates the root's bundle may not hold). It has no compiler: its `gcc` says so and fails, so
    docker/Dockerfile's check passes and an sdist would fail to build, where the
    real image gets gcc from dnf. It is `docker load`ed with an image config that
    says linux/arm64, as a pulled arm64 image does (`docker import` records this
    machine's architecture on a daemon without the containerd image store).
    Built once per machine, in seconds: no step runs under QEMU.
    """
    root = found.root
    [wheel] = sorted((root / "usr" / "share" / "python-wheels").glob("pip-*.whl"))
    key = hashlib.sha256(f"{emulation.image_tag(root)}|{wheel.name}|{GCC_ABSENT}|docker load, arm64, pip bytecode|{Path(CA_BUNDLE).stat().st_mtime_ns}".encode()).hexdigest()[:12]
    tag = f"hoist-test/lambda-python:3.13-arm64-{key}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag
    extra = workdir / "extra"
    site = extra / "usr" / "local" / "lib" / "python3.13" / "dist-packages"  # on Debian's python3.13 sys.path
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    # its bytecode, by this machine's CPython 3.13 (as Lambda's image has pip's): under QEMU, compiling
    # pip's modules from source at every pip run would be most of the build's time
    subprocess.run([find_python("3.13").path, "-I", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", str(site)], check=True, capture_output=True)
    (extra / "var" / "lang" / "bin").mkdir(parents=True)
    os.symlink("python3.13", extra / "var" / "lang" / "bin" / "python3")
    certs = extra / "etc" / "ssl" / "certs"
    certs.mkdir(parents=True)
    shutil.copy(CA_BUNDLE, certs / "ca-certificates.crt")  # pip verifies PyPI's certificate against the system store
    gcc = extra / "usr" / "local" / "bin" / "gcc"
    gcc.parent.mkdir(parents=True)
    gcc.write_text(GCC_ABSENT)
    gcc.chmod(0o755)
    layer = workdir / "layer.tar"
    added = {f"./{path.relative_to(extra)}": path for path in sorted(extra.rglob("*"))}
    added = {name: path for name, path in added.items() if path.is_symlink() or not path.is_dir() or not (root / name).is_dir()}  # the root's folders keep their modes
    with tarfile.open(layer, "w") as tar:  # one entry per path: `docker load` refuses duplicates
        tar.add(root, arcname=".", filter=lambda info: None if info.name.startswith(("./proc/", "./sys/", "./hoist")) or info.name in added else info)
        for name, path in added.items():
            tar.add(path, arcname=name, recursive=False)
    digest = hashlib.sha256()
    with open(layer, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    config = json.dumps({
        "architecture": "arm64", "variant": "v8", "os": "linux",
        "config": {"Env": ["PATH=/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8"], "WorkingDir": "/var/task"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest.hexdigest()}"]},
        "history": [{"created_by": "tests/emulation_support.py: arm64_lambda_standin"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    image = workdir / "image.tar"  # `docker save`'s format: manifest.json, the config, the layer
    with tarfile.open(image, "w") as tar:
        for name, data in ((config_name, config), ("manifest.json", json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(layer, arcname="layer/layer.tar")
    layer.unlink()
    loaded = subprocess.run(["docker", "load", "-i", str(image)], capture_output=True, text=True)
    image.unlink()
    if loaded.returncode != 0:
        raise RuntimeError(f"docker load of the arm64 stand-in failed: {loaded.stderr.strip()[-500:]}")
    return tag
