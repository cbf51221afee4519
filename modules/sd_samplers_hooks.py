"""The connection between A1111's sampler objects and the core's sampling loop (an adapter: the core never
imports it).

`sampler_table` (in sd_samplers_common) is A1111's `all_samplers_map`: every sampler module adds its entries as it
imports, and extensions add their own. When a job samples, the loop fires `sampler_start`: `attach_to_pass` builds
the job's sampler object from the table entry of `p.sampler_name` (or takes `p.sampler` when it is one), and hands
the loop the object's `model_wrap_cfg.combine_denoised` (when an extension changed it) and `callback_state` (when
replaced). The steps themselves are those of the core sampler the entry stands for (`sampler_name` point): an entry
named "Euler a_dynthres1" samples as "Euler a". Connected when any sampler module is imported (each imports this).
"""

from __future__ import annotations

from typing import Any

from modules import hooks, sd_samplers_common, shared
from modules.sampling import samplers as core_samplers
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.sd_samplers_common import SamplerData, sampler_table

# The methods as this WebUI defines them, taken before any extension can patch them: a replacement on any class
# (KDiffusionSampler, or the Sampler base as multidiffusion-upscaler does) differs from these.
_DEFAULT_CALLBACK_STATE = sd_samplers_common.Sampler.callback_state
_DEFAULT_COMBINE_DENOISED = CFGDenoiser.combine_denoised


def find_sampler_config(name: str | None) -> SamplerData | None:
    """The table entry of a sampler name (None: the first sampler); unknown names give None, as in A1111."""
    if name is None:
        return next(iter(sampler_table.values()), None)
    config = sampler_table.get(name)
    if config is None:
        key = name.lower()
        config = next((data for data in sampler_table.values()
                       if key == data.name.lower() or key in (alias.lower() for alias in data.aliases)), None)
    return config


def create_sampler(name: str, model: Any) -> sd_samplers_common.Sampler:
    """A sampler object for `name` (its `config` set), as A1111 makes one; the job's loop uses it while sampling."""
    config = find_sampler_config(name)
    if config is None:
        raise AssertionError(f"bad sampler name: {name}")
    if getattr(model, "is_sdxl", False) and config.options.get("no_sdxl", False):
        raise Exception(f"Sampler {config.name} is not supported for SDXL")
    sampler = config.constructor(model)
    sampler.config = config
    return sampler


def _pass_sampler_name(job: Any) -> str:
    name = job.sampler_name
    if getattr(job, "is_hr_pass", False):
        hires = getattr(job, "hr_sampler_name", None)
        if hires and hires != "Use same sampler":
            name = hires
    return name


def _overrides(cls: type, attribute: str, base: Any, instance: Any) -> bool:
    return attribute in vars(instance) or getattr(cls, attribute) is not base


def _sampler_object(job: Any, name: str, config: SamplerData) -> sd_samplers_common.Sampler:
    current = getattr(job, "sampler", None)
    if isinstance(current, sd_samplers_common.Sampler) and getattr(current, "config", None) is config:
        return current  # the extension made (and maybe changed) this one itself
    return create_sampler(name, job.sd_model)


def attach_to_pass(params: hooks.SamplerStartParams) -> None:
    """The `sampler_start` listener: the job's A1111 sampler object, and what of it the loop must call."""
    job = params.job
    if job is None:
        return
    name = _pass_sampler_name(job)
    config = find_sampler_config(name)
    if config is None:
        return
    sampler = _sampler_object(job, name, config)
    job.sampler = sampler  # A1111's p.sampler while the job samples
    sampler.initialize(job)
    cfg = sampler.model_wrap_cfg
    if cfg is not None:
        cfg.steps, cfg.total_steps, cfg.step = params.steps, params.total_steps, 0
        if _overrides(type(cfg), "combine_denoised", _DEFAULT_COMBINE_DENOISED, cfg):
            params.combine_denoised = _guidance_by(cfg)
    if _overrides(type(sampler), "callback_state", _DEFAULT_CALLBACK_STATE, sampler):
        params.step_callback = _step_callback_of(sampler)


def _guidance_by(cfg: CFGDenoiser):
    def combine(x_out: Any, conds_list: list, uncond: Any, cond_scale: float, step: int) -> Any:
        cfg.step = step
        return cfg.combine_denoised(x_out, conds_list, uncond, cond_scale)
    return combine


def _core_sampler_name(config: SamplerData) -> str | None:
    """The core sampler an entry of the table stands for: its own name, the longest core name it starts with (an
    extension's "Euler a_dynthres1"), or the core sampler with the same aliases."""
    core_names = core_samplers.sampler_names()
    if config.name in core_names:
        return config.name
    prefixes = [name for name in core_names if config.name.startswith(name)]
    if prefixes:
        return max(prefixes, key=len)
    same = [data.name for data in sampler_table.values()
            if data.name in core_names and data.aliases and list(data.aliases) == list(config.aliases)]
    return same[0] if same else None


def name_core_sampler(params: hooks.SamplerNameParams) -> None:
    """The `sampler_name` listener: a name only the table knows becomes the core sampler it runs as."""
    config = sampler_table.get(params.name)
    if config is not None and params.name not in core_samplers.sampler_names():
        params.name = _core_sampler_name(config) or params.name


def _step_callback_of(sampler: sd_samplers_common.Sampler):
    def callback(d: dict[str, Any]) -> None:
        try:
            sampler.callback_state(d)
        except sd_samplers_common.InterruptedException:
            # A1111 ends the pass with the last latents; here the batch is skipped (the loop's way to stop early)
            shared.state.skipped = True
    return callback



hooks.connect("sampler_start", attach_to_pass)
hooks.connect("sampler_name", name_core_sampler)
