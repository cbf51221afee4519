"""Image steps of img2img and inpainting: A1111's resize modes, mask preparation ("only masked" crop region, blur,
invert), "fill" masked content, latent masks, and pasting the result back over the original."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter, ImageOps

from modules.job_spec import JobSpec


def get_crop_region(mask: Image.Image, pad: int = 0) -> tuple[int, int, int, int]:
    """Bounding box (x1, y1, x2, y2) of the non-zero mask pixels, grown by `pad`, clipped to the image (A1111's
    names and order)."""
    padding = pad
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


def expand_crop_region(crop_region: tuple[int, int, int, int], processing_width: int, processing_height: int,
                       image_width: int, image_height: int) -> tuple[int, int, int, int]:
    """Grow the region to the processing aspect ratio (so the crop is not distorted), staying inside the image."""
    x1, y1, x2, y2 = crop_region
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


# --- img2img / inpainting image steps (used by processing) ---------------------------------------------

def _snap8(value: int) -> int:
    return max(8, int(value) // 8 * 8)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def tensor_to_pil(sample: torch.Tensor) -> Image.Image:
    array = ((sample.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


def resize_image(mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's resize modes 0 (just resize), 1 (crop and resize), 2 (resize and fill); 3 resizes in latent space."""
    lanczos = Image.Resampling.LANCZOS
    if mode in (0, 3):
        return image.resize((width, height), lanczos)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == 1:
        return ImageOps.fit(image, (width, height), lanczos)
    # mode 2: fit inside, then fill the bars by stretching the image's edge rows/columns (as A1111)
    fit_w = width if ratio < src_ratio else image.width * height // image.height
    fit_h = height if ratio >= src_ratio else image.height * width // image.width
    resized = image.resize((max(1, fit_w), max(1, fit_h)), lanczos)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(resized, ((width - fit_w) // 2, (height - fit_h) // 2))
    if ratio < src_ratio and fill_needed(height, fit_h):
        pad = (height - fit_h) // 2
        canvas.paste(resized.resize((width, pad), box=(0, 0, width, 0)), (0, 0))
        canvas.paste(resized.resize((width, height - fit_h - pad), box=(0, fit_h, width, fit_h)), (0, pad + fit_h))
    elif ratio > src_ratio and fill_needed(width, fit_w):
        pad = (width - fit_w) // 2
        canvas.paste(resized.resize((pad, height), box=(0, 0, 0, height)), (0, 0))
        canvas.paste(resized.resize((width - fit_w - pad, height), box=(fit_w, 0, fit_w, height)), (pad + fit_w, 0))
    return canvas


def fill_needed(total: int, used: int) -> bool:
    return total - used >= 2


@dataclass
class InpaintSetup:
    mask_for_overlay: Image.Image        # blurred, full size: 255 = generated pixels
    crop_region: tuple[int, int, int, int] | None
    latent_mask: Image.Image             # mask at processing size, used in latent space


def prepare_mask(job: JobSpec, image_size: tuple[int, int]) -> InpaintSetup:
    mask = job.image_mask.convert("L")
    if mask.size != image_size:
        mask = mask.resize(image_size, Image.Resampling.LANCZOS)
    if job.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    if job.mask_blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(job.mask_blur))
    crop_region = None
    if job.inpaint_full_res:
        crop_region = expand_crop_region(get_crop_region(mask, job.inpaint_full_res_padding),
                                                 job.width, job.height, mask.width, mask.height)
        latent_mask = resize_image(2, mask.crop(crop_region).convert("RGB"), job.width, job.height).convert("L")
    else:
        latent_mask = resize_image(job.resize_mode if job.resize_mode != 3 else 0, mask.convert("RGB"),
                                   job.width, job.height).convert("L")
    return InpaintSetup(mask, crop_region, latent_mask)


def _latent_mask_tensor(mask: Image.Image, latent_hw: tuple[int, int], device: torch.device,
                        dtype: torch.dtype) -> torch.Tensor:
    array = np.asarray(mask.resize((latent_hw[1], latent_hw[0]), Image.Resampling.LANCZOS), dtype=np.float32) / 255
    return torch.from_numpy(np.around(array)).to(device, dtype)[None, None]


def _composite(image: Image.Image, original: Image.Image, setup: InpaintSetup | None) -> Image.Image:
    """Paste the generated pixels back so that everything outside the (blurred) mask equals the original."""
    if setup is None:
        return image
    if setup.crop_region:
        x1, y1, x2, y2 = setup.crop_region
        placed = original.copy()
        placed.paste(resize_image(1, image, x2 - x1, y2 - y1), (x1, y1))
        image = placed
    elif image.size != original.size:
        image = image.resize(original.size, Image.Resampling.LANCZOS)
    return Image.composite(image, original, setup.mask_for_overlay)
