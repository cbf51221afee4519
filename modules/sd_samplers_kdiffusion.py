"""A1111's `modules.sd_samplers_kdiffusion` for extensions: `KDiffusionSampler`, `CFGDenoiserKDiffusion` and the
k-diffusion sampler table, over the core's samplers (modules/sampling/samplers.py: diffusers schedulers that compute
k-diffusion's updates).

While a job samples with a `KDiffusionSampler`, the core's loop calls its `callback_state(d)` every step with
k-diffusion's dict (`x`, `i`, `sigma`, `sigma_hat`, `denoised`), and what the callback changes in `x` or `denoised`
goes into the step; replacing `KDiffusionSampler.callback_state` on the class (Haoming02/sd-webui-vectorscope-cc
does) takes effect. Its `model_wrap_cfg.combine_denoised` does the guidance when an extension replaced it.
"""

from __future__ import annotations

from typing import Any

from modules import sd_samplers_common, sd_samplers_hooks  # noqa: F401 (the hooks connect the loop)
from modules.sampling import samplers as core_samplers
from modules.sd_samplers_cfg_denoiser import CFGDenoiser

# k-diffusion's function for each A1111 sampler name (A1111 v1.10's table; ours has the ones the core runs).
_FUNCTIONS = {
    "DPM++ 2M": "sample_dpmpp_2m", "DPM++ SDE": "sample_dpmpp_sde", "DPM++ 2M SDE": "sample_dpmpp_2m_sde",
    "DPM++ 2M SDE Heun": "sample_dpmpp_2m_sde", "DPM++ 3M SDE": "sample_dpmpp_3m_sde",
    "Euler a": "sample_euler_ancestral", "Euler": "sample_euler", "LMS": "sample_lms", "Heun": "sample_heun",
    "DPM2": "sample_dpm_2", "DPM2 a": "sample_dpm_2_ancestral", "LCM": "sample_lcm",
}
TIMESTEP_SAMPLERS = ("DDIM", "PLMS", "UniPC")


def _options(info: core_samplers.SamplerInfo) -> dict[str, Any]:
    """A1111's option values are Python values; the core keeps the API's strings."""
    return {key: True if value == "True" else value for key, value in info.options.items()}


# (label, funcname, aliases, options), as A1111 lists them
samplers_k_diffusion: list[tuple[str, str, list[str], dict[str, Any]]] = [
    (info.name, _FUNCTIONS[info.name], list(info.aliases), _options(info))
    for info in core_samplers.SAMPLERS if info.name in _FUNCTIONS and info.name != "LCM"
]

sampler_extra_params = {
    "sample_euler": ["s_churn", "s_tmin", "s_tmax", "s_noise"],
    "sample_heun": ["s_churn", "s_tmin", "s_tmax", "s_noise"],
    "sample_dpm_2": ["s_churn", "s_tmin", "s_tmax", "s_noise"],
    "sample_dpm_fast": ["s_noise"],
    "sample_dpm_2_ancestral": ["s_noise"],
    "sample_dpmpp_2s_ancestral": ["s_noise"],
    "sample_dpmpp_sde": ["s_noise"],
    "sample_dpmpp_2m_sde": ["s_noise"],
    "sample_dpmpp_3m_sde": ["s_noise"],
}

# schedule-type name -> label; A1111 maps them to k-diffusion's sigma functions, which the core expresses as
# scheduler settings instead
k_diffusion_scheduler = {schedule.name: schedule.label for schedule in core_samplers.SCHEDULE_TYPES}


class CFGDenoiserKDiffusion(CFGDenoiser):
    """A1111 v1.6+'s CFGDenoiser of k-diffusion samplers (what extensions subclass)."""


class KDiffusionSampler(sd_samplers_common.Sampler):
    """A k-diffusion sampler as A1111 hands it to extensions (`p.sampler`, `create_sampler`)."""

    def __init__(self, funcname: Any, sd_model: Any, options: dict[str, Any] | None = None) -> None:
        super().__init__(funcname)
        self.extra_params = sampler_extra_params.get(funcname, []) if isinstance(funcname, str) else []
        self.options = options or {}
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = sd_model

    def get_sigmas(self, p: Any, steps: int) -> Any:
        """The sigmas of `steps` steps of the job's sampler and schedule type, as the core's scheduler has them."""
        sampler = core_samplers.create_sampler(p.sampler_name, getattr(p, "scheduler", None),
                                               dict(getattr(p.sd_model, "scheduler_config", None) or {}))
        sampler.scheduler.set_timesteps(steps)
        sigmas = getattr(sampler.scheduler, "sigmas", None)
        if sigmas is None:
            raise NotImplementedError(f"sampler {p.sampler_name} has no sigma schedule")
        return sigmas


def _constructor(funcname: str, options: dict[str, Any]):
    return lambda model: KDiffusionSampler(funcname, model, options)


samplers_data_k_diffusion = [
    sd_samplers_common.SamplerData(label, _constructor(funcname, options), aliases, options)
    for label, funcname, aliases, options in samplers_k_diffusion
]
k_diffusion_samplers_map = {data.name: data for data in samplers_data_k_diffusion}
sd_samplers_common.sampler_table.update(k_diffusion_samplers_map)
