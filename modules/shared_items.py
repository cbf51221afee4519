"""A1111's `modules.shared_items`: the lists behind settings drop-downs and refresh buttons (checkpoints, VAEs,
samplers, upscalers, hypernetworks), read from the application's registries each time. Also reachable as
`shared.list_checkpoint_tiles`, `shared.refresh_checkpoints`, `shared.list_samplers`, `shared.reload_hypernetworks`.
An adapter: nothing in the core uses it."""

from __future__ import annotations

from typing import Any

from modules import shared
from modules.shared import (  # noqa: F401 (A1111 keeps them here; shared has them too)
    list_checkpoint_tiles,
    list_samplers,
    refresh_checkpoints,
    reload_hypernetworks,
)


def sd_vae_items() -> list[str]:
    return ["Automatic", "None", *(v.name for v in shared.models.vae_files())] if shared.models else \
        ["Automatic", "None"]


def refresh_vae_list() -> None:
    if shared.models is not None:
        shared.models.vae_files()


def realesrgan_models_names() -> list[str]:
    from modules import upscaling

    return [u.name for u in upscaling.list_upscalers() if u.model_name == "RealESRGAN"]


def postprocessing_scripts() -> list[Any]:
    from modules import scripts_postprocessing

    return scripts_postprocessing.runner().scripts


def cross_attention_optimizations() -> list[str]:
    """A1111's "Cross attention optimization" choices; diffusers picks PyTorch's scaled-dot-product attention."""
    return ["Automatic", "None"]


def sd_unet_items() -> list[str]:
    return ["Automatic", "None"]


def refresh_unet_list() -> None:
    """No separate UNet files here (A1111's `sd_unet` choices)."""


def ui_reorder_categories() -> list[str]:
    """The blocks of the generation tabs in A1111's order (its `ui_reorder_list` setting's choices)."""
    return ["prompt", "image", "inpaint", "sampler", "accordions", "checkboxes", "dimensions", "cfg", "denoising",
            "seed", "batch", "override_settings", "scripts"]


def callbacks_order_settings() -> dict[str, Any]:
    return {}
