"""The sampling loop: A1111's samplers (diffusers schedulers) stepping latents with one engine call per step.

It knows nothing of model families: every model access goes through the engine protocol (modules/engines/base.py),
so eps, v-prediction and future flow-matching engines share it. Per step: classifier-free guidance over scheduled /
composable prompts (PromptGuidance), A1111's cfg_denoiser / cfg_denoised / cfg_after_cfg points (fired through
modules.hooks), img2img strength, the latent mask blend of inpainting with ordinary models, interrupt/skip between
steps, progress events and a tqdm bar.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from tqdm import tqdm

from modules import hooks
from modules.engines.base import DenoiserExtras, DenoiserHook, Engine
from modules.prompts.guidance import PromptGuidance, StepConditioning
from modules.sampling import rng as rng_mod
from modules.sampling import samplers
from modules.state import ProgressEvent, State


@dataclasses.dataclass
class _Run:
    """One pass's fixed inputs, handed from `run` to the step loop."""

    sampler: samplers.Sampler
    guidance: PromptGuidance
    image_rng: rng_mod.ImageRNG
    timesteps: torch.Tensor
    noise: torch.Tensor
    init_latents: torch.Tensor
    cfg_scale: float
    image_size: tuple[int, int]
    strength: float | None
    image_conditioning: torch.Tensor | None
    mask: torch.Tensor | None
    job_no: int
    job_count: int
    overrides: hooks.SamplerStartParams


@dataclasses.dataclass(frozen=True)
class KDiffusionView:
    """One step seen as k-diffusion sees it: latents `x` = x0 + sigma * noise, and the model's prediction as the
    denoised latents x0.

    Diffusers schedulers keep their sample either in that scaling (Euler, LMS, Heun, DPM2, DPM++ SDE: their
    `init_noise_sigma` is sigma_max) or in the variance-preserving one, x * 1/sqrt(sigma^2 + 1) (DDIM, PLMS, the
    multistep solvers, LCM); the model predicts noise, v or x0 (`prediction_type`). The conversions are exact
    inverses, so a step that no listener changes is the scheduler's own step.
    """

    sigma: float
    k_space: bool
    prediction: str

    @classmethod
    def at(cls, scheduler: Any, t: torch.Tensor) -> KDiffusionView:
        sigmas, index = getattr(scheduler, "sigmas", None), getattr(scheduler, "step_index", None)
        if sigmas is not None and index is not None and index < len(sigmas):
            sigma = float(sigmas[index])
        else:
            alpha = float(scheduler.alphas_cumprod[int(t)])
            sigma = math.sqrt((1 - alpha) / alpha)
        prediction = getattr(scheduler.config, "prediction_type", "epsilon")
        return cls(sigma, float(scheduler.init_noise_sigma) > 1.0, prediction)

    @property
    def scale(self) -> float:
        """sqrt(alpha_cumprod): variance-preserving latents are k-diffusion latents times this."""
        return 1.0 / math.sqrt(self.sigma ** 2 + 1.0)

    def x(self, latents: torch.Tensor) -> torch.Tensor:
        return latents if self.k_space else latents / self.scale

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.k_space else x * self.scale

    def denoised(self, x: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
        if self.prediction == "v_prediction":
            return x * self.scale ** 2 - model_output * (self.sigma * self.scale)
        if self.prediction == "sample":
            return model_output
        return x - model_output * self.sigma

    def model_output(self, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        if self.prediction == "v_prediction":
            return (x * self.scale ** 2 - denoised) / (self.sigma * self.scale)
        if self.prediction == "sample":
            return denoised
        return (x - denoised) / self.sigma


class SamplingLoop:
    """Runs scheduler loops on one engine; `denoiser_hooks` add inputs to every denoiser call (ControlNet, ...)."""

    def __init__(self, engine: Engine, state: State, denoiser_hooks: Sequence[DenoiserHook] = ()) -> None:
        self.engine = engine
        self.state = state
        self.denoiser_hooks = list(denoiser_hooks)

    @torch.no_grad()
    def run(self, sampler: samplers.Sampler, latents: torch.Tensor, noise: torch.Tensor, guidance: PromptGuidance,
            steps: int, image_rng: rng_mod.ImageRNG, *, cfg_scale: float, image_size: tuple[int, int],
            strength: float | None = None, image_conditioning: torch.Tensor | None = None,
            mask: torch.Tensor | None = None, job_no: int = 0, job_count: int = 1, desc: str = "txt2img",
            extra_noise: float = 0.0, job: Any = None) -> torch.Tensor | None:
        """Sample one batch. `strength` None: txt2img from pure noise; else img2img from `latents`, skipping the
        first (1 - strength) of the steps. `image_size` (width, height): the image the conditioning describes.

        `mask` (1 = repaint) keeps the unmasked latents on the original's noised trajectory. `extra_noise` (A1111's
        img2img_extra_noise) adds that much of the noise again to img2img's starting latents, after the extra_noise
        point, where a listener may replace that noise. `job` (A1111's `p`) is handed to the `sampler_start` point.
        Returns None when the job was interrupted or skipped.
        """
        scheduler = sampler.scheduler
        scheduler.set_timesteps(steps, device=self.engine.device)
        timesteps = scheduler.timesteps
        # Latents and scheduler maths stay in float32 (ancestral noise is drawn in the sample's dtype, and
        # A1111's per-image streams are float32); only the denoiser call runs in the model's dtype.
        latents, noise = latents.float(), noise.float()
        init_latents = latents
        if strength is None:
            latents = noise * scheduler.init_noise_sigma
        else:
            keep = min(int(steps * strength), steps)
            start = max(steps - keep, 0) * scheduler.order
            timesteps = timesteps[start:]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(start)
            if len(timesteps) == 0:
                return latents
            latents = scheduler.add_noise(latents, noise, timesteps[:1].repeat(latents.shape[0]))
            if extra_noise > 0:
                params = hooks.ExtraNoiseParams(noise, init_latents, latents)
                hooks.fire("extra_noise", params)
                latents = latents + params.noise.float() * extra_noise
        overrides = hooks.SamplerStartParams(job, sampler, steps, len(timesteps))
        if hooks.active("sampler_start"):
            hooks.fire("sampler_start", overrides)
        run = _Run(sampler, guidance, image_rng, timesteps, noise, init_latents, cfg_scale, image_size, strength,
                   image_conditioning, mask, job_no, job_count, overrides)
        bar = tqdm(total=len(timesteps), desc=f"{desc} {job_no + 1}/{job_count}", leave=False, disable=None)
        try:
            with self.engine.denoiser_loaded():
                return self._steps(run, latents, bar)
        finally:
            bar.close()

    def _steps(self, run: _Run, latents: torch.Tensor, bar: tqdm) -> torch.Tensor | None:
        """The steps. Nothing here waits for the GPU (no .item(), no tensor built from a list per step): the host
        queues the next step while the GPU runs this one; only progress listeners that want pixels synchronise."""
        state, engine, guidance = self.state, self.engine, run.guidance
        scheduler = run.sampler.scheduler
        timesteps = run.timesteps
        total = len(timesteps)
        callbacks = 0  # steps the step callback has seen (k-diffusion's step index `i`)
        for i, t in enumerate(timesteps):
            if state.interrupted or state.skipped:
                return None
            step_cond = guidance.at_step(i)
            model_in = scheduler.scale_model_input(guidance.expand(latents, step_cond), t)
            if hooks.active("cfg_denoiser"):
                model_in, step_cond = _cfg_denoiser_callbacks(model_in, run.image_conditioning, t, i, total,
                                                              step_cond)
            image_cond = None if run.image_conditioning is None \
                else guidance.expand(run.image_conditioning, step_cond)
            extra = DenoiserExtras(run.image_size, image_cond, self.denoiser_hooks, i, total)
            out = engine.denoise(model_in, t, step_cond, extra)
            if hooks.active("cfg_denoised"):
                params = hooks.CFGDenoisedParams(out, i, total, engine.denoiser_module)
                hooks.fire("cfg_denoised", params)
                out = params.x
            combine = run.overrides.combine_denoised
            view = KDiffusionView.at(scheduler, t) if combine or run.overrides.step_callback else None
            if combine is not None:
                guided = _combine_denoised(combine, view, latents, out.float(), step_cond, run.cfg_scale, i)
            else:
                guided = guidance.combine(out.float(), step_cond, run.cfg_scale)
            if hooks.active("cfg_after_cfg"):  # the guided prediction; a listener may replace it
                after = hooks.AfterCFGCallbackParams(guided, i, total)
                hooks.fire("cfg_after_cfg", after)
                guided = after.x
            # k-diffusion calls back once per step: second-order schedulers (Heun, DPM2, DPM++ SDE) evaluate the
            # model twice per step, and the callback sees the first evaluation, before the step uses it
            if run.overrides.step_callback is not None and getattr(scheduler, "state_in_first_order", True):
                latents, guided = _step_callback(run.overrides.step_callback, view, latents, guided, callbacks)
                callbacks += 1
            latents = run.sampler.step(guided, t, latents, run.image_rng.generators)
            if run.mask is not None and run.strength is not None:
                if i + 1 < total:
                    noised = scheduler.add_noise(run.init_latents, run.noise,
                                                 timesteps[i + 1:i + 2].repeat(len(run.noise)))
                else:
                    noised = run.init_latents
                latents = noised * (1 - run.mask) + latents * run.mask
            bar.update(1)
            state.on_progress(ProgressEvent(run.job_no, run.job_count, i + 1, total, latents))
        return latents


def _cfg_denoiser_callbacks(x: torch.Tensor, image_cond: torch.Tensor | None, t: torch.Tensor, step: int,
                            total: int, cond: StepConditioning) -> tuple[torch.Tensor, StepConditioning]:
    """A1111's on_cfg_denoiser: listeners may change the denoiser's input latents and text conditioning."""
    n_parts = len(cond.owners)  # rows: every prompt part, then one unconditional row per image
    params = hooks.CFGDenoiserParams(x, image_cond, t, step, total, cond.embeds[:n_parts], cond.embeds[n_parts:])
    hooks.fire("cfg_denoiser", params)
    return params.x, dataclasses.replace(cond, embeds=torch.cat([params.text_cond, params.text_uncond]))


def _combine_denoised(combine: Any, view: KDiffusionView, latents: torch.Tensor, out: torch.Tensor,
                      cond: StepConditioning, cfg_scale: float, step: int) -> torch.Tensor:
    """Guidance by a listener on denoised predictions (A1111's CFGDenoiser.combine_denoised); returns the guided
    model output the scheduler steps with."""
    x = view.x(latents)
    n_parts = len(cond.owners)
    rows_x = torch.cat([x[cond.owners], x]) if n_parts else x
    x_out = view.denoised(rows_x, out)
    conds_list: list[list[tuple[int, float]]] = [[] for _ in range(len(latents))]
    for row, (image, weight) in enumerate(zip(cond.owners, cond.weights, strict=True)):
        conds_list[image].append((row, weight))
    denoised = combine(x_out, conds_list, cond.embeds[n_parts:], cfg_scale, step)
    return view.model_output(x, denoised.float())


def _step_callback(callback: Any, view: KDiffusionView, latents: torch.Tensor, guided: torch.Tensor,
                   step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k-diffusion's per-step callback; what it changes in `x` or `denoised` goes into the step."""
    x = view.x(latents)
    sigma = torch.tensor(view.sigma)
    state = {"x": x, "i": step, "sigma": sigma, "sigma_hat": sigma, "denoised": view.denoised(x, guided)}
    callback(state)
    x = state["x"]
    return view.latents(x), view.model_output(x, state["denoised"])
