"""The model folder's contract, checked without torch (standard library only).

A model folder holds:

- ``model.pt``: a TorchScript module (``torch.jit.script(m).save(...)`` or
  ``torch.jit.trace``), taking a float tensor [1, C, H, W] and returning
  [1, K] scores;
- ``labels.json``: a JSON list of K strings, one per output;
- ``preprocess.json``: how an image becomes that tensor (PREPROCESS_KEYS);
- optionally ``metrics.json`` (``model`` and ``version`` name it in answers)
  and ``sample.json`` ({"image": "<file in the folder>", "label": "<one of
  labels.json>"}, what deploy's smoke test classifies and expects).

``check(folder)`` reads them all and raises one ``ModelFolderError`` listing
every problem, each with its file, key and fix. That K equals the model's
output size needs torch: ``model.check_outputs`` runs it on a dummy input.
The pipeline loads this file by path (``runtime/modelcheck.py``), so it
imports nothing but the standard library.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

REQUIRED = ("model.pt", "labels.json", "preprocess.json")
OPTIONAL = ("metrics.json", "sample.json")
MODES = {"L": 1, "RGB": 3}
RESAMPLE = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
# key: what it takes. Pairs are (height, width), as torchvision's transforms take them.
PREPROCESS_KEYS = {
    "version": "1",
    "mode": "'L' (grayscale, 1 channel) or 'RGB' (3 channels); default RGB",
    "resize": "int: the shorter side to this many pixels (torchvision Resize(int)); or [height, width]: exactly that size",
    "center_crop": "int: a square crop (torchvision CenterCrop(int)); or [height, width]",
    "size": "int or [height, width]: a final exact resize",
    "resample": f"one of {', '.join(RESAMPLE)}; default bilinear",
    "invert": "true to invert the pixel values (255 - x) before scaling",
    "scale": "number the 0..255 pixel values are multiplied by; default 1/255",
    "mean": "list of one number per channel, subtracted after scaling",
    "std": "list of one number per channel (none zero), divided by after the mean",
}
EXAMPLE = '{"mode": "RGB", "resize": 256, "center_crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}'


@dataclass(frozen=True)
class Problem:
    file: str  # labels.json; "." for the folder itself
    key: str | None  # center_crop, or None for the file as a whole
    what: str
    fix: str

    def render(self) -> str:
        where = self.file + (f": {self.key}" if self.key else "")
        return f"{where}: {self.what}\n    fix: {self.fix}"


class ModelFolderError(Exception):
    def __init__(self, folder: str, problems: list[Problem]):
        self.folder = folder
        self.problems = problems
        super().__init__(f"model folder {folder} breaks its contract:\n" + "\n".join("  " + p.render() for p in problems))


@dataclass(frozen=True)
class Preprocess:
    """preprocess.json, normalised: pairs as (height, width), defaults filled in."""

    mode: str = "RGB"
    resize: int | tuple[int, int] | None = None
    center_crop: tuple[int, int] | None = None
    size: tuple[int, int] | None = None
    resample: str = "bilinear"
    invert: bool = False
    scale: float = 1 / 255
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def channels(self) -> int:
        return MODES[self.mode]

    def input_shape(self) -> tuple[int, int, int, int]:
        """[1, C, H, W] of the tensor the model receives (a resize to the shorter side: its square)."""
        if self.size:
            h, w = self.size
        elif self.center_crop:
            h, w = self.center_crop
        elif isinstance(self.resize, tuple):
            h, w = self.resize
        else:
            h = w = self.resize or 0
        return (1, self.channels, h, w)


@dataclass(frozen=True)
class Sample:
    image: str  # path of the image
    label: str


@dataclass(frozen=True)
class ModelFolder:
    folder: str
    labels: tuple[str, ...]
    pre: Preprocess
    meta: dict = field(default_factory=dict)
    sample: Sample | None = None


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _pair(doc: dict, key: str, problems: list[Problem], allow_int_as: str) -> int | tuple[int, int] | None:
    """torchvision's forms: an int, [n] or [height, width]."""
    if key not in doc:
        return None
    v = doc[key]
    if _positive_int(v):
        return v if allow_int_as == "int" else (v, v)
    if isinstance(v, list) and len(v) in (1, 2) and all(_positive_int(x) for x in v):
        if len(v) == 1:
            return v[0] if allow_int_as == "int" else (v[0], v[0])
        return (v[0], v[1])
    problems.append(Problem("preprocess.json", key, f"{v!r} is not a positive int or a [height, width] pair of them", f'write e.g. "{key}": 224 or "{key}": [224, 224]'))
    return None


def parse_preprocess(doc: Any) -> tuple[Preprocess | None, list[Problem]]:
    """preprocess.json's document, checked against PREPROCESS_KEYS."""
    f = "preprocess.json"
    if not isinstance(doc, dict):
        return None, [Problem(f, None, f"must be a JSON object, found {type(doc).__name__}", f"write an object such as {EXAMPLE}")]
    problems: list[Problem] = []
    for key in doc:
        if key not in PREPROCESS_KEYS:
            near = get_close_matches(key, PREPROCESS_KEYS, 1)
            fix = f"rename it to {near[0]!r}" if near and near[0] not in doc else f"remove it; the keys are {', '.join(PREPROCESS_KEYS)}"
            problems.append(Problem(f, key, f"unknown key {key!r}" + (f"; did you mean {near[0]!r}?" if near else ""), fix))
    if doc.get("version", 1) != 1:
        problems.append(Problem(f, "version", f"version {doc['version']!r} is not supported", "set version to 1, or remove it"))
    mode = doc.get("mode", "RGB")
    if mode not in MODES:
        problems.append(Problem(f, "mode", f"{mode!r} is not a supported mode", PREPROCESS_KEYS["mode"]))
        mode = "RGB"
    resample = doc.get("resample", "bilinear")
    if resample not in RESAMPLE:
        problems.append(Problem(f, "resample", f"{resample!r} is not a resampling filter", PREPROCESS_KEYS["resample"]))
        resample = "bilinear"
    resize = _pair(doc, "resize", problems, "int")
    crop = _pair(doc, "center_crop", problems, "pair")
    size = _pair(doc, "size", problems, "pair")
    if isinstance(resize, int) and not (crop or size):
        problems.append(Problem(f, "resize", "a shorter-side resize alone leaves the model's input size to the photo", 'add "center_crop": <n> (or "size"), or give "resize" as [height, width]'))
    if resize is None and crop is None and size is None:
        problems.append(Problem(f, None, "no input size: the model would get each photo at its own size", 'add "resize": 256 and "center_crop": 224, or "size": [height, width]'))
    invert = doc.get("invert", False)
    if not isinstance(invert, bool):
        problems.append(Problem(f, "invert", f"{invert!r} is not true or false", 'write "invert": true or false'))
    scale = doc.get("scale", 1 / 255)
    if not _number(scale):
        problems.append(Problem(f, "scale", f"{scale!r} is not a number", 'e.g. "scale": 0.00392156862745098 (1/255)'))
        scale = 1 / 255
    channels = MODES[mode]
    stats: dict[str, tuple[float, ...]] = {}
    for key, default in (("mean", 0.0), ("std", 1.0)):
        v = doc.get(key, [default] * channels)
        if _number(v):
            v = [v] * channels
        if not (isinstance(v, list) and all(_number(x) for x in v)) or len(v) not in (1, channels):
            problems.append(Problem(f, key, f"{v!r} is not a list of {channels} number(s) for mode {mode}", f'give one number per channel, e.g. "{key}": {[default] * channels}'))
            v = [default] * channels
        stats[key] = tuple(float(x) for x in v) * (channels if len(v) == 1 else 1)
    if any(x == 0 for x in stats["std"]):
        problems.append(Problem(f, "std", "a standard deviation of 0 divides by zero", "use the std the model was trained with (non-zero)"))
    if problems:
        return None, problems
    return Preprocess(mode=mode, resize=resize, center_crop=crop if isinstance(crop, tuple) else None, size=size if isinstance(size, tuple) else None,
                      resample=resample, invert=invert, scale=float(scale), mean=stats["mean"], std=stats["std"]), []


def _json(folder: str, name: str, problems: list[Problem]) -> Any:
    try:
        with open(os.path.join(folder, name), encoding="utf-8") as fh:
            return json.load(fh)
    except ValueError as exc:
        problems.append(Problem(name, None, f"is not valid JSON ({exc})", "fix the syntax at the position shown"))
    except OSError as exc:
        problems.append(Problem(name, None, f"cannot be read ({exc.strerror})", "make it a readable file"))
    return None


def torchscript_problem(path: str) -> str | None:
    """Why ``path`` is not a TorchScript archive, or None. TorchScript saves a zip with
    <name>/code/ and <name>/constants.pkl; torch.save of a module or state dict has no code/."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return "is not a TorchScript archive (not a zip file at all)"
    has_code = any("/code/" in n for n in names)
    has_constants = any(n.endswith("/constants.pkl") for n in names)
    if not (has_code and has_constants):
        return "is a torch.save() file, not TorchScript (it holds no code/): the handler cannot rebuild the Python class"
    return None


def check(folder: str) -> ModelFolder:
    """Read and check the folder; one ModelFolderError with every problem."""
    if not os.path.isdir(folder):
        raise ModelFolderError(folder, [Problem(".", None, "the model folder does not exist",
                                                "set [model] dir in pipeline.toml to the folder holding model.pt, labels.json and preprocess.json")])
    problems: list[Problem] = []
    for name in REQUIRED:
        if not os.path.isfile(os.path.join(folder, name)):
            problems.append(Problem(name, None, "is missing", {
                "model.pt": "save the model there with torch.jit.script(model).save('model.pt') (or torch.jit.trace)",
                "labels.json": 'write the class names as a JSON list, one per model output, e.g. ["cat", "dog"]',
                "preprocess.json": f"describe the input, e.g. {EXAMPLE}",
            }[name]))
    if os.path.isfile(os.path.join(folder, "model.pt")) and (why := torchscript_problem(os.path.join(folder, "model.pt"))):
        problems.append(Problem("model.pt", None, why, "export it with torch.jit.script(model).save('model.pt') or torch.jit.trace(model, example).save('model.pt')"))
    labels: list[str] = []
    if os.path.isfile(os.path.join(folder, "labels.json")):
        doc = _json(folder, "labels.json", problems)
        if doc is not None and not (isinstance(doc, list) and doc and all(isinstance(x, str) for x in doc)):
            problems.append(Problem("labels.json", None, f"must be a non-empty JSON list of strings, found {str(doc)[:80]}", 'write e.g. ["cat", "dog"], one name per model output, in output order'))
        elif doc is not None:
            labels = doc
    pre = None
    if os.path.isfile(os.path.join(folder, "preprocess.json")):
        doc = _json(folder, "preprocess.json", problems)
        if doc is not None:
            pre, found = parse_preprocess(doc)
            problems += found
    meta: dict = {}
    if os.path.isfile(os.path.join(folder, "metrics.json")):
        doc = _json(folder, "metrics.json", problems)
        if doc is not None and not isinstance(doc, dict):
            problems.append(Problem("metrics.json", None, "must be a JSON object", 'e.g. {"model": "my-classifier", "version": "1"}, or remove the file'))
        elif doc is not None:
            meta = doc
    sample = None
    if os.path.isfile(os.path.join(folder, "sample.json")):
        doc = _json(folder, "sample.json", problems)
        if doc is not None:
            if not (isinstance(doc, dict) and isinstance(doc.get("image"), str) and isinstance(doc.get("label"), str)):
                problems.append(Problem("sample.json", None, f"must be {{\"image\": \"<file>\", \"label\": \"<label>\"}}, found {str(doc)[:80]}", 'e.g. {"image": "sample.jpg", "label": "cat"}'))
            else:
                image = os.path.join(folder, doc["image"])
                if not os.path.isfile(image):
                    problems.append(Problem("sample.json", "image", f"{doc['image']} is not a file in the model folder", "put the sample image beside sample.json, or correct the name"))
                if labels and doc["label"] not in labels:
                    problems.append(Problem("sample.json", "label", f"{doc['label']!r} is not in labels.json", "give the label the sample image should get, spelled as in labels.json"))
                sample = Sample(image=image, label=doc["label"])
    if problems or pre is None:
        raise ModelFolderError(folder, problems)
    return ModelFolder(folder=folder, labels=tuple(labels), pre=pre, meta=meta, sample=sample)


def output_problem(outputs: int, labels: int) -> Problem | None:
    """The model's K outputs against labels.json's names."""
    if outputs == labels:
        return None
    return Problem("labels.json", None, f"has {labels} labels, but model.pt gives {outputs} outputs for one image",
                   f"list exactly {outputs} names in labels.json, in the order of the model's outputs (or point [model] dir at the matching model)")
