"""A1111's `modules.sd_samplers_timesteps`: the timestep samplers (DDIM, PLMS, UniPC) as sampler objects, and LCM's
entry (A1111's `sd_samplers_lcm`), over the core's diffusers schedulers of those names."""

from __future__ import annotations

from typing import Any

from modules import sd_samplers_common
from modules.sampling import samplers as core_samplers
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.sd_samplers_kdiffusion import TIMESTEP_SAMPLERS, KDiffusionSampler

_FUNCTIONS = {"DDIM": "ddim", "PLMS": "plms", "UniPC": "unipc"}


class CFGDenoiserTimesteps(CFGDenoiser):
    """The CFGDenoiser of timestep samplers (what extensions subclass)."""


class CompVisSampler(sd_samplers_common.Sampler):
    """A timestep sampler object (A1111's name); its guidance and per-step callback work as KDiffusionSampler's."""

    def __init__(self, funcname: Any, sd_model: Any) -> None:
        super().__init__(funcname)
        self.eta_option_field = "eta_ddim"
        self.eta_infotext_field = "Eta DDIM"
        self.eta_default = 0.0
        self.model_wrap_cfg = CFGDenoiserTimesteps(self)
        self.model_wrap = sd_model


def _info(name: str) -> core_samplers.SamplerInfo:
    return next(info for info in core_samplers.SAMPLERS if info.name == name)


samplers_timesteps = [(name, _FUNCTIONS[name], list(_info(name).aliases), {}) for name in TIMESTEP_SAMPLERS]
samplers_data_timesteps = [
    sd_samplers_common.SamplerData(name, lambda model, funcname=funcname: CompVisSampler(funcname, model), aliases,
                                   options)
    for name, funcname, aliases, options in samplers_timesteps
]


class LCMSampler(KDiffusionSampler):
    """A1111's `sd_samplers_lcm.LCMSampler`."""


samplers_data_lcm = [
    sd_samplers_common.SamplerData("LCM", lambda model: LCMSampler("sample_lcm", model), list(_info("LCM").aliases),
                                   {}),
    # TCD is not A1111's; it has a table entry like LCM's so that extensions listing samplers see it too
    sd_samplers_common.SamplerData("TCD", lambda model: LCMSampler("sample_tcd", model), list(_info("TCD").aliases),
                                   {}),
]
sd_samplers_common.sampler_table.update({data.name: data for data in (*samplers_data_timesteps, *samplers_data_lcm)})
