"""Image and latent helpers A1111 keeps in `modules.processing` and extensions call: seeded noise
(`create_random_tensors`), img2img colour correction (`setup_color_correction` / `apply_color_correction`), mask
binarising (`create_binary_mask`), overlay pasting (`apply_overlay`), pixels <-> latents through a model's engine
(`images_tensor_to_samples`, `samples_to_images_tensor`, `decode_latent_batch`), and the constants `opt_C`/`opt_f`.
Core: `modules.processing` imports them under A1111's names; nothing here reads global state."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageCms

from modules.sampling import rng as rng_mod

__all__ = ["apply_color_correction", "apply_overlay", "create_binary_mask", "create_random_tensors",
           "decode_first_stage", "decode_latent_batch", "images_tensor_to_samples", "opt_C", "opt_f",
           "samples_to_images_tensor", "setup_color_correction"]

opt_C = 4  # noqa: N816 (A1111's name): latent channels of SD1/SD2/SDXL
opt_f = 8  # pixels per latent cell


# --- noise ------------------------------------------------------------------------------------------------------

def create_random_tensors(shape: tuple[int, ...], seeds: list[int], subseeds: list[int] | None = None,
                          subseed_strength: float = 0.0, seed_resize_from_h: int = 0, seed_resize_from_w: int = 0,
                          p: Any = None, *, source: str = "CPU", device: torch.device | str = "cpu"
                          ) -> torch.Tensor:
    """Start noise for one image per seed, (len(seeds), *shape), the same noise a job with these seeds starts
    from (A1111's ImageRNG: variation seeds slerped in at `subseed_strength`; `seed_resize_from_h/w` in pixels)."""
    image_rng = rng_mod.ImageRNG(
        tuple(shape), list(seeds), subseeds=list(subseeds) if subseeds is not None else None,
        subseed_strength=subseed_strength,
        seed_resize_from_h=seed_resize_from_h // opt_f if seed_resize_from_h and seed_resize_from_h > 0 else 0,
        seed_resize_from_w=seed_resize_from_w // opt_f if seed_resize_from_w and seed_resize_from_w > 0 else 0,
        source=source, device=device)
    return image_rng.next()


# --- colour correction ------------------------------------------------------------------------------------------

_SRGB = ImageCms.createProfile("sRGB")
_LAB = ImageCms.createProfile("LAB")
_TO_LAB = ImageCms.buildTransformFromOpenProfiles(_SRGB, _LAB, "RGB", "LAB")
_FROM_LAB = ImageCms.buildTransformFromOpenProfiles(_LAB, _SRGB, "LAB", "RGB")


def _to_lab(image: Image.Image) -> np.ndarray:
    return np.asarray(ImageCms.applyTransform(image.convert("RGB"), _TO_LAB))


def setup_color_correction(image: Image.Image) -> np.ndarray:
    """The colour target of an img2img source image: its pixels in LAB (H x W x 3, uint8)."""
    return _to_lab(image).copy()


def _match_channel(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`source` values remapped so their histogram matches `reference`'s (quantile mapping)."""
    values, inverse, counts = np.unique(source.ravel(), return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(reference.ravel(), return_counts=True)
    quantiles = np.cumsum(counts) / source.size
    ref_quantiles = np.cumsum(ref_counts) / reference.size
    return np.interp(quantiles, ref_quantiles, ref_values)[inverse].reshape(source.shape)


def apply_color_correction(correction: np.ndarray, original_image: Image.Image) -> Image.Image:
    """`original_image` with the colours of the correction target: the a/b (colour) channels histogram-matched to
    it in LAB, the lightness kept (A1111 matches all channels, then blends back the original's luminosity)."""
    lab = _to_lab(original_image).astype(np.float64)
    for channel in (1, 2):
        lab[..., channel] = _match_channel(lab[..., channel], correction[..., channel])
    corrected = Image.fromarray(np.clip(lab, 0, 255).round().astype(np.uint8), "LAB")
    return ImageCms.applyTransform(corrected, _FROM_LAB).convert("RGB")


# --- masks and overlays -----------------------------------------------------------------------------------------

def create_binary_mask(image: Image.Image, round: bool = True) -> Image.Image:  # noqa: A002 (A1111's keyword)
    """An "L" mask from an RGBA image's alpha (thresholded at 128 with `round`), else the image in greyscale."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        alpha = image.split()[-1].convert("L")
        return alpha.point(lambda x: 255 if x > 128 else 0) if round else alpha
    return image.convert("L")


def apply_overlay(image: Image.Image, paste_loc: tuple[int, int, int, int] | None, overlay: Image.Image | None
                  ) -> Image.Image:
    """`image` resized into `paste_loc` (x, y, w, h) of a canvas the overlay's size, with `overlay` (RGBA, the
    unchanged parts) composited over it; unchanged without an overlay."""
    if overlay is None:
        return image
    if paste_loc is not None:
        x, y, w, h = paste_loc
        base = Image.new("RGBA", (overlay.width, overlay.height))
        base.paste(image.resize((w, h), Image.Resampling.LANCZOS).convert("RGBA"), (x, y))
        image = base
    image = image.convert("RGBA")
    image.alpha_composite(overlay.convert("RGBA"))
    return image.convert("RGB")


# --- pixels <-> latents -----------------------------------------------------------------------------------------

def _engine(model: Any, opts: Any) -> Any:
    from modules import engines, output_writer

    return engines.engine_for(model, opts if opts is not None else output_writer.app_opts())


def images_tensor_to_samples(image: torch.Tensor, approximation: Any = None, model: Any = None, *,
                             opts: Any = None) -> torch.Tensor:
    """Pixels (B, 3, H, W) in [0, 1] -> the model's scaled latents (A1111's VAE encode of img2img)."""
    if model is None:
        raise ValueError("images_tensor_to_samples needs the model (p.sd_model)")
    return _engine(model, opts).vae_encode(image * 2 - 1)


def samples_to_images_tensor(sample: torch.Tensor, approximation: Any = None, model: Any = None, *,
                             opts: Any = None) -> torch.Tensor:
    """The model's scaled latents -> pixels (B, 3, H, W) in about [-1, 1] (A1111's VAE decode)."""
    if model is None:
        raise ValueError("samples_to_images_tensor needs the model (p.sd_model)")
    return _engine(model, opts).vae_decode(sample)


def decode_latent_batch(model: Any, batch: torch.Tensor, target_device: torch.device | str | None = None,
                        check_for_nans: bool = False, *, opts: Any = None) -> list[torch.Tensor]:
    """Each latent of `batch` decoded to pixels in about [-1, 1], as a list of (3, H, W) tensors."""
    pixels = samples_to_images_tensor(batch, model=model, opts=opts)
    if target_device is not None:
        pixels = pixels.to(target_device)
    return list(pixels)


def decode_first_stage(model: Any, x: torch.Tensor) -> torch.Tensor:
    """A1111's older name for decoding latents with the model's VAE (pixels in about [-1, 1])."""
    return samples_to_images_tensor(x, model=model)
