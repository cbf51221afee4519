"""A1111 hypernetworks (`models/hypernetworks/*.pt`), applied through diffusers attention processors.

A hypernetwork holds, per context width (e.g. 768), two small residual MLPs: one transforms the attention context
before `to_k`, the other before `to_v` (`context_k = x + mlp_k(x) * multiplier`). A1111 applies them in every
attention layer of the UNet whose context width has modules: its attention forward does `context = default(context,
x)` first, so cross-attention (text context) and, when the file has modules for the block widths (A1111's default
sizes 320/640/1280 do), self-attention are both transformed. We do the same with an attention processor that
computes diffusers' AttnProcessor2_0 with separate key/value contexts; layers the hypernetworks do not cover keep
their original processor. No model code is patched: `HypernetworkPatcher.restore()` sets the original processors back.

File layout (torch.save of a dict): `{768: [state dict of the k module, state dict of the v module], ...,
"layer_structure": [1, 2, 1], "activation_func": "relu", "is_layer_norm": False, "use_dropout": False,
"dropout_structure": [...], "activate_output": False, "last_layer_dropout": False, "weight_initialization": ...,
"name": ..., "step": ..., "sd_checkpoint": ..., "sd_checkpoint_name": ...}`. It is read with torch's restricted
unpickler only (`weights_only=True`), so a crafted file cannot run code.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from modules import hashes
from modules.models.safe_load import CheckpointLoadError, load_pickle
from modules.networks.file_cache import FileCache

log = logging.getLogger("webui")

HYPERNETWORK_SUFFIXES = (".pt",)
DEFAULT_CACHE_SIZE = 4
SHORTHASH_LENGTH = 10     # A1111's Hypernetwork.shorthash()

# Incremented each time a hypernetwork file is read from disk (tests check the cache with it).
read_count = 0

# A1111's activation names, including every torch.nn activation class by its lower-cased name.
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "linear": torch.nn.Identity,
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,   # sic: A1111 maps "swish" to Hardswish
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
}
ACTIVATIONS.update({name.lower(): cls for name, cls in inspect.getmembers(torch.nn.modules.activation, inspect.isclass)
                    if cls.__module__ == "torch.nn.modules.activation"})

# Very old files named their two linear layers linear1/linear2.
_OLD_KEYS = {"linear1.bias": "linear.0.bias", "linear1.weight": "linear.0.weight",
             "linear2.bias": "linear.1.bias", "linear2.weight": "linear.1.weight"}


def dropout_structure_for(layer_structure: Sequence[float], use_dropout: bool, last_layer_dropout: bool
                          ) -> list[float]:
    """A1111's parse_dropout_structure: dropout after the hidden layers, optionally after the last hidden one."""
    if not use_dropout:
        return [0.0] * len(layer_structure)
    values = [0.0] + [0.3] * (len(layer_structure) - 3)
    values.append(0.3 if last_layer_dropout else 0.0)
    values.append(0.0)
    return values


class HypernetworkModule(torch.nn.Module):
    """One residual MLP, laid out exactly as A1111's (its `linear.N` indices must match the file's state dict):
    Linear(dim*ls[i] -> dim*ls[i+1]), then the activation (not after the last layer unless activate_output), then
    LayerNorm if enabled, then Dropout where the dropout structure says. Dropout layers are kept for the indices;
    the module runs in eval mode."""

    def __init__(self, dim: int, layer_structure: Sequence[float], activation_func: str | None = None,
                 add_layer_norm: bool = False, activate_output: bool = False,
                 dropout_structure: Sequence[float] | None = None) -> None:
        super().__init__()
        if layer_structure[0] != 1 or layer_structure[-1] != 1:
            raise ValueError(f"layer structure must start and end with 1, got {list(layer_structure)}")
        layers: list[torch.nn.Module] = []
        last = len(layer_structure) - 2
        for i in range(len(layer_structure) - 1):
            width = int(dim * layer_structure[i + 1])
            layers.append(torch.nn.Linear(int(dim * layer_structure[i]), width))
            if activation_func not in (None, "linear") and (i < last or activate_output):
                activation = ACTIVATIONS.get(activation_func)
                if activation is None:
                    raise ValueError(f"unsupported activation function {activation_func!r}")
                layers.append(activation())
            if add_layer_norm:
                layers.append(torch.nn.LayerNorm(width))
            if dropout_structure is not None and dropout_structure[i + 1] > 0:
                layers.append(torch.nn.Dropout(p=float(dropout_structure[i + 1])))
        self.linear = torch.nn.Sequential(*layers)

    def load_weights(self, state_dict: Mapping[str, Tensor]) -> None:
        fixed = {_OLD_KEYS.get(k, k): v for k, v in state_dict.items()}
        self.load_state_dict(fixed)

    def forward(self, x: Tensor, multiplier: float = 1.0) -> Tensor:
        return x + self.linear(x) * multiplier


def _hn_param(loaded: Mapping[Any, Any], key: str, default: Any) -> Any:
    value = loaded.get(key, default)
    return default if value is None and default is not None else value


class Hypernetwork:
    """A loaded hypernetwork: {context width: (k module, v module)} plus A1111's settings from the file."""

    def __init__(self, path: str | os.PathLike, loaded: Mapping[Any, Any], mtime: float = 0.0,
                 hash_cache_path: str | None = None) -> None:
        self.path = str(path)
        self.mtime = mtime
        self.hash_cache_path = hash_cache_path
        self._sha256: str | None = None
        self.name = str(loaded.get("name") or Path(self.path).stem)
        self.layer_structure = list(_hn_param(loaded, "layer_structure", [1, 2, 1]))
        self.activation_func: str | None = loaded.get("activation_func")
        self.weight_init = _hn_param(loaded, "weight_initialization", "Normal")
        self.add_layer_norm = bool(loaded.get("is_layer_norm", False))
        self.dropout_structure = loaded.get("dropout_structure")
        self.use_dropout = (True if self.dropout_structure is not None and any(self.dropout_structure)
                            else bool(loaded.get("use_dropout", False)))
        self.activate_output = bool(_hn_param(loaded, "activate_output", True))
        self.last_layer_dropout = bool(loaded.get("last_layer_dropout", False))
        if self.dropout_structure is None:
            self.dropout_structure = dropout_structure_for(self.layer_structure, self.use_dropout,
                                                           self.last_layer_dropout)
        self.step = loaded.get("step", 0)
        self.sd_checkpoint = loaded.get("sd_checkpoint")
        self.sd_checkpoint_name = loaded.get("sd_checkpoint_name")
        self.layers: dict[int, tuple[HypernetworkModule, HypernetworkModule]] = {}
        for size, pair in loaded.items():
            if type(size) is not int:  # A1111's test: exactly int, so bools and strings are settings
                continue
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"size {size}: expected a pair of state dicts")
            modules = []
            for state in pair:
                module = HypernetworkModule(size, self.layer_structure, self.activation_func, self.add_layer_norm,
                                            self.activate_output, self.dropout_structure)
                module.load_weights(state)
                module.requires_grad_(False)
                modules.append(module.eval())
            self.layers[size] = (modules[0], modules[1])

    @property
    def sizes(self) -> list[int]:
        return sorted(self.layers)

    @property
    def cache_key(self) -> tuple[str, float]:
        return self.path, self.mtime

    @property
    def shorthash(self) -> str:
        """sha256 of the file, first 10 characters (A1111's Hypernetwork.shorthash)."""
        if self._sha256 is None:
            self._sha256 = hashes.file_sha256(self.path, self.hash_cache_path, title=f"hypernet/{self.name}")
        return self._sha256[:SHORTHASH_LENGTH]

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Hypernetwork:
        for pair in self.layers.values():
            for module in pair:
                module.to(device=device, dtype=dtype)
        return self

    def transform(self, context_k: Tensor, context_v: Tensor, multiplier: float) -> tuple[Tensor, Tensor]:
        """Apply this hypernetwork's modules for the context width, in float32 as A1111 (cond_cast_float)."""
        pair = self.layers.get(context_k.shape[-1])
        if pair is None:
            return context_k, context_v
        k = pair[0](context_k.float(), multiplier).to(context_k.dtype)
        v = pair[1](context_v.float(), multiplier).to(context_v.dtype)
        return k, v

    def __repr__(self) -> str:
        return f"Hypernetwork({self.name!r}, sizes={self.sizes})"


def read_hypernetwork_file(path: str | os.PathLike) -> dict[Any, Any]:
    """The file's dict, through the restricted unpickler. Raises CheckpointLoadError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointLoadError(f"{path}: file not found")
    loaded = load_pickle(path, "hypernetwork")
    if not isinstance(loaded, dict):
        raise CheckpointLoadError(f"{path.name}: not a hypernetwork (no dict inside)")
    return loaded


def _parse_hypernetwork(path: str, stat: os.stat_result, hash_cache_path: str | None) -> Hypernetwork:
    global read_count
    loaded = read_hypernetwork_file(path)
    read_count += 1
    try:
        return Hypernetwork(path, loaded, mtime=stat.st_mtime, hash_cache_path=hash_cache_path)
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise CheckpointLoadError(f"{Path(path).name}: not a usable hypernetwork ({e})") from e


_cache: FileCache[Hypernetwork] = FileCache(DEFAULT_CACHE_SIZE, _parse_hypernetwork)


def load_hypernetwork(path: str | os.PathLike, hash_cache_path: str | None = None) -> Hypernetwork:
    """The loaded hypernetwork, from the in-memory cache while the file is unchanged. Raises CheckpointLoadError."""
    return _cache.get(str(Path(path).resolve()), hash_cache_path)


def clear_cache() -> None:
    _cache.clear()


class HypernetworkAttnProcessor:
    """diffusers' AttnProcessor2_0 with the key computed from `context_k` and the value from `context_v`.

    `original` (the processor this one replaced) handles calls no hypernetwork covers, so layers of other widths
    behave exactly as before."""

    def __init__(self, original: Any, hypernetworks: Sequence[tuple[Hypernetwork, float]]) -> None:
        self.original = original
        self.hypernetworks = list(hypernetworks)
        self.sizes = {size for hypernetwork, _ in self.hypernetworks for size in hypernetwork.layers}

    def __call__(self, attn: Any, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, *args: Any, **kwargs: Any
                 ) -> Tensor:
        width = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape[-1]
        if width not in self.sizes or hidden_states.ndim != 3 or attn.spatial_norm is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)

        residual = hidden_states
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        # A1111 apply_hypernetworks: each hypernetwork transforms the previous one's k and v contexts.
        context_k = context_v = encoder_hidden_states
        for hypernetwork, multiplier in self.hypernetworks:
            context_k, context_v = hypernetwork.transform(context_k, context_v, multiplier)
        key = attn.to_k(context_k)
        value = attn.to_v(context_v)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                       is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class HypernetworkPatcher:
    """Installs hypernetwork attention processors on one model's UNet and puts the original ones back.

    `apply` with the same hypernetworks and multipliers does nothing; another set restores first. An empty list
    is the same as `restore()`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.unet = model.unet
        self._originals: dict[str, Any] | None = None
        self._applied: tuple = ()
        self.active: list[tuple[Hypernetwork, float]] = []

    def apply(self, hypernetworks: Sequence[tuple[Hypernetwork, float]]) -> None:
        wanted = tuple((hypernetwork.cache_key, float(multiplier)) for hypernetwork, multiplier in hypernetworks)
        if wanted == self._applied:
            return
        self.restore()
        if not hypernetworks:
            return
        device = next(self.unet.parameters()).device
        for hypernetwork, _ in hypernetworks:
            hypernetwork.to(device)
        originals = dict(self.unet.attn_processors)
        widths = self._context_widths(originals)
        sizes = {size for hypernetwork, _ in hypernetworks for size in hypernetwork.layers}
        if not sizes & set(widths.values()):
            log.warning("Hypernetwork %s: no attention layer of this model has a context width of %s (model: %s)",
                        ", ".join(h.name for h, _ in hypernetworks), sorted(sizes), sorted(set(widths.values())))
        pairs = [(h, float(m)) for h, m in hypernetworks]
        replaced = {name: HypernetworkAttnProcessor(processor, pairs) if widths.get(name) in sizes else processor
                    for name, processor in originals.items()}
        self.unet.set_attn_processor(replaced)
        self._originals = originals
        self._applied = wanted
        self.active = list(hypernetworks)

    def _context_widths(self, processors: Mapping[str, Any]) -> dict[str, int]:
        """Processor name -> the width of the context its layer's to_k reads: the text-context width for
        cross-attention, the block width for self-attention (A1111 transforms both when the sizes match)."""
        widths: dict[str, int] = {}
        for name in processors:
            attention = self.unet.get_submodule(name.removesuffix(".processor"))
            to_k = getattr(attention, "to_k", None)
            if isinstance(to_k, torch.nn.Linear):
                widths[name] = to_k.in_features
        return widths

    def restore(self) -> None:
        """Set the processors back to those before `apply` (the same objects)."""
        if self._originals is not None:
            self.unet.set_attn_processor(self._originals)
        self._originals = None
        self._applied = ()
        self.active = []


PATCHER_ATTRIBUTE = "_webui_hypernetwork_patcher"  # on the UNet itself, as lora.PATCHER_ATTRIBUTE (why: there)


def patcher_for(model: Any) -> HypernetworkPatcher:
    """The model's hypernetwork patcher: one per UNet, kept while the UNet lives (a new model object around the
    same UNet gets the same patcher, so the original processors are never lost)."""
    patcher = model.unet.__dict__.get(PATCHER_ATTRIBUTE)
    if patcher is None:
        patcher = HypernetworkPatcher(model)
        object.__setattr__(model.unet, PATCHER_ATTRIBUTE, patcher)
    patcher.model = model
    return patcher


def parse_hypernet_args(items: Sequence[str]) -> tuple[str, float]:
    """`<hypernet:name:multiplier>` items -> (name, multiplier); the multiplier defaults to 1 (A1111)."""
    if not items:
        raise ValueError("hypernet tag without a name")
    return items[0], float(items[1]) if len(items) > 1 else 1.0
