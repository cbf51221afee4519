"""A1111's `modules.sd_samplers_common` for extensions: `SamplerData`, the `Sampler` base, latent/image helpers.

The sampling itself is the core's (modules/sampling/: diffusers schedulers under A1111's names). A `Sampler` object
here is what A1111 hands extensions as `p.sampler` / `create_sampler(...)`: it carries `model_wrap_cfg` (the
CFGDenoiser whose `combine_denoised` the real loop calls) and `callback_state` (called by the real loop every step),
connected to the loop by `modules.sd_samplers_hooks` through the core's `sampler_start` hook point.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np
import torch
from PIL import Image

from modules import shared

SamplerDataTuple = namedtuple("SamplerDataTuple", ["name", "constructor", "aliases", "options"])


class SamplerData(SamplerDataTuple):
    """A sampler as A1111 lists it: `constructor(model)` makes its Sampler object; `options` as /samplers shows."""

    def total_steps(self, steps: int) -> int:
        """Denoiser calls for `steps` steps (second-order samplers call it twice per step)."""
        return steps * 2 if self.options.get("second_order", False) else steps


# A1111's `sd_samplers.all_samplers_map`: name -> SamplerData, filled by the sampler modules as they import (in
# A1111's order) and by extensions; it lives here so that the loop's connection can read it without importing them.
sampler_table: dict[str, SamplerData] = {}


class InterruptedException(BaseException):  # noqa: N818 (A1111's name)
    """Raised inside sampling to stop it (A1111's callbacks raise it when the job is interrupted)."""


# A1111's live-preview methods (setting show_progress_type) by the index its helpers take.
approximation_indexes = {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}
_APPROXIMATION_NAMES = {index: name for name, index in approximation_indexes.items()}


def _model(model: Any = None) -> Any:
    model = model if model is not None else shared.sd_model
    if model is None:
        raise RuntimeError("no model is loaded")
    return model


def _preview_setting(approximation: int | None) -> str:
    if approximation is None:
        return str(shared.opts.show_progress_type) if "show_progress_type" in shared.opts.data_labels else "Full"
    return _APPROXIMATION_NAMES.get(approximation, "Full")


def samples_to_images_tensor(sample: torch.Tensor, approximation: int | None = None, model: Any = None
                             ) -> torch.Tensor:
    """Latents to images in [-1, 1] ([batch, 3, H, W]), by the VAE or a preview approximation."""
    from modules import engines, previews

    model = _model(model)
    setting = _preview_setting(approximation)
    if setting == "Full":
        engine = engines.engine_for(model, shared.opts)
        with torch.no_grad():
            return engine.vae_decode(sample.to(model.policy.device)).float()
    images = [previews.decode_preview(model, latent[None], setting) for latent in sample]
    return torch.stack([torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)
                        / 127.5 - 1 for image in images])


def single_sample_to_image(sample: torch.Tensor, approximation: int | None = None) -> Image.Image:
    """One latent ([C, h, w]) to a PIL image."""
    x = samples_to_images_tensor(sample[None], approximation)[0]
    x = torch.clamp((x + 1.0) / 2.0, 0.0, 1.0)
    return Image.fromarray((255.0 * x.permute(1, 2, 0).cpu().numpy()).round().astype(np.uint8))


def decode_first_stage(model: Any, x: torch.Tensor) -> torch.Tensor:
    """A1111's decode of latents to [-1, 1] images with the model's VAE."""
    return samples_to_images_tensor(x, approximation_indexes["Full"], model)


def sample_to_image(samples: torch.Tensor, index: int = 0, approximation: int | None = None) -> Image.Image:
    return single_sample_to_image(samples[index], approximation)


def samples_to_image_grid(samples: torch.Tensor, approximation: int | None = None) -> Image.Image:
    from modules import images

    return images.image_grid([single_sample_to_image(sample, approximation) for sample in samples])


def images_tensor_to_samples(image: torch.Tensor, approximation: int | None = None, model: Any = None
                             ) -> torch.Tensor:
    """Images in [0, 1] ([batch, 3, H, W]) to latents with the model's VAE (A1111 ignores `approximation` too,
    except for TAESD, which this adapter does not offer for encoding)."""
    from modules import engines

    model = _model(model)
    engine = engines.engine_for(model, shared.opts)
    with torch.no_grad():
        return engine.vae_encode(image.to(model.policy.device, torch.float32) * 2 - 1)


def store_latent(decoded: torch.Tensor) -> None:
    """Hand a latent to the live preview (A1111: `state.assign_current_image` every n steps)."""
    shared.state.current_latent = decoded


def is_sampler_using_eta_noise_seed_delta(p: Any) -> bool:
    """Whether ENSD (setting eta_noise_seed_delta) changes this job's noise: ancestral and SDE samplers."""
    config = sampler_table.get(p.sampler_name)
    return bool(config and config.options.get("uses_ensd", False))


def setup_img2img_steps(p: Any, steps: int | None = None) -> tuple[int, int]:
    """(steps, steps actually run) of an img2img pass, as A1111 computes them (setting img2img_fix_steps)."""
    fix = bool(getattr(shared.opts, "img2img_fix_steps", False)) if "img2img_fix_steps" in shared.opts.data_labels \
        else False
    strength = p.denoising_strength or 0.0
    if fix or steps is not None:
        requested = steps or p.steps
        steps = int(requested / min(strength, 0.999)) if strength > 0 else 0
        return steps, requested - 1
    return p.steps, int(min(strength, 0.999) * p.steps)


def apply_refiner(cfg_denoiser: Any, sigma: Any = None) -> bool:
    """A1111 switches to the refiner checkpoint from inside the denoiser; here processing runs the refiner's steps
    itself, so a denoiser never has to (False: nothing was switched)."""
    return False


class Sampler:
    """A1111's sampler object, with its attributes. The real work is the core's sampling loop: while a job samples
    with this object, the loop calls `self.model_wrap_cfg.combine_denoised(...)` (when an extension changed it) and
    `self.callback_state(d)` every step; `sample`/`sample_img2img` are not how this WebUI samples."""

    def __init__(self, funcname: Any) -> None:
        self.funcname = funcname
        self.func = funcname
        self.extra_params: list[str] = []
        self.sampler_noises = None
        self.stop_at: int | None = None
        self.eta: float | None = None
        self.config: SamplerData | None = None
        self.last_latent: torch.Tensor | None = None
        self.s_min_uncond: float | None = None
        self.s_churn = 0.0
        self.s_tmin = 0.0
        self.s_tmax = float("inf")
        self.s_noise = 1.0
        self.eta_option_field = "eta_ancestral"
        self.eta_infotext_field = "Eta"
        self.eta_default = 1.0
        self.conditioning_key = "crossattn"
        self.p: Any = None
        self.model_wrap: Any = None
        self.model_wrap_cfg: Any = None
        self.sampler_extra_args: dict[str, Any] | None = None
        self.options: dict[str, Any] = {}

    def callback_state(self, d: dict[str, Any]) -> None:
        """Called by the sampling loop at every step with k-diffusion's dict (x, i, sigma, sigma_hat, denoised)."""
        step = d["i"]
        self.last_latent = d["denoised"]
        if self.stop_at is not None and step > self.stop_at:
            raise InterruptedException
        shared.state.sampling_step = step

    def launch_sampling(self, steps: int, func: Any) -> Any:
        shared.state.sampling_steps = steps
        shared.state.sampling_step = 0
        try:
            return func()
        except InterruptedException:
            return self.last_latent

    def number_of_needed_noises(self, p: Any) -> int:
        return p.steps

    def initialize(self, p: Any) -> dict[str, Any]:
        """Take the job's settings (A1111 reads eta and s_* here); returns the extra sampler arguments."""
        self.p = p
        if self.model_wrap_cfg is not None:
            self.model_wrap_cfg.p = p
            self.model_wrap_cfg.step = 0
            self.model_wrap_cfg.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.eta = p.eta if getattr(p, "eta", None) is not None else self.eta_default
        self.s_min_uncond = getattr(p, "s_min_uncond", 0.0)
        return {name: getattr(p, name) for name in self.extra_params if getattr(p, name, None) is not None}

    def sample(self, p: Any, x: Any, conditioning: Any, unconditional_conditioning: Any, steps: int | None = None,
               image_conditioning: Any = None) -> Any:
        raise NotImplementedError("this WebUI samples in its own loop; run the job with processing.process_images")

    def sample_img2img(self, p: Any, x: Any, noise: Any, conditioning: Any, unconditional_conditioning: Any,
                       steps: int | None = None, image_conditioning: Any = None) -> Any:
        raise NotImplementedError("this WebUI samples in its own loop; run the job with processing.process_images")

    def add_infotext(self, p: Any) -> None:
        """The loop's sampler writes the infotext; kept for extensions that call it."""

