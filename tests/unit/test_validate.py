"""Static validation against real failing trees: each classic Lambda failure,
compiled or assembled here, is caught with its file, package, rule and fix."""
from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import subprocess
import sysconfig

import pytest

from pipeline.targets import lambda_target
from tests.schemas import assert_conforms, problems
from tests.wheels import compile_extension, compile_library, make_wheel
from validate import checks
from validate.stage import from_tree

X86_313 = lambda_target("t", "python3.13", "x86_64")
X86_311 = lambda_target("t", "python3.11", "x86_64")
X86_312 = lambda_target("t", "python3.12", "x86_64")
ARM_313 = lambda_target("t", "python3.13", "arm64")

NEEDS_GLIBC_236 = "#include <stdlib.h>\nunsigned int pick(void) { return arc4random(); }\n"  # arc4random: GLIBC_2.36
NEEDS_GLIBC_227 = "#define _GNU_SOURCE\n#include <sys/mman.h>\nint anon(void) { return memfd_create(\"x\", 0); }\n"  # memfd_create: GLIBC_2.27


def _package(tree, name, files):
    """Lay files out as an installed distribution, with a RECORD naming them."""
    for rel, data in files.items():
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    info = tree / f"{name}-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in files))
    return tree


def _rules(report, severity="error"):
    return [(f.rule, f.file.split(":", 1)[1], f.package) for f in report.findings if f.severity == severity]


def test_newer_glibc_symbol_than_the_runtime_has(tmp_path):
    lib = compile_library(tmp_path / "b", "libnew.so", source=NEEDS_GLIBC_236)
    tree = _package(tmp_path / "t", "newlib", {"newlib/libnew.so": lib.read_bytes()})
    report = checks.validate({"efs": tree}, X86_313)
    assert _rules(report) == [("symbol-versions", "newlib/libnew.so", "newlib")]
    f = report.errors[0]
    assert "GLIBC_2.36" in f.message and "GLIBC_2.34" in f.message and "manylinux_2_34" in f.fix


def test_glibc_2_27_fails_on_al2_and_passes_on_al2023(tmp_path):
    lib = compile_library(tmp_path / "b", "libmemfd.so", source=NEEDS_GLIBC_227)
    tree = _package(tmp_path / "t", "memfd", {"memfd/libmemfd.so": lib.read_bytes()})
    al2 = checks.validate({"efs": tree}, X86_311)
    assert [r[0] for r in _rules(al2)] == ["symbol-versions"] and "python3.12+" in al2.errors[0].fix
    assert checks.validate({"efs": tree}, X86_312).ok


def test_x86_64_library_in_an_arm64_tree(tmp_path):
    lib = compile_library(tmp_path / "b")
    tree = _package(tmp_path / "t", "fast", {"fast/libdemo.so": lib.read_bytes()})
    report = checks.validate({"efs": tree}, ARM_313)
    assert _rules(report) == [("elf-machine", "fast/libdemo.so", "fast")]
    assert "EM_X86_64" in report.errors[0].message and "EM_AARCH64" in report.errors[0].message


def test_libgl_is_named_with_the_headless_fix(tmp_path):
    lib = compile_library(tmp_path / "b", "cv2.abi3.so")
    subprocess.run([shutil.which("patchelf"), "--add-needed", "libGL.so.1", "--add-needed", "libmissing.so.3", str(lib)], check=True)
    tree = _package(tmp_path / "t", "opencv-python", {"cv2/cv2.abi3.so": lib.read_bytes()})
    report = checks.validate({"efs": tree}, X86_313)
    by_lib = {f.message.split()[1].rstrip(","): f for f in report.errors}
    assert set(by_lib) == {"libGL.so.1", "libmissing.so.3"}
    assert "opencv-python-headless" in by_lib["libGL.so.1"].fix and by_lib["libGL.so.1"].package == "opencv-python"
    assert "auditwheel" in by_lib["libmissing.so.3"].fix


def test_libraries_resolve_through_origin_rpath_and_libs_folders(tmp_path):
    dep = compile_library(tmp_path / "b", "libdep-1a2b3c.so.1")
    user = compile_library(tmp_path / "b2", "_core.abi3.so")
    subprocess.run([shutil.which("patchelf"), "--add-needed", "libdep-1a2b3c.so.1", "--set-rpath", "$ORIGIN/../pkg.libs", str(user)], check=True)
    tree = _package(tmp_path / "t", "pkg", {"pkg/_core.abi3.so": user.read_bytes(), "pkg.libs/libdep-1a2b3c.so.1": dep.read_bytes()})
    assert checks.validate({"efs": tree}, X86_313).ok
    (tree / "pkg.libs" / "libdep-1a2b3c.so.1").unlink()
    assert [r[0] for r in _rules(checks.validate({"efs": tree}, X86_313))] == ["needed-libraries"]


def test_extension_for_another_cpython(tmp_path):
    ext = compile_extension(tmp_path / "b")  # for this machine's CPython (3.11)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    tree = _package(tmp_path / "t", "fastmod", {f"fastmod/_fast{suffix}": ext})
    report = checks.validate({"efs": tree}, X86_313)
    assert [r[0] for r in _rules(report)] == ["python-abi"]
    assert "CPython 3.11" in report.errors[0].message


def test_wheel_tags_against_the_target(tmp_path):
    house = tmp_path / "house"
    whl = make_wheel(house, "tagged", "1.0", "cp313-cp313-manylinux_2_28_aarch64", {"tagged/__init__.py": ""})
    import zipfile

    with zipfile.ZipFile(whl) as zf:
        zf.extractall(tmp_path / "t")
    assert [r[0] for r in _rules(checks.validate({"efs": tmp_path / "t"}, X86_313))] == ["wheel-tags"]
    assert checks.validate({"efs": tmp_path / "t"}, ARM_313).ok


def test_layer_over_the_unzipped_limit(tmp_path):
    tree = _package(tmp_path / "layer", "big", {"big/__init__.py": b""})
    with open(tree / "big" / "weights.bin", "wb") as fh:
        fh.truncate(checks.UNZIPPED_LIMIT + 1)  # sparse: the size counts, the disk is not used
    report = from_tree(tree, "python3.13", "x86_64", layer=True)
    assert [f.rule for f in report.errors] == ["size"]
    assert "more than 262,144,000" in report.errors[0].message and "requirements/efs.in" in report.errors[0].fix
    assert report.sizes.function_and_layers_unzipped > checks.UNZIPPED_LIMIT
    as_efs = from_tree(tree, "python3.13", "x86_64")
    assert as_efs.ok and as_efs.sizes.efs[0].usd_per_month == round((checks.UNZIPPED_LIMIT + 1) / 2**30 * 0.30, 2)


def test_cuda_libraries_and_nvidia_packages(tmp_path):
    lib = compile_library(tmp_path / "b", "libcudart.so.12")
    tree = _package(tmp_path / "t", "torch", {"torch/lib/libcudart.so.12": lib.read_bytes(), "torch/__init__.py": b""})
    _package(tree, "nvidia-cublas-cu12", {"nvidia/cublas/__init__.py": b""})
    report = checks.validate({"efs": tree}, X86_313)
    gpu = [(f.file.split(":", 1)[1], f.package) for f in report.errors if f.rule == "gpu-bloat"]
    assert ("torch/lib/libcudart.so.12", "torch") in gpu and any(p == "nvidia-cublas-cu12" for _, p in gpu)
    assert all("download.pytorch.org/whl/cpu" in f.fix for f in report.errors if f.rule == "gpu-bloat")


def test_every_problem_is_reported_in_one_run_and_as_versioned_json(tmp_path):
    arm_ext = compile_extension(tmp_path / "b")
    lib = compile_library(tmp_path / "b2", "libcudart.so.11")
    tree = _package(tmp_path / "t", "mixed", {"mixed/_fast.cpython-311-x86_64-linux-gnu.so": arm_ext, "mixed/libcudart.so.11": lib.read_bytes()})
    report = checks.validate({"efs": tree}, ARM_313)
    rules = {f.rule for f in report.errors}
    assert {"elf-machine", "python-abi", "gpu-bloat"} <= rules
    report.write_json(tmp_path / "report.json")
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["version"] == 1 and doc["ok"] is False and doc["counts"]["error"] == len(report.errors)
    assert {"severity", "rule", "file", "package", "message", "fix"} == set(doc["findings"][0])
    assert_conforms("validation-report", doc)


@pytest.mark.parametrize(("runtime", "arch", "fix"), [("python3.8", "x86_64", "--runtime python3.13"), ("python3.13", "aarch64", "--arch arm64")])
def test_bad_options_name_the_fix(tmp_path, runtime, arch, fix):
    from pipeline.errors import ValidationError

    with pytest.raises(ValidationError, match="unknown") as err:
        from_tree(tmp_path, runtime, arch)
    assert fix in str(err.value)


def test_libraries_data_is_consistent():
    data = checks.libraries()
    present = set(data["present"]["common"]) | set(data["present"]["al2"]) | set(data["present"]["al2023"])
    assert not present & set(data["absent"])  # a library is either in the base image or not
    assert {"libGL.so.1", "libX11.so.6", "libglib-2.0.so.0"} <= set(data["absent"])
    assert all(fix for fix in data["absent"].values())


# ------------------------------------------------------------ issue 13: waivers, the smoke test beside static errors


def _report(*findings):
    return checks.ValidationReport(target=lambda_target("arm", "python3.13", "arm64"), trees=(), findings=tuple(findings))


def test_a_waiver_by_rule_and_file_pattern_turns_an_error_into_a_warning_with_its_reason():
    from pipeline.config import Waiver
    from validate.stage import _apply_waivers

    gomp = checks.Finding("error", "needed-libraries", "efs:sk/_openmp_helpers.cpython-313-aarch64-linux-gnu.so", "scikit-learn", "needs libgomp.so.1", "ship it")
    other = checks.Finding("error", "needed-libraries", "efs:cv2/cv2.abi3.so", "opencv-python", "needs libGL.so.1", "use headless")
    waived = _apply_waivers(_report(gomp, other), (Waiver("needed-libraries", "efs:sk/_openmp*.so", "threads off on Lambda"),), "pipeline.toml")
    first, second = waived.findings
    assert first.severity == "warning" and first.message.startswith("waived in pipeline.toml (threads off on Lambda): ")
    assert second.severity == "error" and second.fix.startswith("use headless; or, if nothing Lambda runs loads it, waive it: ")
    assert 'waive = [{ rule = "needed-libraries", files = "efs:cv2/cv2.abi3.so", reason = "' in second.fix
    assert not waived.ok and [f.file for f in waived.errors] == ["efs:cv2/cv2.abi3.so"]
    with pytest.raises(Exception, match="unknown rule"):
        _apply_waivers(_report(gomp), (Waiver("no-such-rule", "efs:*", "x"),), "pipeline.toml")


def test_each_static_error_shows_what_the_smoke_test_saw():
    from validate.stage import _smoke_saw

    finding = checks.Finding("error", "needed-libraries", "efs:sk/_openmp.so", "scikit-learn", "needs libgomp.so.1")
    ran = {"run": True, "level": 3, "ok": True, "distance": "emulated CPU", "loaded": ["/mnt/hoist/envs/x/site-packages/cv2/cv2.so"], "failed_imports": {}}
    saw = lambda doc: _smoke_saw(finding, checks.SmokeResult.from_json(doc))  # noqa: E731
    assert "no import loaded this file" in saw(ran)
    assert "loaded this file at level 3" in saw({**ran, "loaded": ["/mnt/h/site-packages/sk/_openmp.so"]})
    assert "`import sk` failed: ImportError: libgomp.so.1" in saw({**ran, "ok": False, "failed_imports": {"sk": "ImportError: libgomp.so.1"}})
    assert saw({"run": False}) == "the smoke test did not run"


def test_the_keep_line_covers_the_files_by_top_folder_and_suffix():
    from pipeline.config import keep_line

    assert keep_line(["skimage/__init__.pyi", "skimage/filters/__init__.pyi", "single.pyi"]) == 'keep = ["single.pyi", "skimage/**/*.pyi"]'


def _smoke_inputs(tmp_path):
    from validate.smoke import SmokeInputs

    tree = _package(tmp_path / "efs", "plain", {"plain/__init__.py": b""})
    return SmokeInputs(handler_dir=None, handler="app.handler", trees={"efs": tree}, layer_set=None, mount_path="/mnt/hoist", function_name="f", memory_mb=3008,
                       timeout_s=30, cache=tmp_path / "cache")


def test_the_report_of_a_smoke_test_that_did_not_run_conforms_to_the_schema(tmp_path):
    from validate.smoke import smoke

    # GIVEN the smoke test skipped, and asked at a level that cannot run here (level 1 of an aarch64 target on x86_64)
    inputs = _smoke_inputs(tmp_path)
    skipped, _ = smoke(inputs, X86_313, level="none")
    foreign, _ = smoke(inputs, ARM_313 if platform.machine() == "x86_64" else X86_313, level="1")
    assert not skipped.run and not foreign.run and foreign.skipped_levels and foreign.skipped_levels[0].level == 1
    tree = tmp_path / "efs"
    for result in (skipped, foreign):
        # WHEN validate's report holds it, with the sizes of a layer and a function zip
        report = checks.validate({"efs": tree, "layer": tree}, X86_313, layer_set="layer", zips={"function_zip": {"bytes": 10, "unzipped_bytes": 20}})
        doc = json.loads(json.dumps(dataclasses.replace(report, smoke=result).as_json()))
        # THEN it conforms to the report's schema, and reads back as the same result
        assert_conforms("validation-report", doc)
        assert checks.SmokeResult.from_json(doc["smoke"]) == result
        assert checks.SizeReport.from_json(doc["sizes"]) == report.sizes and doc["sizes"]["function_and_layers_unzipped"] == 20


RAN = checks.SmokeResult(run=True, level=1, init_ms=12.5, modules=("a",), ok=True, report="REPORT RequestId: x", status="ok", error=None, import_ms={"a": 1.0},
                         loaded=("a/x.so",), handler_result={"body": "{}"}, python="3.13.1", machine="x86_64", skipped_levels=())
ACTIVATION = {"tree": "/mnt/hoist/envs/x/site-packages", "hydrated": True, "why": None, "archives": True, "hot_files": 3, "hot_bytes": 300, "held_bytes": 100,
              "released": True, "held_now": 0, "prefetch": "touched", "ms": 4.5, "handler_ms": 40.0, "held_after_init": 0}
BROKEN_SMOKE = {  # what a reader of the report could not rely on
    "passed without an answer": {**RAN.as_json(), "status": "error"},
    "neither an init state nor an answer": {k: v for k, v in RAN.as_json().items() if k not in ("report", "status", "import_ms", "loaded", "handler_result")},
    "an init that failed and passed": {**RAN.as_json(), "state": "init-error", "failed_imports": {}},
    "not run, and no reason": {"run": False},
    "an unknown key": {**RAN.as_json(), "surprise": 1},
    "a level that does not exist": {**RAN.as_json(), "level": 4},
    "hydration said in words": {**RAN.as_json(), "activation": {**ACTIVATION, "hydrated": "yes"}},
    "hydrated, with a reason it was not": {**RAN.as_json(), "activation": {**ACTIVATION, "why": "HOIST_HYDRATE=0"}},
    "activation without what it holds": {**RAN.as_json(), "activation": {k: v for k, v in ACTIVATION.items() if k != "held_bytes"}},
}


@pytest.mark.parametrize("case", BROKEN_SMOKE)
def test_the_report_schema_refuses_a_broken_smoke_result(case):
    assert_conforms("validation-report", {**_REPORT_DOC, "smoke": RAN.as_json()})
    assert_conforms("validation-report", {**_REPORT_DOC, "smoke": {**RAN.as_json(), "activation": ACTIVATION}})  # what activation did, when the smoke test says it
    assert problems("validation-report", {**_REPORT_DOC, "smoke": BROKEN_SMOKE[case]}), case


_REPORT_DOC = checks.ValidationReport(target=X86_313, trees=(), findings=()).as_json()


def test_a_passed_smoke_test_under_a_failed_verdict_says_the_static_checks_failed():
    import dataclasses
    import io

    from rich.console import Console

    from validate.report import print_report

    finding = checks.Finding("error", "needed-libraries", "efs:sk/_openmp.so", "scikit-learn", "needs libgomp.so.1", "ship it")
    smoke = checks.SmokeResult.from_json({"run": True, "level": 1, "ok": True, "modules": ["sk"], "init_ms": 5.0, "python": "3.13.1", "machine": "x86_64"})
    out = io.StringIO()
    print_report(Console(file=out, width=200), dataclasses.replace(_report(finding), smoke=smoke))
    text = out.getvalue()
    assert "smoke test level 1 on x86_64 (CPython 3.13.1): passed" in text and "distance from Lambda" not in text  # no distance to tell
    assert text.rstrip().splitlines()[-1] == "FAILED (the static checks above; the smoke test passed): 1 error, 0 warnings, 0 notes"


def test_the_smoke_test_reports_its_init_and_warns_past_lambda_s_10_s_only_on_the_target_s_own_cpu():
    """Issue 23, 14. Lambda stops an on-demand function's init after 10 s and runs it again as part of the first
    invoke (Lambda Developer Guide, execution environment lifecycle). A report, not a timed test: the figures here
    are given, not measured. An emulated CPU's figure is said to be emulated and warns of nothing."""
    from pipeline.targets import init_report
    from validate.smoke import init_findings

    slow = checks.SmokeResult(run=True, level=2, init_ms=12_500.0, machine="x86_64", emulated=False)
    (finding,) = init_findings(slow)
    assert finding.severity == "warning" and "12.5 s" in finding.message and "first invoke" in finding.message
    assert init_findings(checks.SmokeResult(run=True, level=3, init_ms=95_000.0, machine="aarch64", emulated=True)) == []
    assert init_findings(checks.SmokeResult(run=True, level=2, init_ms=9_900.0, machine="x86_64", emulated=False)) == []
    assert "emulated CPU" in init_report(95_000.0, emulated=True)[0] and "target's own CPU" in init_report(900.0, emulated=False)[0]
    assert init_report(12_000.0, emulated=False, lambda_target=False)[1] is None  # a local target is not bound by Lambda's init


def test_the_handlers_words_about_its_model_folder_name_the_users_folder_not_the_smoke_tests_mount(tmp_path):
    from types import SimpleNamespace

    from validate.smoke import MODEL_MOUNT, _on_host

    said = f"model folder {MODEL_MOUNT} breaks its contract: labels.json has 5 labels, the model 4 outputs"
    assert _on_host(said, SimpleNamespace(model_dir=tmp_path / "mymodel")) == f"model folder {tmp_path / 'mymodel'} breaks its contract: labels.json has 5 labels, the model 4 outputs"
    assert _on_host({"errorMessage": said}, SimpleNamespace(model_dir=None)) == str({"errorMessage": said})  # no model: as said
