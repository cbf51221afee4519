"""Few-step models: the sampling settings a distilled checkpoint or LoRA wants (SDXL-Lightning, LCM, Turbo,
Hyper-SD, TCD), found from what its file carries.

Such a model gives noise or mush at A1111's defaults (20 steps, CFG 7, DPM++ 2M Karras). Where the file says what it
is -- the `modelspec.*` metadata of the Stability model-spec (`modelspec.usage_hint`, `.architecture`, `.title`,
`.description`), a kohya LoRA's `ss_output_name`, or, as most downloads are named, the file name ("..._lightning_4step",
"Hyper-SDXL-8steps-lora", "lcm-lora-sdxl", "sd_xl_turbo_1.0") -- the UI shows a hint and applies the settings in one
click. The recipes are the model authors' published ones, in A1111 sampler names: "trailing" timesteps are A1111's
"SGM Uniform" schedule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingPreset:
    """What a few-step model wants."""

    label: str            # what the model is, e.g. "SDXL-Lightning 4-step"
    steps: int
    cfg_scale: float
    sampler_name: str
    scheduler: str
    source: str           # where it was read: a metadata key or "file name"
    model: str = ""       # the file it came from

    def hint(self) -> str:
        """The UI's one-line model card: "this model wants 4 steps, CFG 1, Euler SGM Uniform"."""
        schedule = "" if self.scheduler == "Automatic" else f" {self.scheduler}"
        return (f"{self.model or 'this model'} ({self.label}, from its {self.source}) wants {self.steps} steps, "
                f"CFG {self.cfg_scale:g}, {self.sampler_name}{schedule}")

    def settings(self) -> dict[str, object]:
        """The job fields the preset sets (A1111's txt2img API names)."""
        return {"steps": self.steps, "cfg_scale": self.cfg_scale, "sampler_name": self.sampler_name,
                "scheduler": self.scheduler}


_SEP = r"[\s_.\-]*"
_STEPS = rf"(\d{{1,2}}){_SEP}steps?"

# (pattern, maker(match) -> preset fields); tried in order on the lower-cased text, first match wins
_RULES: list[tuple[re.Pattern[str], str, object]] = [
    (re.compile(rf"lightning{_SEP}{_STEPS}|{_STEPS}{_SEP}lightning"), "SDXL-Lightning",
     lambda n: (n, 1.0, "Euler", "SGM Uniform")),
    (re.compile(rf"hyper{_SEP}(?:sd|sdxl|sd15|sd1\.5)?.*?{_STEPS}"), "Hyper-SD",
     lambda n: (n, 1.0, "Euler", "SGM Uniform")),
    (re.compile(r"(?<![a-z])tcd(?![a-z])"), "TCD", lambda n: (4, 1.0, "TCD", "Automatic")),
    (re.compile(rf"(?<![a-z])lcm(?![a-z])|latent{_SEP}consistency"), "LCM", lambda n: (4, 1.5, "LCM", "Automatic")),
    (re.compile(r"lightning"), "SDXL-Lightning", lambda n: (4, 1.0, "Euler", "SGM Uniform")),
    (re.compile(r"(?<![a-z])(?:sdxl|sd|xl)?[_\-\s]?turbo(?![a-z])"), "Turbo",
     lambda n: (4, 1.0, "Euler a", "SGM Uniform")),
]

# metadata keys read, most specific first
METADATA_KEYS = ("modelspec.usage_hint", "modelspec.architecture", "modelspec.title", "modelspec.description",
                 "ss_output_name")

_USAGE_STEPS = re.compile(rf"{_STEPS}|steps?\s*[:=]\s*(\d{{1,2}})")
_USAGE_CFG = re.compile(r"(?:cfg|guidance)(?:\s*scale)?\s*[:=]?\s*(\d+(?:\.\d+)?)")


def _match(text: str) -> tuple[str, tuple[int, float, str, str]] | None:
    for pattern, label, make in _RULES:
        found = pattern.search(text)
        if found:
            number = next((int(g) for g in found.groups() if g), 0) if found.groups() else 0
            steps, cfg, sampler, schedule = make(number)  # type: ignore[operator]
            if number:
                label = f"{label} {number}-step"
            return label, (steps, cfg, sampler, schedule)
    return None


def _usage_hint(text: str, preset: tuple[int, float, str, str]) -> tuple[int, float, str, str]:
    """Numbers a usage hint states win over the recipe ("use 6 steps, CFG 2")."""
    steps, cfg, sampler, schedule = preset
    found_steps = _USAGE_STEPS.search(text)
    if found_steps:
        steps = int(next(g for g in found_steps.groups() if g))
    found_cfg = _USAGE_CFG.search(text)
    if found_cfg:
        cfg = float(found_cfg.group(1))
    return steps, cfg, sampler, schedule


def detect(name: str, metadata: Mapping[str, str] | None = None) -> SamplingPreset | None:
    """The preset a model file wants, from its metadata (first) or its file name; None for an ordinary model."""
    metadata = metadata or {}
    for key in METADATA_KEYS:
        value = str(metadata.get(key) or "").lower()
        found = _match(value) if value else None
        if found:
            label, preset = found
            if key == "modelspec.usage_hint":
                preset = _usage_hint(value, preset)
            return SamplingPreset(label, *preset, source=f"{key} metadata", model=name)
    stem = re.sub(r"\.(safetensors|ckpt|pt|pth|bin)$", "", name.replace("\\", "/").rsplit("/", 1)[-1].lower())
    found = _match(stem)
    if found:
        label, preset = found
        return SamplingPreset(label, *preset, source="file name", model=name)
    return None


def first_preset(candidates: Iterable[tuple[str, Mapping[str, str] | None]]) -> SamplingPreset | None:
    """The first preset among (name, metadata) pairs: the LoRAs in a prompt, then the checkpoint (a few-step LoRA
    on an ordinary checkpoint is what decides)."""
    for name, metadata in candidates:
        preset = detect(name, metadata)
        if preset is not None:
            return preset
    return None
