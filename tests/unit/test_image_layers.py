"""builder/image.py without a daemon: reproducible layers (fixed times, sorted entries, owners 0), one input per layer,
so a handler-only or model-only change leaves the heavy set's layer and its digest untouched; what it refuses."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from builder import image
from pipeline.errors import BuildError
from pipeline.records import DOCKER_ARCHIVE_INDEX
from tests.trees import write_tree


def _base(tmp: Path, arch: str = "amd64") -> image.BaseImage:
    """A base image as `docker save` gives it: one uncompressed layer and a config naming its diff_id."""
    layer = tmp / "base-layer.tar"
    with tarfile.open(layer, "w") as tar:
        info = tarfile.TarInfo("etc/os-release")
        data = b"ID=standin\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    diff_id = "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    config = {"architecture": arch, "os": "linux", "config": {"Env": ["PATH=/var/lang/bin:/usr/bin", "HOIST_HYDRATE=1"], "Entrypoint": ["/lambda-entrypoint.sh"]},
              "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    return image.BaseImage(ref="hoist-test/base:1", image_id="sha256:" + "0" * 64, config=config, layers=(layer,))


@pytest.fixture
def inputs(tmp_path):
    efs = write_tree(tmp_path / "efs", {"torch/__init__.py": "import torch._C\n", "torch/_C.so": os.urandom(200_000), "torch/lib/libtorch.so": os.urandom(100_000)})
    (efs / "torch" / "libtorch_link.so").symlink_to("lib/libtorch.so")
    layer = write_tree(tmp_path / "layer", {"PIL/__init__.py": "pass\n"})
    handler = write_tree(tmp_path / "handler", {"app.py": "def handler(event, context):\n    return 1\n", "hoist_lambda/__init__.py": ""})
    write_tree(handler, {"__pycache__/app.cpython-313.pyc": b"stale"})  # never in the image: the handler's bytecode is the runtime's business
    model = write_tree(tmp_path / "model", {"model.pt": os.urandom(50_000), "labels.json": '["a","b"]'})
    return {"base": _base(tmp_path), "efs": efs, "layer": layer, "handler": handler, "model": model}


def _build(inputs, layout: Path, efs_hash: str = "efs-1", **kw) -> image.ImageBuild:
    args = {"layout": layout, "base": inputs["base"], "platform": "linux/amd64", "sets": {"efs": (inputs["efs"], efs_hash), "layer": (inputs["layer"], "layer-1")},
            "handler_dir": inputs["handler"], "model_dir": inputs["model"], "handler": "app.handler", "env": image.image_env(True), "snapstart": True,
            "tag_prefix": "hoist/test"}
    args.update(kw)
    return image.build_image(**args)


def _blob(made: image.ImageBuild, digest: str) -> Path:
    return made.layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def test_equal_inputs_give_equal_layers_config_and_manifest(inputs, tmp_path):
    one = _build(inputs, tmp_path / "one")
    # the same inputs, touched: new mtimes do not reach the layers (a second layout: nothing is reused)
    for path in inputs["efs"].rglob("*"):
        os.utime(path, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    two = _build(inputs, tmp_path / "two")
    assert [x.diff_id for x in one.layers] == [x.diff_id for x in two.layers]
    assert (one.config_digest, one.manifest_digest, one.tag) == (two.config_digest, two.manifest_digest, two.tag)
    assert one.tag == f"hoist/test:{one.config_digest[7:19]}"
    # each blob is named by the sha256 of its bytes (the layout is a valid content-addressed store)
    for blob in (one.layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_layers_are_written_reproducibly_sorted_with_fixed_times_and_owners(inputs, tmp_path):
    made = _build(inputs, tmp_path / "out")
    with tarfile.open(_blob(made, made.layer("efs").diff_id)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[:3] == ["opt", "opt/hoist", "opt/hoist/efs"] and names[3:] == sorted(names[3:])
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    link = next(m for m in members if m.name == "opt/hoist/efs/torch/libtorch_link.so")
    assert link.issym() and link.linkname == "lib/libtorch.so"
    with tarfile.open(_blob(made, made.layer("handler").diff_id)) as tar:
        handler_names = tar.getnames()
    assert "var/task/app.py" in handler_names and not any("__pycache__" in n for n in handler_names)


def test_a_handler_only_change_changes_only_the_handler_layer_and_writes_only_it(inputs, tmp_path):
    layout = tmp_path / "out"
    before = _build(inputs, layout)
    assert set(before.written) == {"efs", "layer", "model", "handler"}
    (inputs["handler"] / "app.py").write_text("def handler(event, context):\n    return 2\n")
    after = _build(inputs, layout)
    changed = [b.name for a, b in zip(before.layers, after.layers, strict=True) if a.diff_id != b.diff_id]
    assert changed == ["handler"] and after.written == ("handler",)
    assert after.layer("efs") == before.layer("efs")  # torch's layer and its digest untouched
    assert after.config_digest != before.config_digest and after.tag != before.tag  # a new image, under a new (immutable) tag
    # the layout holds one image: the old handler layer is gone, every named blob is there
    manifest = json.loads(_blob(after, after.manifest_digest).read_bytes())
    named = {manifest["config"]["digest"], after.manifest_digest, *(x["digest"] for x in manifest["layers"])}
    assert {f"sha256:{p.name}" for p in (layout / "blobs" / "sha256").iterdir()} == named


def test_a_model_only_change_leaves_the_sets_and_the_handler(inputs, tmp_path):
    before = _build(inputs, tmp_path / "out")
    (inputs["model"] / "model.pt").write_bytes(os.urandom(50_000))
    after = _build(inputs, tmp_path / "out")
    assert [b.name for a, b in zip(before.layers, after.layers, strict=True) if a != b] == ["model"]


def test_the_order_puts_the_heavy_set_lowest_and_the_handler_on_top(inputs, tmp_path):
    made = _build(inputs, tmp_path / "out")
    assert [x.name for x in made.layers] == ["base-0", "efs", "layer", "model", "handler"]
    config = json.loads(_blob(made, made.config_digest).read_bytes())
    assert config["rootfs"]["diff_ids"] == [x.diff_id for x in made.layers]
    assert config["config"]["Cmd"] == ["app.handler"] and config["config"]["Entrypoint"] == ["/lambda-entrypoint.sh"]  # the base's entrypoint kept
    env = config["config"]["Env"]
    assert "HOIST_HYDRATE=0" in env and "HOIST_HYDRATE=1" not in env and "HOIST_EFS_TREE=/opt/hoist/efs" in env and "PATH=/var/lang/bin:/usr/bin" in env
    assert config["config"]["Labels"] == {"com.amazonaws.lambda.feature.snapstart": "Allow"}
    assert "created" not in config and config["history"] == []  # no times: an equal config for equal inputs
    docker_manifest = json.loads((made.layout / DOCKER_ARCHIVE_INDEX).read_text())
    assert docker_manifest[0]["RepoTags"] == [made.tag] and len(docker_manifest[0]["Layers"]) == 5


def test_a_base_of_another_cpu_is_refused(inputs, tmp_path):
    inputs["base"] = _base(tmp_path, arch="arm64")
    with pytest.raises(BuildError) as err:
        _build(inputs, tmp_path / "out")
    assert "arm64" in str(err.value) and "amd64" in str(err.value) and "--platform linux/amd64" in str(err.value)


def test_an_image_over_lambdas_10_gb_is_refused_with_the_fix(inputs, tmp_path, monkeypatch):
    made = _build(inputs, tmp_path / "fits")
    monkeypatch.setattr(image, "IMAGE_LIMIT_BYTES", made.bytes - 1)  # the same check, at the size of this small image
    with pytest.raises(BuildError) as err:
        _build(inputs, tmp_path / "over")
    assert "10 GB" in str(err.value) and "slim" in str(err.value)


@pytest.mark.parametrize(("ref", "pinned"), [
    ("public.ecr.aws/lambda/python:3.13-arm64", False),
    ("public.ecr.aws/lambda/python:3.13-arm64@sha256:" + "a" * 64, True),
    ("127.0.0.1:5000/lambda/python:3.13", False),
    ("hoist-test/lambda-python:3.13-arm64-abc", True),  # an image of this machine: pinned by the id the build records
])
def test_a_registrys_base_image_needs_its_digest(ref, pinned):
    assert (image.base_ref_problem(ref) is None) == pinned


def test_validate_refuses_an_image_over_10_gb_with_the_fix(tmp_path):
    from pipeline.records import ImageRecord
    from pipeline.shapes import IMAGE_LIMIT_BYTES
    from validate.image import size_findings

    record = ImageRecord(layout=tmp_path, tag="hoist/fn:" + "a" * 12, config_digest="sha256:" + "a" * 64, manifest_digest="sha256:" + "b" * 64,
                         base="b@sha256:" + "0" * 64, platform="linux/arm64", bytes=IMAGE_LIMIT_BYTES, layers=())
    assert size_findings(record) == []  # exactly 10 GB: allowed
    [finding] = size_findings(dataclasses.replace(record, bytes=IMAGE_LIMIT_BYTES + 1))
    assert finding.severity == "error" and "10 GB" in finding.message and "slim" in (finding.fix or "")
