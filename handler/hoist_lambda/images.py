"""PNG/JPEG bytes to a checked PIL image, and an image to the model's input tensor.

Decoding refuses decompression bombs (HOIST_MAX_PIXELS), other formats and
truncated data with a 4xx (``events.BadRequest``). Preprocessing follows
preprocess.json (``contract.Preprocess``) the way torchvision's transforms
do: Resize(int) scales the shorter side, pairs are (height, width),
CenterCrop pads with zeros when the image is smaller.
"""
from __future__ import annotations

import io
import os
from typing import Any

from .contract import Preprocess
from .events import BadRequest

MAX_PIXELS = int(os.environ.get("HOIST_MAX_PIXELS", str(4096 * 4096)))  # decompression bombs


def decode(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadRequest(400, "not_an_image", "the body is not a PNG or JPEG image") from None
    except Image.DecompressionBombError:
        raise BadRequest(413, "image_too_large", f"the image has more than {MAX_PIXELS:,} pixels") from None
    if img.width * img.height > MAX_PIXELS:
        raise BadRequest(413, "image_too_large", f"the image has {img.width * img.height:,} pixels; the limit is {MAX_PIXELS:,}")
    if img.format not in ("PNG", "JPEG"):
        raise BadRequest(415, "unsupported_image_format", f"{img.format} images are not accepted: send PNG or JPEG")
    try:
        img.load()
    except (OSError, SyntaxError, ValueError):
        raise BadRequest(400, "truncated_image", "the image data is truncated or corrupt") from None
    return img


def resized(img: Any, pre: Preprocess) -> Any:
    """The PIL image after mode, resize, center crop and size, before it becomes numbers."""
    from PIL import Image

    resample = getattr(Image.Resampling, pre.resample.upper())
    img = img.convert(pre.mode)
    if isinstance(pre.resize, int):  # torchvision Resize(int): the shorter side
        w, h = img.size
        s = pre.resize / min(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), resample)
    elif pre.resize:
        img = img.resize((pre.resize[1], pre.resize[0]), resample)
    if pre.center_crop:
        ch, cw = pre.center_crop
        w, h = img.size
        left, top = round((w - cw) / 2.0), round((h - ch) / 2.0)  # as torchvision rounds
        img = img.crop((left, top, left + cw, top + ch))  # outside the image: zeros, as torchvision pads
    if pre.size:
        img = img.resize((pre.size[1], pre.size[0]), resample)
    return img


def to_tensor(img: Any, pre: Preprocess) -> Any:
    import torch

    img = resized(img, pre)
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).float()
    x = x.reshape(img.height, img.width, pre.channels).permute(2, 0, 1)
    if pre.invert:
        x = 255.0 - x
    x = x * pre.scale
    mean = torch.tensor(pre.mean).reshape(-1, 1, 1)
    std = torch.tensor(pre.std).reshape(-1, 1, 1)
    return ((x - mean) / std).unsqueeze(0)
