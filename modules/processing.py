"""The one generation path: a typed job in, images (saved with A1111 names and infotext) out.

UI, API, scripts and extensions all build a `Job` and call `process_images(job)`. This module knows nothing of
Gradio or HTTP. Hooks for scripts are called at named points, never patched in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from modules import hooks, images, job_infotext, masking, upscaling
from modules import refiner as refiners
from modules.engines.base import DenoiserHook
from modules.hooks import PostprocessBatchListArgs, PostprocessImageArgs, PostSampleArgs
from modules.job_infotext import hires_infotext_params, hires_target_size
from modules.job_spec import (  # noqa: F401 (A1111's names, importable from modules.processing)
    Job,
    JobSpec,
    RunState,
    StableDiffusionProcessing,
    StableDiffusionProcessingImg2Img,
    StableDiffusionProcessingTxt2Img,
)
from modules.masking import (  # noqa: F401 (resize_image, pil_to_tensor, ... are A1111's processing names)
    InpaintSetup,
    _composite,
    _latent_mask_tensor,
    _snap8,
    fill_needed,
    pil_to_tensor,
    prepare_mask,
    resize_image,
    tensor_to_pil,
)
from modules.models.loader import SDModel
from modules.networks.registry import NetworkRegistry
from modules.processed import Processed
from modules.processing_helpers import *  # noqa: F403 (A1111's processing names: create_random_tensors, ...)
from modules.prompts.guidance import PromptGuidance
from modules.prompts.textual_inversion import EmbeddingDatabase
from modules.sampling import rng as rng_mod
from modules.sampling import samplers
from modules.sampling.batch import PERSISTENT_COND_CACHE_SIZE, Sampling  # noqa: F401
from modules.state import State
from modules.styles import StyleDatabase

log = logging.getLogger("webui")
LATENT_UPSCALE_MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = {"None": None, "Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
INPAINT_AREAS = ("Whole picture", "Only masked")


class JobError(ValueError):
    """The job cannot run as given; the message says which field and why."""


@dataclass
class Context:
    """What process_images needs from the running application (supplied by modules.shared)."""

    model: SDModel
    opts: Any
    state: State
    data_dir: str = "."
    styles: StyleDatabase | None = None
    embeddings: EmbeddingDatabase | None = None
    loras: NetworkRegistry | None = None
    hypernetworks: NetworkRegistry | None = None
    hash_cache: str | None = None
    hooks: list[Any] = field(default_factory=list)   # objects with optional hook methods (scripts)
    on_image_saved: Callable[[str], None] | None = None
    # the model manager (refiner(name) / release_refiner()): a job's refiner is loaded beside its model
    models: Any = None


# --- helpers -----------------------------------------------------------------------------------------------

def _as_list(value: str | list[str], n: int) -> list[str]:
    if isinstance(value, list):
        if len(value) < n:
            raise JobError(f"got {len(value)} prompts for {n} images")
        return value[:n]
    return [value] * n


def validate(job: Job) -> None:
    for name in ("width", "height"):
        value = getattr(job, name)
        if not 8 <= value <= 8192:
            raise JobError(f"{name} must be between 8 and 8192, got {value}")
    if job.steps < 1 or job.steps > 1000:
        raise JobError(f"steps must be between 1 and 1000, got {job.steps}")
    if job.batch_size < 1 or job.n_iter < 1:
        raise JobError("batch size and batch count must be at least 1")
    if job.denoising_strength is not None and not 0 <= job.denoising_strength <= 1:
        raise JobError(f"denoising strength must be between 0 and 1, got {job.denoising_strength}")
    if job.resize_mode not in range(len(RESIZE_MODES)):
        raise JobError(f"resize_mode must be 0..3, got {job.resize_mode}")
    if job.inpainting_fill not in range(len(MASKED_CONTENT)):
        raise JobError(f"inpainting_fill must be 0..3, got {job.inpainting_fill}")
    if job.refiner_switch_at is not None and not 0 <= job.refiner_switch_at <= 1:
        raise JobError(f"refiner_switch_at must be between 0 and 1, got {job.refiner_switch_at}")
    if job.hr_upscaler and job.enable_hr and job.hr_upscaler not in LATENT_UPSCALE_MODES \
            and job.hr_upscaler not in IMAGE_UPSCALERS and not upscaling.is_known(job.hr_upscaler):
        valid = ", ".join([*LATENT_UPSCALE_MODES, *upscaling.upscaler_names()])
        raise JobError(f"Unknown hires upscaler {job.hr_upscaler!r}. Valid upscalers: {valid}")
    samplers.resolve(job.sampler_name, job.scheduler)  # raises ValueError listing the valid names


# override_settings that choose the model: shared.run_job loads what they name for the job's turn of the queue
MODEL_SETTINGS = ("sd_model_checkpoint", "sd_vae")


# --- the model calls -----------------------------------------------------------------------------------------

# --- the job ---------------------------------------------------------------------------------------------------

def sampler_for_job(job: Job, ctx: Context, seeds: list[int], sampler_name: str | None = None,
                    scheduler: str | None = None) -> samplers.Sampler:
    """The sampler a job runs with (its own or the given sampler/schedule, eta and s_* from the job or settings);
    also what infotexts are written from, so scripts use it to describe the jobs they run."""
    opts = ctx.opts
    name, schedule = sampler_name or job.sampler_name, scheduler if sampler_name else job.scheduler
    if hooks.active("sampler_name"):  # an extension's sampler entry (A1111's table) names the core sampler it runs
        renamed = hooks.SamplerNameParams(name)
        hooks.fire("sampler_name", renamed)
        name = renamed.name
    eta = job.eta
    if eta is None and samplers.takes_eta(name, schedule):
        eta = opts.eta_ddim  # the ancestral samplers' eta is fixed at 1 in diffusers (A1111's default too)
    return samplers.create_sampler(
        name, schedule, ctx.model.scheduler_config,
        eta=eta, s_churn=job.s_churn if job.s_churn is not None else opts.s_churn,
        s_tmin=job.s_tmin if job.s_tmin is not None else opts.s_tmin,
        s_tmax=(job.s_tmax if job.s_tmax is not None else opts.s_tmax) or math.inf,
        s_noise=job.s_noise if job.s_noise is not None else opts.s_noise, seeds=seeds)


def _image_rng(job: Job, ctx: Context, shape: tuple[int, ...], seeds: list[int], subseeds: list[int]
               ) -> rng_mod.ImageRNG:
    return rng_mod.for_job(job, ctx.opts, ctx.model, shape, seeds, subseeds)


def create_infotext(p: Job, all_prompts: Any = None, all_seeds: Any = None, all_subseeds: Any = None,
                    comments: Any = None, iteration: int = 0, position_in_batch: int = 0, use_main_prompt: bool = False,
                    index: int | None = None, all_negative_prompts: list[str] | None = None) -> str:
    """One image's infotext. Two forms: the core's `create_infotext(job, ctx, index, sampler)` (`job_infotext`),
    and A1111's `create_infotext(p, all_prompts, all_seeds, all_subseeds, comments, iteration,
    position_in_batch, ...)` that scripts call inside a running job (`p.context`), for image `index` (default
    `position_in_batch + iteration * batch_size`) with the given lists."""
    if isinstance(all_prompts, Context):
        return job_infotext.create_infotext(p, all_prompts, all_seeds, all_subseeds,
                                            use_main_prompt=use_main_prompt or comments is True)
    ctx = p.context
    if ctx is None:
        raise JobError("create_infotext(p, ...) needs a running job: call it from a script's hook or run()")
    index = position_in_batch + iteration * p.batch_size if index is None else index
    given = {"all_prompts": all_prompts, "all_seeds": all_seeds, "all_subseeds": all_subseeds,
             "all_negative_prompts": all_negative_prompts}
    saved = {name: getattr(p, name) for name in given}  # the job's own lists come back afterwards
    try:
        for name, value in given.items():
            if value is not None:
                setattr(p, name, list(value))
        if not p.all_prompts:
            p.all_prompts = [p.prompt]
        if not p.all_seeds or not p.all_subseeds:
            p.all_seeds, p.all_subseeds = list(p.all_seeds or [p.seed]), list(p.all_subseeds or [p.subseed])
        if not p.all_negative_prompts:
            p.all_negative_prompts = [p.negative_prompt] * len(p.all_prompts)
        sampler = sampler_for_job(p, ctx, list(p.all_seeds)[:1] or [p.seed])
        return job_infotext.create_infotext(p, ctx, index, sampler, use_main_prompt=use_main_prompt)
    finally:
        for name, value in saved.items():
            setattr(p, name, value)


def get_fixed_seed(seed: int | str | None) -> int:
    """A1111's name: -1, None, "" or a non-number become a random seed; anything else is kept."""
    return rng_mod.fixed_seed(seed)


def fix_seed(p: Job) -> None:
    """A1111's name: give the job's seed and variation seed fixed values (scripts call it before making copies)."""
    p.seed = get_fixed_seed(p.seed)
    p.subseed = get_fixed_seed(p.subseed)


def process_images(p: Job, ctx: Context | None = None) -> Processed:
    """Run a job to completion: per-image seeds, sampling, decoding, compositing, saving, infotexts.

    Without `ctx`, the job's own `context` is used (set by shared.run_job): scripts call `process_images(p)`."""
    job = p
    ctx = ctx if ctx is not None else job.context
    if ctx is None:
        raise JobError("process_images needs a Context: run the job through shared.run_job")
    owns_context = job.context is None
    if owns_context:  # for this call only: scripts' hooks read p.sd_model and may call process_images(p)
        job.context = ctx
    try:
        setup_scripts(job)
        _script_hook(job, "before_process")
        opts = ctx.opts
        # the settings that choose the model were applied by shared.run_job before the context was made
        overrides = {key: value for key, value in job.override_settings.items()
                     if key in opts.data_labels and key not in MODEL_SETTINGS}
        try:
            snapshot = opts.snapshot(overrides)  # the job's own frozen settings; the global ones never change
        except (ValueError, KeyError) as e:
            raise JobError(f"override_settings: {e}") from e
        view = opts.job_view(snapshot) if hasattr(opts, "job_view") else contextlib.nullcontext()
        with view:  # extensions reading shared.opts from this job's thread see its settings too
            processed = _process(job, dataclasses.replace(ctx, opts=snapshot))
        if not job.override_settings_restore_afterwards and hasattr(opts, "job_view"):
            for key, value in overrides.items():  # A1111: the overrides stay once the job is done
                opts.set(key, value)
        return processed
    finally:
        if owns_context:
            job.context = None


process_images_inner = process_images  # A1111's name: here the job's settings snapshot is part of process_images


def setup_scripts(job: Job) -> None:
    """The always-on scripts' `setup(p, *args)`, once per job and before any other hook (A1111's `setup_scrips`);
    `ScriptRunner.run` calls it before a selectable script, `process_images` otherwise."""
    if job.scripts is not None and not job.scripts_setup_complete:
        job.scripts_setup_complete = True
        _script_hook(job, "setup")


def _process(job: Job, ctx: Context) -> Processed:
    validate(job)
    opts, state, model = ctx.opts, ctx.state, ctx.model
    run = job.run  # what this run works out; the spec (what was asked) is never written
    run.denoising_strength = job.spec.denoising_strength if job.spec.denoising_strength is not None \
        else 0.75 if job.is_img2img else (0.7 if job.enable_hr else None)
    job.clip_skip = int(opts.CLIP_stop_at_last_layers)
    n_images = job.batch_size * job.n_iter
    job.all_prompts = _as_list(job.prompt, n_images)
    job.all_negative_prompts = _as_list(job.negative_prompt, n_images)
    if job.styles and ctx.styles is not None:
        job.all_prompts = [ctx.styles.apply_styles_to_prompt(p, job.styles) for p in job.all_prompts]
        job.all_negative_prompts = [ctx.styles.apply_negative_styles_to_prompt(p, job.styles)
                                    for p in job.all_negative_prompts]
    job.all_seeds, job.all_subseeds = rng_mod.resolve_seeds(job.seed, n_images, job.subseed, job.subseed_strength)
    job.all_hr_prompts = _as_list(job.hr_prompt, n_images) if job.hr_prompt else list(job.all_prompts)
    job.all_hr_negative_prompts = _as_list(job.hr_negative_prompt, n_images) if job.hr_negative_prompt \
        else list(job.all_negative_prompts)
    _call_hooks(ctx, "process", job)
    _script_hook(job, "process")
    if job.is_img2img:  # A1111's save_init_img: after the scripts' process, before sampling
        from modules import output_writer

        output_writer.save_init_images(job, opts, ctx.data_dir)
    if job.is_img2img and job.image_mask is not None:
        job.extra_generation_params.setdefault("Mask blur", job.mask_blur)
        if job.inpaint_full_res:
            job.extra_generation_params.setdefault("Inpaint area", "Only masked")
            job.extra_generation_params.setdefault("Masked area padding", job.inpaint_full_res_padding)
        job.extra_generation_params.setdefault("Masked content", MASKED_CONTENT[job.inpainting_fill])
    if job.enable_hr and not job.is_img2img:
        hires_infotext_params(job)

    for hook in job.denoiser_hooks:
        if not isinstance(hook, DenoiserHook):
            raise JobError(f"p.denoiser_hooks: {type(hook).__name__} has no before_denoiser(call) method")
    sampling = Sampling(model, ctx, job.denoiser_hooks)
    try:
        refiner = refiners.load(job, ctx)
    except refiners.RefinerError as e:
        raise JobError(str(e)) from e
    outputs: list[Image.Image] = []
    infotexts: list[str] = []
    saved: list[str] = []
    interrupted = False
    state.job_count = job.n_iter
    for batch_no in range(job.n_iter):
        if state.interrupted:
            interrupted = True
            break
        state.skipped = False
        lo, hi = batch_no * job.batch_size, (batch_no + 1) * job.batch_size
        seeds, subseeds = job.all_seeds[lo:hi], job.all_subseeds[lo:hi]
        prompts, negatives = job.all_prompts[lo:hi], job.all_negative_prompts[lo:hi]
        job.iteration, job.seeds, job.subseeds = batch_no, list(seeds), list(subseeds)
        job.prompts, job.negative_prompts = list(prompts), list(negatives)
        _script_hook(job, "before_process_batch", batch_number=batch_no, prompts=prompts, seeds=seeds,
                     subseeds=subseeds)
        sampler = sampler_for_job(job, ctx, seeds)
        if sampler.eta is not None and sampler.eta != samplers.A1111_ETA_DDIM and "eta" in sampler.step_kwargs \
                and sampler.info.default_eta is None:
            job.extra_generation_params["Eta DDIM"] = sampler.eta  # A1111 records a non-default eta
        elif sampler.info.default_eta is not None and sampler.eta != sampler.info.default_eta:
            job.extra_generation_params["Eta"] = sampler.eta  # TCD's gamma, when not its default
        prompts = sampling.activate_networks(job, prompts)
        job.prompts = list(prompts)
        _script_hook(job, "process_batch", batch_number=batch_no, prompts=prompts, seeds=seeds, subseeds=subseeds)
        guidance = sampling.guidance(prompts, negatives, job.steps)
        if job.is_img2img:
            result = _img2img_batch(job, ctx, sampling, sampler, guidance, seeds, subseeds, lo, batch_no, refiner)
        else:
            result = _txt2img_batch(job, ctx, sampling, sampler, guidance, seeds, subseeds, batch_no, refiner)
        params = sampling.encoder.infotext_params()
        if not opts.textual_inversion_add_hashes_to_infotext:
            params.pop("TI hashes", None)
        job.extra_generation_params.update(params)
        if result is None:
            if state.interrupted:
                interrupted = True
                break
            continue  # skipped
        _script_hook(job, "postprocess_batch", result, batch_number=batch_no)
        if job.scripts is not None:  # scripts may replace the batch's list of images (A1111: may add or remove)
            batch_list = PostprocessBatchListArgs(list(result))
            _script_hook(job, "postprocess_batch_list", batch_list, batch_number=batch_no)
            result = list(batch_list.images)
        for offset, image in enumerate(result):
            index = lo + min(offset, len(seeds) - 1)  # an image a script added shares the last one's seed
            job.batch_index = offset
            _call_hooks(ctx, "postprocess_image", job, image)
            if job.scripts is not None:  # a script may replace the image before it is saved and shown
                pp = PostprocessImageArgs(image)
                _script_hook(job, "postprocess_image", pp)
                image = pp.image
            text = create_infotext(job, ctx, index, sampler)  # after the hooks: they may add infotext items
            outputs.append(image)
            infotexts.append(text)
            if opts.samples_save and not job.do_not_save_samples:
                path = save_output_image(image, job, ctx, text, seed=job.all_seeds[index],
                                         prompt=job.all_prompts[index])
                saved.append(path)
                saved += _save_inpaint_masks(job, ctx, image, offset, text, index)
    sampling.finish(job)  # A1111's extra_networks.deactivate, once after the last batch
    index_of_first = 0
    # A1111's grid_only_if_multiple: a one-image grid only when that setting is off
    if (len(outputs) > 1 or (outputs and not opts.grid_only_if_multiple)) and not interrupted:
        grid = images.image_grid(outputs, job.batch_size, n_rows=opts.n_rows)
        text = create_infotext(job, ctx, 0, sampler_for_job(job, ctx, job.all_seeds[:1]), use_main_prompt=True)
        if opts.return_grid:
            outputs.insert(0, grid)
            infotexts.insert(0, text)
            index_of_first = 1
        if opts.grid_save and not job.do_not_save_grid:
            saved.append(save_output_image(grid, job, ctx, text, seed=job.all_seeds[0], prompt=job.all_prompts[0],
                                           grid=True))
    processed = Processed(
        images=outputs, job=job, seed=job.all_seeds[0], subseed=job.all_subseeds[0], all_seeds=job.all_seeds,
        all_subseeds=job.all_subseeds, all_prompts=job.all_prompts, all_negative_prompts=job.all_negative_prompts,
        infotexts=infotexts, index_of_first_image=index_of_first, saved_files=saved, interrupted=interrupted,
        comments=list(job.comments),
        job_timestamp=state.job_timestamp, sd_model_name=model.checkpoint.model_name,
        sd_model_hash=model.checkpoint.shorthash, sd_vae_name=model.vae_info.name if model.vae_info else None,
        sd_vae_hash=model.vae_info.shorthash if model.vae_info else None)
    _call_hooks(ctx, "postprocess", job, processed)
    _script_hook(job, "postprocess", processed)
    return processed


def _script_hook(job: Job, name: str, *args: Any, **kwargs: Any) -> None:
    """Call a hook of the job's ScriptRunner (it runs the always-on scripts and reports their errors)."""
    hook = getattr(job.scripts, name, None) if job.scripts is not None else None
    if hook is not None:
        hook(job, *args, **kwargs)


def _call_hooks(ctx: Context, name: str, *args: Any) -> None:
    for hook in ctx.hooks:
        fn = getattr(hook, name, None)
        if fn is not None:
            fn(*args)


def save_output_image(image: Image.Image, job: Job, ctx: Context, text: str, seed: int, prompt: str,
                      grid: bool = False, suffix: str = "") -> str:
    """Save a result (or, with grid=True, a grid) as process_images does: the job's output folder, then the one
    output writer (A1111's names, formats and quality, text chunks, .txt, the image-saved hooks) under the
    context's settings. Scripts save their own grids through it."""
    from modules import output_writer  # only needed here

    opts = ctx.opts
    folder = job.outpath_grids if grid else job.outpath_samples
    folder = os.path.join(ctx.data_dir, folder) if folder else output_writer.output_folder(
        opts, job.mode, grid=grid, data_dir=ctx.data_dir)  # relative settings are relative to the data dir
    checkpoint = getattr(ctx.model, "checkpoint", None)
    fields = {"sd_model_name": getattr(checkpoint, "model_name", None),
              "sd_model_hash": getattr(checkpoint, "shorthash", None),
              "job_timestamp": getattr(ctx.state, "job_timestamp", None)}
    saved = output_writer.save_output_image(
        image, opts=opts, folder=folder, seed=seed, prompt=prompt, info=text, p=job, grid=grid, suffix=suffix,
        filename_fields={key: value for key, value in fields.items() if value is not None})
    if ctx.on_image_saved:
        ctx.on_image_saved(saved.path)
    return saved.path


def _decode_to_images(sampling: Sampling, latents: torch.Tensor) -> list[Image.Image]:
    decoded = sampling.vae_decode(latents)
    return [tensor_to_pil(sample) for sample in decoded]


def _txt2img_batch(job: Job, ctx: Context, sampling: Sampling, sampler: samplers.Sampler,
                   guidance: PromptGuidance, seeds: list[int], subseeds: list[int], batch_no: int,
                   refiner: refiners.Refiner | None = None) -> list[Image.Image] | None:
    model = ctx.model
    f = model.vae_scale_factor
    shape = (model.latent_channels, job.height // f, job.width // f)
    image_rng = _image_rng(job, ctx, shape, seeds, subseeds)
    noise = image_rng.first()  # float32 as A1111's: rounded to half, a seed would give another image
    image_cond = sampling.engine.image_conditioning(len(seeds), job.height, job.width)
    handover = refiners.handover(job, ctx, sampling, refiner, job.prompts, job.negative_prompts,
                                  functools.partial(sampler_for_job, job, seeds=seeds))
    _script_hook(job, "process_before_every_sampling", x=noise, noise=noise, c=guidance, uc=None)
    latents = sampling.denoise(job, sampler, noise, noise, guidance, job.steps, image_rng, batch_no,
                               job.n_iter, image_conditioning=image_cond, handover=handover)
    finished_by = refiners.record(job, ctx, sampling, refiner, handover)
    if latents is None:
        return None
    if not job.enable_hr:
        return _decode_to_images(finished_by, _post_sample(job, latents))
    if finished_by is not sampling and finished_by.engine.latent_format != sampling.engine.latent_format:
        latents = sampling.vae_encode(finished_by.vae_decode(latents))  # the hires pass runs on the base again
    job.is_hr_pass = True
    try:
        return _hires_pass(job, ctx, sampling, latents, seeds, subseeds, batch_no, refiner)
    finally:
        job.is_hr_pass = False


def _save_inpaint_masks(job: Job, ctx: Context, image: Image.Image, offset: int, text: str, index: int
                        ) -> list[str]:
    """A1111's save_mask / save_mask_composite for inpainting: the (blurred) mask as a greyscale image, and the
    result with everything outside the mask transparent, beside the sample ("-mask", "-mask-composite")."""
    masks = job.run.masks_for_overlay
    mask = masks[offset] if offset < len(masks) else None
    opts = ctx.opts
    if mask is None or not (opts.save_mask or opts.save_mask_composite):
        return []
    saved = []
    where = {"seed": job.all_seeds[index], "prompt": job.all_prompts[index]}
    if opts.save_mask:
        saved.append(save_output_image(mask.convert("RGB"), job, ctx, text, suffix="-mask", **where))
    if opts.save_mask_composite:
        alpha = resize_image(2, mask.convert("RGB"), image.width, image.height).convert("L")
        composite = Image.composite(image.convert("RGBA"), Image.new("RGBA", image.size), alpha)
        saved.append(save_output_image(composite, job, ctx, text, suffix="-mask-composite", **where))
    return saved


def _hires_pass(job: Job, ctx: Context, sampling: Sampling, latents: torch.Tensor, seeds: list[int],
                subseeds: list[int], batch_no: int, refiner: refiners.Refiner | None = None
                ) -> list[Image.Image] | None:
    model = ctx.model
    f = model.vae_scale_factor
    target_w, target_h = hires_target_size(job)
    job.hr_upscale_to_x, job.hr_upscale_to_y = target_w, target_h  # A1111's names, read by extensions
    upscaler = job.hr_upscaler or "Latent"
    if ctx.opts.save_images_before_highres_fix and not job.do_not_save_samples:
        for offset, image in enumerate(_decode_to_images(sampling, latents)):
            index = batch_no * job.batch_size + offset
            save_output_image(image, job, ctx, create_infotext(job, ctx, index, sampler_for_job(job, ctx, seeds)),
                  seed=seeds[offset], prompt=job.all_prompts[index], suffix="-before-highres-fix")
    _script_hook(job, "before_hr")  # scripts may still change the hires prompts, sampler, steps and strength
    if upscaler in LATENT_UPSCALE_MODES:
        mode, antialias = LATENT_UPSCALE_MODES[upscaler]
        kwargs = {"antialias": antialias} if mode in ("bilinear", "bicubic") else {}
        hr_latents = F.interpolate(latents.float(), size=(target_h // f, target_w // f), mode=mode, **kwargs)
    else:
        # "None"/"Lanczos"/"Nearest" are PIL resizes; other names are model files (modules/upscaling.py)
        first = _decode_to_images(sampling, latents)
        pixels = torch.stack([pil_to_tensor(upscaling.upscale(im, upscaler, size=(target_w, target_h)))
                              for im in first])
        hr_latents = sampling.vae_encode(pixels.to(model.policy.device))
    hr_latents = hr_latents.to(model.policy.dtype)
    shape = (model.latent_channels, target_h // f, target_w // f)
    image_rng = _image_rng(job, ctx, shape, seeds, subseeds)
    noise = image_rng.first()  # float32 as A1111's: rounded to half, a seed would give another image
    hr_sampler = sampler_for_job(job, ctx, seeds, job.hr_sampler_name or job.sampler_name,
                              job.hr_scheduler or job.scheduler)
    lo = batch_no * job.batch_size
    hr_prompts = [job.hr_prompt or p for p in job.all_prompts[lo:lo + len(seeds)]]
    hr_prompts = sampling.activate_networks(job, hr_prompts)
    hr_negatives = [job.hr_negative_prompt or p for p in job.all_negative_prompts[lo:lo + len(seeds)]]
    steps = job.hr_second_pass_steps or job.steps
    guidance = sampling.guidance(hr_prompts, hr_negatives, job.steps, hires_steps=steps)
    hr_job = dataclasses.replace(job, width=target_w, height=target_h)  # fields only: scripts add attributes
    image_cond = sampling.engine.image_conditioning(len(seeds), target_h, target_w)
    handover = refiners.handover(job, ctx, sampling, refiner, hr_prompts, hr_negatives,
                                  functools.partial(sampler_for_job, job, seeds=seeds), hires_steps=steps)
    _script_hook(job, "process_before_every_sampling", x=hr_latents, noise=noise, c=guidance, uc=None)
    result = sampling.denoise(hr_job, hr_sampler, hr_latents, noise, guidance, steps, image_rng, batch_no,
                              job.n_iter, strength=job.denoising_strength, image_conditioning=image_cond,
                              handover=handover)
    finished_by = refiners.record(job, ctx, sampling, refiner, handover)
    return None if result is None else _decode_to_images(finished_by, _post_sample(job, result))


def _post_sample(job: Job, latents: torch.Tensor) -> torch.Tensor:
    """Scripts' post_sample: they see (and may replace) the batch's final latents before decoding."""
    if job.scripts is None:
        return latents
    ps = PostSampleArgs(latents)
    _script_hook(job, "post_sample", ps)
    return ps.samples


def _img2img_batch(job: Job, ctx: Context, sampling: Sampling, sampler: samplers.Sampler,
                   guidance: PromptGuidance, seeds: list[int], subseeds: list[int], first_index: int,
                   batch_no: int, refiner: refiners.Refiner | None = None) -> list[Image.Image] | None:
    model = ctx.model
    f = model.vae_scale_factor
    device, dtype = model.policy.device, model.policy.dtype
    originals = [job.init_images[(first_index + i) % len(job.init_images)].convert("RGB") for i in range(len(seeds))]
    setups: list[InpaintSetup | None] = []
    processing_images = []
    for original in originals:
        setup = prepare_mask(job, original.size) if job.image_mask is not None else None
        setups.append(setup)
        if setup and setup.crop_region:
            image = resize_image(2, original.crop(setup.crop_region), job.width, job.height)
        elif job.resize_mode == 3:
            image = original.resize((_snap8(original.width), _snap8(original.height)), Image.Resampling.LANCZOS)
        else:
            image = resize_image(job.resize_mode, original, job.width, job.height)
        if setup and job.inpainting_fill == 0:
            image = masking.fill(image, setup.latent_mask)
        processing_images.append(image)

    pixels = torch.stack([pil_to_tensor(im) for im in processing_images]).to(device)
    init_latents = sampling.vae_encode(pixels)
    if job.resize_mode == 3 and not any(setups):
        init_latents = F.interpolate(init_latents.float(), size=(job.height // f, job.width // f),
                                     mode="bilinear").to(dtype)
    shape = (model.latent_channels, job.height // f, job.width // f)
    image_rng = _image_rng(job, ctx, shape, seeds, subseeds)
    noise = image_rng.first()  # float32 (see txt2img)
    multiplier = job.initial_noise_multiplier if job.initial_noise_multiplier is not None \
        else ctx.opts.initial_noise_multiplier
    if multiplier != 1.0:
        job.extra_generation_params["Noise multiplier"] = multiplier
        noise = noise * multiplier

    mask = None
    image_cond = None
    if setups[0] is not None:
        mask = torch.cat([_latent_mask_tensor(s.latent_mask, shape[1:], device, dtype) for s in setups])
        if job.inpainting_fill == 2:
            init_latents = init_latents * (1 - mask) + noise * mask
        elif job.inpainting_fill == 3:
            init_latents = init_latents * (1 - mask)
        if sampling.engine.takes_image_conditioning:
            pixel_mask = torch.cat([torch.from_numpy(np.asarray(s.latent_mask, dtype=np.float32) / 255)[None, None]
                                    for s in setups]).round()
            masked_pixels = pixels.cpu() * (1 - pixel_mask)
            image_cond = sampling.engine.image_conditioning(len(seeds), job.height, job.width, masked_pixels,
                                                     mask)
    elif sampling.engine.takes_image_conditioning:
        image_cond = sampling.engine.image_conditioning(len(seeds), job.height, job.width, pixels.cpu(),
                                                 torch.ones(len(seeds), 1, *shape[1:]))
    handover = refiners.handover(job, ctx, sampling, refiner, job.prompts, job.negative_prompts,
                                  functools.partial(sampler_for_job, job, seeds=seeds))
    _script_hook(job, "process_before_every_sampling", x=init_latents, noise=noise, c=guidance, uc=None)
    latents = sampling.denoise(job, sampler, init_latents, noise, guidance, job.steps, image_rng, batch_no,
                               job.n_iter, strength=job.denoising_strength, image_conditioning=image_cond,
                               mask=None if sampling.engine.takes_image_conditioning else mask, handover=handover)
    finished_by = refiners.record(job, ctx, sampling, refiner, handover)
    if latents is None:
        return None
    if mask is not None and not sampling.engine.takes_image_conditioning:
        if finished_by.engine.latent_format != sampling.engine.latent_format:
            init_latents = finished_by.vae_encode(sampling.vae_decode(init_latents))
        latents = init_latents * (1 - mask) + latents * mask
    generated = _decode_to_images(finished_by, _post_sample(job, latents))
    job.run.masks_for_overlay = [setup.mask_for_overlay if setup else None for setup in setups]
    return [_composite(image, original, setup) for image, original, setup in zip(generated, originals, setups)]
