"""What a ControlNet / T2I-Adapter file is, from its keys and tensor shapes, and how to build its diffusers module.

Files come in several layouts, none of which carries a config:
- ControlNet, original (lllyasviel, the A1111 extension): `control_model.input_blocks…`, `zero_convs…`,
  `input_hint_block…`, `middle_block_out…`; thibaud's SD2.1 files have the same keys without `control_model.`;
  SDXL ones add `label_emb`.
- ControlNet, diffusers: `controlnet_cond_embedding.conv_in.weight`, `controlnet_down_blocks.N`, `down_blocks…`.
- T2I-Adapter, original (TencentARC): full `conv_in` + `body.N.block1/block2/in_conv` (the blocks of all levels
  numbered in one run), light `body.N.in_conv/out_conv/body.M.block1`; SDXL's full adapter has a 16x pixel
  unshuffle (conv_in sees 256 x input channels instead of 64 x). Sometimes under an `adapter.` prefix.
- T2I-Adapter, diffusers: `adapter.conv_in`, `adapter.body.N.resnets.M…`.
- Stability's control-LoRA: a `lora_controlnet` marker and `*.up`/`*.down` low-rank pairs.

The config is rebuilt from shapes; what shapes cannot tell (head counts, activations) follows the family's
convention and its shipped UNet config (configs/<family>/unet), as the checkpoint loader does.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping

import torch
from accelerate import init_empty_weights
from diffusers import ControlNetModel, T2IAdapter
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

from modules.models.architecture import HEAD_DIM, family_config
from modules.models.ldm_layout import unet_to_ldm

CONTROL_MODEL_PREFIX = "control_model."
ADAPTER_PREFIX = "adapter."
CONTROL_LORA_MARKER = "lora_controlnet"
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
KIND_LABELS = {"controlnet": "ControlNet", "t2i_adapter": "T2I-Adapter", "control_lora": "control-LoRA"}
# Context widths of the real text encoders; tiny test models use other widths and are told apart by features.
CONTEXT_DIM_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
# PixelUnshuffle factors of the adapters: SD1's adapters see 8x8 pixel blocks, SDXL's full adapter 16x16.
ADAPTER_UNSHUFFLE = 8
ADAPTER_XL_UNSHUFFLE = 16


class ControlModelError(ValueError):
    """A control model file cannot be used; the message is meant for the user."""


def _numbers(keys: list[str], prefix: str) -> list[int]:
    """Sorted distinct N of keys `<prefix>N.…`."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def _strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys under `prefix` without it, when any key has it; else the dict unchanged."""
    if not any(k.startswith(prefix) for k in state_dict):
        return dict(state_dict)
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


# --- layouts ----------------------------------------------------------------------------------------------------

def _layout(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """(layout, state dict with the layout's outer prefix removed). Raises ControlModelError for anything else."""
    if CONTROL_LORA_MARKER in state_dict:
        return "control_lora", dict(state_dict)
    controlnet = _strip_prefix(state_dict, CONTROL_MODEL_PREFIX)
    if "input_hint_block.0.weight" in controlnet:
        if "difference" in controlnet:
            raise ControlModelError("this is a \"difference\" ControlNet (weights stored relative to a base model); "
                                    "these are not supported: use the full ControlNet file")
        return "controlnet_original", controlnet
    if "controlnet_cond_embedding.conv_in.weight" in state_dict:
        if any(k.startswith(("task_embedding", "control_add_embedding")) for k in state_dict):
            raise ControlModelError("this is a ControlNet-Union model; these are not supported yet")
        return "controlnet_diffusers", dict(state_dict)
    adapter = _strip_prefix(state_dict, ADAPTER_PREFIX)
    if "body.0.resnets.0.block1.weight" in adapter:
        return ("adapter_light_diffusers" if "body.0.out_conv.weight" in adapter else "adapter_full_diffusers"), adapter
    if "conv_in.weight" in adapter and "body.0.block1.weight" in adapter:
        return "adapter_full_original", adapter
    if "body.0.in_conv.weight" in adapter and "body.0.body.0.block1.weight" in adapter:
        return "adapter_light_original", adapter
    raise ControlModelError(_what_it_is_instead(state_dict))


def _what_it_is_instead(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The message for a file that is no ControlNet or T2I-Adapter: what it looks like and where it belongs."""
    keys = list(state_dict)

    def has(*fragments: str) -> bool:
        return any(f in k for k in keys for f in fragments)

    if not keys:
        return "the file holds no tensors"
    if "style_embedding" in state_dict:
        return "this is a T2I style adapter (CLIP-vision based); these are not supported yet"
    if has("lllite"):
        return "this is a kohya ControlNet-LLLite model; these are not supported yet"
    if has("ip_adapter", "image_proj."):
        return "this is an IP-Adapter; these are not supported yet"
    if has("motion_modules"):
        return "this is an AnimateDiff / SparseCtrl model, not a ControlNet"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "this is a Stable Diffusion checkpoint, not a ControlNet: put it in models/Stable-diffusion"
    if has("lora_unet_", "lora_te", ".lora_down.", ".lora_up.", ".lora_A.", ".hada_w1", ".lokr_w1"):
        return "this is a LoRA, not a ControlNet: put it in models/Lora"
    if any(k.startswith(("encoder.", "first_stage_model.")) for k in keys) and has("decoder."):
        return "this is a VAE, not a ControlNet: put it in models/VAE"
    if has("string_to_param", "emb_params", "clip_l", "clip_g") and len(keys) <= 4:
        return "this is a textual-inversion embedding, not a ControlNet: put it in embeddings/"
    sample = ", ".join(keys[:3])
    return f"not a ControlNet or T2I-Adapter: none of their known weights were found (first keys: {sample})"


def _family_from_features(label_emb: bool, context_dim: int | None, linear_proj_in: bool | None) -> str:
    """SDXL has an addition (size/crop) embedding; otherwise a real model's context width decides; tiny models fall
    back on the projection type (SD2 made the transformer's proj_in a Linear, SD1 a 1x1 conv)."""
    if label_emb:
        return "sdxl"
    if context_dim in CONTEXT_DIM_FAMILIES:
        return CONTEXT_DIM_FAMILIES[context_dim]
    return "sd2" if linear_proj_in else "sd1"


def _attention_features(state_dict: Mapping[str, torch.Tensor]) -> tuple[int | None, bool | None]:
    """(cross-attention context width, whether proj_in is Linear) of a UNet-like state dict; None when it has none.
    A control-LoRA's low-rank `down` factor has the input width and the layer's kind (2-D Linear, 4-D conv) too."""
    to_k = next((v for k, v in state_dict.items() if k.endswith(("attn2.to_k.weight", "attn2.to_k.down"))), None)
    proj_in = next((v for k, v in state_dict.items() if k.endswith((".proj_in.weight", ".proj_in.down"))), None)
    return (None if to_k is None else int(to_k.shape[1])), (None if proj_in is None else proj_in.ndim == 2)


def _adapter_family(layout: str, state_dict: Mapping[str, torch.Tensor]) -> str:
    """SDXL's full adapter unshuffles 16x16 blocks: its conv_in sees 256 (sketch) or 768 (RGB) channels.
    The original SD adapters were trained for SD 1.4/1.5."""
    if layout.startswith("adapter_full") and state_dict["conv_in.weight"].shape[1] % ADAPTER_XL_UNSHUFFLE ** 2 == 0:
        return "sdxl"
    return "sd1"


def detect(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """(kind, family) of a control model's state dict: kind "controlnet" | "t2i_adapter" | "control_lora",
    family "sd1" | "sd2" | "sdxl". Raises ControlModelError saying what the file looks like instead."""
    layout, weights = _layout(state_dict)
    if layout.startswith("adapter"):
        return "t2i_adapter", _adapter_family(layout, weights)
    context_dim, linear = _attention_features(weights)
    label_emb = any(k.startswith(("label_emb.", "add_embedding.")) for k in weights)
    kind = "control_lora" if layout == "control_lora" else "controlnet"
    return kind, _family_from_features(label_emb, context_dim, linear)


# --- ControlNet -------------------------------------------------------------------------------------------------

def _hint_block_to_diffusers(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`input_hint_block` convs (SiLUs between them have no weights) -> `controlnet_cond_embedding`: the first is
    conv_in, the last conv_out, those between are `blocks` in order. diffusers' converter assumes the standard
    four embedding widths (conv_out = index 14); this reads any number."""
    convs = _numbers(list(original), "input_hint_block.")
    names = ["conv_in", *(f"blocks.{n}" for n in range(len(convs) - 2)), "conv_out"]
    out = {}
    for index, name in zip(convs, names, strict=True):
        for part in ("weight", "bias"):
            out[f"controlnet_cond_embedding.{name}.{part}"] = original[f"input_hint_block.{index}.{part}"]
    return out


def _original_layers_per_block(original: Mapping[str, torch.Tensor]) -> int:
    """Resnets per level: input_blocks.0 is conv_in, so the first downsampler sits at index layers_per_block + 1."""
    blocks = _numbers(list(original), "input_blocks.")
    first_op = next((i for i in blocks if f"input_blocks.{i}.0.op.weight" in original), None)
    return (first_op if first_op is not None else len(blocks)) - 1


def controlnet_original_to_diffusers(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original-layout ControlNet weights (prefix removed) -> diffusers ControlNetModel keys."""
    layout = {"layers_per_block": _original_layers_per_block(original)}  # all the converter reads of a config
    converted = convert_controlnet_checkpoint(dict(original), layout)
    converted = {k: v for k, v in converted.items()
                 if v is not None and not k.startswith("controlnet_cond_embedding.")}
    converted.update(_hint_block_to_diffusers(original))
    for index, name in ((0, "linear_1"), (2, "linear_2")):  # SDXL's size/crop embedding; the converter skips it
        for part in ("weight", "bias"):
            if f"label_emb.0.{index}.{part}" in original:
                converted[f"add_embedding.{name}.{part}"] = original[f"label_emb.0.{index}.{part}"]
    return converted


def _transformer_depths(keys: list[str], levels: list[int]) -> tuple[list[int], int]:
    """(transformer blocks of each level's first attention, 0 where none; the mid block's)."""
    depths = [len(_numbers(keys, f"down_blocks.{i}.attentions.0.transformer_blocks.")) for i in levels]
    return depths, len(_numbers(keys, "mid_block.attentions.0.transformer_blocks."))


def _layers_per_level(depths: list[int], mid_depth: int) -> int | list[int]:
    """diffusers' transformer_layers_per_block: levels without attention ignore their entry (1 by convention);
    the middle block takes the last entry."""
    layers = [d or 1 for d in depths[:-1]] + [mid_depth or depths[-1] or 1]
    return layers[0] if len(set(layers)) == 1 else layers


def controlnet_config(weights: Mapping[str, torch.Tensor], family: str, context_dim: int | None = None,
                      global_pool: bool = False) -> dict:
    """A ControlNetModel config read from diffusers-layout weights. `context_dim` is used only when the model has
    no cross-attention to read it from (SDXL's "small" ControlNets)."""
    keys = list(weights)
    levels = _numbers(keys, "down_blocks.")
    channels = [int(weights[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in levels]
    depths, mid_depth = _transformer_depths(keys, levels)
    has_mid_attention = any(k.startswith("mid_block.attentions.") for k in keys)
    if depths and depths[-1] and has_mid_attention and depths[-1] != mid_depth:
        raise ControlModelError(f"unsupported ControlNet structure: the last level has {depths[-1]} transformer "
                                f"blocks but the middle block {mid_depth}")
    found_context, linear = _attention_features(weights)
    embedding = [int(weights["controlnet_cond_embedding.conv_in.weight"].shape[0])]
    for n in _numbers(keys, "controlnet_cond_embedding.blocks.")[1::2]:  # the strided conv of each pair widens
        embedding.append(int(weights[f"controlnet_cond_embedding.blocks.{n}.weight"].shape[0]))

    base = family_config(family, "unet")
    accepted = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    config = {k: v for k, v in base.items() if k in accepted}
    config.update(
        in_channels=int(weights["conv_in.weight"].shape[1]),
        conditioning_channels=int(weights["controlnet_cond_embedding.conv_in.weight"].shape[1]),
        block_out_channels=channels,
        layers_per_block=len(_numbers(keys, "down_blocks.0.resnets.")),
        down_block_types=["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        mid_block_type="UNetMidBlock2DCrossAttn" if has_mid_attention else "UNetMidBlock2D",
        transformer_layers_per_block=_layers_per_level(depths, mid_depth),
        cross_attention_dim=found_context or context_dim or base.get("cross_attention_dim"),
        use_linear_projection=bool(linear) if linear is not None else bool(base.get("use_linear_projection")),
        attention_head_dim=8 if family == "sd1" else [max(1, c // HEAD_DIM) for c in channels],
        conditioning_embedding_out_channels=embedding,
        global_pool_conditions=global_pool,
    )
    config.pop("num_attention_heads", None)
    if "add_embedding.linear_1.weight" in weights:
        config.update(addition_embed_type="text_time",
                      projection_class_embeddings_input_dim=int(weights["add_embedding.linear_1.weight"].shape[1]),
                      addition_time_embed_dim=base.get("addition_time_embed_dim") or 256)
    else:
        for key in ("addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim"):
            config.pop(key, None)
    return config


def materialise(module_class: type, config: dict, weights: Mapping[str, torch.Tensor], what: str) -> torch.nn.Module:
    """Build `module_class` from `config` without allocating, then take `weights` as its parameters. Any missing or
    left-over weight means the structure was misread, which is an error rather than random or ignored weights."""
    with init_empty_weights():
        module = module_class.from_config(config)
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        detail = "; ".join(part for part in (
            f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})" if missing else "",
            f"{len(unexpected)} weights not understood (e.g. {', '.join(unexpected[:3])})" if unexpected else "",
        ) if part)
        raise ControlModelError(f"the {what}'s structure could not be read from its weights: {detail}")
    module.load_state_dict({k: weights[k] for k in expected}, strict=True, assign=True)
    return module.eval()


def build_controlnet(state_dict: Mapping[str, torch.Tensor], family: str, config: dict | None = None,
                     context_dim: int | None = None, global_pool: bool = False) -> ControlNetModel:
    """A ControlNetModel from original- or diffusers-layout weights; `config` (a diffusers folder's config.json)
    replaces the one read from shapes."""
    layout, weights = _layout(state_dict)
    if layout == "controlnet_original":
        weights = controlnet_original_to_diffusers(weights)
    elif layout != "controlnet_diffusers":
        raise ControlModelError(f"not a ControlNet ({layout})")
    if config is None:
        config = controlnet_config(weights, family, context_dim, global_pool)
    else:
        config = {**config, "global_pool_conditions": global_pool or config.get("global_pool_conditions", False)}
    return materialise(ControlNetModel, config, weights, "ControlNet")


def _low_rank_delta(up: torch.Tensor, down: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """up @ down in the shape of the weight it changes (convs are flattened to matrices for the product)."""
    return (up.flatten(1).float() @ down.flatten(1).float()).reshape(shape)


def merge_control_lora(control_lora: Mapping[str, torch.Tensor], base_unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A Stability control-LoRA made whole: an original-layout ControlNet whose encoder is the base UNet's
    (time/label embeddings, input and middle blocks) with each `<layer>.up`/`<layer>.down` pair added to
    `<layer>.weight` as up @ down, and the file's full tensors (hint block, zero convs, norms, biases) on top."""
    # A compiled UNet (the fast path) names its weights under `_orig_mod.`.
    weights = {k.replace("_orig_mod.", ""): v for k, v in base_unet.state_dict().items()}
    base = unet_to_ldm(weights, base_unet.config)
    encoder = ("time_embed.", "label_emb.", "input_blocks.", "middle_block.")
    merged = {k: v.detach().to("cpu") for k, v in base.items() if k.startswith(encoder)}
    for key, tensor in control_lora.items():
        if key == CONTROL_LORA_MARKER or key.endswith((".up", ".down")):
            continue
        merged[key] = tensor
    for key in control_lora:
        if not key.endswith(".up"):
            continue
        layer = key[: -len(".up")]
        target, down = merged.get(layer + ".weight"), control_lora.get(layer + ".down")
        if target is None or down is None or control_lora[key].shape[0] * down[0].numel() != target.numel():
            raise ControlModelError(f"the control-LoRA changes {layer}, which the checkpoint's UNet does not have "
                                    "in that shape: it was made for another model family")
        delta = _low_rank_delta(control_lora[key], down, target.shape)
        merged[layer + ".weight"] = (target.float() + delta).to(target.dtype)
    return merged


def to_original_layout(controlnet_state_dict: Mapping[str, torch.Tensor], config: Mapping,
                       prefix: str = CONTROL_MODEL_PREFIX) -> dict[str, torch.Tensor]:
    """diffusers ControlNetModel weights -> the original (lllyasviel / A1111 extension) layout, as
    `control_model.…` keys by default. Inverse of `controlnet_original_to_diffusers`."""
    own: dict[str, torch.Tensor] = {}
    shared: dict[str, torch.Tensor] = {}
    embedding = sorted(_numbers(list(controlnet_state_dict), "controlnet_cond_embedding.blocks."))
    hint_index = {"conv_in": 0, **{f"blocks.{n}": 2 * (n + 1) for n in embedding},
                  "conv_out": 2 * (len(embedding) + 1)}
    for key, tensor in controlnet_state_dict.items():
        if key.startswith("controlnet_cond_embedding."):
            module, _, part = key[len("controlnet_cond_embedding."):].rpartition(".")
            own[f"input_hint_block.{hint_index[module]}.{part}"] = tensor
        elif key.startswith("controlnet_down_blocks."):
            index, part = key[len("controlnet_down_blocks."):].split(".")
            own[f"zero_convs.{index}.0.{part}"] = tensor
        elif key.startswith("controlnet_mid_block."):
            own[f"middle_block_out.0.{key.rpartition('.')[2]}"] = tensor
        else:
            shared[key] = tensor
    # The UNet-copy part is laid out as a UNet's encoder half; a ControlNet has no up blocks.
    own.update(unet_to_ldm(shared, {**config, "up_block_types": []}))
    return {prefix + k: v for k, v in own.items()}


# --- T2I-Adapter ------------------------------------------------------------------------------------------------

def _full_adapter_original_to_diffusers(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TencentARC's full adapter numbers the resnet blocks of all levels in one run (`body.{level*per_level+j}`);
    diffusers nests them (`body.level.resnets.j`). The first level that widens has an `in_conv` on its first
    block, which tells how many blocks a level has (a level that keeps its width has none)."""
    keys = list(original)
    blocks = _numbers(keys, "body.")
    widening = [n for n in blocks if f"body.{n}.in_conv.weight" in original and n > 0]
    per_level = widening[0] if widening else max(1, len(blocks) // 4)
    if any(".down_opt." in k for k in keys):
        raise ControlModelError("T2I-Adapters with convolution downsamplers are not supported")
    out = {f"adapter.conv_in.{p}": original[f"conv_in.{p}"] for p in ("weight", "bias")}
    for key, tensor in original.items():
        if not key.startswith("body."):
            continue
        number, rest = key[len("body."):].split(".", 1)
        level, block = divmod(int(number), per_level)
        if rest.startswith("in_conv."):
            out[f"adapter.body.{level}.{rest}"] = tensor
        else:
            out[f"adapter.body.{level}.resnets.{block}.{rest}"] = tensor
    return out


def _light_adapter_original_to_diffusers(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The light adapter's levels are already nested (`body.N.body.M`); diffusers calls the inner list resnets."""
    return {"adapter." + re.sub(r"^body\.(\d+)\.body\.", r"body.\1.resnets.", k): v for k, v in original.items()}


def adapter_config(weights: Mapping[str, torch.Tensor], family: str) -> dict:
    """T2IAdapter config from diffusers-layout (`adapter.`-prefixed) weights."""
    keys = list(weights)
    levels = _numbers(keys, "adapter.body.")
    blocks = len(_numbers(keys, "adapter.body.0.resnets."))
    if "adapter.body.0.out_conv.weight" in weights:
        # The light adapter repeats its last width in one extra, downsampling level.
        channels = [int(weights[f"adapter.body.{n}.out_conv.weight"].shape[0]) for n in levels[:-1]]
        in_channels = int(weights["adapter.body.0.in_conv.weight"].shape[1]) // ADAPTER_UNSHUFFLE ** 2
        return {"adapter_type": "light_adapter", "in_channels": in_channels, "channels": channels,
                "num_res_blocks": blocks, "downscale_factor": ADAPTER_UNSHUFFLE}
    channels = [int(weights[f"adapter.body.{n}.resnets.0.block1.weight"].shape[0]) for n in levels]
    factor = ADAPTER_XL_UNSHUFFLE if family == "sdxl" else ADAPTER_UNSHUFFLE
    return {"adapter_type": "full_adapter_xl" if family == "sdxl" else "full_adapter",
            "in_channels": int(weights["adapter.conv_in.weight"].shape[1]) // factor ** 2,
            "channels": channels, "num_res_blocks": blocks, "downscale_factor": factor}


def build_adapter(state_dict: Mapping[str, torch.Tensor], family: str, config: dict | None = None) -> T2IAdapter:
    """A diffusers T2IAdapter from original- or diffusers-layout weights."""
    layout, weights = _layout(state_dict)
    if layout == "adapter_full_original":
        weights = _full_adapter_original_to_diffusers(weights)
    elif layout == "adapter_light_original":
        weights = _light_adapter_original_to_diffusers(weights)
    elif layout.startswith("adapter"):
        weights = {ADAPTER_PREFIX + k: v for k, v in weights.items()}
    else:
        raise ControlModelError(f"not a T2I-Adapter ({layout})")
    return materialise(T2IAdapter, config or adapter_config(weights, family), weights, "T2I-Adapter")
