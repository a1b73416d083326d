"""Targets side by side, GPU packages refused for Lambda, lock errors that say why.

PyPI is played by a find-links folder of torch look-alikes (a plain torch that
pulls nvidia-* and triton, as PyPI's Linux torch does), the PyTorch CPU index by
a PEP 503 index served on 127.0.0.1; no network, no pip configuration.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.build import build
from builder.lock import current_locks, lock
from pipeline import config
from pipeline.errors import LockError
from tests.index_support import closed_port, serve, simple_index, torch_wheels
from tests.wheels import make_wheel

PIPELINE = """\
version = 1
default_target = "arm"
no_index = true
find_links = ["{gpu}"]

[targets.arm]
runtime = "python3.13"
arch = "arm64"
{arm_extra}

[targets.x86]
runtime = "python3.13"
arch = "x86_64"
{x86_extra}

[sets.efs]
requirements = "requirements/efs.in"

[efs]
file_system_name = "test-fs"
mount_path = "/mnt/test"

[function]
name = "test-fn"

[api]
name = "test-api"
"""


def cpu_index_table(target: str, url: str) -> str:
    return f'[[targets.{target}.index]]\nname = "pytorch-cpu"\nurl = "{url}"\npackages = ["torch"]\n'


@pytest.fixture(scope="module")
def indexes(tmp_path_factory) -> tuple[Path, Path]:
    """(the PyPI stand-in folder, the CPU index root)."""
    root = tmp_path_factory.mktemp("indexes")
    gpu, cpu = root / "pypi", root / "cpu-wheels"
    torch_wheels(gpu, cpu)
    # a package with a wheel for the target in 1.0 only; 2.0 is built for CPython 3.12
    make_wheel(gpu, "imagekit", "1.0", "cp313-cp313-manylinux_2_28_x86_64.manylinux_2_28_aarch64", {"imagekit/__init__.py": ""})
    make_wheel(gpu, "imagekit", "2.0", "cp312-cp312-manylinux_2_28_x86_64", {"imagekit/__init__.py": ""})
    # a package with wheels for CPython 3.12 only (no source): a runtime of the target's architecture that has one
    make_wheel(gpu, "oldkit", "1.0", "cp312-cp312-manylinux_2_28_x86_64", {"oldkit/__init__.py": ""})
    return gpu, simple_index(cpu, root / "cpu-index")


@pytest.fixture
def cpu_url(indexes):
    with serve(indexes[1]) as url:
        yield url


def project(root: Path, gpu: Path, efs_in: str = "torch\n", arm_extra: str = "", x86_extra: str = "") -> Path:
    (root / "requirements").mkdir(exist_ok=True)
    (root / "requirements" / "efs.in").write_text(efs_in)
    (root / "handler").mkdir(exist_ok=True)
    (root / "handler" / "app.py").write_text("def handler(event, context):\n    return {}\n")
    path = root / "pipeline.toml"
    path.write_text(PIPELINE.format(gpu=gpu, arm_extra=arm_extra, x86_extra=x86_extra))
    return path


def lock_error(path: Path, target: str = "x86") -> str:
    """The LockError that locking ``path``'s project for ``target`` raises, as the user reads it."""
    with pytest.raises(LockError) as err:
        lock(config.load(path), target)
    return str(err.value)


def test_x86_lock_without_a_cpu_index_is_refused_with_the_configuration_that_fixes_it(tmp_path, indexes):
    path = project(tmp_path, indexes[0])
    text = lock_error(path)
    assert "GPU packages: nvidia-cublas-cu12==12.8.4.1, triton==3.5.0" in text and "Lambda has no GPU" in text and "torch==2.10.0" in text
    assert '[[targets.x86.index]]\n      name = "pytorch-cpu"\n      url = "https://download.pytorch.org/whl/cpu"\n      packages = ["torch"]' in text
    assert 'torch_backend = "cpu"' in text and "allow_gpu = true under [targets.x86]" in text
    assert not list((tmp_path / "requirements").glob("*.lock"))  # nothing written
    # the explicit opt-out
    path = project(tmp_path, indexes[0], x86_extra="allow_gpu = true")
    names = {p.name for p in lock(config.load(path), "x86").locks["efs"].packages}
    assert {"torch", "nvidia-cublas-cu12", "triton"} <= names


def test_two_targets_on_cpu_torch_lock_and_build_independently(tmp_path, indexes, cpu_url):
    path = project(tmp_path, indexes[0], arm_extra=cpu_index_table("arm", cpu_url), x86_extra=cpu_index_table("x86", cpu_url))
    cfg = config.load(path)
    for name, machine in (("arm", "aarch64"), ("x86", "x86_64")):
        (torch,) = lock(cfg, name).locks["efs"].packages
        assert torch.version == "2.10.0+cpu" and torch.filename.endswith(f"manylinux_2_28_{machine}.whl") and torch.url.startswith(cpu_url.rsplit("/", 1)[0])
    # a change to one target (its own pin) leaves the other's lock current
    path.write_text(path.read_text().replace('arch = "x86_64"', 'arch = "x86_64"\noverride = ["torch==2.10.0+cpu"]'))
    cfg = config.load(path)
    assert current_locks(cfg, cfg.target("arm"))["efs"].packages[0].version == "2.10.0+cpu"
    with pytest.raises(LockError, match="stale"):
        current_locks(cfg, cfg.target("x86"))
    assert lock(cfg, "x86").resolved and not lock(cfg, "arm").resolved
    arm, x86 = build(cfg, "arm"), build(cfg, "x86")
    for result, machine in ((arm, "aarch64"), (x86, "x86_64")):
        doc = json.loads(result.build_json.read_text())
        assert doc["target"]["machine"] == machine and (result.sets["efs"].tree / "torch" / "__init__.py").read_text() == "CUDA = False\n"


def test_an_unreachable_index_names_its_url_and_the_network_error(tmp_path, indexes, monkeypatch):
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    url = f"http://127.0.0.1:{closed_port()}/simple"
    path = project(tmp_path, indexes[0], x86_extra=cpu_index_table("x86", url))
    text = lock_error(path)
    assert f'could not reach [[targets.x86.index]] "pytorch-cpu" at {url}/torch/' in text and "Connection refused" in text
    assert "fix: check that this machine reaches 127.0.0.1:" in text and "find_links" in text


def test_an_unknown_package_names_the_closest_ones(tmp_path, indexes):
    path = project(tmp_path, indexes[0], efs_in="imagekitt\n")
    text = lock_error(path)
    assert "no package named 'imagekitt'" in text and "closest names: imagekit" in text
    assert "fix: correct the name in efs.in (did you mean 'imagekit'?)" in text


def test_no_matching_version_lists_the_versions_the_target_can_use(tmp_path, indexes):
    path = project(tmp_path, indexes[0], efs_in="imagekit==3.0\n")
    text = lock_error(path)
    assert "no version of imagekit matches ==3.0" in text and "versions with a wheel for it: 1.0 (without one: 2.0)" in text
    # no 3.0 anywhere: the .in line is what is wrong, for every target
    assert "fix: pin one of those in efs.in, e.g. imagekit==1.0 (it resolves with the other requirements)" in text


def test_the_version_a_fix_names_resolves_with_the_other_pins_and_the_fix_works(tmp_path):
    """A trial: the fix named torchvision's newest version with a wheel, which needs a newer torch than the one pinned."""
    from tests.wheels import make_wheel

    house = tmp_path / "house"
    house.mkdir()
    for v in ("1.0", "2.0"):
        make_wheel(house, "base", v, "py3-none-any", {"base/__init__.py": ""})
    make_wheel(house, "kit", "1.0", "py3-none-any", {"kit/__init__.py": ""}, requires=["base>=1"])
    make_wheel(house, "kit", "2.0", "py3-none-any", {"kit/__init__.py": ""}, requires=["base>=2"])
    path = project(tmp_path, house, efs_in="base==1.0\nkit==9.0\n")
    text = lock_error(path)
    # kit 2.0 has a wheel but needs base 2: the fix names 1.0, the newest that resolves with base==1.0
    assert "versions with a wheel for it: 1.0, 2.0" in text and "fix: pin one of those in efs.in, e.g. kit==1.0 (it resolves with the other requirements)" in text
    (tmp_path / "requirements" / "efs.in").write_text("base==1.0\nkit==1.0\n")  # the fix, run
    assert {p.name: p.version for p in lock(config.load(path), "x86").locks["efs"].packages} == {"base": "1.0", "kit": "1.0"}


def test_no_wheel_for_the_target_offers_the_docker_builder_or_another_version(tmp_path, indexes):
    path = project(tmp_path, indexes[0], efs_in="imagekit==2.0\n")
    text = lock_error(path)
    assert "imagekit: no wheel for x86 (python3.13 on x86_64" in text and "versions with one: 1.0" in text
    assert "fix: pin imagekit==1.0 in the override list of [targets.x86] in pipeline.toml (this target only; a pin in efs.in holds for every target)" in text and "docker" not in text  # no source to compile: no Docker builder offered
    # the fix, run: the pin for this target alone; the other target keeps what efs.in says
    path = project(tmp_path, indexes[0], efs_in="imagekit==2.0\n", x86_extra='override = ["imagekit==1.0"]')
    fixed = lock(config.load(path), "x86")
    assert [(p.name, p.version) for p in fixed.locks["efs"].packages] == [("imagekit", "1.0")]


def test_no_wheel_of_any_version_names_the_runtimes_that_have_one_and_that_fix_works(tmp_path, indexes):
    """A fresh-clone trial: python3.9 and torch had sent the user from `invoke build --builder docker` back to `invoke lock`."""
    path = project(tmp_path, indexes[0], efs_in="oldkit\n")
    text = lock_error(path)
    assert "oldkit: no wheel for x86" in text and "runtimes it has wheels for on x86_64: python3.12" in text
    assert 'set runtime = "python3.12" under [targets.x86] in pipeline.toml, then `invoke lock --target x86`' in text and "docker" not in text
    text = path.read_text()  # the fix, as written
    path.write_text(text.replace('[targets.x86]\nruntime = "python3.13"', '[targets.x86]\nruntime = "python3.12"'))
    assert [(p.name, p.version) for p in lock(config.load(path), "x86").locks["efs"].packages] == [("oldkit", "1.0")]


def test_uv_takes_torch_backend_in_the_way_hoist_locks(tmp_path, indexes):
    """--torch-backend goes with `uv pip compile` of the throwaway project (no network: nothing here is a torch package)."""
    path = project(tmp_path, indexes[0], efs_in="imagekit\n", x86_extra='torch_backend = "cpu"')
    result = lock(config.load(path), "x86")
    assert [(p.name, p.version) for p in result.locks["efs"].packages] == [("imagekit", "1.0")]
