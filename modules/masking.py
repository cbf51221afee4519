"""Mask geometry and fill for inpainting (A1111's "only masked" crop region and "fill" masked content)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def get_crop_region(mask: Image.Image, padding: int = 0) -> tuple[int, int, int, int]:
    """Bounding box (x1, y1, x2, y2) of the non-zero mask pixels, grown by `padding`, clipped to the image."""
    array = np.asarray(mask.convert("L"))
    ys, xs = np.nonzero(array)
    h, w = array.shape
    if len(xs) == 0:
        return 0, 0, w, h
    return (max(int(xs.min()) - padding, 0), max(int(ys.min()) - padding, 0),
            min(int(xs.max()) + 1 + padding, w), min(int(ys.max()) + 1 + padding, h))


def _grow_span(lo: int, hi: int, desired: float, limit: int) -> tuple[int, int]:
    """Widen [lo, hi) to `desired` length around its centre, shifted back inside [0, limit)."""
    diff = int(desired - (hi - lo))
    lo -= diff // 2
    hi += diff - diff // 2
    if hi >= limit:
        lo -= hi - limit
        hi = limit
    return max(lo, 0), min(hi, limit)


def expand_crop_region(region: tuple[int, int, int, int], processing_width: int, processing_height: int,
                       image_width: int, image_height: int) -> tuple[int, int, int, int]:
    """Grow the region to the processing aspect ratio (so the crop is not distorted), staying inside the image."""
    x1, y1, x2, y2 = region
    ratio_processing = processing_width / processing_height
    if (x2 - x1) / max(1, y2 - y1) > ratio_processing:
        y1, y2 = _grow_span(y1, y2, (x2 - x1) / ratio_processing, image_height)
    else:
        x1, x2 = _grow_span(x1, x2, (y2 - y1) * ratio_processing, image_width)
    return x1, y1, x2, y2


def fill(image: Image.Image, mask: Image.Image, radius: int = 64) -> Image.Image:
    """Replace masked pixels with colours smeared in from around the mask (A1111's "fill" masked content).

    Normalised blur: blur(image * keep) / blur(keep), so only unmasked colours flow into the hole.
    """
    image = image.convert("RGB")
    keep = 1.0 - np.asarray(mask.convert("L").resize(image.size), dtype=np.float32) / 255.0
    pixels = np.asarray(image, dtype=np.float32)
    result = pixels.copy()
    for r in (radius, radius // 4, radius // 16):
        weights = _blur(keep, r)
        smeared = np.stack([_blur(pixels[..., c] * keep, r) for c in range(3)], axis=-1)
        estimate = smeared / np.maximum(weights, 1e-4)[..., None]
        hole = (weights > 1e-3)[..., None]
        result = np.where(hole, estimate, result)
    result = np.where(keep[..., None] > 0.999, pixels, result)
    return Image.fromarray(np.clip(result, 0, 255).round().astype(np.uint8))


def _blur(channel: np.ndarray, radius: int) -> np.ndarray:
    """Separable Gaussian blur of a float image (PIL only blurs 8-bit images)."""
    sigma = max(radius, 1) / 2
    size = int(sigma * 3) * 2 + 1
    x = torch.arange(size, dtype=torch.float32) - size // 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    t = torch.from_numpy(np.ascontiguousarray(channel))[None, None]
    pad = size // 2
    t = F.conv2d(F.pad(t, (pad, pad, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    t = F.conv2d(F.pad(t, (0, 0, pad, pad), mode="replicate"), kernel.view(1, 1, -1, 1))
    return t[0, 0].numpy()
