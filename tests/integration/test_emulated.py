"""Level 3: the smoke test on aarch64 under QEMU, in a Debian trixie root holding
CPython 3.13 (pipeline/emulation.py), from this x86_64 machine. The root is
prepared once per machine by the emulated_arm64 fixture (~8 min when the cache
is empty). Needs PyPI once, for awslambdaric's aarch64 wheel."""
from __future__ import annotations

import json
import platform
import shutil

import pytest

from pipeline.dists import top_level_modules
from tests.conftest import lock_and_build
from tests.wheels import compile_extension
from validate.stage import from_build

pytestmark = [pytest.mark.network, pytest.mark.slow]


def _arm(project, efs: str):
    (project / "requirements" / "efs.in").write_text(efs)
    return lock_and_build(project, target="arm")


def test_auto_takes_level3_on_aarch64_and_says_how_far_it_is_from_lambda(project, emulated_arm64):
    assert platform.machine() == "x86_64"  # what this test is about: a foreign CPU
    cfg = _arm(project, "purepkg\n")
    report = from_build(cfg, "arm", smoke_level="auto")
    assert report.ok, [f.as_json() for f in report.errors] + [report.smoke.log_tail]
    smoke = report.smoke
    assert smoke.run and smoke.level == 3 and smoke.ok and smoke.machine == "aarch64" and smoke.emulated
    assert "QEMU" in smoke.distance and "Debian trixie" in smoke.distance and "Amazon Linux" in smoke.distance
    assert [s.level for s in smoke.skipped_levels] == [1, 2]  # nothing closer to Lambda could run
    assert {"purepkg", "layerpkg"} <= set(smoke.modules)
    body = json.loads(smoke.handler_result["body"])
    assert body["efs_tree"] == "/mnt/test/site-packages" and body["on_path"] is True
    # hydrated under QEMU too, from the archives the build wrote (the smoke test fails otherwise, naming the cause)
    assert smoke.activation["hydrated"] is True and smoke.activation["hot_files"] > 0 and smoke.activation["held_after_init"] == 0
    # the build's import check ran in the same root
    check = json.loads((project / "dist" / "arm" / "efs" / "manifest.json").read_text())["slim"]["import_check"]
    assert check["verified"] and "Debian trixie" in check["runtime"] and "aarch64" in check["runtime"]


def _as_built(set_dir) -> None:
    """The set's manifest lists the files its tree holds now, as if the build had made them (validate refuses a tree
    changed after its build: these tests stand in for a wheel that shipped the file)."""
    from builder import manifest as mf
    from pipeline.records import load_manifest, manifest_path, write_manifest

    files = mf.scan(set_dir / "site-packages")
    write_manifest(load_manifest(manifest_path(set_dir)).with_files(files, mf.content_hash(files)), manifest_path(set_dir))


def test_an_x86_64_extension_in_an_arm64_tree_fails_both_checks_with_the_cause(project, emulated_arm64, tmp_path):
    cfg = _arm(project, "purepkg\n")
    # the layer is mounted as built (the EFS tree is hydrated from the archives the build wrote)
    layer = project / "dist" / "arm" / "layer" / "site-packages"
    (layer / "smuggled.cpython-313-aarch64-linux-gnu.so").write_bytes(compile_extension(tmp_path))  # named for the target, built for x86_64
    _as_built(layer.parent)
    assert "smuggled" in top_level_modules(layer)
    report = from_build(cfg, "arm", smoke_level="3")
    static = [f for f in report.errors if f.rule == "elf-machine"]
    assert [f.file for f in static] == ["layer:smuggled.cpython-313-aarch64-linux-gnu.so"]
    assert "smoke test: the smoke test's `import smuggled` failed" in static[0].message  # side by side
    [failed] = [f for f in report.errors if f.rule == "smoke-import"]
    assert failed.package == "smuggled" and "ImportError" in failed.message and report.smoke.level == 3 and not report.smoke.ok
    assert "slimming removed nothing of that package" in failed.fix


def test_a_waiver_turns_the_error_into_a_warning_that_prints_its_reason(project, wheelhouse, emulated_arm64, tmp_path):
    from pipeline import config
    from tests.conftest import write_pipeline

    _arm(project, "purepkg\n")
    layer = project / "dist" / "arm" / "layer" / "site-packages"
    (layer / "layerpkg" / "_optional.so").write_bytes(compile_extension(tmp_path))  # an optional x86_64 helper nothing imports
    _as_built(layer.parent)
    report = from_build(config.load(project / "pipeline.toml"), "arm", smoke_level="3")
    [err] = report.errors
    assert err.rule == "elf-machine" and "no import loaded this file" in err.message
    assert 'waive = [{ rule = "elf-machine", files = "layer:layerpkg/_optional.so"' in err.fix
    write_pipeline(project, wheelhouse, {"[build]": '[validate]\nwaive = [{ rule = "elf-machine", files = "layer:layerpkg/_opt*.so", reason = "never imported" }]\n\n[build]'})
    waived = from_build(config.load(project / "pipeline.toml"), "arm", smoke_level="3")
    assert waived.ok and waived.smoke.ok
    [warning] = [f for f in waived.findings if f.rule == "elf-machine"]
    assert warning.severity == "warning" and "waived in pipeline.toml (never imported)" in warning.message


def test_scikit_image_in_the_layer_keeps_its_stubs_and_imports_on_aarch64(tmp_path, emulated_arm64):
    """The issue's case: `type-stubs` removed every .pyi, and `import skimage` failed on Lambda."""
    from builder.build import build
    from builder.lock import lock
    from pipeline import config
    from tests.conftest import REPO, without_model

    (tmp_path / "pipeline.toml").write_text(without_model(REPO / "pipeline.toml"))
    shutil.copytree(REPO / "handler", tmp_path / "handler", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "layer.in").write_text("pillow\nscikit-image\n")
    (tmp_path / "requirements" / "efs.in").write_text("packaging\n")  # the demo's torch is covered by test_demo_tree.py
    cfg = config.load(tmp_path / "pipeline.toml")
    lock(cfg)
    result = build(cfg)
    layer = result.sets["layer"].tree
    assert (layer / "skimage" / "__init__.pyi").is_file() and (layer / "skimage" / "filters" / "__init__.pyi").is_file()
    assert not list(layer.glob("numpy/**/*.pyi"))  # stubs nothing reads at import still go
    check = result.sets["layer"].slim.import_check
    assert check and check.verified and check.runtime and "aarch64" in check.runtime and check.restored == () and check.failing == {}
    report = from_build(cfg, smoke_level="auto")
    assert report.ok, [f.as_json() for f in report.errors] + [report.smoke.log_tail]
    assert report.smoke.level == 3 and report.smoke.machine == "aarch64" and "skimage" in report.smoke.import_ms


@pytest.mark.docker
def test_without_root_level3_runs_the_root_as_an_arm64_image_under_docker(project, emulated_arm64, docker_daemon, monkeypatch):
    from pipeline import emulation

    monkeypatch.setattr(emulation, "chroot_problem", lambda: "running the root without Docker needs root")  # as a user who is not root
    cfg = _arm(project, "purepkg\n")
    check = json.loads((project / "dist" / "arm" / "efs" / "manifest.json").read_text())["slim"]["import_check"]
    assert check["verified"] and "Docker" in check["runtime"], check
    report = from_build(cfg, "arm", smoke_level="3")
    assert report.ok, [f.as_json() for f in report.errors] + [report.smoke.log_tail]
    smoke = report.smoke
    assert smoke.level == 3 and smoke.image.startswith("hoist-emulated/debian-trixie-arm64") and smoke.machine == "aarch64" and smoke.ok
    assert json.loads(smoke.handler_result["body"])["efs_tree"] == "/mnt/test/site-packages"
