"""A1111's `modules.sd_vae` for extensions: the VAE list and VAE switching, over the core's model manager.

`vae_dict` maps a VAE's name (its path in the VAE folder, as the "SD VAE" setting shows it) to its file; the
folder is read again each time it is looked up. `reload_vae_weights` applies the `sd_vae` setting, or a given file,
to the loaded checkpoint through the one job queue (`ModelManager.switch` / `reload_vae`).
"""

from __future__ import annotations

import os
from typing import Any

from modules import shared
from modules.models.registry import VAE_SUFFIXES

_vae_dict: dict[str, str] = {}
unspecified = object()  # "the VAE the settings choose" (A1111's sentinel)
vae_ignore_keys = {"model_ema.decay", "model_ema.num_updates"}


def _vae_folder() -> str:
    if shared.cmd_opts is not None:
        return os.path.abspath(shared.cmd_opts.vae_dir)
    from modules import paths

    return os.path.abspath(os.path.join(paths.models_path, "VAE"))


def get_filename(filepath: str) -> str:
    return os.path.basename(filepath)


def refresh_vae_list() -> None:
    """Scan the VAE folder again; `vae_dict` is updated in place (name -> absolute path)."""
    found = shared.models.vae_files() if shared.models is not None else []
    _vae_dict.clear()
    for vae in sorted(found, key=lambda v: v.name.lower()):
        _vae_dict[vae.name] = vae.filename


def load_vae_dict(filename: str, map_location: str = "cpu") -> dict[str, Any]:
    """A VAE file's tensors (safe loading only), without the EMA bookkeeping keys."""
    from modules.sd_models import read_state_dict

    return {k: v for k, v in read_state_dict(filename, map_location=map_location).items()
            if k[:6] != "loss." and k not in vae_ignore_keys}


def find_vae_near_checkpoint(checkpoint_file: str) -> str | None:
    """A `<checkpoint stem>.vae.(pt|ckpt|safetensors)` file beside the checkpoint, if any."""
    stem = os.path.splitext(checkpoint_file)[0]
    for suffix in VAE_SUFFIXES:
        candidate = stem + ".vae" + suffix
        if os.path.isfile(candidate):
            return candidate
    return None


def is_automatic() -> bool:
    return shared.opts.sd_vae in ("Automatic", "auto")


def _loaded_vae_file() -> str | None:
    model = shared.sd_model
    return model.vae_info.filename if model is not None and model.vae_info is not None else None


def reload_vae_weights(sd_model: Any = None, vae_file: Any = unspecified) -> Any:
    """Use `vae_file` (a path or name in the VAE folder; None: the checkpoint's own VAE) with the loaded
    checkpoint, or, left unspecified, the VAE the `sd_vae` setting chooses; returns the model."""
    manager = shared.models
    if manager is None:
        raise RuntimeError("the WebUI is not initialised (shared.initialize) yet")
    if vae_file is unspecified:
        return shared.runner.run("model-switch", manager.reload_vae, progress=False)
    if vae_file is None:
        name = "None"
    else:
        refresh_vae_list()
        by_path = {os.path.abspath(path): name for name, path in _vae_dict.items()}
        name = by_path.get(os.path.abspath(str(vae_file)), str(vae_file))
    return shared.runner.run("model-switch", lambda: manager.switch(None, name), progress=False)


def __getattr__(name: str) -> Any:
    """`vae_dict` (the folder read again: the same dict, updated), `vae_path` (the VAE folder), `loaded_vae_file` /
    `base_vae` (the loaded VAE file; None: the checkpoint's)."""
    if name == "vae_dict":
        refresh_vae_list()
        return _vae_dict
    if name == "vae_path":
        return _vae_folder()
    if name in ("loaded_vae_file", "base_vae"):
        return _loaded_vae_file()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

