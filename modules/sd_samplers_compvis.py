"""A1111's pre-1.6 `modules.sd_samplers_compvis`, which extensions still import
(mcmonkeyprojects/sd-dynamic-thresholding does, at the top of its script): the timestep sampler class by its old
name. Its `constructor` (an ldm sampler class in A1111) is kept but not called: the core's loop samples."""

from __future__ import annotations

from typing import Any

from modules.sd_samplers_timesteps import CompVisSampler


class VanillaStableDiffusionSampler(CompVisSampler):
    def __init__(self, constructor: Any, sd_model: Any, *args: Any) -> None:
        super().__init__(getattr(constructor, "__name__", str(constructor)), sd_model)
        self.sampler = None
