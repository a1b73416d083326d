"""Held-out digits as real image files: the same split model/train.py holds out."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def held_out() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    _, x_test, _, y_test = train_test_split(digits.images, digits.target, test_size=0.25, random_state=0, stratify=digits.target)
    return x_test, y_test


def render(image: np.ndarray, fmt: str = "PNG", scale: int = 4) -> bytes:
    """White ink on black, 0..16 -> 0..255, upscaled by whole pixels."""
    arr = np.clip(np.round(image * 255 / 16), 0, 255).astype("uint8")
    img = Image.fromarray(arr, "L").resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def as_stored(img: Image.Image, orientation: int) -> Image.Image:
    """The upright ``img`` as a camera stores it under the EXIF orientation tag (0x0112, EXIF 2.32 "Orientation"):
    the tag says where the stored rows are in the scene. A phone held upright keeps its sensor's rows: 6 (0th row
    the right-hand side) is the picture turned a quarter counter-clockwise, shown after a quarter turn clockwise;
    8 the other way; 3 upside down; 2 mirrored left to right (a front camera)."""
    return {1: img, 2: img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 3: img.rotate(180),
            6: img.rotate(90, expand=True), 8: img.rotate(-90, expand=True)}[orientation]  # rotate(): degrees counter-clockwise


def photo(image: np.ndarray, orientation: int, fmt: str = "JPEG", scale: int = 4, tagged: bool = True) -> bytes:
    """A digit as a phone stores it: the pixels turned (``as_stored``) and the tag that turns them back (``tagged``)."""
    upright = Image.open(io.BytesIO(render(image, "PNG", scale)))
    exif = Image.Exif()
    if tagged:
        exif[0x0112] = orientation
    out = io.BytesIO()
    as_stored(upright, orientation).save(out, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()
