"""The few-step model card under the sampling settings: "this model wants 4 steps, CFG 1, Euler SGM Uniform" with a
one-click Apply (modules/models/presets.py reads it from the files). It follows the prompt's LoRAs (an LCM or
Hyper-SD LoRA decides) and the loaded checkpoint."""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import gradio as gr

from modules import shared
from modules.models import presets
from modules.models.safe_load import CheckpointLoadError, read_safetensors_metadata
from modules.prompts import parser
from modules.ui.components import create


@functools.lru_cache(maxsize=64)
def _metadata(path: str, mtime: float) -> dict[str, str]:
    if not path.lower().endswith(".safetensors"):
        return {}
    try:
        return read_safetensors_metadata(path)
    except (CheckpointLoadError, OSError):
        return {}


def _file_metadata(path: str) -> dict[str, str]:
    try:
        return _metadata(path, os.path.getmtime(path))
    except OSError:
        return {}


# tag name -> when a miss last rescanned the LoRA folder: the hint runs at every keystroke, and a rescan reads every
# file's metadata
_RESCANNED: dict[str, float] = {}
RESCAN_EVERY = 10.0  # seconds


def _lora(name: str) -> Any:
    """The LoRA a tag names; a name not listed rescans the folder at most every RESCAN_EVERY seconds."""
    entry = shared.loras.find(name, rescan=False)
    now = time.monotonic()
    if entry is None and now - _RESCANNED.get(name, -RESCAN_EVERY) >= RESCAN_EVERY:
        if len(_RESCANNED) > 256:
            _RESCANNED.clear()
        _RESCANNED[name] = now
        entry = shared.loras.find(name)
    return entry


def preset_for(prompt: str, checkpoint: str | None = None) -> presets.SamplingPreset | None:
    """The preset of the prompt's first few-step LoRA, else of `checkpoint` (a title from the checkpoint dropdown)
    or, without one, of the loaded checkpoint."""
    candidates: list[tuple[str, dict[str, str]]] = []
    _, networks = parser.parse_prompt(prompt or "")
    for params in [*networks.get("lora", []), *networks.get("lyco", [])]:
        entry = _lora(params.items[0]) if params.items and shared.loras is not None else None
        if entry is not None:
            candidates.append((entry.name, entry.metadata))
    info = shared.models.registry.find(checkpoint) if checkpoint and shared.models is not None else None
    if info is None and shared.models is not None and shared.models.current is not None:
        info = shared.models.current.checkpoint
    if info is not None:
        candidates.append((info.name, _file_metadata(info.filename)))
    return presets.first_preset(candidates)


def hint(prompt: str, checkpoint: str | None = None) -> tuple[Any, Any]:
    """The hint text and the Apply button, both hidden for an ordinary model."""
    preset = preset_for(prompt, checkpoint)
    if preset is None:
        return gr.Markdown(value="", visible=False), gr.Button(visible=False)
    return gr.Markdown(value=f"ⓘ {preset.hint()}", visible=True), gr.Button(visible=True)


def apply(prompt: str, steps: float, cfg_scale: float, sampler_name: str, scheduler: str) -> tuple[Any, ...]:
    """The preset's steps, CFG, sampler and schedule (the current values when there is none)."""
    preset = preset_for(prompt)
    if preset is None:
        return steps, cfg_scale, sampler_name, scheduler
    return preset.steps, preset.cfg_scale, preset.sampler_name, preset.scheduler


# each tab's (prompt, hint, button) of the UI built last, for the checkpoint dropdown's refresh
_ROWS: dict[str, tuple[Any, Any, Any]] = {}


def create_row(tab: str) -> tuple[gr.Markdown, gr.Button]:
    """The hint and its button (hidden until a few-step model or LoRA is in use)."""
    with create(gr.Row, elem_id=f"{tab}_preset_row"):
        text = create(gr.Markdown, "", visible=False, elem_id=f"{tab}_preset_hint")
        button = create(gr.Button, "Apply", visible=False, elem_id=f"{tab}_preset_apply", scale=0, min_width=80)
    return text, button


def wire(text: gr.Markdown, button: gr.Button, prompt: gr.Textbox, steps: gr.Slider, cfg: gr.Slider,
         sampler: gr.Dropdown, scheduler: gr.Dropdown) -> None:
    """Refresh the hint as the prompt changes (and when it gets the focus: the model may have changed)."""
    _ROWS[str(text.elem_id).removesuffix("_preset_hint")] = (prompt, text, button)
    for event in (prompt.change, prompt.focus):
        event(hint, inputs=[prompt], outputs=[text, button], queue=False, show_progress="hidden",
              api_visibility="undocumented")
    button.click(apply, inputs=[prompt, steps, cfg, sampler, scheduler], outputs=[steps, cfg, sampler, scheduler],
                 queue=False, show_progress="hidden", api_visibility="undocumented")


def wire_checkpoint(checkpoint: gr.Dropdown) -> None:
    """The quick settings' checkpoint dropdown refreshes every tab's hint for the checkpoint just chosen."""
    for prompt, text, button in _ROWS.values():
        checkpoint.change(hint, inputs=[prompt, checkpoint], outputs=[text, button], queue=False,
                          show_progress="hidden", api_visibility="undocumented")
