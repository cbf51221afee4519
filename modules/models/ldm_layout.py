"""Write diffusers / transformers models in the original single-file (LDM, A1111) key layout.

diffusers converts original checkpoints to its own layout (`diffusers.loaders.single_file_utils.convert_ldm_*`) but
ships nothing for the other direction. These functions are the exact inverse of those converters, so a file written
here loads back through them into bit-identical models. The app uses them for the tiny demo/test checkpoints
(modules/models/tiny.py); they work for full-size models too.

Layout summary (original keys):
- UNet (`model.diffusion_model.`): `time_embed.{0,2}`, `label_emb.0.{0,2}` (SDXL), `input_blocks.0.0` (conv_in),
  then per level `input_blocks.N.0` resnet + `input_blocks.N.1` attention, one `input_blocks.N.0.op` downsampler,
  `middle_block.{0,1,2}`, `output_blocks.N.{0,1,1|2}` (resnet, attention, upsampler `conv`), `out.{0,2}`.
- VAE (`first_stage_model.`): `encoder.down.N.block.M`, `down.N.downsample.conv`, `mid.block_1/attn_1/block_2`,
  `decoder.up.N` numbered in REVERSE of diffusers' up_blocks, `nin_shortcut`, attention as 1x1 convs.
- CLIP-L: transformers layout under `text_model.` (the caller adds `cond_stage_model.transformer.` etc.).
- OpenCLIP (SD2 ViT-H, SDXL bigG): `token_embedding`, `positional_embedding`, `transformer.resblocks.N.*` with fused
  q/k/v `in_proj_*`, `ln_final`, `text_projection` ([hidden, proj], transposed vs transformers), `logit_scale`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING
from safetensors.torch import save_file
from torch import Tensor

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SD2_OPEN_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_OPEN_CLIP_PREFIX = "conditioner.embedders.0.model."

# Which original layout each family's file uses.
FAMILY_LAYOUTS = {
    "sd1": "sd1", "sd1-inpaint": "sd1",
    "sd2": "sd2", "sd2-v": "sd2", "sd2-inpaint": "sd2",
    "sdxl": "sdxl", "sdxl-inpaint": "sdxl",
    "sdxl-refiner": "sdxl-refiner",
}
# SD2 conditions on OpenCLIP-H's penultimate layer, so diffusers' text encoder has one block fewer than the file.
SD2_EXTRA_OPEN_CLIP_LAYERS = 1
# Trained OpenCLIP models end with logit_scale = ln(100); only the contrastive loss uses it.
OPEN_CLIP_LOGIT_SCALE = math.log(100.0)

_UNET_RESNET_RENAMES = {
    "norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection",
}
_VAE_RESNET_RENAMES = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION_RENAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPEN_CLIP_LAYER_RENAMES = {
    "layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
}


def _block_indices(keys: list[str], prefix: str, child: str) -> list[int]:
    """Sorted indices N of `<prefix>.<child>.N.` found in keys (e.g. resnets of one down block)."""
    pattern = re.compile(re.escape(f"{prefix}.{child}.") + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def _has_prefix(keys: list[str], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def _rename_suffix(suffix: str, renames: Mapping[str, str]) -> str:
    """Rename the leading module path of `suffix` ("norm1.weight" -> "in_layers.0.weight")."""
    for old, new in renames.items():
        if suffix.startswith(old + "."):
            return new + suffix[len(old):]
    return suffix


def _apply_prefix_rules(state_dict: Mapping[str, Tensor], rules: dict[str, tuple[str, Mapping[str, str]]],
                        exact: Mapping[str, str], what: str) -> dict[str, Tensor]:
    """Map every key through `exact` (whole key) or the longest matching prefix rule; unknown keys are an error,
    so a model feature this writer does not know cannot silently go missing from the file."""
    prefixes = sorted(rules, key=len, reverse=True)
    out: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        if key in exact:
            out[exact[key]] = tensor
            continue
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"{what}: no original-layout name known for {key!r}")
        new_prefix, renames = rules[prefix]
        out[new_prefix + _rename_suffix(key[len(prefix):], renames)] = tensor
    return out


def unet_to_ldm(state_dict: Mapping[str, Tensor], config: Mapping) -> dict[str, Tensor]:
    """diffusers UNet2DConditionModel state dict -> original keys, without the `model.diffusion_model.` prefix.

    The block structure (resnets per level, attention, down/upsamplers, transformer depth) is read from the keys,
    so any number of levels, layers_per_block and transformer_layers_per_block work. `config` gives the number of
    levels and the class/addition embedding types.
    """
    keys = list(state_dict)
    rules: dict[str, tuple[str, Mapping[str, str]]] = {}
    no_renames: Mapping[str, str] = {}

    input_index = 1  # input_blocks.0 is conv_in
    for level in range(len(config["down_block_types"])):
        block = f"down_blocks.{level}"
        for layer in _block_indices(keys, block, "resnets"):
            rules[f"{block}.resnets.{layer}."] = (f"input_blocks.{input_index}.0.", _UNET_RESNET_RENAMES)
            rules[f"{block}.attentions.{layer}."] = (f"input_blocks.{input_index}.1.", no_renames)
            input_index += 1
        if _has_prefix(keys, f"{block}.downsamplers.0."):
            rules[f"{block}.downsamplers.0.conv."] = (f"input_blocks.{input_index}.0.op.", no_renames)
            input_index += 1

    # middle_block alternates resnet, attention, resnet.
    for layer in _block_indices(keys, "mid_block", "resnets"):
        rules[f"mid_block.resnets.{layer}."] = (f"middle_block.{2 * layer}.", _UNET_RESNET_RENAMES)
    for layer in _block_indices(keys, "mid_block", "attentions"):
        rules[f"mid_block.attentions.{layer}."] = (f"middle_block.{2 * layer + 1}.", no_renames)

    output_index = 0
    for level in range(len(config["up_block_types"])):
        block = f"up_blocks.{level}"
        layers = _block_indices(keys, block, "resnets")
        for layer in layers:
            rules[f"{block}.resnets.{layer}."] = (f"output_blocks.{output_index}.0.", _UNET_RESNET_RENAMES)
            has_attention = _has_prefix(keys, f"{block}.attentions.{layer}.")
            if has_attention:
                rules[f"{block}.attentions.{layer}."] = (f"output_blocks.{output_index}.1.", no_renames)
            if layer == layers[-1] and _has_prefix(keys, f"{block}.upsamplers.0."):
                # The upsampler follows the attention inside the same output block, else the resnet.
                slot = 2 if has_attention else 1
                rules[f"{block}.upsamplers.0.conv."] = (f"output_blocks.{output_index}.{slot}.conv.", no_renames)
            output_index += 1

    mapping = DIFFUSERS_TO_LDM_MAPPING["unet"]
    exact = dict(mapping["layers"])
    if config.get("addition_embed_type") == "text_time":
        exact.update(mapping["addition_embed_type"])
    if config.get("class_embed_type") in ("timestep", "projection"):
        exact.update(mapping["class_embed_type"])
    return _apply_prefix_rules(state_dict, rules, exact, "UNet")


def _linear_to_conv1x1(tensor: Tensor) -> Tensor:
    return tensor[:, :, None, None] if tensor.ndim == 2 else tensor


def vae_to_ldm(state_dict: Mapping[str, Tensor], config: Mapping) -> dict[str, Tensor]:
    """diffusers AutoencoderKL state dict -> original keys (`encoder.*`, `decoder.*`, `quant_conv`, ...),
    without the `first_stage_model.` prefix. Mid-block attention projections become 1x1 conv weights."""
    keys = list(state_dict)
    rules: dict[str, tuple[str, Mapping[str, str]]] = {}
    no_renames: Mapping[str, str] = {}

    for level in range(len(config["down_block_types"])):
        block = f"encoder.down_blocks.{level}"
        for layer in _block_indices(keys, block, "resnets"):
            rules[f"{block}.resnets.{layer}."] = (f"encoder.down.{level}.block.{layer}.", _VAE_RESNET_RENAMES)
        rules[f"{block}.downsamplers.0.conv."] = (f"encoder.down.{level}.downsample.conv.", no_renames)

    num_up = len(config["up_block_types"])
    for level in range(num_up):
        block = f"decoder.up_blocks.{level}"
        original = num_up - 1 - level  # the original decoder numbers its levels from the lowest resolution up
        for layer in _block_indices(keys, block, "resnets"):
            rules[f"{block}.resnets.{layer}."] = (f"decoder.up.{original}.block.{layer}.", _VAE_RESNET_RENAMES)
        rules[f"{block}.upsamplers.0.conv."] = (f"decoder.up.{original}.upsample.conv.", no_renames)

    for part in ("encoder", "decoder"):
        for layer in _block_indices(keys, f"{part}.mid_block", "resnets"):
            rules[f"{part}.mid_block.resnets.{layer}."] = (f"{part}.mid.block_{layer + 1}.", _VAE_RESNET_RENAMES)
        for layer in _block_indices(keys, f"{part}.mid_block", "attentions"):
            rules[f"{part}.mid_block.attentions.{layer}."] = (f"{part}.mid.attn_{layer + 1}.", _VAE_ATTENTION_RENAMES)

    out = _apply_prefix_rules(state_dict, rules, DIFFUSERS_TO_LDM_MAPPING["vae"], "VAE")
    attention = re.compile(r"(en|de)coder\.mid\.attn_\d+\.(q|k|v|proj_out)\.weight$")
    return {k: _linear_to_conv1x1(v) if attention.match(k) else v for k, v in out.items()}


def clip_to_ldm(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """transformers CLIPTextModel state dict -> the original HF CLIP keys under `text_model.*`.

    transformers 5 flattened CLIPTextModel (no `text_model.` prefix); CLIPTextModelWithProjection keeps it and adds
    `text_projection.weight`, which is passed through. The caller adds `cond_stage_model.transformer.` (SD1) or
    `conditioner.embedders.0.transformer.` (SDXL CLIP-L).
    """
    out: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        if key.startswith(("text_model.", "text_projection.")):
            out[key] = tensor
        else:
            out["text_model." + key] = tensor
    return out


def _random_open_clip_resblock(index: int, hidden: int, intermediate: int, dtype: torch.dtype,
                               generator: torch.Generator) -> dict[str, Tensor]:
    """One OpenCLIP residual block with CLIP-style init (normal std 0.02, zero biases, unit LayerNorms)."""
    def normal(*shape: int) -> Tensor:
        return (torch.randn(*shape, generator=generator) * 0.02).to(dtype)

    def const(value: float, size: int) -> Tensor:
        return torch.full((size,), value, dtype=dtype)

    block = f"transformer.resblocks.{index}."
    return {
        block + "ln_1.weight": const(1.0, hidden), block + "ln_1.bias": const(0.0, hidden),
        block + "attn.in_proj_weight": normal(3 * hidden, hidden), block + "attn.in_proj_bias": const(0.0, 3 * hidden),
        block + "attn.out_proj.weight": normal(hidden, hidden), block + "attn.out_proj.bias": const(0.0, hidden),
        block + "ln_2.weight": const(1.0, hidden), block + "ln_2.bias": const(0.0, hidden),
        block + "mlp.c_fc.weight": normal(intermediate, hidden), block + "mlp.c_fc.bias": const(0.0, intermediate),
        block + "mlp.c_proj.weight": normal(hidden, intermediate), block + "mlp.c_proj.bias": const(0.0, hidden),
    }


def open_clip_to_ldm(state_dict: Mapping[str, Tensor], extra_layers: int = 0, seed: int = 0) -> dict[str, Tensor]:
    """transformers CLIPTextModel(WithProjection) state dict -> OpenCLIP text-tower keys (no outer prefix).

    Inverse of diffusers' `convert_open_clip_checkpoint`: q/k/v are fused into `attn.in_proj_*` and
    `text_projection` is stored transposed ([hidden, projection]). A model without a projection (SD2's
    CLIPTextModel) gets an identity [hidden, hidden] projection, since real SD2 files carry one (the converter
    ignores it, but it tells the converter the hidden size). `extra_layers` random resblocks (seeded by `seed`)
    are appended after the real ones, as SD2 files hold one block more than the diffusers encoder uses.
    """
    flat = {k.removeprefix("text_model."): v for k, v in state_dict.items()}
    token = flat["embeddings.token_embedding.weight"]
    hidden, dtype = token.shape[1], token.dtype
    out: dict[str, Tensor] = {
        "token_embedding.weight": token,
        "positional_embedding": flat["embeddings.position_embedding.weight"],
        "ln_final.weight": flat["final_layer_norm.weight"],
        "ln_final.bias": flat["final_layer_norm.bias"],
    }
    layers = _block_indices(list(flat), "encoder", "layers")
    for index in layers:
        src, dst = f"encoder.layers.{index}.", f"transformer.resblocks.{index}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [flat[src + f"self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0)
            for old, new in _OPEN_CLIP_LAYER_RENAMES.items():
                out[dst + f"{new}.{kind}"] = flat[src + f"{old}.{kind}"]
    expected = {"embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
                "final_layer_norm.weight", "final_layer_norm.bias", "text_projection.weight"}
    layer_key = re.compile(r"encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|layer_norm[12]|mlp\.fc[12])\."
                           r"(weight|bias)$")
    unknown = [k for k in flat if k not in expected and not layer_key.match(k)]
    if unknown:
        raise ValueError(f"OpenCLIP: no original-layout name known for {unknown[:5]}")

    if extra_layers:
        intermediate = flat[f"encoder.layers.{layers[0]}.mlp.fc1.weight"].shape[0]
        generator = torch.Generator().manual_seed(seed)
        for index in range(len(layers), len(layers) + extra_layers):
            out.update(_random_open_clip_resblock(index, hidden, intermediate, dtype, generator))

    projection = flat.get("text_projection.weight")
    out["text_projection"] = projection.T.contiguous() if projection is not None else torch.eye(hidden, dtype=dtype)
    out["logit_scale"] = torch.tensor(OPEN_CLIP_LOGIT_SCALE, dtype=dtype)
    return out


def _prefixed(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in state_dict.items()}


def to_single_file(components: Mapping[str, torch.nn.Module], family: str) -> dict[str, Tensor]:
    """Full original-layout state dict of a pipeline's models, as an A1111 `.safetensors` checkpoint holds it.

    `components`: "unet", "vae", "text_encoder" and/or "text_encoder_2" (diffusers pipeline names).
    `family`: one of FAMILY_LAYOUTS. Tensors may share memory with the models' parameters.
    """
    layout = FAMILY_LAYOUTS.get(family)
    if layout is None:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILY_LAYOUTS)}")
    unet, vae = components["unet"], components["vae"]
    out = _prefixed(unet_to_ldm(unet.state_dict(), unet.config), UNET_PREFIX)
    out.update(_prefixed(vae_to_ldm(vae.state_dict(), vae.config), VAE_PREFIX))
    if layout == "sd1":
        out.update(_prefixed(clip_to_ldm(components["text_encoder"].state_dict()), SD1_CLIP_PREFIX))
    elif layout == "sd2":
        open_clip = open_clip_to_ldm(components["text_encoder"].state_dict(), extra_layers=SD2_EXTRA_OPEN_CLIP_LAYERS)
        out.update(_prefixed(open_clip, SD2_OPEN_CLIP_PREFIX))
    elif layout == "sdxl":
        out.update(_prefixed(clip_to_ldm(components["text_encoder"].state_dict()), SDXL_CLIP_L_PREFIX))
        out.update(_prefixed(open_clip_to_ldm(components["text_encoder_2"].state_dict()), SDXL_OPEN_CLIP_PREFIX))
    else:  # SDXL refiner: OpenCLIP bigG only, as embedder 0
        out.update(_prefixed(open_clip_to_ldm(components["text_encoder_2"].state_dict()),
                             SDXL_REFINER_OPEN_CLIP_PREFIX))
    return out


def save_single_file(state_dict: Mapping[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None,
                     dtype: torch.dtype | None = None) -> None:
    """Save as `.safetensors`; floating-point tensors are cast to `dtype` when given (integer ones are kept)."""
    tensors = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[key] = tensor.contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
