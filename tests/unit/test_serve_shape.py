"""`invoke serve` asks the shape what to run (compose/serve.py): the efs shape serves a tree on this machine's CPython,
so a target of another CPU is refused; the image shape serves the target's image in Docker, so the target asked for (or
the default, whatever its CPU) is kept and Docker is what it needs first. No Docker command on PATH here: the real
check says so, before any lock or build."""
from __future__ import annotations

import platform

import pytest

from compose.serve import start
from pipeline import config, docker, shapes
from pipeline.errors import ServeError
from tests.conftest import write_pipeline

IMAGE = {'name = "test-fn"': 'name = "test-fn"\npackage = "image"'}
FOREIGN = "arm" if platform.machine() != "aarch64" else "local"  # conftest's targets: `local` (this CPU) and `arm` (aarch64)


@pytest.fixture
def no_docker(monkeypatch, tmp_path):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # shutil.which("docker") finds nothing


def test_the_shape_says_what_serve_runs(project, wheelhouse):
    assert shapes.shape_of(config.load(write_pipeline(project, wheelhouse))).serves == "tree"
    assert shapes.shape_of(config.load(write_pipeline(project, wheelhouse, IMAGE))).serves == "image"


def test_an_efs_target_of_another_cpu_is_refused_as_a_tree(project, wheelhouse, no_docker):
    cfg = config.load(write_pipeline(project, wheelhouse))
    with pytest.raises(ServeError) as err:
        start(cfg, FOREIGN)
    assert "its tree cannot run here" in str(err.value) and "Docker" not in err.value.what


@pytest.mark.parametrize("target", [FOREIGN, None], ids=["asked-for", "default"])
def test_an_image_target_is_served_in_docker_and_says_what_docker_needs(project, wheelhouse, no_docker, target):
    cfg = config.load(write_pipeline(project, wheelhouse, IMAGE))
    with pytest.raises(ServeError) as err:
        start(cfg, target)
    name = target or cfg.target().target.name
    assert err.value.what.startswith(f"target {name} is served as its image") and docker.NO_COMMAND in err.value.what
    assert err.value.where == "docker" and "apt-get install docker.io" in (err.value.fix or "")
    assert not (project / "dist").exists()  # refused before any build
