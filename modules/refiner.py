"""The SDXL refiner (A1111 1.6+): a second checkpoint takes the last steps of a pass.

Processing asks `load` for the job's refiner (the model manager keeps it loaded beside the job's model), `handover`
for the part of one pass it runs (modules/sampling/loop.py `Handover` does the switch between two steps), and
`record` afterwards for the infotext (A1111 writes "Refiner" and "Refiner switch at" only when the switch happened)
and for the Sampling whose latent space the pass ended in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modules import memory
from modules.job_spec import Job
from modules.models.loader import SDModel
from modules.models.safe_load import CheckpointLoadError
from modules.sampling import samplers
from modules.sampling.batch import Sampling
from modules.sampling.loop import Handover

NO_REFINER = ("", "None", "none")


class RefinerError(ValueError):
    """The job's refiner cannot be used; the message names the field."""


@dataclass
class Refiner:
    """A job's refiner: the model (loaded beside the job's model by the model manager) and its own Sampling."""

    model: SDModel
    sampling: Sampling


def load(job: Job, ctx: Any) -> Refiner | None:
    """The refiner a job names (A1111: refiner_checkpoint other than ""/"None"; the job's own checkpoint means no
    switch). A job without one lets a refiner loaded for an earlier job go."""
    name = job.refiner_checkpoint
    if name is None or str(name).strip() in NO_REFINER:
        if ctx.models is not None:
            ctx.models.release_refiner()
        return None
    if ctx.models is None:
        raise RefinerError("refiner_checkpoint: this run has no model manager to load a refiner with")
    try:
        refiner_model = ctx.models.refiner(str(name))
    except CheckpointLoadError as e:
        raise RefinerError(f"refiner_checkpoint: {e}") from e
    if refiner_model is ctx.model:
        return None
    # ControlNet units and other job hooks were made for the base model: the refiner's steps run without them (in
    # A1111 too, whose ControlNet hooks the base model's UNet). Textual-inversion files were read for the base's
    # text encoders, so the refiner has them only when it is of the same family.
    same_family = refiner_model.family == ctx.model.family
    refiner_ctx = dataclasses.replace(ctx, model=refiner_model, embeddings=ctx.embeddings if same_family else None)
    return Refiner(refiner_model, Sampling(refiner_model, refiner_ctx))


def _in_this_pass(job: Job, opts: Any) -> bool:
    """A1111's hires_fix_refiner_pass: with hires fix the refiner runs in the second pass by default."""
    if not job.enable_hr or job.is_img2img:
        return True
    which = str(opts.hires_fix_refiner_pass)
    return which == "both passes" or (which == "first pass") != bool(job.is_hr_pass)


def handover(job: Job, ctx: Any, sampling: Sampling, refiner: Refiner | None, prompts: list[str],
             negatives: list[str], make_sampler: Callable[..., samplers.Sampler],
             hires_steps: int | None = None) -> Handover | None:
    """The refiner's part of one pass, if it has one in this pass. `make_sampler(ctx, sampler_name=, scheduler=)`:
    processing's sampler_for_job for the job and its seeds (a refiner in another latent space starts a fresh one)."""
    if refiner is None or not _in_this_pass(job, ctx.opts):
        return None
    refiner_sampling = refiner.sampling
    guidance = refiner_sampling.guidance(prompts, negatives, job.steps, hires_steps=hires_steps)
    cross_space = refiner_sampling.engine.latent_format != sampling.engine.latent_format
    fresh_sampler = None
    if cross_space:
        name = (job.hr_sampler_name or job.sampler_name) if job.is_hr_pass else job.sampler_name
        schedule = (job.hr_scheduler or job.scheduler) if job.is_hr_pass else job.scheduler
        fresh_sampler = make_sampler(refiner_sampling.ctx, sampler_name=name, scheduler=schedule)
    base_model = ctx.model
    return Handover(
        refiner_sampling.engine, guidance, job.refiner_switch_at,
        by_steps=bool(ctx.opts.refiner_switch_by_sample_steps),
        convert=(lambda clean: refiner_sampling.vae_encode(sampling.vae_decode(clean))) if cross_space else None,
        fresh_sampler=fresh_sampler, before_switch=lambda: memory.offload_all(base_model))


def record(job: Job, ctx: Any, sampling: Sampling, refiner: Refiner | None, done: Handover | None) -> Sampling:
    """Write the switch that happened into the infotext; returns the Sampling whose latent space the pass ended
    in (the refiner's after a switch)."""
    if refiner is None or done is None or done.switched_at is None:
        return sampling
    params = job.extra_generation_params
    params["Refiner"] = refiner.model.checkpoint.short_title
    params["Refiner switch at"] = job.refiner_switch_at
    if ctx.opts.refiner_switch_by_sample_steps:
        params["Refiner switch by sampling steps"] = True
    which = str(ctx.opts.hires_fix_refiner_pass)
    if job.enable_hr and not job.is_img2img and which != "second pass":
        params["Hires refiner"] = which
    memory.offload_all(refiner.model)  # medvram: the next batch's base model gets the room back
    return refiner.sampling
