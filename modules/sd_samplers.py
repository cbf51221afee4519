"""A1111's `modules.sd_samplers` for extensions: the sampler table (`all_samplers`, `all_samplers_map`,
`samplers`, `samplers_for_img2img`, `samplers_map`), `create_sampler(name, model)` and the infotext helpers.

The table lists the samplers the core runs (modules/sampling/samplers.py), under A1111's names and order. It is a
live registry, as in A1111: an extension may add an entry to `all_samplers_map` (a `SamplerData` whose constructor
wraps another sampler's) and set `p.sampler_name` to it. When such a job samples, the core's loop fires its
`sampler_start` point; `attach_to_pass` below builds the job's sampler object with that entry's constructor (or
takes `p.sampler` when it is one), and hands the loop the object's `model_wrap_cfg.combine_denoised` (when an
extension changed it) and `callback_state` (when replaced). The steps themselves are those of the core sampler the
entry's base name resolves to: an entry named "Euler a_dynthres1" samples as "Euler a".
"""

from __future__ import annotations

import logging
from typing import Any

from modules import hooks, sd_samplers_common, sd_samplers_kdiffusion, sd_samplers_timesteps, shared
from modules.sampling import samplers as core_samplers
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.sd_samplers_common import SamplerData, sample_to_image, samples_to_image_grid  # noqa: F401

log = logging.getLogger("webui")

_by_name = {data.name: data for data in (*sd_samplers_kdiffusion.samplers_data_k_diffusion,
                                         *sd_samplers_timesteps.samplers_data_timesteps,
                                         *sd_samplers_timesteps.samplers_data_lcm)}
all_samplers: list[SamplerData] = [_by_name[name] for name in core_samplers.sampler_names() if name in _by_name]
all_samplers_map: dict[str, SamplerData] = {data.name: data for data in all_samplers}
samplers: list[SamplerData] = []
samplers_for_img2img: list[SamplerData] = []
samplers_hidden: set[str] = set()
samplers_map: dict[str, str] = {}  # lower-case name or alias -> name


def find_sampler_config(name: str | None) -> SamplerData | None:
    """The table entry of a sampler name (None: the first sampler); unknown names give None, as in A1111."""
    if name is None:
        return all_samplers[0]
    config = all_samplers_map.get(name)
    if config is None and name.lower() in samplers_map:
        config = all_samplers_map.get(samplers_map[name.lower()])
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


def set_samplers() -> None:
    """Rebuild the visible lists from the table and the `hide_samplers` setting."""
    global samplers, samplers_for_img2img, samplers_hidden
    hidden = shared.opts.data.get("hide_samplers", []) if hasattr(shared.opts, "data") else []
    samplers_hidden = set(hidden or [])
    samplers = list(all_samplers)
    samplers_for_img2img = list(all_samplers)
    samplers_map.clear()
    for sampler in all_samplers:
        samplers_map[sampler.name.lower()] = sampler.name
        for alias in sampler.aliases:
            samplers_map[alias.lower()] = sampler.name


def visible_sampler_names() -> list[str]:
    return [data.name for data in samplers if data.name not in samplers_hidden]


def get_sampler_and_scheduler(sampler_name: str | None, scheduler_name: str | None, *,
                              convert_automatic: bool = True) -> tuple[str, str]:
    """(sampler name, schedule-type label) from names as an infotext or request gives them: a schedule suffix in
    the sampler name ("DPM++ 2M Karras") wins; a schedule that is the sampler's own default becomes Automatic."""
    schedules = core_samplers.SCHEDULE_TYPES
    found = next((s for s in schedules if scheduler_name in (s.name, s.label)), schedules[0])
    name = sampler_name or all_samplers[0].name
    for schedule in schedules:
        suffix = next((option for option in (schedule.label, *schedule.aliases) if name.endswith(" " + option)), None)
        if suffix is not None:
            found, name = schedule, name[:-(len(suffix) + 1)]
            break
    sampler = all_samplers_map.get(name, all_samplers[0])
    if convert_automatic and sampler.options.get("scheduler") == found.name:
        found = schedules[0]
    return sampler.name, found.label


def get_sampler_from_infotext(d: dict[str, Any]) -> str:
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[0]


def get_scheduler_from_infotext(d: dict[str, Any]) -> str:
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[1]


def get_hr_sampler_and_scheduler(d: dict[str, Any]) -> tuple[str, str]:
    """The hires pass's sampler and schedule from an infotext; "Use same …" where they equal the first pass's."""
    hr_sampler = d.get("Hires sampler", "Use same sampler")
    sampler = d.get("Sampler") if hr_sampler == "Use same sampler" else hr_sampler
    hr_scheduler = d.get("Hires schedule type", "Use same scheduler")
    scheduler = d.get("Schedule type") if hr_scheduler == "Use same scheduler" else hr_scheduler
    sampler, scheduler = get_sampler_and_scheduler(sampler, scheduler)
    return (sampler if sampler != d.get("Sampler") else "Use same sampler",
            scheduler if scheduler != d.get("Schedule type") else "Use same scheduler")


def get_hr_sampler_from_infotext(d: dict[str, Any]) -> str:
    return get_hr_sampler_and_scheduler(d)[0]


def get_hr_scheduler_from_infotext(d: dict[str, Any]) -> str:
    return get_hr_sampler_and_scheduler(d)[1]


def fix_p_invalid_sampler_and_scheduler(p: Any) -> None:
    """Make `p.sampler_name`/`p.scheduler` names the table knows (A1111 warns and corrects)."""
    sampler, scheduler = get_sampler_and_scheduler(p.sampler_name, getattr(p, "scheduler", None),
                                                   convert_automatic=False)
    if sampler != p.sampler_name or scheduler != getattr(p, "scheduler", None):
        log.warning("Sampler Scheduler autocorrection: %r -> %r, %r -> %r", p.sampler_name, sampler,
                    getattr(p, "scheduler", None), scheduler)
        p.sampler_name, p.scheduler = sampler, scheduler


# --- the connection to the core's sampling loop ------------------------------------------------------------------

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
    """The `sampler_start` listener (connected by sd_samplers_common, which every sampler module imports): the
    job's A1111 sampler object, and what of it the loop must call."""
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
        if _overrides(type(cfg), "combine_denoised", CFGDenoiser.combine_denoised, cfg):
            params.combine_denoised = _guidance_by(cfg)
    if _overrides(type(sampler), "callback_state", sd_samplers_common.Sampler.callback_state, sampler):
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
    same = [data.name for data in all_samplers if list(data.aliases) == list(config.aliases) and data.aliases]
    return same[0] if same else None


def name_core_sampler(params: hooks.SamplerNameParams) -> None:
    """The `sampler_name` listener: a name only the table knows becomes the core sampler it runs as."""
    if params.name in all_samplers_map and all_samplers_map[params.name] not in all_samplers:
        params.name = _core_sampler_name(all_samplers_map[params.name]) or params.name


def _step_callback_of(sampler: sd_samplers_common.Sampler):
    def callback(d: dict[str, Any]) -> None:
        try:
            sampler.callback_state(d)
        except sd_samplers_common.InterruptedException:
            # A1111 ends the pass with the last latents; here the batch is skipped (the loop's way to stop early)
            shared.state.skipped = True
    return callback


set_samplers()
