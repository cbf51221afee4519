"""Live previews: a picture of the latents while sampling runs.

"Approx cheap" is A1111's fixed linear map from the 4 latent channels to RGB (no weights needed, per family);
"Full" decodes with the model's VAE; "Auto" uses Full when the VAE is small enough to cost little (e.g. the
demo model, whose latent space the fixed map does not describe) and the cheap map otherwise.
"""

from __future__ import annotations

import torch
from PIL import Image

# Rows: latent channels; columns: R, G, B (A1111's sd_vae_approx.cheap_approximation).
SD_COEFFICIENTS = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
SDXL_COEFFICIENTS = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163),
                     (-0.3730, -0.2499, -0.2088))
SMALL_VAE_PARAMETERS = 10_000_000


def approx_cheap(latent: torch.Tensor, sdxl: bool) -> torch.Tensor:
    """[4, h, w] latent (UNet scale) -> [3, h, w] in [-1, 1]."""
    coefficients = torch.tensor(SDXL_COEFFICIENTS if sdxl else SD_COEFFICIENTS, dtype=torch.float32)
    return torch.einsum("chw,cr->rhw", latent.float().cpu(), coefficients).clamp(-1, 1)


def preview_method(model, setting: str) -> str:
    if setting != "Auto":
        return setting
    small = sum(p.numel() for p in model.vae.decoder.parameters()) < SMALL_VAE_PARAMETERS
    return "Full" if small or model.latent_channels != 4 else "Approx cheap"


@torch.no_grad()
def decode_preview(model, latents: torch.Tensor, setting: str = "Auto") -> Image.Image:
    """A preview of the first image of a batch of latents."""
    latent = latents[:1]
    if preview_method(model, setting) == "Full":
        vae = model.vae
        pixels = vae.decode(latent.to(vae.device, vae.dtype) / vae.config.scaling_factor).sample[0]
    else:
        pixels = approx_cheap(latent[0], model.is_sdxl)
    array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)
