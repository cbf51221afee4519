"""A1111's `modules.shared_items`: the lists behind settings drop-downs and refresh buttons (checkpoints, VAEs,
samplers, upscalers, hypernetworks), read from the application's registries each time. Also reachable as
`shared.list_checkpoint_tiles`, `shared.refresh_checkpoints`, `shared.list_samplers`, `shared.reload_hypernetworks`.
An adapter: nothing in the core uses it."""

from __future__ import annotations

import os
from typing import Any

from modules import shared
from modules.util import natural_sort_key


def list_checkpoint_tiles(use_short: bool = False) -> list[str]:
    """The checkpoints' titles ("name [hash]"), or with `use_short` their file names, in natural order."""
    if shared.models is None:
        return []
    checkpoints = shared.models.registry.checkpoints
    titles = [os.path.basename(c.name) if use_short else c.title for c in checkpoints]
    return sorted(titles, key=natural_sort_key)


def refresh_checkpoints() -> list[str]:
    """Scan the checkpoint folders again; returns the titles."""
    if shared.models is not None:
        shared.models.refresh()
    return list_checkpoint_tiles()


def list_samplers() -> list[Any]:
    """The samplers (objects with `name`, `aliases`, `options`), as A1111's `sd_samplers.all_samplers`."""
    from modules.sampling import samplers

    return list(samplers.SAMPLERS)


def reload_hypernetworks() -> None:
    """Scan the hypernetwork folder again."""
    if shared.hypernetworks is not None:
        shared.hypernetworks.refresh()


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
