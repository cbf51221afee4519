"""What a job's infotext says: A1111's "Steps: 20, Sampler: …" parameters for one image, and the hires-fix items.

`create_infotext` writes what `modules.infotext` parses back; the keys, order and formatting are A1111 v1.10's.
"""

from __future__ import annotations

from typing import Any

from modules import infotext
from modules.job_spec import Job
from modules.masking import _snap8
from modules.sampling import samplers

VERSION = "v0.1.0"


def hires_target_size(job: Job) -> tuple[int, int]:
    if job.hr_resize_x or job.hr_resize_y:
        w, h = job.hr_resize_x, job.hr_resize_y
        if not w:
            w = job.width * h // job.height
        elif not h:
            h = job.height * w // job.width
        return _snap8(w), _snap8(h)
    return _snap8(job.width * job.hr_scale), _snap8(job.height * job.hr_scale)


def create_infotext(job: Job, ctx: Any, index: int, sampler: samplers.Sampler,
                    use_main_prompt: bool = False) -> str:
    model, opts = ctx.model, ctx.opts
    ckpt = model.checkpoint
    params: dict[str, Any] = {
        "Steps": job.steps,
        "Sampler": sampler.info.name,
        "Schedule type": sampler.infotext_schedule,
        "CFG scale": job.cfg_scale,
        "Seed": job.all_seeds[index],
        "Size": f"{job.width}x{job.height}",
        "Model hash": ckpt.shorthash if opts.add_model_hash_to_info else None,
        "Model": ckpt.model_name if opts.add_model_name_to_info else None,
        "VAE hash": model.vae_info.shorthash if model.vae_info and opts.add_vae_hash_to_info else None,
        "VAE": model.vae_info.name if model.vae_info and opts.add_vae_name_to_info else None,
        "Variation seed": job.all_subseeds[index] if job.subseed_strength else None,
        "Variation seed strength": job.subseed_strength or None,
        "Seed resize from": f"{job.seed_resize_from_w}x{job.seed_resize_from_h}"
        if job.seed_resize_from_w > 0 and job.seed_resize_from_h > 0 else None,
        "Denoising strength": job.denoising_strength if job.is_img2img or job.enable_hr else None,
        "Clip skip": job.clip_skip if job.clip_skip > 1 else None,
        "ENSD": opts.eta_noise_seed_delta or None,
        "RNG": opts.randn_source if opts.randn_source != "GPU" else None,
    }
    prompt = job.all_prompts[0 if use_main_prompt else index]
    negative = job.all_negative_prompts[0 if use_main_prompt else index]
    return infotext.build_infotext(prompt, negative, params, job.extra_generation_params,
                                   version=VERSION if opts.add_version_to_infotext else None)


def hires_infotext_params(job: Job) -> None:
    extra = job.extra_generation_params
    if job.hr_resize_x or job.hr_resize_y:
        w, h = hires_target_size(job)
        extra["Hires resize"] = f"{w}x{h}"
    else:
        extra["Hires upscale"] = job.hr_scale
    if job.hr_second_pass_steps:
        extra["Hires steps"] = job.hr_second_pass_steps
    extra["Hires upscaler"] = job.hr_upscaler
    if job.hr_sampler_name and job.hr_sampler_name != job.sampler_name:
        extra["Hires sampler"] = job.hr_sampler_name
    if job.hr_prompt and job.hr_prompt != job.prompt:
        extra["Hires prompt"] = job.hr_prompt
    if job.hr_negative_prompt and job.hr_negative_prompt != job.negative_prompt:
        extra["Hires negative prompt"] = job.hr_negative_prompt
