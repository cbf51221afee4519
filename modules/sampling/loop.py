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
from collections.abc import Callable, Sequence
from contextlib import ExitStack
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
    negative_skip: NegativeSkip | None = None
    start: int = 0  # index of timesteps[0] in the scheduler's whole schedule (img2img skips the first ones)
    steps: int = 0  # the steps asked for (set_timesteps)
    handover: Handover | None = None


@dataclasses.dataclass
class NegativeSkip:
    """When a step's denoiser call leaves out the negative prompt's rows (half the work; the first prompt part's
    prediction stands in for them, as in A1111): A1111's "Ignore negative prompt during early sampling"
    (`skip_early_cond`: the first fraction of the steps) and "Negative Guidance minimum sigma" (`s_min_uncond`:
    every other step -- every step with `s_min_uncond_all` -- once sigma is below it). CFG scale 1 skips them at
    every step by itself (Forge's rule: they would cancel out). `used_*` tell processing what to write in the
    infotext."""

    early: float = 0.0
    min_sigma: float = 0.0
    min_sigma_all: bool = False
    used_early: bool = False
    used_min_sigma: bool = False


@dataclasses.dataclass
class Handover:
    """The last part of a pass runs on another model (A1111's refiner): from the first step whose progress
    reaches `switch_at` -- by step count (A1111's setting refiner_switch_by_sample_steps) or, by default, by the
    timestep: (999 - t) / 1000. `switch_at` None switches before the first step, as A1111 does.

    Same latent space (an SDXL refiner after SDXL): the scheduler goes on with its history, as A1111's k-diffusion
    sampler does when the model under it changes. Another latent space (`convert` given: SD 1.x refining SDXL):
    the base's prediction of the clean image at the switch goes through pixels into the refiner's latents (a VAE
    round trip), is noised again to the step's noise level with the pass's noise, and `fresh_sampler` (a new
    scheduler of the same sampler, without the base's history) takes the remaining steps."""

    engine: Engine
    guidance: PromptGuidance
    switch_at: float | None
    by_steps: bool = False
    denoiser_hooks: Sequence[DenoiserHook] = ()
    convert: Callable[[torch.Tensor], torch.Tensor] | None = None
    fresh_sampler: samplers.Sampler | None = None
    before_switch: Callable[[], None] | None = None  # e.g. the base model's weights back to the CPU (medvram)
    switched_at: int | None = None  # the step the refiner took over (None: it never did)

    def due(self, step: int, total: int, t: torch.Tensor) -> bool:
        if self.switch_at is None:
            return True
        done = step / total if self.by_steps else (999 - int(round(float(t)))) / 1000
        return done >= self.switch_at


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
            extra_noise: float = 0.0, job: Any = None, handover: Handover | None = None,
            negative_skip: NegativeSkip | None = None) -> torch.Tensor | None:
        """Sample one batch. `strength` None: txt2img from pure noise; else img2img from `latents`, skipping the
        first (1 - strength) of the steps. `image_size` (width, height): the image the conditioning describes.

        `mask` (1 = repaint) keeps the unmasked latents on the original's noised trajectory. `extra_noise` (A1111's
        img2img_extra_noise) adds that much of the noise again to img2img's starting latents, after the extra_noise
        point, where a listener may replace that noise. `job` (A1111's `p`) is handed to the `sampler_start` point.
        `handover`: the pass's last steps run on another model (its `switched_at` says whether they did; the result
        is then in that model's latent space). Returns None when the job was interrupted or skipped.
        """
        scheduler = sampler.scheduler
        scheduler.set_timesteps(steps, device=self.engine.device)
        timesteps = scheduler.timesteps
        # Latents and scheduler maths stay in float32 (ancestral noise is drawn in the sample's dtype, and
        # A1111's per-image streams are float32); only the denoiser call runs in the model's dtype.
        latents, noise = latents.float(), noise.float()
        init_latents = latents
        start = 0
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
                   image_conditioning, mask, job_no, job_count, overrides, negative_skip, start, steps, handover)
        bar = tqdm(total=len(timesteps), desc=f"{desc} {job_no + 1}/{job_count}", leave=False, disable=None)
        try:
            return self._steps(run, latents, bar)
        finally:
            bar.close()

    def _steps(self, run: _Run, latents: torch.Tensor, bar: tqdm) -> torch.Tensor | None:
        """The steps. Nothing here waits for the GPU (no .item(), no tensor built from a list per step): the host
        queues the next step while the GPU runs this one; only progress listeners that want pixels synchronise."""
        with ExitStack() as loaded:
            loaded.enter_context(self.engine.denoiser_loaded())
            return self._step_loop(run, latents, bar, loaded)

    def _step_loop(self, run: _Run, latents: torch.Tensor, bar: tqdm, loaded: ExitStack) -> torch.Tensor | None:
        state, engine, guidance = self.state, self.engine, run.guidance
        sampler, hooks_now = run.sampler, self.denoiser_hooks
        scheduler = sampler.scheduler
        timesteps = run.timesteps
        total = len(timesteps)
        handover = run.handover
        image_conditioning = run.image_conditioning
        callbacks = 0  # steps the step callback has seen (k-diffusion's step index `i`)
        for i, t in enumerate(timesteps):
            if state.interrupted or state.skipped:
                return None
            if handover is not None and handover.switched_at is None and handover.due(i, total, t) \
                    and getattr(scheduler, "state_in_first_order", True):  # never inside a two-evaluation step
                if handover.convert is not None:
                    latents, sampler = self._cross_space(run, handover, latents, i, t, engine, guidance,
                                                         image_conditioning, hooks_now)
                    scheduler = sampler.scheduler
                if handover.before_switch is not None:
                    handover.before_switch()
                loaded.close()
                engine, guidance, hooks_now = handover.engine, handover.guidance, list(handover.denoiser_hooks)
                loaded.enter_context(engine.denoiser_loaded())
                if not engine.takes_image_conditioning:
                    image_conditioning = None
                handover.switched_at = i
            step_cond = guidance.at_step(i)
            if _skips_negative(run, step_cond, i, total, scheduler, t):
                rows, call_cond = guidance.cond_rows(latents, step_cond)
                model_in = scheduler.scale_model_input(rows, t)
                image_cond = None if image_conditioning is None \
                    else guidance.cond_rows(image_conditioning, step_cond)[0]
                out = engine.denoise(model_in, t, call_cond,
                                     DenoiserExtras(run.image_size, image_cond, hooks_now, i, total))
                out = guidance.with_fake_uncond(out, step_cond)
            else:
                model_in = scheduler.scale_model_input(guidance.expand(latents, step_cond), t)
                if hooks.active("cfg_denoiser"):
                    model_in, step_cond = _cfg_denoiser_callbacks(model_in, run.image_conditioning, t, i, total,
                                                                  step_cond)
                image_cond = None if image_conditioning is None else guidance.expand(image_conditioning, step_cond)
                out = engine.denoise(model_in, t, step_cond,
                                     DenoiserExtras(run.image_size, image_cond, hooks_now, i, total))
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
            latents = sampler.step(guided, t, latents, run.image_rng.generators)
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

    def _cross_space(self, run: _Run, handover: Handover, latents: torch.Tensor, i: int, t: torch.Tensor,
                     engine: Engine, guidance: PromptGuidance, image_conditioning: torch.Tensor | None,
                     hooks_now: Sequence[DenoiserHook]) -> tuple[torch.Tensor, samplers.Sampler]:
        """Step `i`'s latents in the refiner's latent space, and the fresh sampler positioned at step `i`: the
        base's clean-image prediction at this step, through pixels, noised again to this step's level."""
        scheduler = run.sampler.scheduler
        step_cond = guidance.at_step(i)
        model_in = scheduler.scale_model_input(guidance.expand(latents, step_cond), t)
        image_cond = None if image_conditioning is None else guidance.expand(image_conditioning, step_cond)
        out = engine.denoise(model_in, t, step_cond, DenoiserExtras(run.image_size, image_cond, hooks_now, i,
                                                                   len(run.timesteps)))
        view = KDiffusionView.at(scheduler, t)
        x = view.x(latents)
        clean = handover.convert(view.denoised(x, guidance.combine(out.float(), step_cond, run.cfg_scale))).float()
        if run.mask is not None:  # inpainting's blend keeps the original's latents: those too in the new space
            run.init_latents = handover.convert(run.init_latents).float()
        fresh = handover.fresh_sampler
        fresh.scheduler.set_timesteps(run.steps, device=latents.device)
        if hasattr(fresh.scheduler, "set_begin_index"):
            fresh.scheduler.set_begin_index(run.start + i)
        # the refiner's latents: A1111's x = x0 + sigma * noise, in the fresh scheduler's own scaling
        target = KDiffusionView(view.sigma, float(fresh.scheduler.init_noise_sigma) > 1.0, view.prediction)
        return target.latents(clean + run.noise.to(clean.device) * view.sigma), fresh


def _skips_negative(run: _Run, cond: StepConditioning, step: int, total: int, scheduler: Any,
                    t: torch.Tensor) -> bool:
    """Whether this step's denoiser call leaves the negative prompt out (see NegativeSkip)."""
    if hooks.active("cfg_denoiser"):  # its listeners see, and may change, the negative rows
        return False
    if run.cfg_scale == 1.0 and _parts_sum_to_one(cond):
        return True
    skip = run.negative_skip
    if skip is None:
        return False
    if skip.early > 0 and step / total <= skip.early:
        skip.used_early = True
        return True
    if skip.min_sigma > 0 and (step % 2 or skip.min_sigma_all) \
            and KDiffusionView.at(scheduler, t).sigma < skip.min_sigma:
        skip.used_min_sigma = True
        return True
    return False


def _parts_sum_to_one(cond: StepConditioning) -> bool:
    """At CFG scale 1 the negative rows cancel out exactly when each image's AND weights sum to 1."""
    if cond.one_part_per_image:
        return True
    sums: dict[int, float] = {}
    for image, weight in zip(cond.owners, cond.weights, strict=True):
        sums[image] = sums.get(image, 0.0) + weight
    return all(abs(total - 1.0) < 1e-6 for total in sums.values())


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
