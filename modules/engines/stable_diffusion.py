"""The Stable Diffusion engines: a UNet denoiser, CLIP text encoders and a KL VAE (SD 1.x, SD 2.x eps/v, SDXL
base/refiner, and the 9-channel inpainting variants of each).

The families share one UNet engine; what differs is small and lives in the family's class: SDXL's extra inputs
(pooled text embeddings + size/crop ids, the refiner's aesthetic scores instead of the target size) and the
inpainting variants' extra input channels. eps vs v-prediction is the scheduler's business (its config carries
`prediction_type`), so SD2-v needs no class of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from modules import memory
from modules.engines.base import DenoiserCall, DenoiserExtras, Engine, merge_hook_kwargs
from modules.models import acceleration
from modules.models.loader import SDModel
from modules.prompts.encoder import Conditioning, EncodingNotes, PromptEncoder
from modules.prompts.guidance import StepConditioning
from modules.prompts.textual_inversion import EmbeddingDatabase

log = logging.getLogger("webui")


class StableDiffusionEngine(Engine):
    """SD 1.x (and the base of the others): UNet2DConditionModel conditioned on one CLIP tower's hidden states."""

    def __init__(self, model: SDModel, opts: Any, embeddings: EmbeddingDatabase | None = None) -> None:
        """`opts`: the settings (read when used, so a job's override_settings apply); `embeddings`: textual
        inversion files for the prompt encoder."""
        self.model = model
        self.opts = opts
        self.family = model.family
        self.encoder = PromptEncoder(model, comma_padding_backtrack=int(opts.comma_padding_backtrack),
                                     emphasis=opts.emphasis, clip_skip=int(opts.CLIP_stop_at_last_layers),
                                     sdxl_clip_l_skip=bool(opts.sdxl_clip_l_skip), embeddings=embeddings)
        self.encoder_state = (int(opts.comma_padding_backtrack), opts.emphasis, int(opts.CLIP_stop_at_last_layers),
                              bool(opts.sdxl_clip_l_skip), embeddings.signature if embeddings else None)

    # --- text ------------------------------------------------------------------------------------------------
    def encode(self, prompts: list[str], min_chunks: int = 1) -> tuple[Conditioning, EncodingNotes]:
        with memory.on_device(self.model, "text_encoders"):
            return self.encoder.encode_noted(prompts, min_chunks)

    # --- latents -------------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.policy.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.policy.dtype

    @property
    def latent_channels(self) -> int:
        return self.model.latent_channels

    @property
    def vae_scale_factor(self) -> int:
        return self.model.vae_scale_factor

    # --- the denoiser --------------------------------------------------------------------------------------------
    def denoiser_loaded(self) -> AbstractContextManager[None]:
        return memory.on_device(self.model, "unet")

    @property
    def denoiser_module(self) -> torch.nn.Module:
        return self.model.unet

    def added_cond_kwargs(self, cond: StepConditioning, batch: int, width: int, height: int
                          ) -> dict[str, torch.Tensor] | None:
        """The family's extra UNet inputs for every row (SD1/SD2: none)."""
        return None

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: StepConditioning, extra: DenoiserExtras
                ) -> torch.Tensor:
        added = self.added_cond_kwargs(cond, len(x) - len(cond.owners), *extra.image_size)
        kwargs: dict[str, Any] = {}
        if extra.hooks:
            call = DenoiserCall(x, t, cond, extra.step, extra.total_steps, extra.image_conditioning, added, self)
            kwargs = merge_hook_kwargs([hook.before_denoiser(call) for hook in extra.hooks])
            # a hook's entries join the family's own and may replace them (micro-conditioning variants)
            hook_added = kwargs.pop("added_cond_kwargs", None)
            if hook_added:
                added = {**(added or {}), **hook_added}
        if extra.image_conditioning is not None:
            x = torch.cat([x, extra.image_conditioning], dim=1)
        acceleration.step_begin(self.model)
        return self.model.unet(x.to(self.dtype), t, encoder_hidden_states=cond.embeds, added_cond_kwargs=added,
                               **kwargs).sample

    # --- pixels <-> latents --------------------------------------------------------------------------------------
    def _vae_tiling(self) -> str:
        """The tiled-VAE setting; under --lowvram "Auto" means always (a whole SDXL decode alone needs ~3 GB)."""
        setting = str(self.opts.vae_tiling)
        return "Always" if setting == "Auto" and memory.mode_of(self.model) == "lowvram" else setting

    @torch.no_grad()
    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        vae, tiling, device = self.model.vae, self._vae_tiling(), self.device
        mean = self._run_vae(lambda dtype: memory.vae_encode(vae, pixels.to(device, dtype), tiling), "encoding")
        return (mean * vae.config.scaling_factor).to(self.dtype)

    @torch.no_grad()
    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae, tiling, device = self.model.vae, self._vae_tiling(), self.device
        decoded = self._run_vae(
            lambda dtype: memory.vae_decode(vae, latents.to(device, dtype) / vae.config.scaling_factor, tiling),
            "decoding")
        # a copy: a compiled decoder's output lives in its CUDA-graph pool and is overwritten by the next decode
        return decoded.to(torch.float32, copy=True)

    def _run_vae(self, run: Callable[[torch.dtype], torch.Tensor], what: str) -> torch.Tensor:
        """run(the VAE's dtype) on the device; a half-precision result with NaN/inf is computed again in float32, and
        the VAE stays in float32 from then on (A1111's auto_vae_precision: SDXL's original VAE overflows in float16
        on every image; running each one twice would cost more than float32 does). Encoding too: NaN latents would
        only decode to black."""
        model = self.model
        vae = model.vae
        with memory.on_device(model, "vae"), memory.VAE_LOCK:
            result = run(vae.dtype)
            if model.policy.nan_check and vae.dtype != torch.float32 and not torch.isfinite(result).all():
                log.warning("VAE produced NaN/inf in %s; %s again in float32 and keeping this VAE in float32 "
                            "(use --no-half-vae to start that way)", str(vae.dtype).removeprefix("torch."), what)
                memory.recast(model, vae, torch.float32)
                result = run(torch.float32)
        return result


class InpaintingEngine(StableDiffusionEngine):
    """The 9-channel inpainting UNets (mixed into a family's class): [latents, mask, masked-image latents] along
    the channels."""

    @property
    def takes_image_conditioning(self) -> bool:
        return True

    def image_conditioning(self, batch: int, height: int, width: int, pixels: torch.Tensor | None = None,
                           mask: torch.Tensor | None = None) -> torch.Tensor | None:
        f = self.vae_scale_factor
        if pixels is None:  # txt2img: everything is to be generated
            pixels = torch.zeros(batch, 3, height, width)
            mask = torch.ones(batch, 1, height // f, width // f)
        masked_latents = self.vae_encode(pixels.to(self.device))
        return torch.cat([mask.to(self.device, self.dtype), masked_latents.to(self.dtype)], dim=1)


class SD1Engine(StableDiffusionEngine):
    """SD 1.x: CLIP ViT-L/14, CLIP skip as set."""


class SD2Engine(StableDiffusionEngine):
    """SD 2.x, eps or v-prediction (the scheduler config says which): OpenCLIP ViT-H, penultimate layer."""


class SDXLEngine(StableDiffusionEngine):
    """SDXL base: CLIP-L + OpenCLIP bigG, and micro-conditioning on the pooled bigG embedding plus
    (original size, crop, target size) ids."""

    latent_format = "sdxl"

    def __init__(self, model: SDModel, opts: Any, embeddings: EmbeddingDatabase | None = None) -> None:
        super().__init__(model, opts, embeddings)
        # made once per size: a tensor built from a list is a host-to-device copy at every step otherwise
        self._time_ids: dict[tuple, torch.Tensor] = {}

    def size_ids(self, width: int, height: int) -> tuple[list[float], list[float]]:
        """The conditional and unconditional rows' ids: original size, crop (settings), target size."""
        crop = [self.opts.sdxl_crop_top, self.opts.sdxl_crop_left]
        ids = [height, width, *crop, height, width]
        return ids, ids

    def added_cond_kwargs(self, cond: StepConditioning, batch: int, width: int, height: int
                          ) -> dict[str, torch.Tensor] | None:
        pos, neg = self.size_ids(width, height)
        key = (tuple(pos), tuple(neg), len(cond.owners), batch)
        if key not in self._time_ids:
            self._time_ids[key] = torch.tensor([pos] * len(cond.owners) + [neg] * batch, dtype=self.dtype,
                                               device=self.device)
        return {"text_embeds": cond.pooled, "time_ids": self._time_ids[key]}


class SDXLRefinerEngine(SDXLEngine):
    """SDXL refiner: bigG only; aesthetic scores (high for the prompt, low for the negative) replace the target
    size in the ids."""

    def size_ids(self, width: int, height: int) -> tuple[list[float], list[float]]:
        opts = self.opts
        crop = [opts.sdxl_crop_top, opts.sdxl_crop_left]
        return ([height, width, *crop, opts.sdxl_refiner_high_aesthetic_score],
                [height, width, *crop, opts.sdxl_refiner_low_aesthetic_score])


class SD1InpaintEngine(InpaintingEngine, SD1Engine):
    """SD 1.x inpainting (9 input channels)."""


class SD2InpaintEngine(InpaintingEngine, SD2Engine):
    """SD 2.x inpainting (9 input channels)."""


class SDXLInpaintEngine(InpaintingEngine, SDXLEngine):
    """SDXL inpainting (9 input channels)."""


ENGINES: dict[str, type[StableDiffusionEngine]] = {
    "sd1": SD1Engine, "sd1-inpaint": SD1InpaintEngine,
    "sd2": SD2Engine, "sd2-v": SD2Engine, "sd2-inpaint": SD2InpaintEngine,
    "sdxl": SDXLEngine, "sdxl-refiner": SDXLRefinerEngine, "sdxl-inpaint": SDXLInpaintEngine,
}
