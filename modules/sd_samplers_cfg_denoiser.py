"""A1111's `modules.sd_samplers_cfg_denoiser.CFGDenoiser`: classifier-free guidance on denoised predictions.

Extensions subclass it and override `combine_denoised` (mcmonkeyprojects/sd-dynamic-thresholding, for one) and put
their instance on a sampler as `sampler.model_wrap_cfg`. The core's sampling loop then calls that
`combine_denoised(x_out, conds_list, uncond, cond_scale)` at every step, with `x_out` the denoised prediction of
every prompt part and then of every image's negative prompt (see `modules.sd_samplers`). The UNet call itself is the
core's (`forward` is not how this WebUI samples).
"""

from __future__ import annotations

from typing import Any

import torch


class CFGDenoiser(torch.nn.Module):
    """Guidance state and maths with A1111's attributes: `step` (the current step, set before each call),
    `total_steps`, `steps`, `p`, `sampler`, `mask`/`nmask`/`init_latent`, `image_cfg_scale`."""

    def __init__(self, sampler: Any) -> None:
        super().__init__()
        self.model_wrap = None
        self.mask = None
        self.nmask = None
        self.init_latent = None
        self.steps: int | None = None  # the steps asked for
        self.total_steps: int | None = None  # denoiser calls the pass makes
        self.step = 0
        self.image_cfg_scale: float | None = None
        self.padded_cond_uncond = False
        self.padded_cond_uncond_v0 = False
        self.sampler = sampler
        self.p: Any = None
        self.mask_before_denoising = False

    @property
    def inner_model(self) -> Any:
        """The model being guided: the loaded model wrapper (A1111: k-diffusion's wrapper of the ldm model)."""
        from modules import shared

        return shared.sd_model

    def combine_denoised(self, x_out: torch.Tensor, conds_list: list[list[tuple[int, float]]], uncond: Any,
                         cond_scale: float) -> torch.Tensor:
        """uncond + sum over each image's prompt parts of weight * cond_scale * (cond - uncond)."""
        denoised_uncond = x_out[-uncond.shape[0]:]
        denoised = torch.clone(denoised_uncond)
        for image, conds in enumerate(conds_list):
            for cond_index, weight in conds:
                denoised[image] += (x_out[cond_index] - denoised_uncond[image]) * (weight * cond_scale)
        return denoised

    def combine_denoised_for_edit_model(self, x_out: torch.Tensor, cond_scale: float) -> torch.Tensor:
        """InstructPix2Pix's three-way guidance (cond, image-only cond, uncond)."""
        out_cond, out_img_cond, out_uncond = x_out.chunk(3)
        image_scale = self.image_cfg_scale if self.image_cfg_scale is not None else 1.0
        return out_uncond + cond_scale * (out_cond - out_img_cond) + image_scale * (out_img_cond - out_uncond)

    def get_pred_x0(self, x_in: torch.Tensor, x_out: torch.Tensor, sigma: Any) -> torch.Tensor:
        return x_out

    def update_inner_model(self) -> None:
        self.model_wrap = None

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError("the WebUI's sampling loop runs the model; it calls combine_denoised each step")
