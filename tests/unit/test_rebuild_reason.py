"""A set that is built again says why: what differs between the build in dist/ and the inputs now (builder/build.py)."""
from __future__ import annotations

from pathlib import Path

from builder import manifest as mf
from builder.build import build_key, rebuild_reason
from builder.lock import LockedPackage, LockFile
from pipeline.records import BytecodeReport, PackageEntry, SlimRecord, manifest_path, write_manifest
from pipeline.targets import lambda_target

INPUTS = {"builder_version": "11", "installer": "native|python3.13", "lock": "a" * 64, "target": "arm64|python3.13", "slim_rules": "r" * 64,
          "import_check": "emulated|trixie"}


def _built(set_dir: Path, packages: dict[str, str], inputs: dict | None) -> None:
    made = mf.manifest(set_name="efs", target=lambda_target("arm", "python3.13", "arm64").as_json(), build_key=build_key(inputs or INPUTS),
                       build_inputs=inputs, files=[], packages=[PackageEntry(n, v, ("py3-none-any",), "efs") for n, v in packages.items()],
                       bytecode=BytecodeReport(), slim=SlimRecord.from_json({"enabled": True, "rules": []}), builder="native", archives=[])
    write_manifest(made, manifest_path(set_dir))


def _lock(packages: dict[str, str]) -> LockFile:
    return LockFile(path=Path("efs.arm.lock"), set_name="efs", target="arm", input_sha256="0" * 64,
                    packages=tuple(LockedPackage(n, v, f"https://files.example/{n}-{v}.whl", "1" * 64, f"{n}-{v}-py3-none-any.whl") for n, v in packages.items()))


def test_the_packages_that_moved_are_named_first(tmp_path):
    _built(tmp_path, {"numpy": "2.5.5", "filelock": "3.0", "torch": "2.9.1"}, INPUTS)
    now = _lock({"numpy": "2.5.4", "torch": "2.9.1", "idna": "3.21"})
    assert rebuild_reason(tmp_path, now, INPUTS | {"lock": "b" * 64}, force=False) == "numpy 2.5.5 -> 2.5.4, idna 3.21 added, filelock 3.0 removed"


def test_the_other_inputs_are_named_when_they_changed(tmp_path):
    pins = {"numpy": "2.5.5"}
    _built(tmp_path, pins, INPUTS)
    assert rebuild_reason(tmp_path, _lock(pins), INPUTS | {"lock": "b" * 64}, force=False) == "a wheel's URL or hash changed in the lock"
    assert rebuild_reason(tmp_path, _lock(pins), INPUTS | {"builder_version": "12"}, force=False) == "Hoist's builder version changed (11 -> 12)"
    assert rebuild_reason(tmp_path, _lock(pins), INPUTS | {"import_check": "docker|x", "slim_rules": "s" * 64}, force=False) == (
        "the slim rules changed, the import check's runtime changed")


def test_no_earlier_build_a_forced_one_and_an_older_manifest(tmp_path):
    pins = {"numpy": "2.5.5"}
    assert rebuild_reason(tmp_path, _lock(pins), INPUTS, force=False) == "no earlier build"
    _built(tmp_path, pins, None)  # a manifest written before the inputs were kept
    assert rebuild_reason(tmp_path, _lock(pins), INPUTS | {"builder_version": "12"}, force=False) == "built by an earlier Hoist"
    assert rebuild_reason(tmp_path, _lock(pins), INPUTS, force=True) == "--force"
    manifest_path(tmp_path).write_text("{not json")
    assert rebuild_reason(tmp_path, _lock(pins), INPUTS, force=False) == "the earlier build's manifest cannot be read"


def test_a_changed_set_before_it_on_the_path_is_named(tmp_path):
    pins = {"torch": "2.9.1"}
    _built(tmp_path, pins, INPUTS | {"earlier_sets": {"layer": "a" * 64}})
    assert rebuild_reason(tmp_path, _lock(pins), INPUTS | {"earlier_sets": {"layer": "b" * 64}}, force=False) == "the layer set it imports with changed"


def test_a_manifest_from_before_the_earlier_sets_were_an_input_says_so(tmp_path):
    pins = {"torch": "2.9.1"}
    _built(tmp_path, pins, INPUTS)  # no earlier_sets: written by the Hoist before
    assert rebuild_reason(tmp_path, _lock(pins), INPUTS | {"earlier_sets": {"layer": "b" * 64}}, force=False) == (
        "built by an earlier Hoist, whose key did not hold the sets before it")
