"""What every model family offers the sampling loop: the engine protocol and the denoiser hooks.

An engine wraps one loaded checkpoint and answers the few questions a generation asks of it: text -> conditioning,
the latent shape, one denoiser call, pixels <-> latents. Everything family-specific (SDXL's pooled embeddings and
size/aesthetic ids, 9-channel inpainting inputs, a future transformer denoiser) stays inside the engine, so the loop
(`modules/sampling/loop.py`) and processing never ask "is this SDXL?".

Extra denoiser inputs come from `DenoiserHook`s, asked before every denoiser call (the point `before_denoiser`).
A hook returns keyword arguments for the denoiser -- for diffusers' `UNet2DConditionModel.forward` those are
`down_block_additional_residuals`, `mid_block_additional_residual`, `down_intrablock_additional_residuals` and
`added_cond_kwargs` entries -- so a ControlNet or T2I-Adapter is a hook that computes residuals, never a patch.
Several hooks' residuals are summed (ControlNet's multi-control rule).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from modules.prompts.encoder import Conditioning, EncodingNotes, PromptEncoder
from modules.prompts.guidance import StepConditioning

# Denoiser inputs that several hooks may each supply: summed (tensors, or tuples of tensors element-wise).
SUMMED_KWARGS = ("down_block_additional_residuals", "mid_block_additional_residual",
                 "down_intrablock_additional_residuals")


@dataclass
class DenoiserCall:
    """What a hook sees before one denoiser call. `x` are the scaled model-input latents, one row per conditioning
    row (every prompt part, then the unconditional rows), without the inpainting channels; `cond.embeds` the text
    conditioning of those rows; `added_cond_kwargs` the family's own extra inputs (SDXL: text_embeds, time_ids)."""

    x: torch.Tensor
    t: torch.Tensor
    cond: StepConditioning
    step: int
    total_steps: int
    image_conditioning: torch.Tensor | None
    added_cond_kwargs: dict[str, torch.Tensor] | None
    engine: Engine


@runtime_checkable
class DenoiserHook(Protocol):
    """Supplies extra denoiser inputs at every step (ControlNet, T2I-Adapter, IP-Adapter, ...)."""

    def before_denoiser(self, call: DenoiserCall) -> dict[str, Any] | None:
        """Keyword arguments to add to this denoiser call (None or {}: nothing). Residuals are summed with other
        hooks'; `added_cond_kwargs` entries join the engine's own (one hook per entry)."""


@dataclass
class DenoiserExtras:
    """Per-call inputs besides latents, timestep and text: the image size the conditioning describes (SDXL's size
    ids; a hires pass describes its target size), 9-channel inpainting inputs already expanded to the rows of `x`,
    the hooks, and the step (for hooks that schedule themselves, e.g. ControlNet's guidance start/end)."""

    image_size: tuple[int, int]                      # (width, height)
    image_conditioning: torch.Tensor | None = None
    hooks: Sequence[DenoiserHook] = ()
    step: int = 0
    total_steps: int = 0


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            raise ValueError(f"denoiser hooks returned residual lists of different lengths ({len(a)}, {len(b)})")
        return tuple(x + y for x, y in zip(a, b))
    return a + b


def merge_hook_kwargs(results: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """One set of denoiser keyword arguments from several hooks: residuals summed, `added_cond_kwargs` entries
    joined; the same non-residual argument from two hooks is an error (there is no right way to merge it).

    ControlNet residuals come as a pair (down + mid): diffusers' UNet applies neither alone, so a lone one is an
    error rather than silently ignored. T2I-Adapter features go in `down_intrablock_additional_residuals`."""
    merged: dict[str, Any] = {}
    for result in results:
        for key, value in (result or {}).items():
            if key not in merged:
                merged[key] = dict(value) if key == "added_cond_kwargs" else value
            elif key in SUMMED_KWARGS:
                merged[key] = _add(merged[key], value)
            elif key == "added_cond_kwargs":
                clash = merged[key].keys() & value.keys()
                if clash:
                    raise ValueError(f"two denoiser hooks set added_cond_kwargs {sorted(clash)}")
                merged[key].update(value)
            else:
                raise ValueError(f"two denoiser hooks set {key!r}")
    if ("down_block_additional_residuals" in merged) != ("mid_block_additional_residual" in merged):
        raise ValueError("denoiser hooks must give down_block_additional_residuals and mid_block_additional_residual "
                         "together (ControlNet residuals; adapter features go in down_intrablock_additional_residuals)")
    if "down_intrablock_additional_residuals" in merged:  # a fresh list: the UNet pops from it as it goes
        merged["down_intrablock_additional_residuals"] = list(merged["down_intrablock_additional_residuals"])
    return merged


class Engine(ABC):
    """One model family's way from prompt to pixels. Made per job (`engine_for`); holds no job state besides the
    prompt encoder's notes for the infotext and small caches of constant tensors."""

    family: str
    # which latent space the family's VAE makes ("sd": SD 1.x/2.x, "sdxl": SDXL and its refiner, ...): latents pass
    # between two models of one space as they are; between spaces only through pixels
    latent_format: str = "sd"
    # the text encoder with A1111's chunking/emphasis/TI; processing reads its notes (embeddings used) and counts
    encoder: PromptEncoder
    # what else, besides the texts, decides an encoding (cache key for encodings shared across jobs)
    encoder_state: tuple

    # --- text ------------------------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, prompts: list[str], min_chunks: int = 1) -> tuple[Conditioning, EncodingNotes]:
        """Run the text encoders (on the device for the duration) for `prompts`, padded to `min_chunks` chunks."""

    # --- latents -------------------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """The denoiser's dtype (latents and scheduler maths stay float32)."""

    @property
    @abstractmethod
    def latent_channels(self) -> int: ...

    @property
    @abstractmethod
    def vae_scale_factor(self) -> int: ...

    def latent_shape(self, width: int, height: int) -> tuple[int, int, int]:
        """(channels, height, width) of one image's latents."""
        f = self.vae_scale_factor
        return self.latent_channels, height // f, width // f

    @property
    def takes_image_conditioning(self) -> bool:
        """Whether the denoiser takes inputs made from the source image beside the latents (9-channel inpainting:
        the mask and the masked image's latents); such a model inpaints by itself, no latent mask blend needed."""
        return False

    def image_conditioning(self, batch: int, height: int, width: int, pixels: torch.Tensor | None = None,
                           mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """The per-image inputs `takes_image_conditioning` speaks of (pixels None: txt2img, all to be generated);
        None for models without them."""
        return None

    # --- the denoiser --------------------------------------------------------------------------------------------
    @abstractmethod
    def denoiser_loaded(self) -> AbstractContextManager[None]:
        """Keep the denoiser on the device for a whole sampling loop (medvram moves parts in and out)."""

    @property
    @abstractmethod
    def denoiser_module(self) -> torch.nn.Module:
        """The denoiser network, for A1111 callbacks that receive it (`CFGDenoisedParams.inner_model`); never called
        by the loop."""

    @abstractmethod
    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: StepConditioning, extra: DenoiserExtras
                ) -> torch.Tensor:
        """ONE denoiser call over all rows of `x` (matching `cond.embeds`): the model's prediction (noise, v or
        flow, as its scheduler takes it), in the model's dtype."""

    # --- pixels <-> latents --------------------------------------------------------------------------------------
    @abstractmethod
    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] (B, 3, H, W) -> scaled latents in the model's dtype."""

    @abstractmethod
    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> float32 pixels in about [-1, 1] (a copy the caller owns)."""

