"""The Docker builder against a real daemon and a stand-in Lambda image built
here (this machine's CPython 3.12 and gcc, `docker import`ed): sdists compiled
in the image, the same trees as the native builder for wheels, files owned by
the caller, a warm cache, readable failures."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from builder.build import build
from builder.lock import lock
from pipeline import config
from pipeline.errors import BuildError, LockError
from pipeline.interpreters import find_python
from tests.conftest import Recorded, write_pipeline
from tests.wheels import CEXT_SETUP, CEXT_SOURCE, make_sdist

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]

CEXT = "hoist-test-cext-zq"  # not a PyPI name
PY312 = '[targets.py312]\nkind = "lambda"\nruntime = "python3.12"\narch = "x86_64"\n\n[sets.efs]'


def _files(manifest):
    import json

    return {f["path"]: (f["mode"], f["sha256"]) for f in json.loads(manifest.read_text())["files"]}



@pytest.fixture(scope="module")
def builder_image(docker_daemon, tmp_path_factory):
    from tests.docker_support import standin_image

    python = find_python("3.12")
    prefix = Path(python.path).resolve().parent.parent
    return standin_image(prefix, "3.12", [], tmp_path_factory.mktemp("standin"), toolchain=True)


@pytest.fixture
def docker_project(project, wheelhouse, builder_image, tmp_path):
    sdists = tmp_path / "sdists"
    pkg = CEXT.replace("-", "_")
    make_sdist(sdists, CEXT, "1.0", {"setup.py": CEXT_SETUP.format(name=CEXT, version="1.0", pkg=pkg), f"{pkg}/__init__.py": "from ._speed import triple\n", f"{pkg}/_speed.c": CEXT_SOURCE})
    broken = (  # metadata builds (so it locks); the wheel does not, as a C package missing its headers
        "import sys\nfrom setuptools import setup\n"
        "if 'bdist_wheel' in sys.argv:\n    raise SystemExit('hoist-test-broken-zq cannot build here: needs libfoo headers')\n"
        "setup(name='hoist-test-broken-zq', version='1.0', py_modules=[])\n"
    )
    make_sdist(sdists, "hoist-test-broken-zq", "1.0", {"setup.py": broken})
    write_pipeline(project, wheelhouse, {
        "[sets.efs]": PY312,
        "no_index = true\n": "",  # build requirements (setuptools) come from PyPI
        f'find_links = ["{wheelhouse}"]': f'find_links = ["{wheelhouse}", "{sdists}"]',
        'output = "dist"': f'output = "dist"\nbuilder = "docker"\nbase_image = "{builder_image}"',
    })
    (project / "requirements" / "efs.in").write_text(f"{CEXT}==1.0\npurepkg==2.0\n")
    (project / "requirements" / "layer.in").write_text("layerpkg==0.5\n")
    return project


def test_sdist_the_native_builder_refuses_is_compiled_in_the_image(docker_project, monkeypatch):
    native = docker_project / "pipeline.toml"
    native.write_text(native.read_text().replace('builder = "docker"', 'builder = "native"'))
    with pytest.raises(LockError, match=f"{CEXT}: no wheel") as err:
        lock(config.load(native), "py312")
    assert 'set builder = "docker" under [build] in pipeline.toml, then `invoke lock --target py312`' in str(err.value)
    native.write_text(native.read_text().replace('builder = "native"', 'builder = "docker"'))  # that fix, applied: the lock below takes it

    monkeypatch.setenv("SUDO_UID", "4321")  # as `sudo invoke build` would: files belong to the caller
    monkeypatch.setenv("SUDO_GID", "4322")
    for folder in {*docker_project.parents, *docker_project.parent.rglob("*")} - {Path("/"), Path("/tmp")}:
        if folder.is_dir() and folder.is_relative_to("/tmp"):
            folder.chmod(0o755)  # pytest's folders are root-only; the caller must be able to read its own inputs
    cfg = config.load(native)
    locked = lock(cfg, "py312")
    assert [p.filename for p in locked.locks["efs"].packages if p.is_sdist] == [f"{CEXT.replace('-', '_')}-1.0.tar.gz"]
    first = Recorded()
    result = build(cfg, "py312", progress=first)
    assert result.builder == "docker"
    tree = result.sets["efs"].tree
    out = subprocess.run([find_python("3.12").path, "-I", "-c", f"import sys; sys.path.insert(0, {str(tree)!r}); import {CEXT.replace('-', '_')} as m; print(m.triple(14))"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "42", out.stderr
    assert result.sets["efs"].bytecode.compiled and result.sets["efs"].bytecode.python.startswith("3.12.")
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in tree.rglob("*") if p.is_file()}
    assert owners == {(4321, 4322)}
    assert any("Building wheel" in line or "setup.py" in line or "Successfully installed" in line for line in first.lines)
    from validate.stage import from_build

    checked = from_build(cfg, "py312", smoke_level="none")  # linux_x86_64 tag of the compiled wheel: built in the image, fine
    assert checked.ok, [f.as_json() for f in checked.errors]

    again = Recorded()
    build(cfg, "py312", force=True, progress=again)
    assert not [line for line in again.lines if "Downloading" in line or "Building wheel" in line]  # the cache had it all


def test_wheel_only_lock_gives_the_same_tree_as_the_native_builder(docker_project):
    (docker_project / "requirements" / "efs.in").write_text("purepkg==2.0\n")
    cfg = config.load(docker_project / "pipeline.toml")
    lock(cfg, "py312")
    docker = build(cfg, "py312", builder="auto")  # a daemon answers and the image is there: auto takes docker
    assert docker.builder == "docker"
    docker_hashes = {n: s.content_hash for n, s in docker.sets.items()}
    docker_files = {n: _files(s.manifest) for n, s in docker.sets.items()}
    native = build(cfg, "py312", builder="native", force=True)
    assert native.builder == "native"
    assert {n: _files(s.manifest) for n, s in native.sets.items()} == docker_files
    assert {n: s.content_hash for n, s in native.sets.items()} == docker_hashes


def test_a_package_that_fails_to_build_shows_the_containers_last_lines(docker_project):
    (docker_project / "requirements" / "efs.in").write_text("hoist-test-broken-zq==1.0\n")
    cfg = config.load(docker_project / "pipeline.toml")
    lock(cfg, "py312")
    with pytest.raises(BuildError) as err:
        build(cfg, "py312")
    text = str(err.value)
    assert "inside the container" in text and "cannot build here: needs libfoo headers" in text and "fix:" in text
    assert not [p for p in (docker_project / "dist" / "py312").iterdir() if p.name.startswith(".efs.partial")]


def test_foreign_cpu_without_qemu_says_how_to_enable_it(docker_project, monkeypatch, tmp_path):
    from builder import docker as docker_mod

    monkeypatch.setattr(docker_mod, "BINFMT_DIR", tmp_path / "no-binfmt")
    (docker_project / "requirements" / "efs.in").write_text("purepkg==2.0\n")
    cfg = config.load(docker_project / "pipeline.toml")
    lock(cfg, "arm")
    with pytest.raises(docker_mod.DockerUnavailable) as err:
        build(cfg, "arm", builder="docker")
    assert "qemu" in str(err.value) and "qemu-user-static binfmt-support" in str(err.value)


def test_interrupted_docker_build_leaves_no_tree_and_no_container(docker_project, monkeypatch):
    from builder import docker as docker_mod

    (docker_project / "requirements" / "efs.in").write_text("purepkg==2.0\n")
    cfg = config.load(docker_project / "pipeline.toml")
    lock(cfg, "py312")

    def interrupted(self, tree, on_line=None, **_):
        raise KeyboardInterrupt

    monkeypatch.setattr(docker_mod.DockerInstaller, "bytecode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(cfg, "py312")
    target_dir = docker_project / "dist" / "py312"
    assert not (target_dir / "efs").exists() and not [p for p in target_dir.iterdir() if ".partial-" in p.name]
    left = subprocess.run(["docker", "ps", "-aq", "--filter", "ancestor=" + docker_mod.DockerInstaller(cfg.target("py312").target, cfg.build.base_image, Path("/tmp")).tag], capture_output=True, text=True)
    assert left.stdout.strip() == ""
