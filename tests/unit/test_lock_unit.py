"""Lock internals: wheel choice by target tags, markers for the target, lock files round-trip."""
from __future__ import annotations

import pytest

from builder import lock as lk
from pipeline.errors import LockError
from pipeline.targets import lambda_target

ARM = lambda_target("arm", "python3.13", "arm64")


def _entry(name, version, *filenames, marker=None):
    e = {"name": name, "version": version, "wheels": [{"url": f"https://files.example/{f}", "hashes": {"sha256": "0" * 64}} for f in filenames]}
    if marker:
        e["marker"] = marker
    return e


def test_best_wheel_for_the_target_is_chosen():
    entry = _entry("numpy", "2.0", "numpy-2.0-cp313-cp313-manylinux_2_17_aarch64.whl", "numpy-2.0-cp313-cp313-manylinux_2_28_aarch64.whl",
                   "numpy-2.0-cp313-cp313-manylinux_2_28_x86_64.whl", "numpy-2.0-cp313-cp313-manylinux_2_39_aarch64.whl")
    assert lk.pick_wheel(entry, ARM).filename == "numpy-2.0-cp313-cp313-manylinux_2_28_aarch64.whl"


def test_no_loadable_wheel_names_package_target_and_docker_builder():
    entry = _entry("fastthing", "1.0", "fastthing-1.0-cp313-cp313-manylinux_2_28_x86_64.whl")
    with pytest.raises(LockError) as err:
        lk.pick_wheel(entry, ARM)
    text = str(err.value)
    assert "fastthing==1.0" in text and "target arm" in text and "--builder docker" in text
    with pytest.raises(LockError, match="only a source distribution"):
        lk.pick_wheel({"name": "sdistonly", "version": "1.0", "sdist": {}}, ARM)


def test_markers_are_evaluated_for_the_target_not_this_machine():
    pylock = {"packages": [
        _entry("triton", "3.0", "triton-3.0-cp313-cp313-manylinux_2_28_aarch64.whl", marker="platform_machine == 'x86_64'"),
        _entry("setuptools", "80", "setuptools-80-py3-none-any.whl", marker="python_full_version >= '3.12'"),
    ]}
    assert [p.name for p in lk._packages_for_target(pylock, ARM)] == ["setuptools"]


def test_lock_file_round_trip_and_refuses_edits(tmp_path):
    pkgs = [lk.LockedPackage("torch", "2.9.1", "https://files.example/torch-2.9.1-cp313-cp313-manylinux_2_28_aarch64.whl", "a" * 64, "torch-2.9.1-cp313-cp313-manylinux_2_28_aarch64.whl"),
            lk.LockedPackage("local-thing", "2.13.0+cpu", "file:///somewhere/local_thing-2.13.0%2Bcpu-py3-none-any.whl", "b" * 64, "local_thing-2.13.0+cpu-py3-none-any.whl")]
    path = tmp_path / "efs.arm.lock"
    lk.write_lock(path, "efs", ARM, "f" * 64, pkgs)
    back = lk.read_lock(path)
    assert back.input_sha256 == "f" * 64 and back.set_name == "efs" and back.target == "arm"
    assert [(p.name, p.version, p.sha256) for p in back.packages] == [("local-thing", "2.13.0+cpu", "b" * 64), ("torch", "2.9.1", "a" * 64)]
    path.write_text(path.read_text().replace("--hash=sha256:" + "a" * 64, ""))
    with pytest.raises(LockError, match="not a Hoist lock line"):
        lk.read_lock(path)


def test_pyproject_routes_packages_to_their_index():
    from pipeline.config import Index

    text = lk._pyproject(["torch==2.9.1", "pillow"], ARM, (Index(name="pytorch-cpu", url="https://download.pytorch.org/whl/cpu", packages=("torch",)),))
    assert 'requires-python = ">=3.13"' in text and "explicit = true" in text
    assert 'torch = { index = "pytorch-cpu" }' in text and "pillow = " not in text


def test_committed_locks_are_current_for_the_shipped_config():
    """`invoke build` on a fresh clone must not find its own locks stale."""
    from pipeline import config
    from tests.conftest import REPO

    cfg = config.load(REPO / "pipeline.toml")
    locks = lk.current_locks(cfg, cfg.target())
    efs = {p.name: p for p in locks["efs"].packages}
    layer = {p.name for p in locks["layer"].packages}
    assert efs["torch"].version == "2.9.1" and efs["torch"].filename.endswith("manylinux_2_28_aarch64.whl")
    assert layer == {"pillow"} and not layer & efs.keys()
    assert not [n for n in efs if n.startswith(("nvidia", "triton", "cuda"))]
