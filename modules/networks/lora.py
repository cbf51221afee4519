"""LoRA and LyCORIS networks, applied by patching model weights in place: exact and reversible.

A1111 (extensions-builtin/Lora) merges each network's delta weight into the layer weights rather than running extra
layers in the forward pass; this module does the same on our diffusers UNet and transformers CLIP text encoders,
without peft. For every layer a file targets we compute `multiplier * delta` in float32, add it to the layer's
weight (cast back to the layer's dtype) and keep a copy of the ORIGINAL weight, so `restore()` puts the model back
bit for bit.

File formats (keys `<layer>.<part>`):
- LoRA / LoCon: `lora_down.weight`, `lora_up.weight`, optional `lora_mid.weight` (Tucker), `alpha`;
  delta = up @ down * alpha / rank. DoRA adds `dora_scale` (A1111's weight decomposition).
- LoHa: `hada_w1_a/b`, `hada_w2_a/b`, optional `hada_t1/t2`; delta = (w1a @ w1b) * (w2a @ w2b) * alpha / rank.
- LoKr: `lokr_w1` or `lokr_w1_a/b`, `lokr_w2` or `lokr_w2_a/b`, optional `lokr_t2`; delta = kron(w1, w2).
- IA3: `weight`, `on_input`; full diff: `diff` (+ `diff_b` for the bias); norm layers: `w_norm`, `b_norm`.
- Optional `scale` overrides alpha / rank, as in A1111.

Layer names: kohya/A1111 style `lora_unet_<diffusers path, "." -> "_">`, the original (LDM) UNet names some files
use (`lora_unet_input_blocks_1_1_proj_in`, SDXL kohya files all do), `lora_te_*` (SD1/SD2 text encoder), and
`lora_te1_*` / `lora_te2_*` (SDXL CLIP-L / OpenCLIP bigG). The lookup is built from the model's own module names, and
the LDM names from the LDM <-> diffusers layout of the model's own state dict. diffusers/peft files (`unet.<path>.
lora_A.weight`, `text_encoder.<path>...`) are translated to the same form. Unknown layers are reported, never fatal.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from modules import hashes
from modules.models.ldm_layout import unet_to_ldm
from modules.models.safe_load import SAFETENSORS_SUFFIX, load_state_dict, read_safetensors_metadata
from modules.networks.file_cache import FileCache

log = logging.getLogger("webui")

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")
DEFAULT_CACHE_SIZE = 8          # parsed files kept in memory (A1111's "lora_in_memory_limit")
SHORTHASH_LENGTH = 12           # A1111's Lora hashes infotext length
REPORTED_NAMES = 5              # how many unmatched layer names a warning lists

# Incremented each time a LoRA file is read from disk; tests use it to check the parsed-file cache.
read_count = 0

# ---------------------------------------------------------------------------------------------------------------------
# Key parsing: every supported file key becomes (layer key in kohya form, network part)
# ---------------------------------------------------------------------------------------------------------------------

# Parts understood per network kind; "alpha", "scale", "dora_scale" and the bias parts go with any kind.
_KIND_PARTS: dict[str, frozenset[str]] = {
    "lora": frozenset({"lora_up.weight", "lora_down.weight", "lora_mid.weight"}),
    "loha": frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"}),
    "ia3": frozenset({"weight", "on_input"}),
    "lokr": frozenset({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"}),
    "full": frozenset({"diff"}),
    "norm": frozenset({"w_norm"}),
}
_COMMON_PARTS = frozenset({"alpha", "scale", "dora_scale", "diff_b", "b_norm"})
_BIAS_PARTS = ("diff_b", "b_norm")

# diffusers / peft files: component prefix -> kohya prefix, and their part spellings -> kohya parts.
_DIFFUSERS_PREFIXES = {"unet.": "lora_unet_", "text_encoder.": "lora_te1_", "text_encoder_2.": "lora_te2_"}
_DIFFUSERS_PARTS = {
    "lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight",
    "lora.down.weight": "lora_down.weight", "lora.up.weight": "lora_up.weight",
    "lora_linear_layer.down.weight": "lora_down.weight", "lora_linear_layer.up.weight": "lora_up.weight",
    "lora_down.weight": "lora_down.weight", "lora_up.weight": "lora_up.weight", "alpha": "alpha",
}
# Old diffusers attention-processor LoRA files: `attn1.processor.to_q_lora.down.weight`.
_DIFFUSERS_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)_lora\.")


def split_key(key: str) -> tuple[str, str] | None:
    """`lora_unet_x_y.lora_down.weight` -> ("lora_unet_x_y", "lora_down.weight"); diffusers/peft keys are translated
    to the same form. None for a key of no known layout."""
    for prefix, kohya_prefix in _DIFFUSERS_PREFIXES.items():
        if not key.startswith(prefix):
            continue
        path = _DIFFUSERS_PROCESSOR.sub(lambda m: "." + ("to_out.0" if m[1] == "to_out" else m[1]) + ".lora.", key)
        path = path[len(prefix):]
        for part in sorted(_DIFFUSERS_PARTS, key=len, reverse=True):
            if path.endswith("." + part):
                module = path[: -len(part) - 1]
                return kohya_prefix + module.replace(".", "_"), _DIFFUSERS_PARTS[part]
        return None
    if key.startswith("lora_") and "." in key:
        layer, part = key.split(".", 1)
        return layer, part
    return None


def network_kind(parts: Iterable[str]) -> str | None:
    """Which network type a layer's parts make (A1111's module-type order), None if none fits."""
    names = set(parts)
    if {"lora_up.weight", "lora_down.weight"} <= names:
        return "lora"
    if {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"} <= names:
        return "loha"
    if {"weight", "on_input"} <= names:
        return "ia3"
    has_w1 = "lokr_w1" in names or {"lokr_w1_a", "lokr_w1_b"} <= names
    has_w2 = "lokr_w2" in names or {"lokr_w2_a", "lokr_w2_b"} <= names
    if has_w1 and has_w2:
        return "lokr"
    if "diff" in names or "diff_b" in names:
        return "full"
    if "w_norm" in names or "b_norm" in names:
        return "norm"
    return None


@dataclass
class NetworkLayer:
    """One target layer's tensors in a file, as stored (dtype and device of the file)."""

    key: str                                   # kohya-form layer key, e.g. lora_unet_down_blocks_0_..._to_q
    kind: str                                  # "lora", "loha", "lokr", "ia3", "full" or "norm"
    parts: dict[str, Tensor]

    @property
    def ignored_parts(self) -> list[str]:
        """Parts present in the file that this kind does not use (reported, not applied)."""
        known = _KIND_PARTS[self.kind] | _COMMON_PARTS
        return sorted(p for p in self.parts if p not in known)


# ---------------------------------------------------------------------------------------------------------------------
# Delta weights (float32, shaped like the target weight)
# ---------------------------------------------------------------------------------------------------------------------

class LayerShapeError(ValueError):
    """A layer's delta does not fit the model layer it names (a LoRA for another architecture)."""


def _rebuild_cp(core: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """LyCORIS CP/Tucker rebuild: core [r, r, kh, kw], a [r, out], b [r, in] -> [out, in, kh, kw]."""
    temp = torch.einsum("i j k l, j r -> i r k l", core, b)
    return torch.einsum("i j k l, i r -> r j k l", temp, a)


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def _lora_delta(p: Mapping[str, Tensor]) -> tuple[Tensor, int]:
    up, down = p["lora_up.weight"], p["lora_down.weight"]
    rank = down.shape[0]
    mid = p.get("lora_mid.weight")
    if mid is not None:  # Tucker: up [out, r, 1, 1], mid [r, r, kh, kw], down [r, in, 1, 1]
        return torch.einsum("n m k l, i n, m j -> i j k l", mid, _flat(up), _flat(down)), rank
    delta = _flat(up) @ _flat(down)
    if down.ndim == 4:  # LoCon: down [r, in, kh, kw] (the kernel), up [out, r, 1, 1]
        delta = delta.reshape(up.shape[0], *down.shape[1:])
    return delta, rank


def _loha_delta(p: Mapping[str, Tensor]) -> tuple[Tensor, int]:
    w1a, w1b, w2a, w2b = p["hada_w1_a"], p["hada_w1_b"], p["hada_w2_a"], p["hada_w2_b"]
    t1, t2 = p.get("hada_t1"), p.get("hada_t2")
    rank = w1b.shape[0]
    if t1 is not None:
        shape = [w1a.shape[1], w1b.shape[1], *t1.shape[2:]]
        first = _rebuild_cp(t1, w1a, w1b)
    else:
        shape = [w1a.shape[0], w1b.shape[1], *w1b.shape[2:]]
        first = (_flat(w1a) @ _flat(w1b)).reshape(shape)
    second = _rebuild_cp(t2, w2a, w2b) if t2 is not None else (_flat(w2a) @ _flat(w2b)).reshape(shape)
    return first * second, rank


def _lokr_delta(p: Mapping[str, Tensor], weight_shape: torch.Size) -> tuple[Tensor, int | None]:
    # A1111: the rank for alpha / rank comes from w2b, else w1b; fully stored factors mean scale 1.
    rank = None
    if "lokr_w1" in p:
        w1 = p["lokr_w1"]
    else:
        w1 = p["lokr_w1_a"] @ p["lokr_w1_b"]
        rank = p["lokr_w1_b"].shape[0]
    if "lokr_w2" in p:
        w2 = p["lokr_w2"]
    else:
        w2a, w2b = p["lokr_w2_a"], p["lokr_w2_b"]
        w2 = _rebuild_cp(p["lokr_t2"], w2a, w2b) if "lokr_t2" in p else _flat(w2a) @ _flat(w2b)
        rank = w2b.shape[0]
    if w2.ndim == 4:
        w1 = w1[:, :, None, None]
    delta = torch.kron(w1, w2.contiguous())
    if len(weight_shape) == 4 and delta.numel() == weight_shape.numel():
        delta = delta.reshape(weight_shape)
    return delta, rank


def _ia3_delta(p: Mapping[str, Tensor], weight: Tensor) -> Tensor:
    scale = p["weight"]
    on_input = bool(p["on_input"].item())
    # IA3 scales rows (outputs) or columns (inputs) of the weight by a learned vector.
    return weight * (scale.reshape(1, -1) if on_input else scale.reshape(-1, 1))


def _fit(delta: Tensor, shape: torch.Size, key: str) -> Tensor:
    """Reshape a delta to the weight's shape (Linear <-> 1x1 conv); pad the input channels of an inpainting
    model's conv_in (a 4-channel LoRA on 9 channels, as A1111 does)."""
    if delta.shape == shape:
        return delta
    if delta.numel() == shape.numel():
        return delta.reshape(shape)
    if (len(shape) == 4 and delta.ndim == 4 and delta.shape[0] == shape[0] and delta.shape[2:] == shape[2:]
            and delta.shape[1] < shape[1]):
        return torch.nn.functional.pad(delta, (0, 0, 0, 0, 0, shape[1] - delta.shape[1]))
    raise LayerShapeError(f"{key}: delta of shape {tuple(delta.shape)} does not fit weight {tuple(shape)}")


def _weight_decompose(delta: Tensor, weight: Tensor, dora_scale: Tensor) -> Tensor:
    """DoRA (A1111 network.py): rescale the merged weight so its norms equal `dora_scale`; return the new delta.

    LyCORIS stores the magnitude per input column ([1, in, ...], A1111's convention) or, in newer files, per output
    row ([out, 1, ...]); the stored shape says which."""
    merged = weight + delta
    out_dim, in_dim = merged.shape[0], merged.shape[1]
    trailing = [1] * (merged.ndim - 1)
    per_output = dora_scale.shape[0] == out_dim and dora_scale.numel() == out_dim and not (
        dora_scale.ndim >= 2 and dora_scale.shape[0] == 1)
    if per_output:
        norm = merged.reshape(out_dim, -1).norm(dim=1, keepdim=True).reshape(out_dim, *trailing)
        scale = dora_scale.reshape(out_dim, *trailing)
    else:
        norm = (merged.transpose(0, 1).reshape(in_dim, -1).norm(dim=1, keepdim=True)
                .reshape(in_dim, *trailing).transpose(0, 1))
        scale = dora_scale.reshape(1, in_dim, *trailing[1:])
    return merged * (scale / norm) - weight


def layer_delta(layer: NetworkLayer, weight: Tensor, multiplier: float) -> tuple[Tensor | None, Tensor | None]:
    """(weight delta, bias delta) in float32 on the weight's device, multiplier applied.

    `weight` is the layer's current weight in float32 (DoRA and IA3 depend on it). The order follows A1111's
    finalize_updown: reshape, times alpha/rank (or `scale`), DoRA, times the multiplier; bias deltas only take the
    multiplier."""
    p = {k: v.to(device=weight.device, dtype=torch.float32) for k, v in layer.parts.items()}
    rank: int | None = None
    delta: Tensor | None
    if layer.kind == "lora":
        delta, rank = _lora_delta(p)
    elif layer.kind == "loha":
        delta, rank = _loha_delta(p)
    elif layer.kind == "lokr":
        delta, rank = _lokr_delta(p, weight.shape)
    elif layer.kind == "ia3":
        delta = _ia3_delta(p, weight)
    elif layer.kind == "full":
        delta = p.get("diff")
    else:  # norm
        delta = p.get("w_norm")

    bias = next((p[name] for name in _BIAS_PARTS if name in p), None)
    if delta is not None:
        delta = _fit(delta, weight.shape, layer.key)
        if "scale" in p:
            delta = delta * p["scale"].item()
        elif rank is not None and "alpha" in p:
            delta = delta * (p["alpha"].item() / rank)
        if "dora_scale" in p:
            delta = _weight_decompose(delta, weight, p["dora_scale"])
        delta = delta * multiplier
    if bias is not None:
        bias = bias.reshape(-1) * multiplier
    return delta, bias


# ---------------------------------------------------------------------------------------------------------------------
# Files and their cache
# ---------------------------------------------------------------------------------------------------------------------

class LoraFile:
    """A parsed LoRA/LyCORIS file: its layers grouped by target, metadata and hash. Model-independent."""

    def __init__(self, path: str | os.PathLike, tensors: Mapping[str, Tensor],
                 metadata: Mapping[str, str] | None = None, mtime: float = 0.0,
                 hash_cache_path: str | None = None) -> None:
        self.path = str(path)
        self.name = Path(self.path).stem
        self.mtime = mtime
        self.metadata: dict[str, str] = dict(metadata or {})
        self.hash_cache_path = hash_cache_path
        self._shorthash: str | None = None
        self.layers: dict[str, NetworkLayer] = {}
        self.unsupported: dict[str, list[str]] = {}   # layer key -> its parts, for layers of no known type
        self.unparsed_keys: list[str] = []            # keys of no known layout
        grouped: dict[str, dict[str, Tensor]] = {}
        for key, tensor in tensors.items():
            split = split_key(key)
            if split is None:
                self.unparsed_keys.append(key)
                continue
            layer, part = split
            grouped.setdefault(layer, {})[part] = tensor
        for layer, parts in grouped.items():
            kind = network_kind(parts)
            if kind is None:
                self.unsupported[layer] = sorted(parts)
            else:
                self.layers[layer] = NetworkLayer(layer, kind, parts)

    @property
    def alias(self) -> str:
        """A1111: the training output name from the metadata, else the file name."""
        return self.metadata.get("ss_output_name") or self.name

    @property
    def cache_key(self) -> tuple[str, float]:
        return self.path, self.mtime

    @property
    def shorthash(self) -> str:
        """A1111's `Lora hashes` value: metadata `sshs_model_hash`, else the addnet hash of a .safetensors file
        (sha256 after the header), else the file's sha256; first 12 characters."""
        if self._shorthash is None:
            value = self.metadata.get("sshs_model_hash")
            if not value:
                if self.path.lower().endswith(SAFETENSORS_SUFFIX):
                    value = hashes.addnet_hash_safetensors(self.path, self.hash_cache_path)
                else:
                    value = hashes.file_sha256(self.path, self.hash_cache_path, title=f"lora/{self.name}")
            self._shorthash = value[:SHORTHASH_LENGTH]
        return self._shorthash

    def __repr__(self) -> str:
        return f"LoraFile({self.name!r}, layers={len(self.layers)})"


def sd_version(metadata: Mapping[str, str]) -> str:
    """A1111's guess of the base model from kohya metadata: "SDXL", "SD2", "SD1" or "Unknown"."""
    if str(metadata.get("ss_base_model_version", "")).startswith("sdxl_"):
        return "SDXL"
    if str(metadata.get("ss_v2", "")) == "True":
        return "SD2"
    return "SD1" if metadata else "Unknown"


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Metadata of a LoRA file ({} for pickles), without the embedded cover images A1111 also drops."""
    if not str(path).lower().endswith(SAFETENSORS_SUFFIX):
        return {}
    metadata = read_safetensors_metadata(path)
    metadata.pop("ssmd_cover_images", None)
    return metadata


def _parse_lora(path: str, stat: os.stat_result, hash_cache_path: str | None) -> LoraFile:
    global read_count
    tensors = load_state_dict(path)
    read_count += 1
    return LoraFile(path, tensors, read_metadata(path), mtime=stat.st_mtime, hash_cache_path=hash_cache_path)


_cache: FileCache[LoraFile] = FileCache(DEFAULT_CACHE_SIZE, _parse_lora)


def load_lora_file(path: str | os.PathLike, hash_cache_path: str | None = None) -> LoraFile:
    """The parsed file, from the in-memory cache while the file is unchanged. Raises CheckpointLoadError."""
    return _cache.get(str(Path(path).resolve()), hash_cache_path)


def clear_cache() -> None:
    _cache.clear()


# ---------------------------------------------------------------------------------------------------------------------
# Model layer lookup
# ---------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A model layer a network key resolves to."""

    component: str          # "unet" or "te"
    index: int              # text encoder index (0 for the UNet)
    name: str               # module path inside the component
    module: torch.nn.Module

    @property
    def id(self) -> str:
        return f"{self.component}{self.index}:{self.name}"


def _underscored(name: str) -> str:
    return name.replace(".", "_")


def _ldm_module_names(unet: torch.nn.Module) -> dict[str, str]:
    """Original (LDM) module path -> diffusers module path, from the UNet's own state dict."""
    state = unet.state_dict()
    try:
        converted = unet_to_ldm(state, unet.config)
    except (ValueError, KeyError, AttributeError) as e:
        log.warning("LoRA: no original-layout UNet names for this model (%s); only diffusers names will match", e)
        return {}
    if len(converted) != len(state):
        log.warning("LoRA: original-layout UNet names are ambiguous for this model; only diffusers names will match")
        return {}
    names: dict[str, str] = {}
    # unet_to_ldm maps key by key in order, so the two key lists pair up.
    for diffusers_key, ldm_key in zip(state, converted):
        for suffix in (".weight", ".bias"):
            if diffusers_key.endswith(suffix) and ldm_key.endswith(suffix):
                names[ldm_key[: -len(suffix)]] = diffusers_key[: -len(suffix)]
    return names


def _text_encoder_prefixes(family: str, count: int) -> list[list[str]]:
    """Key prefixes per text encoder. SDXL: te1 = CLIP-L, te2 = bigG (A1111 matches no plain `lora_te_` there);
    SD1/SD2 files use `lora_te_`, some `lora_te1_`; the refiner has bigG alone."""
    if family == "sdxl-refiner":
        return [["lora_te2_"]]
    if count == 2:
        return [["lora_te1_"], ["lora_te2_"]]
    return [["lora_te_", "lora_te1_"]][:count]


def build_lookup(model: Any) -> dict[str, Target]:
    """kohya-form layer key -> model layer, for a model with `unet`, `text_encoders` and `family`."""
    lookup: dict[str, Target] = {}
    unet = model.unet
    unet_modules = dict(unet.named_modules())
    for name, module in unet_modules.items():
        if name:
            lookup["lora_unet_" + _underscored(name)] = Target("unet", 0, name, module)
    for ldm_name, diffusers_name in _ldm_module_names(unet).items():
        key = "lora_unet_" + _underscored(ldm_name)
        if key not in lookup and diffusers_name in unet_modules:
            lookup[key] = Target("unet", 0, diffusers_name, unet_modules[diffusers_name])

    encoders = list(model.text_encoders)
    family = getattr(model, "family", "sd1")
    for index, prefixes in enumerate(_text_encoder_prefixes(family, len(encoders))):
        encoder = encoders[index]
        # transformers 5's CLIPTextModel has no `text_model.` level; kohya names always include it.
        add_level = not hasattr(encoder, "text_model")
        for name, module in encoder.named_modules():
            if not name:
                continue
            kohya_name = "text_model." + name if add_level else name
            for prefix in prefixes:
                lookup.setdefault(prefix + _underscored(kohya_name), Target("te", index, name, module))
    return lookup


# ---------------------------------------------------------------------------------------------------------------------
# The patcher
# ---------------------------------------------------------------------------------------------------------------------

@dataclass
class NetworkReport:
    """What one network did to the model in the last `apply`."""

    name: str
    applied: int = 0                                             # layers patched
    unmatched: list[str] = field(default_factory=list)          # layer keys the model does not have
    unsupported: list[str] = field(default_factory=list)        # layers of an unknown network type
    failed: list[str] = field(default_factory=list)             # layers whose shapes do not fit
    ignored_parts: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Backup:
    module: torch.nn.Module
    weight: Tensor | None = None      # original weight (copied the first time the module is patched)
    bias: Tensor | None = None        # original bias, when a network changed it
    bias_created: bool = False        # the module had no bias; a network added one


@dataclass
class _Planned:
    layer: NetworkLayer
    multiplier: float
    report: NetworkReport


NetworkSpec = tuple[LoraFile, float, float]   # (file, text-encoder multiplier, UNet multiplier)


class LoraPatcher:
    """Applies a set of networks to one model's weights and restores them exactly.

    `apply(networks)` is idempotent: the same files with the same multipliers do nothing; any other set restores the
    original weights first. Backups live on `backup_device` (CPU by default, as A1111, to spare VRAM)."""

    def __init__(self, model: Any, backup_device: str | torch.device = "cpu") -> None:
        self.model = model
        self.backup_device = torch.device(backup_device)
        self._lookup: dict[str, Target] | None = None
        self._backups: dict[str, _Backup] = {}
        self._applied: tuple = ()
        self.active: list[NetworkSpec] = []
        self.reports: list[NetworkReport] = []

    @property
    def applied(self) -> tuple:
        """What is applied now: ((file path, mtime), te multiplier, unet multiplier) per network."""
        return self._applied

    @property
    def lookup(self) -> dict[str, Target]:
        if self._lookup is None:
            self._lookup = build_lookup(self.model)
        return self._lookup

    def apply(self, networks: Sequence[NetworkSpec]) -> None:
        wanted = tuple((lora.cache_key, float(te), float(unet)) for lora, te, unet in networks)
        if wanted == self._applied:
            return
        self.restore()
        self.reports = []
        planned: dict[str, tuple[Target, list[_Planned]]] = {}
        for lora, te_multiplier, unet_multiplier in networks:
            report = NetworkReport(lora.name, unsupported=sorted(lora.unsupported) + list(lora.unparsed_keys))
            self.reports.append(report)
            for key, layer in lora.layers.items():
                target = self.lookup.get(key)
                if target is None:
                    report.unmatched.append(key)
                    continue
                if layer.ignored_parts:
                    report.ignored_parts[key] = layer.ignored_parts
                multiplier = float(te_multiplier if target.component == "te" else unet_multiplier)
                if multiplier == 0.0:
                    continue
                planned.setdefault(target.id, (target, []))[1].append(_Planned(layer, multiplier, report))

        with torch.no_grad():
            for target, layers in planned.values():
                self._patch(target, layers)
        self._applied = wanted
        self.active = list(networks)
        for report in self.reports:
            self._log(report)

    def _patch(self, target: Target, layers: list[_Planned]) -> None:
        module = target.module
        weight = getattr(module, "weight", None)
        if not isinstance(weight, Tensor):
            for item in layers:
                item.report.failed.append(item.layer.key)
            return
        # Sum every network's delta in float32, then round once into the layer's dtype.
        merged = weight.detach().float()
        bias_delta: Tensor | None = None
        for item in layers:
            try:
                delta, bias = layer_delta(item.layer, merged, item.multiplier)
            except (LayerShapeError, RuntimeError) as e:
                log.debug("LoRA layer %s skipped: %s", item.layer.key, e)
                item.report.failed.append(item.layer.key)
                continue
            if delta is not None:
                merged = merged + delta
            if bias is not None:
                bias_delta = bias if bias_delta is None else bias_delta + bias
            item.report.applied += 1

        backup = self._backups.setdefault(target.id, _Backup(module))
        if backup.weight is None:
            backup.weight = weight.detach().to(self.backup_device, copy=True)
        weight.copy_(merged.to(weight.dtype))
        if bias_delta is not None:
            self._patch_bias(module, backup, bias_delta, weight)

    def _patch_bias(self, module: torch.nn.Module, backup: _Backup, delta: Tensor, weight: Tensor) -> None:
        bias = getattr(module, "bias", None)
        if bias is None:
            backup.bias_created = True
            module.bias = torch.nn.Parameter(delta.to(device=weight.device, dtype=weight.dtype), requires_grad=False)
            return
        if backup.bias is None and not backup.bias_created:
            backup.bias = bias.detach().to(self.backup_device, copy=True)
        bias.copy_((bias.detach().float() + delta.reshape(bias.shape)).to(bias.dtype))

    def restore(self) -> None:
        """Put every patched weight back exactly as it was before the first `apply`."""
        if self._backups:
            with torch.no_grad():
                for backup in self._backups.values():
                    module = backup.module
                    if backup.weight is not None:
                        module.weight.copy_(backup.weight)
                    if backup.bias_created:
                        module.bias = None
                    elif backup.bias is not None:
                        module.bias.copy_(backup.bias)
        self._backups.clear()
        self._applied = ()
        self.active = []

    def _log(self, report: NetworkReport) -> None:
        problems = report.unmatched + report.unsupported + report.failed
        if problems:
            log.warning("LoRA %s: %d layer(s) not applied (%d unknown to this model, %d of an unsupported type, "
                        "%d with mismatched shapes), e.g. %s", report.name, len(problems), len(report.unmatched),
                        len(report.unsupported), len(report.failed), ", ".join(problems[:REPORTED_NAMES]))
        if report.ignored_parts:
            parts = sorted({p for names in report.ignored_parts.values() for p in names})
            log.warning("LoRA %s: ignored unsupported parts %s in %d layer(s)", report.name, ", ".join(parts),
                        len(report.ignored_parts))


# The patcher lives in the UNet's own __dict__, not in a WeakKeyDictionary keyed by the UNet: the patcher refers to
# the model and so to the UNet, which would keep such an entry (and every model ever used) alive for good. As an
# attribute it forms a plain reference cycle that the garbage collector frees with the model.
PATCHER_ATTRIBUTE = "_webui_lora_patcher"


def patcher_for(model: Any) -> LoraPatcher:
    """The model's patcher: one per UNet, kept while the UNet lives. A new model object around the same UNet gets
    the same patcher, restored first (its backups must not be lost) and with a fresh layer lookup."""
    patcher = model.unet.__dict__.get(PATCHER_ATTRIBUTE)
    if patcher is None:
        patcher = LoraPatcher(model)
        object.__setattr__(model.unet, PATCHER_ATTRIBUTE, patcher)
    elif patcher.model is not model:
        patcher.restore()
        patcher.model = model
        patcher._lookup = None
    return patcher


# ---------------------------------------------------------------------------------------------------------------------
# Prompt tags and infotext
# ---------------------------------------------------------------------------------------------------------------------

def parse_lora_args(items: Sequence[str]) -> tuple[str, float, float]:
    """`<lora:name:te:unet>` items (after the tag name; `ExtraNetworkParams.items`) -> (name, te multiplier, unet
    multiplier), as A1111: te defaults to 1, unet to te; `te=` / `unet=` named items override; `dyn` is not
    supported and ignored. Raises ValueError on a bad number."""
    # As A1111's ExtraNetworkParams: an item with exactly one "=" is named, anything else positional.
    positional = [item for item in items if item.count("=") != 1]
    named = dict(item.split("=") for item in items if item.count("=") == 1)
    if not positional:
        raise ValueError("lora tag without a name")
    te = float(positional[1]) if len(positional) > 1 else 1.0
    te = float(named.get("te", te))
    unet = float(positional[2]) if len(positional) > 2 else te
    unet = float(named.get("unet", unet))
    return positional[0], te, unet


_INFOTEXT_REMOVED = str.maketrans("", "", ":,")


def lora_hashes_infotext(used: Sequence[tuple[str, LoraFile]]) -> str | None:
    """The `Lora hashes` infotext value: "name: hash, name2: hash2" with the names as the prompt mentioned them
    (":" and "," removed, A1111). None when nothing was used."""
    pairs: dict[str, str] = {}
    for mentioned, lora in used:
        if lora.shorthash:
            pairs[mentioned.translate(_INFOTEXT_REMOVED)] = lora.shorthash
    return ", ".join(f"{name}: {value}" for name, value in pairs.items()) or None
