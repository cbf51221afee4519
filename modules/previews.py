"""Live previews: a picture of the latents while sampling runs.

"Approx cheap" is A1111's fixed linear map from the 4 latent channels to RGB (no weights needed, per family);
"Full" decodes with the model's VAE; "TAESD" uses the tiny autoencoder's decoder when its file is installed where
A1111 keeps it (`models/VAE-taesd/taesd_decoder.pth`, `taesdxl_decoder.pth` for SDXL). "Auto" picks TAESD when the
file is there, else Full when the VAE is small enough to cost little (e.g. the demo model, whose latent space the
fixed map does not describe), else the cheap map.
"""

from __future__ import annotations

import os
import re

import torch
from PIL import Image

from modules import memory
from modules.models.safe_load import load_pickle, load_state_dict

# Rows: latent channels; columns: R, G, B (A1111's sd_vae_approx.cheap_approximation).
SD_COEFFICIENTS = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
SDXL_COEFFICIENTS = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163),
                     (-0.3730, -0.2499, -0.2088))
SMALL_VAE_PARAMETERS = 10_000_000


def approx_cheap(latent: torch.Tensor, sdxl: bool) -> torch.Tensor:
    """[4, h, w] latent (UNet scale) -> [3, h, w] in [-1, 1]."""
    coefficients = torch.tensor(SDXL_COEFFICIENTS if sdxl else SD_COEFFICIENTS, dtype=torch.float32)
    return torch.einsum("chw,cr->rhw", latent.float().cpu(), coefficients).clamp(-1, 1)


TAESD_FILES = {False: ("taesd_decoder.safetensors", "taesd_decoder.pth"),
               True: ("taesdxl_decoder.safetensors", "taesdxl_decoder.pth")}
_taesd_cache: dict[str, torch.nn.Module] = {}


def taesd_file(taesd_dir: str | None, sdxl: bool) -> str | None:
    for name in TAESD_FILES[sdxl] if taesd_dir else ():
        path = os.path.join(taesd_dir, name)
        if os.path.isfile(path):
            return path
    return None


def load_taesd_decoder(path: str) -> torch.nn.Module:
    """The TAESD decoder from madebyollin's original file (what A1111 downloads) as diffusers' DecoderTiny.

    The original is one nn.Sequential whose item 0 is the tanh clamp (no weights); DecoderTiny applies the clamp
    itself and keeps the rest under `layers`, so original item i is layers[i - 1]. Pickles go through the
    restricted loader."""
    if path in _taesd_cache:
        return _taesd_cache[path]
    from diffusers import AutoencoderTiny

    state = load_state_dict(path) if path.endswith(".safetensors") else load_pickle(path, "TAESD decoder")
    converted = {}
    for key, tensor in state.items():
        match = re.fullmatch(r"(?:decoder\.)?(?:layers\.)?(\d+)\.(.+)", key)
        if match is None:
            raise ValueError(f"{path}: not a TAESD decoder (unexpected key {key!r})")
        index = int(match.group(1)) - (0 if key.startswith(("decoder.", "layers.")) else 1)
        converted[f"layers.{index}.{match.group(2)}"] = tensor
    decoder = AutoencoderTiny().decoder
    missing, unexpected = decoder.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: not a TAESD decoder (missing {missing[:3]}, unexpected {unexpected[:3]})")
    _taesd_cache.clear()
    _taesd_cache[path] = decoder.eval().requires_grad_(False)
    return _taesd_cache[path]


def preview_method(model, setting: str, taesd_dir: str | None = None) -> str:
    if setting == "TAESD" and not taesd_file(taesd_dir, model.is_sdxl):
        setting = "Auto"  # the file is not installed: fall back rather than show nothing
    if setting == "Full" and memory.mode_of(model) != "normal":
        # --medvram keeps the VAE off the GPU while sampling and --lowvram moves its layers on use: a preview on the
        # side thread would meet CPU weights or move layers under the real decode
        setting = "Auto"
    if setting != "Auto":
        return setting
    if model.latent_channels == 4 and taesd_file(taesd_dir, model.is_sdxl):
        return "TAESD"
    small = sum(p.numel() for p in model.vae.decoder.parameters()) < SMALL_VAE_PARAMETERS
    full_ok = memory.mode_of(model) == "normal"
    if not full_ok and model.latent_channels != 4:
        return "None"  # the cheap map knows 4-channel latents only
    return "Full" if full_ok and (small or model.latent_channels != 4) else "Approx cheap"


@torch.no_grad()
def decode_preview(model, latents: torch.Tensor, setting: str = "Auto", taesd_dir: str | None = None
                   ) -> Image.Image | None:
    """A preview of the first image of a batch of latents (None when no method suits the model now)."""
    latent = latents[:1]
    method = preview_method(model, setting, taesd_dir)
    if method == "None":
        return None
    if method == "Full":
        vae = model.vae
        with memory.VAE_LOCK:  # not while the job decodes or switches the VAE to float32
            z = latent.to(model.policy.device, vae.dtype) / vae.config.scaling_factor
            if getattr(model, "compiled", False):
                # The eager decoder: the compiled one would compile again for a batch of one (on this side thread).
                if vae.post_quant_conv is not None:
                    z = vae.post_quant_conv(z)
                pixels = vae.decoder.forward(z)[0]
            else:
                pixels = vae.decode(z).sample[0]
    elif method == "TAESD":  # TAESD works on the UNet's (scaled) latents and returns [-1, 1]
        decoder = load_taesd_decoder(taesd_file(taesd_dir, model.is_sdxl)).to(latent.device)
        pixels = decoder(latent.float())[0]
    else:
        pixels = approx_cheap(latent[0], model.is_sdxl)
    array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)
