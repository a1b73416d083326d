"""The shipped demo for real: torch 2.9.1 + torchvision for python3.13 on arm64, built on this x86_64 machine.

"Nothing torch needs was removed" is checked statically against the same
wheels installed without slimming (imports of kept modules, DT_NEEDED of kept
libraries, the loader's view of every stripped library, every top-level
module), and for real on aarch64: the build's import check and the smoke test
run CPython 3.13 for aarch64 under QEMU (level 3, the emulated_arm64 fixture),
and held-out digits sent through the handler come back with their labels.
"""
from __future__ import annotations

import os
import shutil

import pytest
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

from builder import elfstrip, slim
from builder.build import build
from builder.install import install_native
from builder.lock import current_locks, lock
from pipeline import config
from pipeline.dists import top_level_modules
from tests.conftest import REPO, without_model
from tests.digits import held_out, render

pytestmark = [pytest.mark.network, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, emulated_arm64):
    root = tmp_path_factory.mktemp("demo")
    shutil.copy(REPO / "pipeline.toml", root)
    shutil.copytree(REPO / "requirements", root / "requirements")
    shutil.copytree(REPO / "handler", root / "handler", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "model", root / "model", ignore=shutil.ignore_patterns("__pycache__"))
    cfg = config.load(root / "pipeline.toml")
    return cfg, build(cfg)


@pytest.fixture(scope="module")
def raw(demo, tmp_path_factory):
    """The same locked wheels installed without slimming: what the slimmed tree is compared with.
    A fixture of its own, so that no one test's time holds both this and the emulated build."""
    cfg, _ = demo
    folder = tmp_path_factory.mktemp("raw")
    install_native(current_locks(cfg, cfg.target())["efs"], cfg.target().target, folder)
    return folder


def _files(tree):
    return {os.path.relpath(os.path.join(d, f), tree) for d, _, fs in os.walk(tree) for f in fs}


def test_lock_for_arm64_from_x86_64_takes_the_cpu_aarch64_torch(tmp_path):
    (tmp_path / "pipeline.toml").write_text(without_model(REPO / "pipeline.toml"))
    shutil.copytree(REPO / "requirements", tmp_path / "requirements")
    shutil.copytree(REPO / "handler", tmp_path / "handler", ignore=shutil.ignore_patterns("__pycache__"))  # function.handler must be there
    result = lock(config.load(tmp_path / "pipeline.toml"), force=True)
    efs = {p.name: p for p in result.locks["efs"].packages}
    assert efs["torch"].filename == "torch-2.9.1-cp313-cp313-manylinux_2_28_aarch64.whl"
    assert efs["torchvision"].filename == "torchvision-0.24.1-cp313-cp313-manylinux_2_28_aarch64.whl"
    assert not [n for n in efs if n.startswith(("nvidia", "triton", "cuda"))]  # markers evaluated for aarch64
    assert {p.name for p in result.locks["layer"].packages} == {"pillow"}


def test_bytecode_is_for_python_3_13_and_unchecked(demo):
    _, result = demo
    tree = result.sets["efs"].tree
    pyc = tree / "torch" / "__pycache__" / "__init__.cpython-313.pyc"
    assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b01
    assert result.sets["efs"].bytecode.python.startswith("3.13.")
    # 3.13's magic number: the tree's .pyc are for the target's Python, not this machine's 3.11
    assert pyc.read_bytes()[:2] == (3571).to_bytes(2, "little")


def test_the_build_import_checked_the_demo_on_aarch64(demo):
    _, result = demo
    for name in ("efs", "layer"):
        check = result.sets[name].slim.import_check
        assert check and check.verified and check.runtime and "aarch64" in check.runtime and "QEMU" in check.runtime, check
        assert check.restored == () and check.failing == {}  # the static rules already kept what the demo needs
    assert not [w for w in result.warnings if "import" in w]


def test_kept_modules_import_nothing_that_was_removed(demo, raw):
    _, result = demo
    tree = result.sets["efs"].tree
    kept = _files(tree)
    removed_modules = {m for f in _files(raw) - kept if (m := slim._module_name(f))}
    assert removed_modules  # the rules did remove test modules
    offenders = []
    for f in kept:
        if f.endswith(".py"):
            hits = slim._imports(f, (tree / f).read_text(errors="replace")) & removed_modules
            offenders += [(f, h) for h in hits]
    assert offenders == []


def test_every_top_level_module_and_torch_runtime_file_survives(demo, raw):
    _, result = demo
    tree = result.sets["efs"].tree
    assert top_level_modules(raw) == top_level_modules(tree)
    shm = tree / "torch" / "bin" / "torch_shm_manager"
    assert shm.is_file() and os.access(shm, os.X_OK)
    for needed in ("torch/testing/__init__.py", "torch/_C.cpython-313-aarch64-linux-gnu.so", "torchvision/_C.so", "torch/lib/libtorch_cpu.so"):
        assert (tree / needed).exists(), needed


def test_no_library_needs_a_file_that_was_removed(demo, raw):
    _, result = demo
    tree = result.sets["efs"].tree
    kept_names = {os.path.basename(f) for f in _files(tree)}
    raw_names = {os.path.basename(f) for f in _files(raw)}
    missing = []
    for f in _files(tree):
        path = tree / f
        if not path.is_file() or not slim.is_elf(path):
            continue
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            assert elf["e_machine"] == "EM_AARCH64", f
            for section in elf.iter_sections():
                if isinstance(section, DynamicSection):
                    for tag in section.iter_tags("DT_NEEDED"):
                        if tag.needed in raw_names and tag.needed not in kept_names:
                            missing.append((f, tag.needed))
    assert missing == []


def test_stripped_libraries_map_the_same_and_torch_lost_its_symbols(demo, raw):
    _, result = demo
    tree = result.sets["efs"].tree
    rules = slim.load_rules()
    stripped = 0
    for f in sorted(_files(tree)):
        if rules.strip.wants(f) and slim.is_elf(tree / f):
            before, after = (raw / f).read_bytes(), (tree / f).read_bytes()
            assert elfstrip.same_image(before, after), f
            stripped += len(after) < len(before)
    assert stripped >= 5
    cpu = "torch/lib/libtorch_cpu.so"
    assert (raw / cpu).stat().st_size - (tree / cpu).stat().st_size > 50_000_000  # its symbol table
    # Pillow is in the layer and never stripped
    layer = result.sets["layer"].tree
    assert result.sets["layer"].slim.strip.files == 0 and (layer / "PIL").is_dir()


def test_the_built_demo_runs_on_aarch64_and_classifies_held_out_digits(demo):
    import json

    from validate.stage import classify_event, from_build

    cfg, result = demo
    images, labels = held_out()
    images, labels = images[:30], labels[:30]
    report = from_build(cfg, smoke_level="auto", events=tuple(classify_event(render(image)) for image in images))
    assert report.ok, [f.as_json() for f in report.errors] + [report.smoke.log_tail]
    assert {t.name for t in report.trees} == {"efs", "layer"}
    assert report.sizes.function_and_layers_unzipped == result.layer_zip.unzipped_bytes + result.function_zip.unzipped_bytes
    smoke = report.smoke
    assert smoke.level == 3 and smoke.machine == "aarch64" and smoke.ok and {"torch", "torchvision", "PIL"} <= set(smoke.modules)
    assert smoke.sample_label == "3"  # model/samples/digit.png, as deploy's smoke test expects
    # torch's hot set hydrated on aarch64, and given back once the demo's init was over
    a = smoke.activation
    assert a["hydrated"] is True and a["hot_files"] > 500 and a["prefetch"] == "touched" and a["held_bytes"] >= a["hot_bytes"] > 5_000_000 and a["held_after_init"] == 0
    answers = smoke.events[1:]
    predicted = [json.loads(a.result["body"])["predictions"][0]["label"] for a in answers]
    right = sum(p == str(label) for p, label in zip(predicted, labels, strict=True))
    expected = json.loads((REPO / "model" / "artifacts" / "metrics.json").read_text())["held_out_accuracy"]
    assert right / len(labels) >= expected - 0.1, (predicted, list(labels))
    assert any(path.endswith("torch/lib/libtorch_cpu.so") for path in smoke.loaded)  # the stripped library loaded on aarch64
