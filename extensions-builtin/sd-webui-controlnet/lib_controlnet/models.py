"""ControlNet / T2I-Adapter model files: listing them as the A1111 extension does, loading them offline, checking
they fit the loaded checkpoint, and a small LRU cache of loaded models.

Names follow sd-webui-controlnet: a model is listed as its file name without extension plus A1111's legacy 8-hex
model hash (`control_v11p_sd15_canny [d14c016b]`), folders in order, each sorted by file name. Files are read
only through the project's safe loader (validated safetensors headers, restricted unpickling of .pth/.ckpt).
Kind and family come from keys and shapes (model_detection.py), never from the file name.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import ControlNetModel, T2IAdapter

from lib_controlnet.model_detection import (
    FAMILY_LABELS,
    KIND_LABELS,
    ControlModelError,
    build_adapter,
    build_controlnet,
    detect,
    merge_control_lora,
    to_original_layout,
)
from modules.hashes import model_hash_legacy
from modules.models.safe_load import CheckpointLoadError, load_state_dict

__all__ = [
    "ControlModel", "ControlModelError", "ControlModelInfo", "ModelCache", "check_base_unet", "check_compatible",
    "detect", "find_model", "list_models", "load", "to_original_layout",
]

MODEL_SUFFIXES = (".safetensors", ".pth", ".ckpt", ".pt", ".bin")
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DIFFUSERS_CONFIG = "config.json"
# Preprocessor weights live beside the models (models/ControlNet/annotators/) and are not control models.
SKIPPED_FOLDERS = {"annotators"}
NONE_MODEL = "None"
SORT_ORDERS = ("name", "date", "path name")
NAMES_IN_MESSAGES = 5
# The A1111 extension turns on global average pooling of the residuals for shuffle models by their file name.
GLOBAL_POOL_NAME_MARK = "shuffle"
CONTROL_LORA_NEEDS_BASE = ("this is a control-LoRA (one of Stability's rank-reduced ControlNets): its weights are "
                           "low-rank changes to the loaded checkpoint's UNet, so it can only be loaded with a "
                           "checkpoint loaded")
_TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]*\]\s*$")


@dataclass(frozen=True)
class ControlModelInfo:
    """One listed model. `title` is what the extension's UI and /controlnet/model_list show."""
    name: str
    title: str
    path: str
    hash: str


@dataclass
class ControlModel:
    """A loaded control model on the CPU (or `device` given to `load`). kind: "controlnet" | "t2i_adapter" |
    "control_lora"; family: "sd1" | "sd2" | "sdxl"; module: diffusers ControlNetModel or T2IAdapter."""
    kind: str
    family: str
    module: ControlNetModel | T2IAdapter
    info: ControlModelInfo
    # id() of the UNet a control-LoRA was made whole from: another checkpoint needs another merge.
    base_unet_id: int | None = None

    @property
    def label(self) -> str:
        return f'{KIND_LABELS[self.kind]} "{self.info.name}"'


# --- listing ----------------------------------------------------------------------------------------------------

_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def _weights_file(path: str) -> str:
    """The file whose bytes identify a model: the file itself, or a diffusers folder's weights."""
    if os.path.isdir(path):
        for name in DIFFUSERS_WEIGHTS:
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise ControlModelError(f'"{Path(path).name}": the folder has no {" or ".join(DIFFUSERS_WEIGHTS)}')
    return path


def short_hash(path: str) -> str:
    """A1111's legacy model hash (sha256 of 64 KiB at 1 MiB, 8 hex), which the extension puts in titles; cached
    per file state since listing runs on every refresh."""
    weights = _weights_file(path)
    stat = os.stat(weights)
    key = (os.path.abspath(weights), stat.st_mtime_ns, stat.st_size)
    with _hash_lock:
        if key not in _hash_cache:
            _hash_cache[key] = model_hash_legacy(weights)
        return _hash_cache[key]


def _is_diffusers_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, DIFFUSERS_CONFIG)) and any(
        os.path.isfile(os.path.join(path, name)) for name in DIFFUSERS_WEIGHTS)


def _model_paths(folder: str, seen: set[str] | None = None) -> list[str]:
    """Model files and diffusers folders under `folder`, recursively; `annotators/` is skipped, and a folder
    reached twice through links is read once (a link loop must not hang the model list)."""
    seen = set() if seen is None else seen
    real = os.path.realpath(folder)
    if real in seen:
        return []
    seen.add(real)
    found: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        if entry.is_dir():
            if entry.name.lower() in SKIPPED_FOLDERS:
                continue
            if _is_diffusers_folder(entry.path):
                found.append(entry.path)
            else:
                found.extend(_model_paths(entry.path, seen))
        elif entry.is_file() and entry.name.lower().endswith(MODEL_SUFFIXES):
            found.append(entry.path)
    return found


def _info(path: str) -> ControlModelInfo:
    name = Path(path).name if os.path.isdir(path) else Path(path).stem
    model_hash = short_hash(path)
    return ControlModelInfo(name=name, title=f"{name} [{model_hash}]", path=path, hash=model_hash)


def _sorted(paths: list[str], sort_by: str) -> list[str]:
    """The extension's `control_net_models_sort_models_by`: "name" (file name), "date" (newest first) or
    "path name" (full path)."""
    if sort_by == "date":
        return sorted(paths, key=lambda path: -os.stat(_weights_file(path)).st_mtime)
    if sort_by == "path name":
        return sorted(paths)
    if sort_by != "name":
        raise ValueError(f"unknown sort order {sort_by!r}; expected one of {SORT_ORDERS}")
    return sorted(paths, key=os.path.basename)


def list_models(folders: list[str], sort_by: str = "name", name_filter: str = "") -> list[ControlModelInfo]:
    """Every model under `folders` (recursively), folder by folder, each sorted as the extension sorts them
    (`sort_by`), only those whose file name contains `name_filter` (any case) when one is given; a title found
    twice keeps its first file. "None" is not listed (it means "no model")."""
    wanted = name_filter.strip().lower()
    models: dict[str, ControlModelInfo] = {}
    for folder in folders:
        if not folder or not os.path.isdir(folder):
            continue
        paths = [p for p in _model_paths(folder) if wanted in os.path.basename(p).lower()]
        for path in _sorted(paths, sort_by):
            info = _info(path)
            if info.name != NONE_MODEL:
                models.setdefault(info.title, info)
    return list(models.values())


def find_model(name_or_title: str, folders: list[str]) -> ControlModelInfo:
    """The model a UI choice or an API request names: its title, its name (any or no hash in brackets, any case),
    its file name, or, as the extension allows, the shortest name containing the text."""
    wanted = (name_or_title or "").strip()
    if not wanted or wanted.lower() == NONE_MODEL.lower():
        raise ControlModelError('no ControlNet model chosen ("None"): choose a model for this unit')
    models = list_models(folders)
    by_title = {m.title: m for m in models}
    if wanted in by_title:
        return by_title[wanted]
    bare = _TITLE_HASH.sub("", wanted).lower()
    for model in models:
        if bare in (model.name.lower(), Path(model.path).name.lower()):
            return model
    containing = sorted((m for m in models if bare in m.name.lower()), key=lambda m: len(m.name))
    if containing:
        return containing[0]
    names = ", ".join(m.name for m in models[:NAMES_IN_MESSAGES]) or "none"
    more = f" and {len(models) - NAMES_IN_MESSAGES} more" if len(models) > NAMES_IN_MESSAGES else ""
    # the folders' last two parts ("models/ControlNet"): enough to find them, no server paths in API answers
    where = ", ".join(os.path.join(*Path(f).parts[-2:]) for f in folders if f) or "no folder"
    raise ControlModelError(f'ControlNet model "{name_or_title}" not found in {where}; available: {names}{more}')


# --- loading ----------------------------------------------------------------------------------------------------

def _folder_config(info: ControlModelInfo) -> dict | None:
    """A diffusers folder's config.json (plain JSON, so safe to read); None for single files."""
    if not os.path.isdir(info.path):
        return None
    config_path = os.path.join(info.path, DIFFUSERS_CONFIG)
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as error:
        raise ControlModelError(f'"{info.name}": cannot read {DIFFUSERS_CONFIG} ({error})') from error
    if not isinstance(config, dict):
        raise ControlModelError(f'"{info.name}": {DIFFUSERS_CONFIG} is not a JSON object')
    return config


def _config_for(module_class: type, folder_config: dict | None) -> dict | None:
    """The folder's config when it describes `module_class`; other classes' configs are ignored (shapes decide)."""
    if folder_config and folder_config.get("_class_name") == module_class.__name__:
        return folder_config
    return None


def _build(state_dict: dict[str, torch.Tensor], info: ControlModelInfo, base_unet_config: dict | None,
           base_unet: torch.nn.Module | None, dtype: torch.dtype) -> tuple[str, str, torch.nn.Module]:
    """(kind, family, module) of a read file; ControlModelError for anything that is not a usable control model."""
    folder_config = _folder_config(info)
    kind, family = detect(state_dict)
    if kind == "control_lora":
        if base_unet is None:
            raise ControlModelError(CONTROL_LORA_NEEDS_BASE)
        state_dict = merge_control_lora(state_dict, base_unet)
        family = detect(state_dict)[1]  # the file may leave e.g. SDXL's label embedding to the base UNet
    # Cast the weights rather than the module: diffusers warns on every dtype-changing ModelMixin.to().
    state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    if kind == "t2i_adapter":
        return kind, family, build_adapter(state_dict, family, _config_for(T2IAdapter, folder_config))
    context_dim = (base_unet_config or {}).get("cross_attention_dim")
    module = build_controlnet(state_dict, family, _config_for(ControlNetModel, folder_config), context_dim,
                              global_pool=GLOBAL_POOL_NAME_MARK in info.name.lower())
    return kind, family, module


def load(info: ControlModelInfo, base_unet_config: dict | None = None, dtype: torch.dtype = torch.float32,
         device: str | torch.device = "cpu", base_unet: torch.nn.Module | None = None) -> ControlModel:
    """Read and build one model. Raises ControlModelError naming the model for unreadable, truncated or
    unsupported files, for files that are no control model, and (with `base_unet_config`) for a model whose
    sizes do not fit the checkpoint's UNet. A control-LoRA is made whole from `base_unet` (the loaded
    checkpoint's diffusers UNet, on any device), so it needs one."""
    try:
        state_dict = load_state_dict(_weights_file(info.path))
    except CheckpointLoadError as error:
        raise ControlModelError(f'ControlNet model "{info.name}" cannot be read: {error}') from error
    try:
        kind, family, module = _build(state_dict, info, base_unet_config, base_unet, dtype)
    except ControlModelError as error:
        raise ControlModelError(f'"{info.name}": {error}') from error
    except (ValueError, KeyError, RuntimeError) as error:  # shapes that no known structure explains
        raise ControlModelError(f'"{info.name}": the file\'s weights do not form a known ControlNet or '
                                f"T2I-Adapter ({error})") from error
    module.to(device=device)
    model = ControlModel(kind=kind, family=family, module=module, info=info,
                         base_unet_id=id(base_unet) if kind == "control_lora" else None)
    if base_unet_config is None and kind == "control_lora":
        base_unet_config = dict(base_unet.config)
    if base_unet_config is not None:
        check_base_unet(model, base_unet_config)
    return model


# --- compatibility ----------------------------------------------------------------------------------------------

def check_base_unet(model: ControlModel, base_unet_config: dict) -> None:
    """The model's sizes must fit the checkpoint's UNet: a ControlNet's context width and level widths (its
    residuals are added to the UNet's), an adapter's feature widths. Raises ControlModelError naming both."""
    config = model.module.config
    if model.kind in ("controlnet", "control_lora"):
        ours, theirs = config.cross_attention_dim, base_unet_config.get("cross_attention_dim")
        if theirs is not None and ours != theirs:
            raise ControlModelError(
                f"{model.label} has a cross-attention width of {ours} but the loaded checkpoint's UNet has "
                f"{theirs}: they belong to different model families. Choose a ControlNet made for this checkpoint.")
        ours, theirs = list(config.block_out_channels), base_unet_config.get("block_out_channels")
        if theirs is not None and ours != list(theirs):
            raise ControlModelError(f"{model.label} has block widths {ours} but the loaded checkpoint's UNet has "
                                    f"{list(theirs)}. Choose a ControlNet made for this checkpoint.")
    elif model.kind == "t2i_adapter":
        widths, theirs = set(config.channels), base_unet_config.get("block_out_channels")
        if theirs is not None and not widths <= set(theirs):
            raise ControlModelError(f"{model.label} makes features of widths {sorted(widths)} but the loaded "
                                    f"checkpoint's UNet has widths {list(theirs)}. Choose an adapter made for it.")


def _base_family(checkpoint_family: str) -> str:
    """"sd1-inpaint" -> "sd1", "sd2-v" -> "sd2", "sdxl-inpaint" -> "sdxl"."""
    return checkpoint_family.split("-", 1)[0]


def check_compatible(model: ControlModel, checkpoint_family: str) -> None:
    """Raise ControlModelError when the model was made for another family than the loaded checkpoint's."""
    if checkpoint_family == "sdxl-refiner":
        raise ControlModelError(f"{model.label} cannot be used with the SDXL refiner: switch to an SDXL base "
                                "checkpoint, or turn the unit off.")
    family = _base_family(checkpoint_family)
    if family not in FAMILY_LABELS:
        raise ControlModelError(f"{model.label}: ControlNets do not work with {checkpoint_family} checkpoints")
    if model.family != family:
        wanted = FAMILY_LABELS[family]
        raise ControlModelError(
            f"{model.label} is for {FAMILY_LABELS[model.family]}; the loaded checkpoint is {wanted}. "
            f"Choose an {wanted} {KIND_LABELS[model.kind]}.")


# --- cache ------------------------------------------------------------------------------------------------------

class ModelCache:
    """Loaded models, least recently used first out, like the extension's `control_net_model_cache_size`.
    Models are loaded onto the CPU; a job moves a model to its device and back. Keyed by file, file state and
    dtype, so a replaced file is read again."""

    def __init__(self, size: int = 2):
        self._size = max(0, int(size))
        self._models: OrderedDict[tuple, ControlModel] = OrderedDict()
        self._lock = threading.RLock()

    @property
    def size(self) -> int:
        return self._size

    def names(self) -> list[str]:
        """Titles of the cached models, least recently used first."""
        with self._lock:
            return [model.info.title for model in self._models.values()]

    def get(self, info: ControlModelInfo, base_unet_config: dict | None = None,
            dtype: torch.dtype = torch.float32, base_unet: torch.nn.Module | None = None) -> ControlModel:
        """The cached model, or a freshly loaded one (then cached). `base_unet_config` is checked every time;
        `base_unet` is what a control-LoRA is merged into (a cached one made from another UNet is merged again)."""
        stat = os.stat(_weights_file(info.path))
        key = (os.path.abspath(info.path), stat.st_mtime_ns, stat.st_size, dtype)
        with self._lock:
            model = self._models.get(key)
            if model is not None and model.kind == "control_lora" and model.base_unet_id != id(base_unet):
                model = None
            if model is not None:
                self._models.move_to_end(key)
            else:
                model = load(info, None, dtype, base_unet=base_unet)
                if self._size:
                    self._models[key] = model
                    self._models.move_to_end(key)
                    self._evict()
        if base_unet_config is not None:
            check_base_unet(model, base_unet_config)
        return model

    def resize(self, size: int) -> None:
        """Change how many models are kept; the least recently used go first."""
        with self._lock:
            self._size = max(0, int(size))
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def _evict(self) -> None:
        while len(self._models) > self._size:
            self._models.popitem(last=False)
