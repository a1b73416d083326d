"""The model folder's contract without torch (handler/hoist_lambda/contract.py, through
pipeline/modelfolder.py): every bad folder is named by file, key and fix before a request."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from pipeline import config
from pipeline.errors import ConfigError
from pipeline.modelfolder import ModelError, check, contract
from tests.conftest import REPO


def _torchscript(path: Path) -> None:
    """A zip laid out as torch.jit.save writes it (the static check reads only the layout)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/data.pkl", b"")
        zf.writestr("model/constants.pkl", b"")
        zf.writestr("model/code/__torch__.py", "")


@pytest.fixture
def folder(tmp_path) -> Path:
    f = tmp_path / "mymodel"
    f.mkdir()
    _torchscript(f / "model.pt")
    (f / "labels.json").write_text(json.dumps(["a", "b", "c", "d", "e"]))
    (f / "preprocess.json").write_text(json.dumps({"mode": "RGB", "resize": 64, "center_crop": 56, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}))
    return f


def test_the_demo_folder_meets_the_contract_and_names_its_sample():
    model = check(REPO / "model" / "artifacts")
    assert len(model.labels) == 10 and model.pre.input_shape() == (1, 1, 8, 8)
    assert model.sample and Path(model.sample.image).is_file() and model.sample.label == "3"


@pytest.mark.parametrize(("crop", "shape"), [(56, (56, 56)), ([56], (56, 56)), ([48, 64], (48, 64))])
def test_torchvision_int_and_pair_forms_are_accepted(folder, crop, shape):
    (folder / "preprocess.json").write_text(json.dumps({"resize": 64, "center_crop": crop}))
    pre = check(folder).pre
    assert pre.center_crop == shape and pre.input_shape() == (1, 3, *shape) and pre.resize == 64


def test_an_unknown_key_is_named_with_the_nearest_known_one(folder):
    (folder / "preprocess.json").write_text(json.dumps({"center_crop": 56, "centre_crop": 56}))
    with pytest.raises(ModelError) as err:
        check(folder)
    text = str(err.value)
    assert "preprocess.json" in text and "centre_crop" in text and "did you mean 'center_crop'" in text
    assert "remove it" in text  # center_crop is already set: renaming would set it twice


def test_a_misspelt_key_alone_is_renamed(folder):
    (folder / "preprocess.json").write_text(json.dumps({"centre_crop": 28}))
    with pytest.raises(ModelError) as err:
        check(folder)
    assert "rename it to 'center_crop'" in str(err.value)


def test_a_missing_file_is_named_with_how_to_make_it(folder):
    (folder / "labels.json").unlink()
    with pytest.raises(ModelError) as err:
        check(folder)
    assert "labels.json" in str(err.value) and "is missing" in str(err.value) and "JSON list" in str(err.value)


def test_a_torch_save_checkpoint_is_not_torchscript(folder):
    (folder / "model.pt").unlink()
    with zipfile.ZipFile(folder / "model.pt", "w") as zf:  # what torch.save(model) writes: pickles, no code/
        zf.writestr("model/data.pkl", b"")
        zf.writestr("model/version", b"3")
    with pytest.raises(ModelError) as err:
        check(folder)
    assert "model.pt" in str(err.value) and "not TorchScript" in str(err.value) and "torch.jit.script" in str(err.value)
    (folder / "model.pt").write_bytes(b"not even a zip")
    with pytest.raises(ModelError, match=r"model\.pt"):
        check(folder)


def test_every_problem_is_reported_at_once(folder):
    (folder / "labels.json").write_text('{"a": 1}')
    (folder / "preprocess.json").write_text(json.dumps({"mode": "CMYK", "center_crop": -3, "std": [1, 0, 1]}))
    with pytest.raises(ModelError) as err:
        check(folder)
    text = str(err.value)
    for words in ("labels.json", "mode", "center_crop", "std"):
        assert words in text, words


def test_a_sample_must_exist_and_carry_a_known_label(folder):
    (folder / "sample.json").write_text(json.dumps({"image": "cat.jpg", "label": "z"}))
    with pytest.raises(ModelError) as err:
        check(folder)
    assert "cat.jpg" in str(err.value) and "'z' is not in labels.json" in str(err.value)


def test_label_count_against_outputs_names_labels_json():
    problem = contract().output_problem(5, 4)
    assert problem.file == "labels.json" and "4 labels" in problem.what and "5 outputs" in problem.what and "exactly 5 names" in problem.fix
    assert contract().output_problem(5, 5) is None


def test_one_setting_names_the_model_folder(project, wheelhouse):
    from tests.conftest import write_pipeline

    (project / "models" / "mine").mkdir(parents=True)  # [model] dir, written, must be there (pipeline.toml's load says so)
    cfg = config.load(write_pipeline(project, wheelhouse, {"[api]": '[model]\ndir = "models/mine"\n\n[api]'}))
    assert cfg.model_dir == project / "models" / "mine" and cfg.model_dir_set
    with pytest.raises(ConfigError, match=r"model\.name"):
        config.load(write_pipeline(project, wheelhouse, {"[api]": '[model]\nname = "x"\n\n[api]'}))
    deploy = ('[deploy]\nstack_name = "s"\nregion = "eu-west-1"\nartifact_bucket = "my-bucket"\nvpc_id = "vpc-0123456789abcdef0"\n'
              'subnet_ids = ["subnet-0123456789abcdef0"]\ns3_endpoint = false\n')
    cfg = config.load(write_pipeline(project, wheelhouse, {"[api]": '[model]\ndir = "models/mine"\n\n' + deploy + "\n[api]"}))
    assert cfg.deploy.model_dir == cfg.model_dir and cfg.deploy.smoke_image is None  # the smoke sample comes from the model folder
    with pytest.raises(ConfigError, match=r"\[model\] dir"):
        config.load(write_pipeline(project, wheelhouse, {"[api]": deploy + 'model_dir = "x"\n\n[api]'}))


def test_preprocessing_follows_torchvision_resize_and_center_crop(tmp_path):
    """Shorter side to N, then a (height, width) crop around the centre, rounded as torchvision does."""
    import sys

    from PIL import Image

    sys.path.insert(0, str(REPO / "handler"))
    try:
        from hoist_lambda.images import resized
    finally:
        sys.path.remove(str(REPO / "handler"))
    pre = contract().parse_preprocess({"resize": 64, "center_crop": [40, 50]})[0]
    img = Image.new("RGB", (300, 200), (10, 20, 30))
    img.paste((255, 0, 0), (140, 90, 160, 110))  # a red square at the centre
    out = resized(img, pre)
    assert out.size == (50, 40)  # PIL's (width, height) of a (height 40, width 50) crop
    assert out.getpixel((25, 20)) == (255, 0, 0) and out.getpixel((0, 0)) == (10, 20, 30)
    small = resized(Image.new("L", (10, 10), 200).convert("RGB"), contract().parse_preprocess({"center_crop": 20})[0])
    assert small.size == (20, 20) and small.getpixel((0, 0)) == (0, 0, 0) and small.getpixel((10, 10)) == (200, 200, 200)  # padded with zeros


def test_the_folder_copied_for_deploy_keeps_its_sample(tmp_path):
    shutil.copytree(REPO / "model" / "artifacts", tmp_path / "artifacts")
    from pipeline.modelfolder import sample

    image, label = sample(tmp_path / "artifacts")
    assert image.read_bytes() == (REPO / "model" / "samples" / "digit.png").read_bytes() and label == "3"


def test_a_missing_folder_is_named_once(tmp_path):
    with pytest.raises(ModelError) as err:
        check(tmp_path / "nowhere")
    assert str(err.value).startswith(f"model ({tmp_path / 'nowhere'}): the model folder does not exist") and "[model] dir" in str(err.value)


def test_a_torchscript_error_is_told_by_its_cause_not_its_banner(monkeypatch):
    """TorchScript's first line only says an operation failed in its interpreter: the shape mismatch is the last."""
    import importlib

    monkeypatch.syspath_prepend(str(REPO / "handler"))
    gist = importlib.import_module("hoist_lambda.model").gist
    scripted = RuntimeError("The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript (most recent call last):\n"
                            "  File \"linear.py\", line 134, in forward\n    return F.linear(input, self.weight, self.bias)\n"
                            "RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x192 and 10x3)\n")
    assert gist(scripted) == "RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x192 and 10x3)"
    assert gist(ValueError("bad magic number\nmore")) == "bad magic number" and gist(KeyError()) == "KeyError"
