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


def test_no_loadable_wheel_names_package_target_and_the_docker_builder_only_for_a_source():
    entry = _entry("fastthing", "1.0", "fastthing-1.0-cp313-cp313-manylinux_2_28_x86_64.whl")
    with pytest.raises(LockError) as err:
        lk.pick_wheel(entry, ARM)
    text = str(err.value)
    assert "fastthing==1.0" in text and "target arm" in text and "pin a version of fastthing" in text and "docker" not in text  # nothing to compile
    with pytest.raises(LockError, match="only a source distribution") as err:
        lk.pick_wheel({"name": "sdistonly", "version": "1.0", "sdist": {}}, ARM)
    assert 'builder = "docker" under [build]' in str(err.value)


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


def _pkg(name, version, tag="py3-none-any"):
    filename = f"{name.replace('-', '_')}-{version}-{tag}.whl"
    return lk.LockedPackage(name, version, f"https://files.example/{filename}", "0" * 64, filename)


def _cfg(project, wheelhouse, arm_extra=""):
    from pipeline import config
    from tests.conftest import write_pipeline

    return config.load(write_pipeline(project, wheelhouse, {'arch = "arm64"': 'arch = "arm64"\n' + arm_extra}))


def test_gpu_packages_are_refused_for_lambda_only_and_allow_gpu_opts_out(project, wheelhouse):
    cfg = _cfg(project, wheelhouse)
    pkgs = [_pkg("torch", "2.10.0"), _pkg("nvidia-cudnn-cu12", "9.1"), _pkg("triton", "3.5.0"), _pkg("pillow", "11.0")]
    assert [p.name for p in lk.gpu_packages(pkgs)] == ["nvidia-cudnn-cu12", "triton"]
    assert [p.name for p in lk.gpu_packages([_pkg("torch", "2.5.1+cu121"), _pkg("torch", "2.5.1+cpu")])] == ["torch"]
    with pytest.raises(LockError) as err:
        lk.refuse_gpu(pkgs, cfg.target("arm"))
    text = str(err.value)
    assert "nvidia-cudnn-cu12==9.1, triton==3.5.0" in text and "They come with torch==2.10.0" in text and "[[targets.arm.index]]" in text
    lk.refuse_gpu(pkgs, cfg.target("local"))  # this machine may have a GPU
    lk.refuse_gpu(pkgs, _cfg(project, wheelhouse, "allow_gpu = true").target("arm"))


def test_compile_command_uses_the_target_backend_and_never_pypi_under_no_index(project, wheelhouse, tmp_path):
    cfg = _cfg(project, wheelhouse, 'torch_backend = "cpu"')
    cmd = lk.compile_command(tmp_path, cfg.target("arm").target, cfg, cfg.target("arm"), [])
    assert cmd[cmd.index("--torch-backend") + 1] == "cpu" and "--only-binary" in cmd
    assert "--no-index" not in cmd and cmd[cmd.index("--default-index") + 1] == (tmp_path / "no-index").as_uri()  # explicit indexes stay usable
    local = lk.compile_command(tmp_path, cfg.target("local").target, cfg, cfg.target("local"), [])
    assert "--torch-backend" not in local and "--python-platform" not in local


def test_a_target_s_own_settings_change_only_its_own_fingerprint(project, wheelhouse):
    before = _cfg(project, wheelhouse)
    after = _cfg(project, wheelhouse, 'override = ["purepkg==2.0"]\ntorch_backend = "cpu"\n[[targets.arm.index]]\nname = "cpu"\nurl = "https://download.pytorch.org/whl/cpu"')
    fp = {name: [lk.input_fingerprint(c, c.target(name), lk.find_links_for(c, c.target(name))) for c in (before, after)] for name in ("arm", "local")}
    assert fp["local"][0] == fp["local"][1] and fp["arm"][0] != fp["arm"][1]


def test_the_versions_offered_to_pin_are_final_releases_when_there_are_any(tmp_path):
    from builder.diagnose import Source, diagnose

    for name in ("kit-1.0-py3-none-any.whl", "kit-1.1-py3-none-any.whl", "kit-2.0.dev1-py3-none-any.whl", "kit-2.0rc1-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    found = diagnose("  x No solution found\n  Because there is no version of kit==9.0 and you require kit==9.0, we can conclude", ARM,
                     [Source("find-links", str(tmp_path), "find_links")], "efs.in")
    assert found.cause == "no-matching-version"
    assert "versions with a wheel for it: 1.0, 1.1" in found.what and "dev1" not in found.what and "rc1" not in found.what
    assert found.fix == "pin one of those in efs.in, e.g. kit==1.1"
    (tmp_path / "kit-1.0-py3-none-any.whl").unlink()
    (tmp_path / "kit-1.1-py3-none-any.whl").unlink()  # only pre-releases: those are offered
    assert diagnose("there is no version of kit==9.0 and", ARM, [Source("find-links", str(tmp_path), "find_links")], "efs.in").fix == "pin one of those in efs.in, e.g. kit==2.0rc1"


def test_a_fix_offers_the_docker_builder_only_when_it_is_not_the_builder_already(tmp_path):
    from builder.diagnose import Pins, Source, diagnose

    (tmp_path / "srconly-1.0.tar.gz").write_bytes(b"")
    sources = [Source("find-links", str(tmp_path), "find_links")]
    text = "  x No solution found\n  Because srconly==1.0 has no usable wheels and you require srconly==1.0, we can conclude"
    native = diagnose(text, ARM, sources, Pins(files="efs.in"))
    docker = diagnose(text, ARM, sources, Pins(files="efs.in", docker=False))
    assert native.cause == docker.cause == "no-wheel"
    assert 'builder = "docker"' in native.fix and "docker" not in docker.fix
    # a cause it cannot name: the .in files first, this target's own override list for a pin of this target alone
    other = diagnose("  x No solution found: something else", ARM, sources, Pins(files="efs.in or layer.in", target_only="the override list of [targets.arm]"))
    assert other.fix.startswith("read uv's reason above and adjust the pins in efs.in or layer.in, or, for this target only, the override list of [targets.arm]")
