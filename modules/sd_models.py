"""A1111's `modules.sd_models` for extensions: the checkpoint list, lookups, hashes, safe state-dict reading and
model switching, over the core's model manager (modules/model_manager.py) and registry (modules/models/).

`checkpoints_list` / `checkpoint_aliases` are read from the registry each time they are looked up (the same dict
objects, refreshed in place), so they follow the folder as the UI's refresh button sees it. Loading goes through
the one job queue (`ModelManager.switch`, the one switching function): an extension that reloads weights waits for
its turn, and one that does it inside a job's turn switches at once. A1111's model object (`sd_model`) is the
loaded model wrapper here (`SDModel`: `.unet`, `.vae`, `.text_encoders`, `.is_sdxl`, `.checkpoint`), not an ldm
`LatentDiffusion`.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import re
from typing import Any

import torch

from modules import hashes, shared
from modules.models import registry as core_registry
from modules.models.safe_load import CheckpointLoadError, load_state_dict, read_safetensors_metadata

model_dir = "Stable-diffusion"
re_strip_checksum = re.compile(r"\s*\[[^]]+]\s*$")
_checkpoints_list: dict[str, CheckpointInfo] = {}
_checkpoint_aliases: dict[str, CheckpointInfo] = {}
_synced_from: list | None = None  # the registry list the dicts were built from
# A1111's cache of state dicts read from disk; the model manager keeps whole models in RAM instead (setting
# sd_checkpoint_cache), so this stays empty (extensions clear it)
checkpoints_loaded: collections.OrderedDict = collections.OrderedDict()


class CheckpointInfo:
    """One checkpoint file, with A1111's attribute names."""

    def __init__(self, filename: str, core: core_registry.CheckpointInfo | None = None) -> None:
        self.filename = os.path.abspath(filename)
        if core is None:
            folder = _model_path()
            relative = os.path.relpath(self.filename, folder) if self.filename.startswith(folder + os.sep) \
                else os.path.basename(self.filename)
            core = core_registry.CheckpointInfo(self.filename, relative.replace(os.sep, "/"))
        self.core = core
        self.name = core.name
        self.name_for_extra = os.path.splitext(os.path.basename(self.filename))[0]
        self.model_name = core.model_name
        self.hash = hashes.model_hash_legacy(self.filename)
        self.sha256 = core.sha256 or hashes.cached_sha256(self.filename, shared.cache_path or None)
        self.shorthash = hashes.short_hash(self.sha256) if self.sha256 else None
        self.is_safetensors = self.filename.lower().endswith(".safetensors")
        self._refresh_titles()

    @functools.cached_property
    def metadata(self) -> dict[str, Any]:
        """The safetensors metadata (read when first asked for: the header of a big checkpoint is large)."""
        return _metadata(self.filename) if self.is_safetensors else {}

    def _refresh_titles(self) -> None:
        self.title = self.name if self.shorthash is None else f"{self.name} [{self.shorthash}]"
        stem = self.name_for_extra
        self.short_title = stem if self.shorthash is None else f"{stem} [{self.shorthash}]"
        self.ids = [self.hash, self.model_name, self.title, self.name, self.name_for_extra,
                    f"{self.name} [{self.hash}]"]
        if self.shorthash:
            self.ids += [self.shorthash, self.sha256, f"{self.name} [{self.shorthash}]",
                         f"{self.name_for_extra} [{self.shorthash}]"]

    def register(self) -> None:
        """Make the checkpoint findable by every id (A1111: for files added outside the folder scan)."""
        _checkpoints_list[self.title] = self
        for checkpoint_id in self.ids:
            _checkpoint_aliases[checkpoint_id] = self

    def calculate_shorthash(self) -> str | None:
        """Compute (and cache) the full sha256; returns the 10-character short hash."""
        self.sha256 = hashes.file_sha256(self.filename, shared.cache_path or None, title=f"checkpoint/{self.name}")
        self.core.sha256 = self.sha256
        self.shorthash = hashes.short_hash(self.sha256)
        if self.title in _checkpoints_list and _checkpoints_list[self.title] is self:
            del _checkpoints_list[self.title]
        self._refresh_titles()
        self.register()
        return self.shorthash

    def __repr__(self) -> str:
        return f"CheckpointInfo({self.title!r})"


def _metadata(filename: str) -> dict[str, Any]:
    try:
        return read_metadata_from_safetensors(filename)
    except CheckpointLoadError:
        return {}


def _model_path() -> str:
    if shared.cmd_opts is not None:
        return os.path.abspath(shared.cmd_opts.ckpt_dir)
    from modules import paths

    return os.path.abspath(os.path.join(paths.models_path, model_dir))


def _manager():
    if shared.models is None:
        raise RuntimeError("the WebUI is not initialised (shared.initialize) yet")
    return shared.models


def _sync() -> None:
    """Rebuild the A1111 dicts in place when the registry's list changed since the last time."""
    global _synced_from
    if shared.models is None:
        return
    found = shared.models.registry.checkpoints
    if found is _synced_from:
        return
    _synced_from = found
    _checkpoints_list.clear()
    _checkpoint_aliases.clear()
    for core in found:
        CheckpointInfo(core.filename, core).register()


def list_models() -> None:
    """Scan the checkpoint folder again (A1111: also registers --ckpt)."""
    _manager().refresh()
    _sync()


def checkpoint_tiles(use_short: bool = False) -> list[str]:
    """The checkpoint dropdown's entries: titles ("name [shorthash]"), or short ones (file stem [shorthash])."""
    _sync()
    return [info.short_title if use_short else info.title for info in _checkpoints_list.values()]


def get_closet_checkpoint_match(search_string: str | None) -> CheckpointInfo | None:
    """A checkpoint by alias (title, name, hash …), else the shortest title containing the text (with or without a
    trailing "[hash]")."""
    if not search_string:
        return None
    _sync()
    info = _checkpoint_aliases.get(search_string)
    if info is not None:
        return info
    for text in (search_string, re_strip_checksum.sub("", search_string)):
        found = sorted((c for c in _checkpoints_list.values() if text in c.title), key=lambda c: len(c.title))
        if found:
            return found[0]
    return None


def model_hash(filename: str) -> str:
    """A1111's old 8-character hash (sha256 of 64 KiB at offset 1 MiB)."""
    return hashes.model_hash_legacy(filename)


def select_checkpoint() -> CheckpointInfo:
    """The checkpoint the settings name (the loaded one, else `sd_model_checkpoint`, else the first)."""
    _sync()
    model = shared.sd_model
    if model is not None:
        return get_closet_checkpoint_match(model.checkpoint.title) or CheckpointInfo(model.checkpoint.filename)
    info = get_closet_checkpoint_match(shared.opts.sd_model_checkpoint)
    if info is None:
        if not _checkpoints_list:
            raise FileNotFoundError(f"No checkpoints found. Put a model file into {_model_path()}")
        info = next(iter(_checkpoints_list.values()))
    return info


def read_metadata_from_safetensors(filename: str) -> dict[str, Any]:
    """The `__metadata__` of a safetensors file; values that hold JSON objects are parsed, as A1111 does."""
    metadata: dict[str, Any] = {}
    for key, value in read_safetensors_metadata(filename).items():
        if isinstance(value, str) and value[:1] == "{":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        metadata[key] = value
    return metadata


def read_state_dict(checkpoint_file: str, print_global_state: bool = False, map_location: Any = None
                    ) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors. Pickle files (.ckpt/.pt) go through the restricted unpickler only, so a file that
    would run code is refused (CheckpointLoadError) instead of executed."""
    device = str(map_location) if map_location is not None else "cpu"
    return load_state_dict(checkpoint_file, device=device)


def get_checkpoint_state_dict(checkpoint_info: CheckpointInfo, timer: Any = None) -> dict[str, torch.Tensor]:
    return read_state_dict(checkpoint_info.filename)


def _in_queue(kind: str, work):
    """Run model work in its turn of the one job queue (at once when already inside a turn)."""
    return shared.runner.run(kind, work, progress=False)


def reload_model_weights(sd_model: Any = None, info: CheckpointInfo | None = None, forced_reload: bool = False
                         ) -> Any:
    """Load the checkpoint `info` names (None: the one the settings name) and return the loaded model; with
    `forced_reload`, read it again even when it is loaded."""
    manager = _manager()
    target = info.title if info is not None else None

    def work():
        before = manager.current
        model = manager.switch(target or shared.opts.sd_model_checkpoint or None)
        if forced_reload and model is before:
            model = manager.reload_vae()  # reads the current checkpoint again, with the chosen VAE
        return model

    model = _in_queue("model-switch", work)
    _sync()
    return model


def load_model(checkpoint_info: CheckpointInfo | None = None, already_loaded_state_dict: Any = None) -> Any:
    """Load a checkpoint (the selected one when None) as the current model; returns it."""
    return reload_model_weights(info=checkpoint_info or select_checkpoint())


def unload_model_weights(sd_model: Any = None, info: Any = None) -> None:
    """Let the loaded model go (RAM and VRAM); the next job loads it again."""
    _in_queue("model-unload", _manager().unload)


def send_model_to_cpu(m: Any) -> None:
    """Move a model's components to the CPU (A1111's name; the memory mode puts them back for the next job)."""
    for module in m.components():
        torch.nn.Module.to(module, "cpu")


def send_model_to_device(m: Any) -> None:
    for module in m.components():
        torch.nn.Module.to(module, m.policy.device)


def send_model_to_trash(m: Any) -> None:
    send_model_to_cpu(m)


class ModelData:
    """A1111's `model_data`: the loaded model, read from the model manager."""

    @property
    def sd_model(self) -> Any:
        return shared.sd_model

    @property
    def loaded_sd_models(self) -> list[Any]:
        manager = shared.models
        if manager is None:
            return []
        return [m for m in (manager.current, *reversed(manager.cached.values())) if m is not None]

    @property
    def was_loaded_at_least_once(self) -> bool:
        return shared.sd_model is not None

    def get_sd_model(self) -> Any:
        """The loaded model, loading the selected checkpoint first when none is (in the job queue)."""
        if shared.sd_model is None:
            return _in_queue("model-switch", _manager().get)
        return shared.sd_model

    def set_sd_model(self, v: Any, already_loaded: bool = False) -> None:
        """Accepted and ignored: the model manager decides what is loaded."""


model_data = ModelData()


def __getattr__(name: str) -> Any:
    """Attributes computed on access: `checkpoints_list`/`checkpoint_aliases` (synced with the registry),
    `model_path` (the checkpoint folder, which follows --ckpt-dir / --models-dir)."""
    if name in ("checkpoints_list", "checkpoint_aliases", "checkpoint_alisases"):  # A1111 kept its old typo too
        _sync()
        return _checkpoints_list if name == "checkpoints_list" else _checkpoint_aliases
    if name == "model_path":
        return _model_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
