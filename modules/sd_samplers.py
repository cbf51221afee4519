"""A1111's `modules.sd_samplers` for extensions: the sampler table (`all_samplers`, `all_samplers_map`,
`samplers`, `samplers_for_img2img`, `samplers_map`), `create_sampler(name, model)` and the infotext helpers.

The table lists the samplers the core runs (modules/sampling/samplers.py), under A1111's names and order. It is a
live registry, as in A1111: an extension may add an entry to `all_samplers_map` (a `SamplerData` whose constructor
wraps another sampler's) and set `p.sampler_name` to it; modules/sd_samplers_hooks.py makes the job's loop use that
entry's sampler object (its CFGDenoiser's `combine_denoised`, its `callback_state`).
"""

from __future__ import annotations

import logging
from typing import Any

from modules import sd_samplers_common, sd_samplers_kdiffusion, sd_samplers_timesteps, shared  # noqa: F401
from modules.sampling import samplers as core_samplers
from modules.sd_samplers_common import SamplerData, sample_to_image, samples_to_image_grid  # noqa: F401
from modules.sd_samplers_hooks import create_sampler, find_sampler_config  # noqa: F401 (A1111's names)

log = logging.getLogger("webui")

# the built-in entries in A1111's order; the map is the live table extensions add to
all_samplers: list[SamplerData] = [sd_samplers_common.sampler_table[name] for name in core_samplers.sampler_names()
                                   if name in sd_samplers_common.sampler_table]
all_samplers_map: dict[str, SamplerData] = sd_samplers_common.sampler_table
samplers: list[SamplerData] = []
samplers_for_img2img: list[SamplerData] = []
samplers_hidden: set[str] = set()
samplers_map: dict[str, str] = {}  # lower-case name or alias -> name


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


set_samplers()
