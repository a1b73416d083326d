"""PNG/JPEG bytes to a checked PIL image, and an image to the model's input tensor.

Decoding refuses decompression bombs (HOIST_MAX_PIXELS), other formats and
truncated data with a 4xx (``events.BadRequest``), and turns the image upright
as its EXIF orientation says (a phone stores a portrait photo sideways, with
the turn in the tag), as Pillow's ``ImageOps.exif_transpose`` does. Preprocessing follows
preprocess.json (``contract.Preprocess``) the way torchvision's transforms
do: Resize(int) scales the shorter side, pairs are (height, width),
CenterCrop pads with zeros when the image is smaller. ``preview`` is the
image the model is given, as a PNG data URL (the serve page shows it).
"""
from __future__ import annotations

import base64
import io
import os
import struct
from typing import Any

from .contract import Preprocess
from .events import BadRequest

MAX_PIXELS = int(os.environ.get("HOIST_MAX_PIXELS", str(4096 * 4096)))  # decompression bombs


def decode(data: bytes) -> Any:
    from PIL import Image, ImageOps, UnidentifiedImageError

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
    # upright as it is shown: the EXIF orientation tag (0x0112) applied, then dropped; without one, unchanged.
    # An EXIF block too broken to read leaves the pixels as stored: the image itself decoded.
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, struct.error):
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
    """The model's input tensor [1, C, H, W] of a decoded image."""
    return tensor_of(resized(img, pre), pre)


def tensor_of(img: Any, pre: Preprocess) -> Any:
    """The tensor of an image already ``resized``: inverted, scaled and normalized as preprocess.json says."""
    import torch

    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).float()
    x = x.reshape(img.height, img.width, pre.channels).permute(2, 0, 1)
    if pre.invert:
        x = 255.0 - x
    x = x * pre.scale
    mean = torch.tensor(pre.mean).reshape(-1, 1, 1)
    std = torch.tensor(pre.std).reshape(-1, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def preview(img: Any, pre: Preprocess) -> dict:
    """The image the model is given (``resized``, inverted when preprocess.json inverts), as a PNG data URL with its size:
    what the tensor holds before scaling and normalization, which have no picture."""
    from PIL import ImageOps

    if pre.invert:
        img = ImageOps.invert(img)
    out = io.BytesIO()
    img.save(out, "PNG")
    return {"image": "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii"), "width": img.width, "height": img.height}
