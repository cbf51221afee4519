"""A1111's `modules.lowvram` for extensions, over the core's memory modes (modules/memory.py: --medvram and
--lowvram move the model's parts to the GPU only while they run).

Extensions call `send_everything_to_cpu()` before running a model of their own, to give it the VRAM: here it moves
every part of an offloaded (medvram/lowvram) model off the GPU; a model in the normal mode stays where it is, as in
A1111 (which offloads nothing then either).
"""

from __future__ import annotations

from typing import Any

from modules import memory, shared

module_in_gpu = None  # A1111's record of the one offloaded module on the GPU; the core tracks that itself


def _model(sd_model: Any = None) -> Any:
    return sd_model if sd_model is not None else shared.sd_model


def is_enabled(sd_model: Any = None) -> bool:
    """Whether the model runs offloaded (medvram or lowvram)."""
    model = _model(sd_model)
    return model is not None and memory.mode_of(model) in ("medvram", "lowvram")


def is_needed(sd_model: Any = None) -> bool:
    """Whether the flags ask for offloading for this model (--lowvram, --medvram, --medvram-sdxl with SDXL)."""
    opts = shared.cmd_opts
    if opts is None:
        return False
    model = _model(sd_model)
    return bool(opts.lowvram or opts.medvram or (opts.medvram_sdxl and getattr(model, "is_sdxl", False)))


def send_everything_to_cpu() -> None:
    """Move the parts of an offloaded model that are on the GPU back to the CPU."""
    model = shared.sd_model
    if model is not None and is_enabled(model):
        memory.offload_all(model)


def setup_for_low_vram(sd_model: Any, use_medvram: bool) -> None:
    """Put the model into the medvram (`use_medvram`) or lowvram mode."""
    memory.place(sd_model, "medvram" if use_medvram else "lowvram", sd_model.policy.device)


def apply(sd_model: Any) -> None:
    """Offload the model when the flags ask for it (the model manager already does this when it loads one)."""
    if is_needed(sd_model) and not is_enabled(sd_model):
        opts = shared.cmd_opts
        setup_for_low_vram(sd_model, not opts.lowvram)
