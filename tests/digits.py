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
