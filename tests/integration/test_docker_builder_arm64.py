"""The Docker builder for the default target, python3.13 on arm64, from this x86_64 machine:
the builder image is built FROM an arm64 base image and pip and compileall run in
it under QEMU (binfmt_misc), as they would with public.ecr.aws/lambda/python:3.13-arm64.

No registry is reachable here, so the base image is a stand-in made from the
Debian trixie arm64 root that level 3 uses (tests/emulation_support.py,
arm64_lambda_standin): Debian's CPython 3.13 and glibc 2.41 rather than Amazon
Linux 2023's, pip unpacked from Debian's wheel, and no compiler (its gcc fails,
so only wheels can be installed; the x86_64 stand-in of test_docker_builder.py
covers sdists). The dependencies are small and come from PyPI: MarkupSafe, whose
aarch64 manylinux wheel carries an extension module, and idna (pure Python).
"""
from __future__ import annotations

import json
import shutil

import pytest
from elftools.elf.elffile import ELFFile

from builder.build import build
from builder.lock import lock
from pipeline import config
from tests.conftest import REPO, Recorded, without_model

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]



@pytest.fixture(scope="module")
def arm64_base(docker_daemon, emulated_arm64, tmp_path_factory) -> str:
    from tests.emulation_support import arm64_lambda_standin

    return arm64_lambda_standin(emulated_arm64, tmp_path_factory.mktemp("standin-arm64"))


def test_the_docker_builder_builds_the_arm64_target_in_an_arm64_image(tmp_path, arm64_base, emulated_arm64):
    text = without_model(REPO / "pipeline.toml")
    assert 'builder = "native"' in text
    (tmp_path / "pipeline.toml").write_text(text.replace('builder = "native"', f'builder = "docker"\nbase_image = "{arm64_base}"'))
    shutil.copytree(REPO / "handler", tmp_path / "handler", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "efs.in").write_text("markupsafe\n")
    (tmp_path / "requirements" / "layer.in").write_text("idna\n")
    cfg = config.load(tmp_path / "pipeline.toml")
    assert cfg.target().target.machine == "aarch64"
    lock(cfg)
    progress = Recorded()
    result = build(cfg, progress=progress)

    assert result.builder == "docker"
    assert any("successfully installed markupsafe" in line.lower() for line in progress.lines), progress.lines[-40:]  # pip ran in the image
    efs, layer = result.sets["efs"].tree, result.sets["layer"].tree
    [ext] = (efs / "markupsafe").glob("_speedups*.so")
    assert ext.name == "_speedups.cpython-313-aarch64-linux-gnu.so"
    with open(ext, "rb") as fh:
        assert ELFFile(fh)["e_machine"] == "EM_AARCH64"
    for tree, module in ((efs, "markupsafe"), (layer, "idna")):
        pyc = (tree / module / "__pycache__" / "__init__.cpython-313.pyc").read_bytes()
        assert pyc[:2] == (3571).to_bytes(2, "little")  # 3.13's magic number: compiled by the image's CPython
        assert int.from_bytes(pyc[4:8], "little") == 0b01  # unchecked-hash

    for name, module in (("efs", "markupsafe"), ("layer", "idna")):
        manifest = json.loads(result.sets[name].manifest.read_text())
        assert manifest["builder"] == "docker" and manifest["target"]["arch"] == "arm64"
        assert manifest["bytecode"]["compiled"] and manifest["bytecode"]["python"].startswith("3.13.") and manifest["bytecode"]["failed"] == []
        assert [p["name"].lower() for p in manifest["packages"]] == [module]
        paths = {f["path"] for f in manifest["files"]}
        assert f"{module}/__pycache__/__init__.cpython-313.pyc" in paths
        check = manifest["slim"]["import_check"]
        assert check["verified"] and "aarch64" in check["runtime"] and check["failing"] == {}, check
    assert "markupsafe/_speedups.cpython-313-aarch64-linux-gnu.so" in {f["path"] for f in json.loads(result.sets["efs"].manifest.read_text())["files"]}
    # the hot set, recorded under QEMU too: the files `import markupsafe` opened, and the pages of the
    # extension it mapped (pagemap describes the guest here: QEMU maps it at the host's addresses)
    index = json.loads((efs.parent / "archives" / "index.json").read_text())
    assert index["hot"]["recorded"] and 0 < index["hot"]["files"] < index["hot"]["of"]
    assert list(index["touched_ranges"]) == ["markupsafe/_speedups.cpython-313-aarch64-linux-gnu.so"], index["touched_ranges"]
    build_json = json.loads(cfg.build_json(cfg.target().target.name).read_text())
    assert build_json["builder"] == "docker", build_json
