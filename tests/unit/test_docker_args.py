"""pipeline/docker.py: what each caller asks of Docker, as argument lists (no daemon needed)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import docker


def test_run_args_in_order_with_mounts_env_and_a_cleared_entrypoint() -> None:
    args = docker.run_args(
        "img:1", ["-c", "print(1)"], name="hoist-x", entrypoint="", platform="linux/arm64", network="host",
        mounts=[docker.Mount(Path("/src"), "/out", read_only=False), docker.Mount("/lock", "/lock")],
        env={"HOME": "/tmp", "A": "b=c"}, user="1000:1000", workdir="/tmp", memory_mb=512,
    )
    assert args == ["run", "--rm", "--name", "hoist-x", "--network", "host", "--platform", "linux/arm64", "--memory", "512m",
                    "--user", "1000:1000", "--workdir", "/tmp", "--entrypoint", "",
                    "-v", "/src:/out:rw", "-v", "/lock:/lock:ro", "-e", "HOME=/tmp", "-e", "A=b=c", "img:1", "-c", "print(1)"]


def test_run_args_defaults_isolate_and_keep_the_image_entrypoint() -> None:
    # no network unless asked, removed at exit, the image's own entrypoint and platform
    assert docker.run_args("img:1", []) == ["run", "--rm", "--network", "none", "img:1"]
    assert docker.run_args("img:1", ["x"], remove=False, platform=None, entrypoint=None) == ["run", "--network", "none", "img:1", "x"]


def test_run_command_starts_with_the_docker_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker.shutil, "which", lambda name: "/usr/bin/docker" if name == "docker" else None)
    assert docker.run_command("img:1", ["a"], name="n")[:4] == ["/usr/bin/docker", "run", "--rm", "--name"]


def test_build_args_pin_tag_platform_and_network(tmp_path: Path) -> None:
    args = docker.build_args(tmp_path, "hoist-builder:3.13-x", buildargs={"BASE_IMAGE": "public.ecr.aws/lambda/python:3.13-arm64"}, platform="linux/arm64")
    assert args == ["build", "--tag", "hoist-builder:3.13-x", "--file", str(tmp_path / "Dockerfile"), "--network", "host", "--rm", "--force-rm",
                    "--platform", "linux/arm64", "--build-arg", "BASE_IMAGE=public.ecr.aws/lambda/python:3.13-arm64", str(tmp_path)]
    assert "--pull" not in args  # never pulls: the base image is what is here


def test_no_docker_command_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert docker.unreachable() == "no docker command"
    assert docker.daemon_problem() == docker.NO_COMMAND and "install Docker" in docker.NO_COMMAND


def test_container_names_are_fresh() -> None:
    a, b = docker.container_name("hoist-smoke"), docker.container_name("hoist-smoke")
    assert a != b and a.startswith("hoist-smoke-") and len(a) == len("hoist-smoke-") + 12
