"""A1111 sampler and schedule-type names mapped to configured diffusers schedulers.

A1111 runs k-diffusion sampler functions over a sigma schedule; here each A1111 sampler is the diffusers scheduler
that computes the same update, configured so its discretisation matches A1111's (uniform in t from 999 to 0 for the
k-diffusion samplers, "leading" + offset 1 for DDIM/PLMS). Schedule types become scheduler flags
(`use_karras_sigmas`, ...) or a `timestep_spacing`, so a sampler offers only the types its class can express.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    TCDScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

logger = logging.getLogger(__name__)

# The SD1 scheduler config (v1-5 `scheduler/scheduler_config.json`); SD2-v differs only in prediction_type.
SD1_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

A1111_ETA_DDIM = 0.0  # A1111 option eta_ddim
A1111_ETA_ANCESTRAL = 1.0  # A1111 option eta_ancestral; diffusers' ancestral/SDE schedulers have it fixed at 1


@dataclass(frozen=True)
class ScheduleType:
    """An A1111 schedule type ("Schedule type" dropdown, API field `scheduler`)."""

    name: str
    label: str
    # Scheduler constructor arguments that express this type; a class must accept all of them to offer it.
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    aliases: tuple[str, ...] = ()


# Every sigma-based type asks for "linspace" too: diffusers takes the Karras/exponential/beta end points from the
# spaced timesteps, and only linspace reaches t=999 and t=0, the sigma_max and sigma_min A1111 uses.
_UNIFORM_SPACING = {"timestep_spacing": "linspace"}
SCHEDULE_TYPES: list[ScheduleType] = [
    ScheduleType("automatic", "Automatic"),
    # A1111's Uniform is k-diffusion's get_sigmas(n): n timesteps evenly spaced from 999 to 0. The multistep
    # classes (DPM++ 2M/SDE variants, UniPC) space n+1 points and drop t=0, which makes their Uniform the same as
    # SGM Uniform to within a timestep; their "leading" (DDIM type) likewise ends at t≈91 rather than t=1.
    ScheduleType("uniform", "Uniform", dict(_UNIFORM_SPACING)),
    ScheduleType("karras", "Karras", {"use_karras_sigmas": True, **_UNIFORM_SPACING}),  # rho 7 in both
    ScheduleType("exponential", "Exponential", {"use_exponential_sigmas": True, **_UNIFORM_SPACING}),
    # With A1111's default rho of 1 the polyexponential schedule is exactly the exponential one.
    ScheduleType("polyexponential", "Polyexponential", {"use_exponential_sigmas": True, **_UNIFORM_SPACING}),
    # SGM Uniform takes t = 999 - i*999/n, Simple t = 999 - int(i*1000/n); "trailing" is 999 - round(i*1000/n) - so
    # within one timestep of both (identical to Simple when n divides 1000).
    ScheduleType("sgm_uniform", "SGM Uniform", {"timestep_spacing": "trailing"}, aliases=("SGMUniform",)),
    ScheduleType("simple", "Simple", {"timestep_spacing": "trailing"}),
    # Normal evaluates t = linspace(999, 0, n) through a sigma round trip: the same schedule as Uniform.
    ScheduleType("normal", "Normal", dict(_UNIFORM_SPACING)),
    # A1111's DDIM schedule visits t = 1, 1+k, 1+2k, ... with k = 1000 // n, as "leading" with offset 1 does
    # (A1111 adds one step more when n*k < 999, e.g. n=30; that quirk is not reproduced).
    ScheduleType("ddim", "DDIM", {"timestep_spacing": "leading", "steps_offset": 1}),
    ScheduleType("beta", "Beta", {"use_beta_sigmas": True, **_UNIFORM_SPACING}),  # alpha = beta = 0.6 in both
]
# KL Optimal and Align Your Steps need custom sigmas, which `set_timesteps(steps)` cannot take: not offered.

_SIGMA_FLAGS_OFF = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}

# Keys of a model's scheduler config that describe its shipped solver, not the model; dropped so that, say, a model
# shipped with DPMSolverMultistep + Karras does not turn "Euler" into Euler Karras.
_SOLVER_KEYS = frozenset({
    "algorithm_type", "solver_order", "solver_type", "lower_order_final", "euler_at_final", "final_sigmas_type",
    "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas",
    "skip_prk_steps", "noise_sampler_seed", "interpolation_type", "timestep_type", "predict_x0",
    "disable_corrector", "solver_p",
})


@dataclass(frozen=True)
class SamplerInfo:
    """One A1111 sampler: its names, the diffusers scheduler that implements it and the schedule types it offers."""

    name: str
    aliases: tuple[str, ...]
    scheduler_class: type
    config: dict[str, Any] = field(compare=False)  # constructor arguments that make the class behave as A1111's
    default_schedule: str  # what "Automatic" means for this sampler ("automatic": the scheduler's own)
    schedules: tuple[str, ...]  # schedule-type names this sampler accepts, "automatic" always first
    options: dict[str, str] = field(compare=False)  # as /sdapi/v1/samplers lists them
    # the eta its step takes when the job gives none: None means A1111's eta_ddim setting (DDIM); TCD has its own
    default_eta: float | None = None


@functools.lru_cache(maxsize=64)
def _accepted_arguments(scheduler_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(scheduler_class.__init__).parameters) - {"self"}


def _expressible_schedules(scheduler_class: type) -> tuple[str, ...]:
    accepted = _accepted_arguments(scheduler_class)
    return tuple(s.name for s in SCHEDULE_TYPES if set(s.config) <= accepted)


def _sampler(
    name: str,
    aliases: tuple[str, ...],
    scheduler_class: type,
    config: dict[str, Any],
    default_schedule: str,
    options: dict[str, str] | None = None,
    schedules: tuple[str, ...] | None = None,
    default_eta: float | None = None,
) -> SamplerInfo:
    return SamplerInfo(
        name=name,
        aliases=aliases,
        scheduler_class=scheduler_class,
        config=config,
        default_schedule=default_schedule,
        schedules=schedules if schedules is not None else _expressible_schedules(scheduler_class),
        options=options or {},
        default_eta=default_eta,
    )


# k-diffusion discretises t uniformly from 999 to 0 (A1111's "Uniform"); diffusers' SD config says "leading".
_K_SPACING = {"timestep_spacing": "linspace"}
_DPMPP_MULTISTEP = {
    "algorithm_type": "dpmsolver++", "solver_order": 2, "solver_type": "midpoint", "lower_order_final": True,
    "euler_at_final": False, "final_sigmas_type": "zero", **_K_SPACING,
}
_DPMPP_SDE_MULTISTEP = {**_DPMPP_MULTISTEP, "algorithm_type": "sde-dpmsolver++"}
_TRUE = "True"  # A1111's API serialises option values as strings

# Order and options follow A1111 v1.10 (`sd_samplers_kdiffusion`, `sd_samplers_timesteps`, `sd_samplers_lcm`).
# Not expressible with diffusers schedulers: DPM++ 2S a, DPM fast, DPM adaptive, Restart, DDIM CFG++.
SAMPLERS: list[SamplerInfo] = [
    _sampler("DPM++ 2M", ("k_dpmpp_2m",), DPMSolverMultistepScheduler, _DPMPP_MULTISTEP, "karras",
             {"scheduler": "karras"}),
    # DPMSolverSDEScheduler is k-diffusion's sample_dpmpp_sde (Brownian-tree noise, needs torchsde).
    _sampler("DPM++ SDE", ("k_dpmpp_sde",), DPMSolverSDEScheduler, dict(_K_SPACING), "karras",
             {"scheduler": "karras", "second_order": _TRUE, "brownian_noise": _TRUE}),
    # The multistep SDE variants draw Gaussian noise per step from the generators, not from a Brownian tree.
    _sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), DPMSolverMultistepScheduler, _DPMPP_SDE_MULTISTEP, "exponential",
             {"scheduler": "exponential", "brownian_noise": _TRUE}),
    _sampler("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), DPMSolverMultistepScheduler,
             {**_DPMPP_SDE_MULTISTEP, "solver_type": "heun"}, "exponential",
             {"scheduler": "exponential", "brownian_noise": _TRUE, "solver_type": "heun"}),
    # Closest diffusers form of k-diffusion's sample_dpmpp_3m_sde: the third-order multistep SDE solver
    # (same order and noise type, a different third-order formula; no discarded penultimate sigma).
    _sampler("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), DPMSolverMultistepScheduler,
             {**_DPMPP_SDE_MULTISTEP, "solver_order": 3}, "exponential",
             {"scheduler": "exponential", "discard_next_to_last_sigma": _TRUE, "brownian_noise": _TRUE}),
    _sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), EulerAncestralDiscreteScheduler, dict(_K_SPACING),
             "uniform", {"uses_ensd": _TRUE}),
    _sampler("Euler", ("k_euler",), EulerDiscreteScheduler,
             {"interpolation_type": "linear", "timestep_type": "discrete", "final_sigmas_type": "zero", **_K_SPACING},
             "uniform"),
    _sampler("LMS", ("k_lms",), LMSDiscreteScheduler, dict(_K_SPACING), "uniform"),
    _sampler("Heun", ("k_heun",), HeunDiscreteScheduler, dict(_K_SPACING), "uniform", {"second_order": _TRUE}),
    _sampler("DPM2", ("k_dpm_2",), KDPM2DiscreteScheduler, dict(_K_SPACING), "karras",
             {"scheduler": "karras", "discard_next_to_last_sigma": _TRUE, "second_order": _TRUE}),
    _sampler("DPM2 a", ("k_dpm_2_a",), KDPM2AncestralDiscreteScheduler, dict(_K_SPACING), "karras",
             {"scheduler": "karras", "discard_next_to_last_sigma": _TRUE, "uses_ensd": _TRUE,
              "second_order": _TRUE}),
    # A1111's DDIM/PLMS use ddim_discretize "uniform": t = 1, 1+k, ... (leading, offset 1), final alpha = alpha(0).
    _sampler("DDIM", ("ddim",), DDIMScheduler,
             {"timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False,
              "thresholding": False}, "automatic"),
    _sampler("PLMS", ("plms",), PNDMScheduler,
             {"skip_prk_steps": True, "timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False},
             "automatic"),
    # A1111's UniPC defaults: variant bh1, order 3, lower order final, x0 prediction, time-uniform steps, ending at
    # the smallest sigma (no denoise to zero). "sigma_min" is also needed: bh1 with a final sigma of 0 gives NaN.
    _sampler("UniPC", ("unipc",), UniPCMultistepScheduler,
             {"solver_order": 3, "solver_type": "bh1", "predict_x0": True, "lower_order_final": True,
              "disable_corrector": [], "final_sigmas_type": "sigma_min", **_K_SPACING}, "automatic"),
    # LCMScheduler picks its timesteps from its 50-step distillation schedule and ignores timestep_spacing, so it
    # offers no schedule type; it also refuses more than 50 steps (original_inference_steps).
    _sampler("LCM", ("k_lcm",), LCMScheduler, {}, "automatic", schedules=("automatic",)),
    # Trajectory Consistency Distillation (Forge and ComfyUI offer it for TCD LoRAs): like LCM it picks its own
    # timesteps from the distillation schedule; its step's eta ("gamma", stochasticity) defaults to 0.3.
    _sampler("TCD", ("tcd",), TCDScheduler, {}, "automatic", schedules=("automatic",), default_eta=0.3),
]

_SCHEDULES_BY_NAME = {s.name: s for s in SCHEDULE_TYPES}
_AUTOMATIC = _SCHEDULES_BY_NAME["automatic"]


def _lookup_key(text: str) -> str:
    return " ".join(text.split()).casefold()


_SAMPLER_LOOKUP: dict[str, SamplerInfo] = {}
for _info in SAMPLERS:
    for _key in (_info.name, *_info.aliases):
        _SAMPLER_LOOKUP[_lookup_key(_key)] = _info
_SCHEDULE_LOOKUP: dict[str, ScheduleType] = {}
for _schedule in SCHEDULE_TYPES:
    for _key in (_schedule.name, _schedule.label, *_schedule.aliases):
        _SCHEDULE_LOOKUP[_lookup_key(_key)] = _schedule


def sampler_names() -> list[str]:
    """A1111 sampler names in A1111's order."""
    return [info.name for info in SAMPLERS]


def schedule_type_labels() -> list[str]:
    """Schedule-type labels in A1111's order, "Automatic" first."""
    return [schedule.label for schedule in SCHEDULE_TYPES]


def find_schedule_type(schedule: str | None) -> ScheduleType:
    """A schedule type by name, label or alias (case-insensitive); None or "" mean Automatic."""
    if schedule is None or not schedule.strip():
        return _AUTOMATIC
    found = _SCHEDULE_LOOKUP.get(_lookup_key(schedule))
    if found is None:
        raise ValueError(
            f"Unknown schedule type '{schedule}'. Valid schedule types: {', '.join(schedule_type_labels())}"
        )
    return found


def _split_combined_name(sampler_name: str) -> tuple[SamplerInfo, ScheduleType] | None:
    """Split a name such as "DPM++ 2M Karras" into (DPM++ 2M, Karras), as A1111's API does."""
    key = _lookup_key(sampler_name)
    suffixes = sorted(_SCHEDULE_LOOKUP.items(), key=lambda item: len(item[0]), reverse=True)
    for suffix, schedule in suffixes:
        if key.endswith(" " + suffix):
            info = _SAMPLER_LOOKUP.get(key[: -len(suffix) - 1])
            if info is not None:
                return info, schedule
    return None


def resolve(sampler_name: str, schedule: str | None = None) -> tuple[SamplerInfo, ScheduleType]:
    """Find a sampler and schedule type from A1111 names.

    Accepts sampler names and aliases in any case, and combined names such as "DPM++ 2M Karras"; as in A1111, a
    schedule type named in the sampler name wins over `schedule`. `schedule` is a name or label; None/"" mean
    Automatic. The returned schedule type is the one asked for (Automatic stays Automatic).
    """
    requested = find_schedule_type(schedule)
    info = _SAMPLER_LOOKUP.get(_lookup_key(sampler_name or ""))
    if info is None:
        combined = _split_combined_name(sampler_name or "")
        if combined is None:
            raise ValueError(f"Unknown sampler '{sampler_name}'. Valid samplers: {', '.join(sampler_names())}")
        info, requested = combined
    if requested.name not in info.schedules:
        supported = ", ".join(_SCHEDULES_BY_NAME[name].label for name in info.schedules)
        raise ValueError(
            f"Sampler '{info.name}' does not support schedule type '{requested.label}'. "
            f"Schedule types {info.name} supports: {supported}"
        )
    return info, requested


@dataclass
class Sampler:
    """A configured scheduler for one batch, plus what the sampling loop passes to each `step()`."""

    info: SamplerInfo
    schedule: ScheduleType  # the type in effect: Automatic is replaced by the sampler's default where it has one
    scheduler: SchedulerMixin
    step_kwargs: dict[str, Any]  # eta / s_churn / s_tmin / s_tmax / s_noise, where this step() takes them
    infotext_schedule: str | None  # A1111's "Schedule type" infotext value; None: leave the key out
    eta: float | None = None  # the eta in effect (A1111 writes "Eta" when it is not the default); None: no eta
    step_takes_generator: bool = False

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | float,
        sample: torch.Tensor,
        generators: list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """One scheduler step; returns the next latents in float32.

        Use this rather than `scheduler.step(..., generator=...)`: LMS, Heun, DPM2, DPM++ SDE, PLMS and UniPC have
        no `generator` argument and raise TypeError on one. The step runs in float32 so that ancestral noise is
        drawn as float32, bit-equal to A1111's per-image generator stream, whatever dtype the UNet ran in.
        """
        kwargs = dict(self.step_kwargs)
        if self.step_takes_generator and generators is not None:
            kwargs["generator"] = generators
        output = self.scheduler.step(model_output.float(), timestep, sample.float(), return_dict=True, **kwargs)
        return output.prev_sample


def _effective_schedule(info: SamplerInfo, requested: ScheduleType) -> ScheduleType:
    if requested.name == "automatic":
        return _SCHEDULES_BY_NAME[info.default_schedule]
    return requested


def _infotext_schedule(info: SamplerInfo, requested: ScheduleType, schedule: str | None) -> str | None:
    """A1111 writes the schedule it applied when it is a real one, else the user's choice as given.

    Its k-diffusion samplers record the label of the schedule they applied (Automatic resolved through the sampler's
    `scheduler` option: "DPM++ 2M" + Automatic → "Karras"); otherwise the value is p.scheduler, absent when the API
    request had none.
    """
    applied = requested.name if requested.name != "automatic" else info.options.get("scheduler")
    if applied is not None:
        return _SCHEDULES_BY_NAME[applied].label
    if schedule is None or not schedule.strip():
        return None
    return requested.label


def scheduler_config(
    info: SamplerInfo,
    schedule: ScheduleType,
    base_scheduler_config: dict[str, Any],
    seeds: list[int] | None = None,
) -> dict[str, Any]:
    """Constructor arguments: the model's config, then the sampler's, then the schedule type's; unknown keys dropped."""
    config = {k: v for k, v in dict(base_scheduler_config).items() if not k.startswith("_") and k not in _SOLVER_KEYS}
    config.update(_SIGMA_FLAGS_OFF)
    config.update(info.config)
    config.update(schedule.config)
    if seeds is not None:
        # DPM++ SDE: one Brownian tree per image, seeded with that image's seed (A1111's create_noise_sampler), so a
        # batch gives the same images as single runs.
        config["noise_sampler_seed"] = [int(seed) for seed in seeds]
    accepted = _accepted_arguments(info.scheduler_class)
    return {k: v for k, v in config.items() if k in accepted}


@functools.lru_cache(maxsize=256)
def _cached_scheduler(scheduler_class: type, config_json: str) -> SchedulerMixin:
    return scheduler_class(**json.loads(config_json))


def _build_scheduler(scheduler_class: type, config: dict[str, Any]) -> SchedulerMixin:
    """A fresh scheduler; copies of cached ones, since some constructors are slow (KDPM2: ~0.2 s on a CPU)."""
    if "noise_sampler_seed" in config:  # per-batch seeds would only fill the cache; DPMSolverSDE builds fast
        return scheduler_class(**config)
    try:
        config_json = json.dumps(config, sort_keys=True)
    except TypeError:  # e.g. trained_betas given as an array: build it directly
        return scheduler_class(**config)
    return copy.deepcopy(_cached_scheduler(scheduler_class, config_json))


@functools.lru_cache(maxsize=64)
def _step_arguments(scheduler_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(scheduler_class.step).parameters)


def takes_eta(sampler_name: str, schedule: str | None = None) -> bool:
    """Whether A1111's `eta_ddim` setting applies: the sampler's step has an adjustable eta and no default of its
    own (DDIM)."""
    info, _ = resolve(sampler_name, schedule)
    return "eta" in _step_arguments(info.scheduler_class) and info.default_eta is None


def create_sampler(
    sampler_name: str,
    schedule: str | None,
    base_scheduler_config: dict[str, Any],
    *,
    eta: float | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    seeds: list[int] | None = None,
) -> Sampler:
    """Build the scheduler for an A1111 sampler + schedule type on top of a model's scheduler config.

    `eta` goes to DDIM's step (default 0, A1111's eta_ddim); diffusers fixes it at 1 for the ancestral/SDE samplers,
    so another value there is ignored with a warning. `s_*` go to step() where it takes them (Euler; s_noise also
    DPM++ SDE). `seeds` (one per image of the batch) seed DPM++ SDE's Brownian noise; create one Sampler per batch.
    """
    info, requested = resolve(sampler_name, schedule)
    effective = _effective_schedule(info, requested)
    scheduler_class = info.scheduler_class
    accepted = _accepted_arguments(scheduler_class)
    sampler_seeds = seeds if "noise_sampler_seed" in accepted else None
    config = scheduler_config(info, effective, base_scheduler_config, sampler_seeds)
    scheduler = _build_scheduler(scheduler_class, config)

    step_arguments = _step_arguments(scheduler_class)
    step_kwargs: dict[str, Any] = {}
    effective_eta: float | None = None
    if "eta" in step_arguments:
        default = A1111_ETA_DDIM if info.default_eta is None else info.default_eta
        effective_eta = default if eta is None else float(eta)
        step_kwargs["eta"] = effective_eta
    elif "uses_ensd" in info.options or "brownian_noise" in info.options:
        effective_eta = A1111_ETA_ANCESTRAL
        if eta is not None and eta != A1111_ETA_ANCESTRAL:
            logger.warning("Sampler %s cannot change eta from %s; ignoring eta=%s", info.name, effective_eta, eta)
    for name, value in (("s_churn", s_churn), ("s_tmin", s_tmin), ("s_tmax", s_tmax), ("s_noise", s_noise)):
        if name in step_arguments:
            step_kwargs[name] = float(value)

    return Sampler(
        info=info,
        schedule=effective,
        scheduler=scheduler,
        step_kwargs=step_kwargs,
        infotext_schedule=_infotext_schedule(info, requested, schedule),
        eta=effective_eta,
        step_takes_generator="generator" in step_arguments,
    )
