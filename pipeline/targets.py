"""What a tree is built for: a Lambda runtime and architecture, or this machine.

The facts (glibc ceilings, architectures, the manylinux levels uv knows) live in
``runtimes.json`` beside this file; this module only derives from them.
"""
from __future__ import annotations

import json
import platform
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging import tags

RUNTIMES_FILE = Path(__file__).with_name("runtimes.json")


@cache
def facts() -> dict:
    return json.loads(RUNTIMES_FILE.read_text())


# PEP 600 aliases: manylinux2014 = 2_17 (all arches), 2010 = 2_12 and 1 = 2_5 (x86 only)
_LEGACY_MANYLINUX = {
    (2, 17): ("manylinux2014", {"x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x"}),
    (2, 12): ("manylinux2010", {"x86_64", "i686"}),
    (2, 5): ("manylinux1", {"x86_64", "i686"}),
}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@dataclass(frozen=True)
class Target:
    """A platform a tree is built for.

    ``kind`` is ``lambda`` (a Lambda runtime and architecture) or ``local`` (the
    machine running the pipeline, for `invoke serve` and the benchmarks).
    """

    name: str
    kind: str
    python: str  # "3.13"
    machine: str  # uname machine: "x86_64" | "aarch64"
    glibc: str  # highest glibc the target provides, "2.34"
    runtime: str | None = None  # "python3.13" for lambda targets
    arch: str | None = None  # Lambda's spelling: "x86_64" | "arm64"
    os_name: str = ""

    @property
    def python_tuple(self) -> tuple[int, int]:
        major, minor = _version_tuple(self.python)[:2]
        return major, minor

    @property
    def abi(self) -> str:
        return "cp{}{}".format(*self.python_tuple)

    @property
    def uv_python_platform(self) -> str | None:
        """The ``--python-platform`` triple for uv, or None for this machine.

        uv knows only some manylinux levels (no 2_26), so take the highest one
        not above the target's glibc: AL2 (2.26) maps to manylinux_2_17, AL2023
        (2.34) to manylinux_2_34.
        """
        if self.kind == "local":
            return None
        ceiling = _version_tuple(self.glibc)
        known = [lvl for lvl in facts()["uv_manylinux"] if _version_tuple(lvl.replace("_", ".")) <= ceiling]
        if not known:
            raise ValueError(f"no uv manylinux level at or below glibc {self.glibc}")
        return f"{self.machine}-manylinux_{known[-1]}"

    def platform_tags(self) -> list[str]:
        """Platform tags the target loads, best first (PEP 600 plus legacy aliases)."""
        major, minor = _version_tuple(self.glibc)[:2]
        plats: list[str] = []
        if self.kind == "local":
            # this machine also loads wheels built here (pip wheel, setup.py)
            plats.append(f"linux_{self.machine}")
        for m in range(minor, 4, -1):
            plats.append(f"manylinux_{major}_{m}_{self.machine}")
            alias = _LEGACY_MANYLINUX.get((major, m))
            if alias and self.machine in alias[1]:
                plats.append(f"{alias[0]}_{self.machine}")
        return plats

    def supported_tags(self, built_on_target: bool = False) -> list[tags.Tag]:
        """Every wheel tag the target's CPython can load, in preference order.

        ``built_on_target``: wheels built inside the target's own image (the
        Docker builder compiling an sdist) are tagged linux_<machine> and load.
        """
        plats = self.platform_tags()
        if built_on_target and f"linux_{self.machine}" not in plats:
            plats = plats + [f"linux_{self.machine}"]
        version = self.python_tuple
        return [
            *tags.cpython_tags(version, abis=[self.abi], platforms=plats),
            *tags.compatible_tags(version, interpreter=self.abi, platforms=plats),
        ]

    def base_image(self) -> str:
        """The Lambda base image of this runtime and architecture (a tag, never latest)."""
        data = facts()
        return data["base_image"].format(python=self.python, arch_suffix=data["base_image_arch_suffix"][self.arch or "x86_64"])

    @property
    def docker_platform(self) -> str:
        return {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}.get(self.machine, f"linux/{self.machine}")

    def describe(self) -> str:
        if self.kind == "local":
            return f"{self.name} (this machine: CPython {self.python}, {self.machine}, glibc {self.glibc})"
        return f"{self.name} ({self.runtime} on {self.arch}, {self.os_name}, glibc {self.glibc})"

    def identity(self) -> dict:
        """What a lock or a tree depends on (not the display name of this machine's OS)."""
        return {"kind": self.kind, "runtime": self.runtime, "arch": self.arch, "python": self.python, "machine": self.machine, "glibc": self.glibc}

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "runtime": self.runtime,
            "arch": self.arch,
            "python": self.python,
            "machine": self.machine,
            "glibc": self.glibc,
            "os": self.os_name,
            "uv_python_platform": self.uv_python_platform,
        }


def lambda_target(name: str, runtime: str, arch: str) -> Target:
    """A Lambda target; the caller has checked ``runtime`` and ``arch`` exist."""
    data = facts()
    rt = data["runtimes"][runtime]
    os_facts = data["os"][rt["os"]]
    return Target(
        name=name,
        kind="lambda",
        python=rt["python"],
        machine=data["architectures"][arch]["machine"],
        glibc=os_facts["glibc"],
        runtime=runtime,
        arch=arch,
        os_name=os_facts["name"],
    )


def local_target(name: str, python: str | None = None) -> Target:
    """This machine: its architecture and glibc, and the given (or running) Python."""
    libc, version = platform.libc_ver()
    if libc != "glibc" or not version:
        version = "2.17"  # musl or unknown: only promise the oldest manylinux
    return Target(
        name=name,
        kind="local",
        python=python or "{}.{}".format(*sys.version_info[:2]),
        machine=platform.machine(),
        glibc=version,
        os_name=platform.platform(terse=True),
    )


def image_ref_problem(ref: str) -> str | None:
    """Why a container image reference is not pinned (no tag, or `latest`) or not a reference (a digest that is not
    one, a placeholder left in), or None."""
    if "<" in ref or ">" in ref:
        return f"image {ref!r} still holds a placeholder (<...>)"
    if "@" in ref and not re.fullmatch(r"sha256:[0-9a-f]{64}", ref.split("@", 1)[1]):
        return f"image {ref!r}: {ref.split('@', 1)[1]!r} is not a digest (sha256: and 64 hexadecimal digits)"
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    if "@sha256:" in ref or (tag and tag != "latest"):
        return None
    return f"image {ref!r} is not pinned (no tag, or `latest`)"


# An on-demand function's init may take 10 s; a longer one is stopped and run again as part of the first invoke
# (Lambda Developer Guide, "Understanding the Lambda execution environment lifecycle", Init phase; lambda-facts.md)
LAMBDA_INIT_LIMIT_S = 10.0


def init_report(init_ms: float | None, *, emulated: bool, lambda_target: bool = True) -> tuple[str, str | None]:
    """How a measured init reads, and the warning when it passes Lambda's 10 s on the target's own CPU.
    An emulated CPU's figure is said to be one and warns of nothing: it is not Lambda's. A report, not a limit."""
    if init_ms is None:
        return "init not measured", None
    line = f"init {init_ms / 1000:.2f} s" + (" on an emulated CPU (QEMU): not Lambda's figure" if emulated else " on the target's own CPU")
    if emulated or not lambda_target or init_ms <= LAMBDA_INIT_LIMIT_S * 1000:
        return line, None
    return line, (f"the init took {init_ms / 1000:.1f} s, over the {LAMBDA_INIT_LIMIT_S:.0f} s Lambda allows an on-demand function: Lambda stops it and "
                  "runs it again as part of the first invoke, which then pays for both (Lambda's execution environment lifecycle)")
