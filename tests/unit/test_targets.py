"""runtimes.json is consistent, and targets derive the right tags and uv platforms."""
from __future__ import annotations

import pytest
from packaging.tags import Tag

from pipeline.targets import facts, lambda_target


def test_runtime_facts_are_consistent():
    data = facts()
    assert data["version"] == 1
    for name, rt in data["runtimes"].items():
        assert name == f"python{rt['python']}"
        os_facts = data["os"][rt["os"]]
        minor = int(rt["python"].split(".")[1])
        # lambda-facts.md: 3.9-3.11 run on AL2 (glibc 2.26), 3.12+ on AL2023 (2.34)
        assert os_facts["glibc"] == ("2.26" if minor <= 11 else "2.34"), name
    levels = [tuple(map(int, lvl.split("_"))) for lvl in data["uv_manylinux"]]
    assert levels == sorted(levels) and (2, 26) not in levels
    assert {a["machine"] for a in data["architectures"].values()} == {"x86_64", "aarch64"}


@pytest.mark.parametrize(
    ("runtime", "arch", "platform"),
    [
        ("python3.13", "arm64", "aarch64-manylinux_2_34"),
        ("python3.12", "x86_64", "x86_64-manylinux_2_34"),
        ("python3.11", "x86_64", "x86_64-manylinux_2_17"),  # uv has no 2_26: the conservative level below
        ("python3.9", "arm64", "aarch64-manylinux_2_17"),
    ],
)
def test_uv_platform_never_exceeds_the_glibc_ceiling(runtime, arch, platform):
    assert lambda_target("t", runtime, arch).uv_python_platform == platform


def test_supported_tags_follow_python_glibc_and_arch():
    arm = set(lambda_target("t", "python3.13", "arm64").supported_tags())
    assert Tag("cp313", "cp313", "manylinux_2_28_aarch64") in arm
    assert Tag("cp313", "abi3", "manylinux2014_aarch64") in arm
    assert Tag("py3", "none", "any") in arm
    assert Tag("cp313", "cp313", "manylinux_2_35_aarch64") not in arm  # above glibc 2.34
    assert Tag("cp313", "cp313", "manylinux_2_28_x86_64") not in arm
    assert Tag("cp312", "cp312", "manylinux_2_28_aarch64") not in arm
    assert Tag("cp313", "cp313", "linux_aarch64") not in arm  # not portable: Lambda is not this machine
    al2 = set(lambda_target("t", "python3.11", "x86_64").supported_tags())
    assert Tag("cp311", "cp311", "manylinux_2_28_x86_64") not in al2  # torch >= 2.7 does not run on AL2
    assert Tag("cp311", "cp311", "manylinux_2_26_x86_64") in al2
    assert Tag("cp311", "cp311", "manylinux1_x86_64") in al2
