"""A CPython of the target's version on a foreign CPU: a Debian root file system
for the target's architecture, run under QEMU user-mode emulation.

Lambda's base images cannot be pulled where no registry is reachable, and an
x86_64 machine cannot run an arm64 interpreter natively. Debian ships the
target's CPython for arm64 in some releases (the table below); debootstrap
makes a root of it (its second stage runs under qemu through binfmt_misc), and
`docker import` turns that root into a stand-in Lambda image that
`docker run --platform linux/arm64` runs through the same binfmt handler.

The root is built once into the user's cache (``~/.cache/hoist``; CI starts
from a fresh clone, so nothing of it lives in the project) and reused.
What it is not: Amazon Linux. Its glibc and system libraries are Debian's, so a
library present in Debian but absent from Lambda loads here; the static checks
(validate/checks.py) are what catch those.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import docker, proc
from .errors import PipelineError

# Debian releases whose python3 is the CPython a Lambda runtime runs. Lambda's
# 3.10, 3.12 and 3.14 have no Debian stable release with that python3; they
# run only in the real Lambda image (level 2) or on the target's own CPU.
DEBIAN_PYTHON = {"3.13": "trixie", "3.11": "bookworm"}
DEBIAN_ARCH = {"aarch64": "arm64", "x86_64": "amd64"}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
ROOT_FORMAT = "1"  # bump when the root's recipe changes: a new cache entry
COMPLETE = ".hoist-root-complete"
PACKAGES = ("python3", "python3-venv")
# what Lambda's image has that the stand-in must have too: the task root, the
# layer's /opt, the EFS mount's parent, and the base image's interpreter path
LAMBDA_DIRS = ("var/task", "var/runtime", "var/lang/bin", "opt", "mnt", "tmp")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# The CPU QEMU emulates for a target (its QEMU_CPU variable, read by qemu-user in binfmt mode too).
# Lambda's arm64 runs on AWS Graviton processors (docs/design.md, 3.14): Neoverse N1 (Graviton2,
# Armv8.2) is the oldest of them, so code that needs a newer CPU fails here as it could there.
# QEMU's default, "max", also emulates pointer authentication, which Debian's arm64 binaries use in
# every function: the import check of the demo took 4-8x longer under it (docs/benchmarks.md).
QEMU_CPU = {"aarch64": "neoverse-n1"}


class EmulationUnavailable(PipelineError):
    """A CPython for the target's CPU cannot be had here; ``fix`` says what to install."""

    stage = "emulation"


def cache_dir() -> Path:
    """Where Hoist keeps what outlives a clone: $HOIST_CACHE, else $XDG_CACHE_HOME/hoist, else ~/.cache/hoist."""
    if os.environ.get("HOIST_CACHE"):
        return Path(os.environ["HOIST_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hoist"


@dataclass(frozen=True)
class EmulatedPython:
    """A CPython for ``machine`` in a Debian root, and the stand-in image made of it."""

    python: str  # "3.13"
    machine: str  # "aarch64"
    suite: str  # "trixie"
    root: Path
    image: str | None  # docker tag of the imported root; None: run in a chroot of the root

    @property
    def docker_platform(self) -> str:
        return f"linux/{DEBIAN_ARCH[self.machine]}"

    def distance(self) -> str:
        """How this differs from Lambda, for the report."""
        cpu = "emulated CPU (QEMU user mode)" if self.machine != platform.machine() else "this machine's CPU"
        return f"{cpu}; Debian {self.suite}'s CPython {self.python}, glibc and system libraries rather than Amazon Linux's"


def suite_for(python: str) -> str:
    if python not in DEBIAN_PYTHON:
        have = ", ".join(f"{v} ({s})" for v, s in DEBIAN_PYTHON.items())
        raise EmulationUnavailable(
            f"no Debian release ships CPython {python} as its python3 (emulated roots exist for {have})",
            where="level 3",
            fix=f"run the real Lambda image instead (level 2: `docker pull public.ecr.aws/lambda/python:{python}-<arch>` where a registry is reachable), or smoke-test on the target's own CPU",
        )
    return DEBIAN_PYTHON[python]


def binfmt_problem(machine: str, binfmt_dir: Path = BINFMT_DIR) -> str | None:
    """Why this machine cannot run ``machine`` binaries through binfmt_misc, or None: the one
    check for everything that runs a foreign CPU (the Docker builder, the smoke test, the import check).

    As root, a missing registration is made here (mount binfmt_misc, enable
    Debian's qemu-user-static entry); otherwise the message says how. The
    entry must be enabled with the F flag: without it the interpreter is looked
    up inside the container or chroot, where there is none.
    """
    if machine == platform.machine():
        return None
    entry = binfmt_dir / f"qemu-{machine}"
    if _enabled(entry):
        return None
    if not Path(f"/usr/bin/qemu-{machine}-static").exists():
        return f"no qemu-{machine}-static: apt-get install qemu-user-static binfmt-support (then run again)"
    if os.geteuid() != 0:
        return f"qemu-{machine} is not registered with binfmt_misc: as root, `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc` (if not mounted) and `update-binfmts --enable qemu-{machine}`"
    if not (binfmt_dir / "register").exists():
        proc.capture(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt_dir)])
    if shutil.which("update-binfmts"):
        proc.capture(["update-binfmts", "--enable", f"qemu-{machine}"])
    if _enabled(entry):
        return None
    return f"could not register qemu-{machine} with binfmt_misc (is /proc/sys/fs/binfmt_misc writable here? a container needs --privileged): apt-get install binfmt-support and run `update-binfmts --enable qemu-{machine}`"


def missing_packages(machine: str) -> list[str]:
    """The Debian packages running ``machine`` code here needs and lacks (none on the target's own CPU):
    qemu-user-static (the emulator), binfmt-support (its registration), debootstrap (the root)."""
    if machine == platform.machine():
        return []
    wanted = {f"qemu-{machine}-static": "qemu-user-static", "update-binfmts": "binfmt-support", "debootstrap": "debootstrap"}
    return sorted({pkg for cmd, pkg in wanted.items() if not (shutil.which(cmd) or Path("/usr/sbin", cmd).exists() or Path("/usr/bin", cmd).exists())})


def install_missing(machine: str, on_line: Callable[[str], None] | None = None) -> list[str]:
    """apt-get install ``missing_packages(machine)`` when this process can (root, apt-get), saying so
    through ``on_line``; what it installed. Elsewhere nothing: the caller's message says what to install."""
    missing = missing_packages(machine)
    if not missing or os.geteuid() != 0 or not shutil.which("apt-get"):
        return []
    if on_line:
        on_line(f"installing {' '.join(missing)} (apt-get, as root) to run {machine} code under QEMU: once per machine")
    out = proc.capture(["sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq " + " ".join(missing)])
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-6:])
        raise EmulationUnavailable(f"apt-get install {' '.join(missing)} failed (exit {out.returncode}):\n{tail}", where="apt-get",
                                   fix=f"install them yourself (apt-get install {' '.join(missing)}) and run again")
    return missing


def qemu_env(machine: str) -> dict[str, str]:
    """The variables that choose what QEMU emulates for ``machine`` code: {} on the target's own CPU."""
    if machine == platform.machine() or machine not in QEMU_CPU:
        return {}
    return {"QEMU_CPU": QEMU_CPU[machine]}


def emulator_identity(machine: str, binfmt_dir: Path = BINFMT_DIR) -> str:
    """The emulator that runs ``machine`` code here (its path, size and mtime), "" on the target's own CPU:
    part of the import check's runtime identity (a new QEMU may import differently)."""
    if machine == platform.machine():
        return ""
    try:
        lines = (binfmt_dir / f"qemu-{machine}").read_text().splitlines()
        path = next(line.split(None, 1)[1] for line in lines if line.startswith("interpreter "))
        st = os.stat(path)
    except (OSError, StopIteration, IndexError):
        return "unregistered"
    return f"{path}:{st.st_size}:{st.st_mtime_ns}:{qemu_env(machine).get('QEMU_CPU', 'max')}"


def root_identity(root: Path) -> str:
    """A prepared root's name and its completion stamp's digest: a rebuilt root is another runtime."""
    return f"{root.name}:{hashlib.sha256((root / COMPLETE).read_bytes()).hexdigest()[:16]}"


def _enabled(entry: Path) -> bool:
    try:
        lines = entry.read_text().splitlines()
    except OSError:
        return False
    # F (fix binary): the interpreter is opened at registration, so it works inside containers and chroots
    return bool(lines) and lines[0] == "enabled" and any(line.startswith("flags:") and "F" in line for line in lines)


def root_path(python: str, machine: str) -> Path:
    return cache_dir() / "emulation" / f"debian-{suite_for(python)}-{DEBIAN_ARCH[machine]}-{ROOT_FORMAT}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process prepares a root at a time; the others wait and reuse it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def ensure_root(python: str, machine: str, on_line: Callable[[str], None] | None = None) -> Path:
    """The Debian root holding CPython ``python`` for ``machine``: built once (debootstrap, ~8 min under emulation)."""
    suite = suite_for(python)
    root = root_path(python, machine)
    if (root / COMPLETE).is_file():
        return root
    why = binfmt_problem(machine)
    if why:
        raise EmulationUnavailable(why, where="level 3", fix="apt-get install qemu-user-static binfmt-support debootstrap")
    if not shutil.which("debootstrap") and not Path("/usr/sbin/debootstrap").exists():
        raise EmulationUnavailable("no debootstrap to build the Debian root", where="level 3", fix="apt-get install debootstrap qemu-user-static binfmt-support")
    if os.geteuid() != 0:
        raise EmulationUnavailable(
            f"building the Debian {suite} root for {machine} needs root (debootstrap creates device nodes and runs its second stage in a chroot)",
            where=str(root),
            fix=f"run the same command once as root (it builds {root}; later runs reuse it)",
        )
    with _locked(root):
        if (root / COMPLETE).is_file():
            return root
        partial = root.with_name(root.name + f".partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        cmd = [debootstrap, f"--arch={DEBIAN_ARCH[machine]}", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, str(partial),
               os.environ.get("HOIST_DEBIAN_MIRROR", DEFAULT_MIRROR)]
        if on_line:
            on_line(f"building the Debian {suite} {DEBIAN_ARCH[machine]} root (CPython {python}) into {root}: about 8 minutes, once")
        started = time.monotonic()
        code, output = proc.run(cmd, what="debootstrap", check=False, on_line=DebootstrapProgress(on_line or (lambda line: None)))
        if code != 0:
            shutil.rmtree(partial, ignore_errors=True)
            tail = "\n".join(output.strip().splitlines()[-8:])
            raise EmulationUnavailable(
                f"debootstrap of Debian {suite} for {machine} failed (exit {code}):\n{tail}",
                where=str(root),
                fix="check that the Debian mirror answers (HOIST_DEBIAN_MIRROR overrides it) and that qemu binfmt is registered",
            )
        finish_root(partial, python)
        (partial / COMPLETE).write_text(f"debian {suite} {DEBIAN_ARCH[machine]} python{python} built in {time.monotonic() - started:.0f} s\n")
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
    return root


class DebootstrapProgress:
    """debootstrap's output as a line per stage with the time so far ("debootstrap 2:41: configuring the base system"), and
    a line every ``every_s`` within a long stage (the package it is at): its own line per package would be hundreds."""

    # its stage lines (the info messages of /usr/share/debootstrap/functions), not the per-package ones
    STAGES = ("Retrieving InRelease", "Retrieving Release", "Checking component", "Resolving dependencies", "Installing core packages",
              "Unpacking required packages", "Configuring required packages", "Installing base packages", "Unpacking the base system",
              "Configuring the base system", "Base system installed")

    def __init__(self, say: Callable[[str], None], every_s: float = 30.0, now: Callable[[], float] = time.monotonic):
        self.say, self.every_s, self.now = say, every_s, now
        self.started = self.last = now()
        self.stage = "starting"

    def _say(self, text: str) -> None:
        self.last = self.now()
        elapsed = int(self.last - self.started)
        self.say(f"debootstrap {elapsed // 60}:{elapsed % 60:02d}: {text}")

    def __call__(self, line: str) -> None:
        line = line.strip()
        text = line.removeprefix("I: ").rstrip(".")
        if line.startswith(("W: ", "E: ")):
            self._say(line)
        elif text.startswith(self.STAGES):
            self.stage = text[:1].lower() + text[1:]
            self._say(self.stage)
        elif line.startswith("I: Retrieving ") and self.stage.startswith("checking component"):
            self.stage = "downloading the packages"
            self._say(self.stage)
        elif line.startswith("I: ") and self.now() - self.last >= self.every_s:
            self._say(f"{self.stage}, at: {text}")


def finish_root(root: Path, python: str) -> None:
    """Lambda's folders, and its interpreter path (/var/lang/bin/python3.X) for the Debian one."""
    for d in LAMBDA_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    link = root / "var" / "lang" / "bin" / f"python{python}"
    if not link.is_symlink():
        link.symlink_to(f"/usr/bin/python{python}")
    # apt's lists and caches: not needed to run anything, and they change the image's digest
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for f in (root / cache).glob("*.deb" if "archives" in cache else "*_*"):
            f.unlink()


def image_tag(root: Path) -> str:
    stamp = (root / COMPLETE).read_text()
    key = hashlib.sha256(f"{root.name}|{stamp}".encode()).hexdigest()[:12]
    return f"hoist-emulated/{root.name.rsplit('-', 1)[0]}:{key}"


def ensure_image(root: Path, machine: str, on_line: Callable[[str], None] | None = None) -> str:
    """`docker import` of the root (once per root), tagged for ``machine``."""
    tag = image_tag(root)
    if docker.image_exists(tag):
        return tag
    with _locked(root.with_name(root.name + ".image")), tempfile.TemporaryDirectory(prefix="hoist-root-") as tmp:
        if docker.image_exists(tag):
            return tag
        if on_line:
            on_line(f"importing the root into Docker as {tag} (once)")
        tar_path = Path(tmp) / "root.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(root, arcname=".", filter=lambda info: None if info.name in ("./proc", "./sys") or info.name.startswith(("./proc/", "./sys/")) else info)
        out = docker.import_tar(tar_path, tag, platform=f"linux/{DEBIAN_ARCH[machine]}",
                                changes=["ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "ENV LANG=C.UTF-8", "WORKDIR /var/task"])
        if out.returncode != 0:
            raise EmulationUnavailable(f"docker import of {root} failed: {out.stderr.strip()[-500:]}", where="level 3", fix="check the Docker daemon's log and free disk space")
    return tag


def chroot_problem() -> str | None:
    """Why the root cannot be driven without Docker here (a private mount namespace and chroot need root), or None."""
    if os.geteuid() != 0:
        return "running the root without Docker needs root (mount namespace, bind mounts, chroot)"
    missing = [tool for tool in ("unshare", "chroot", "mount") if not shutil.which(tool)]
    return f"missing {', '.join(missing)} (util-linux, coreutils)" if missing else None


def chroot_command(root: Path, binds: list[tuple[Path, str]], argv: list[str]) -> list[str]:
    """``argv`` inside ``root``: a private mount namespace with ``binds`` (host folder, path inside) read-only,
    /proc, /dev, and a fresh /tmp; the process dies with its parent (--kill-child)."""
    lines = ["set -e", f'R="{root}"', "mount -t proc proc \"$R/proc\"", "mount --rbind /dev \"$R/dev\"", "mount -t tmpfs -o mode=1777 tmpfs \"$R/tmp\""]
    for i, (_, inside) in enumerate(binds):
        lines += [f'mkdir -p "$R{inside}"', f'mount --bind "$HOIST_BIND_{i}" "$R{inside}"', f'mount -o remount,bind,ro "$R{inside}"']
    lines.append('exec chroot "$R" "$@"')
    script = "\n".join(lines)
    env_prefix = [f"HOIST_BIND_{i}={host}" for i, (host, _) in enumerate(binds)]
    return ["env", *env_prefix, "unshare", "--mount", "--propagation", "private", "--fork", "--kill-child", "sh", "-c", script, "hoist-chroot", *argv]


def run_platform(image: str, machine: str) -> str | None:
    """The --platform to run ``image`` with: its own when the daemon recorded the target's,
    else None (a daemon that is not multi-platform capable records the host's architecture
    on import; the binaries inside still run through binfmt)."""
    return f"linux/{DEBIAN_ARCH[machine]}" if docker.inspect(image, "{{.Architecture}}") == DEBIAN_ARCH[machine] else None


def emulated_python(python: str, machine: str, on_line: Callable[[str], None] | None = None) -> EmulatedPython:
    """CPython ``python`` for ``machine``: the root, prepared when missing, and how to run it.

    Without Docker it runs in a chroot (as root); otherwise in the root imported
    as an image. Raises EmulationUnavailable naming what to install when neither can.
    """
    suite = suite_for(python)
    why = binfmt_problem(machine)
    if why:
        raise EmulationUnavailable(why, where="level 3", fix="apt-get install qemu-user-static binfmt-support debootstrap")
    no_chroot, no_docker = chroot_problem(), docker.daemon_problem()
    if no_chroot and no_docker:
        raise EmulationUnavailable(f"{no_chroot}; and {no_docker}", where="level 3", fix="run as root, or install and start Docker (apt-get install docker.io)")
    root = ensure_root(python, machine, on_line)
    image = ensure_image(root, machine, on_line) if no_chroot else None
    return EmulatedPython(python=python, machine=machine, suite=suite, root=root, image=image)
