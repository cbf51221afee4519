"""Build diffusers components for a checkpoint: its family's shipped config, with sizes read from the weights.

The shipped configs (configs/<family>/) say what weights cannot (activations, norms, scheduler, head layout);
channel counts, depths and embedding sizes are taken from tensor shapes, so fine-tunes with unusual sizes and the
tiny test/demo models load through the same code as full-size checkpoints.
Head counts cannot be read from weights; they follow each family's convention: SD1 uses 8 heads everywhere,
SD2/SDXL use 64-dim heads, CLIP text encoders use 64-dim heads.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from modules.models.detection import UNET_PREFIX, VAE_PREFIX

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
HEAD_DIM = 64


@cache
def _read_json(path: str) -> dict:
    return json.loads(Path(path).read_text())


def family_config(family: str, component: str) -> dict:
    """The shipped diffusers config of one component ("unet", "vae", "text_encoder", "scheduler", ...)."""
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return dict(_read_json(str(CONFIGS_DIR / family / component / name)))


def _indices(keys: list[str], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := regex.match(k))})


def unet_config_from_weights(unet_sd: dict[str, torch.Tensor], base: dict, family: str) -> dict:
    """Derive a UNet2DConditionModel config from an LDM-layout UNet state dict (prefix already removed)."""
    keys = list(unet_sd)
    levels: list[dict] = [{"channels": 0, "resnets": 0, "depth": 0}]
    for i in _indices(keys, r"input_blocks\.(\d+)\.")[1:]:
        if f"input_blocks.{i}.0.op.weight" in unet_sd:
            levels.append({"channels": 0, "resnets": 0, "depth": 0})
            continue
        level = levels[-1]
        level["channels"] = unet_sd[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0]
        level["resnets"] += 1
        level["depth"] = len(_indices(keys, rf"input_blocks\.{i}\.1\.transformer_blocks\.(\d+)\."))
    mid_depth = len(_indices(keys, r"middle_block\.1\.transformer_blocks\.(\d+)\.")) or 1
    channels = [lv["channels"] for lv in levels]
    attention = [lv["depth"] > 0 for lv in levels]
    depths = [lv["depth"] if lv["depth"] else mid_depth for lv in levels]

    attn_keys = [k for k in keys if k.endswith("attn2.to_k.weight")]
    proj_in = [k for k in keys if k.endswith(".proj_in.weight")]
    config = dict(base)
    config.update(
        in_channels=unet_sd["input_blocks.0.0.weight"].shape[1],
        out_channels=unet_sd["out.2.weight"].shape[0],
        block_out_channels=channels,
        layers_per_block=levels[0]["resnets"],
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        transformer_layers_per_block=depths[0] if len(set(depths)) == 1 else depths,
    )
    if attn_keys:
        config["cross_attention_dim"] = unet_sd[attn_keys[0]].shape[1]
    if proj_in:
        config["use_linear_projection"] = unet_sd[proj_in[0]].ndim == 2
    if family.startswith("sd1"):
        config["attention_head_dim"] = 8
    else:
        config["attention_head_dim"] = [max(1, c // HEAD_DIM) for c in channels]
    if "label_emb.0.0.weight" in unet_sd:
        config["projection_class_embeddings_input_dim"] = unet_sd["label_emb.0.0.weight"].shape[1]
    return config


def vae_config_from_weights(vae_sd: dict[str, torch.Tensor], base: dict) -> dict:
    """Derive an AutoencoderKL config from an LDM-layout VAE state dict (prefix removed)."""
    keys = list(vae_sd)
    levels = _indices(keys, r"encoder\.down\.(\d+)\.")
    channels = [vae_sd[f"encoder.down.{n}.block.0.conv2.weight"].shape[0] for n in levels]
    config = dict(base)
    config.update(
        block_out_channels=channels,
        down_block_types=["DownEncoderBlock2D"] * len(channels),
        up_block_types=["UpDecoderBlock2D"] * len(channels),
        layers_per_block=len(_indices(keys, r"encoder\.down\.0\.block\.(\d+)\.")),
        latent_channels=vae_sd["decoder.conv_in.weight"].shape[1],
        in_channels=vae_sd["encoder.conv_in.weight"].shape[1],
        out_channels=vae_sd["decoder.conv_out.weight"].shape[0],
    )
    return config


def clip_config_from_weights(sd: dict[str, torch.Tensor], prefix: str, base: dict) -> dict:
    """Config for an HF-layout CLIP text model stored under `prefix` + `text_model.`."""
    p = prefix + "text_model."
    token = sd[p + "embeddings.token_embedding.weight"]
    config = dict(base)
    config.update(
        vocab_size=token.shape[0],
        hidden_size=token.shape[1],
        max_position_embeddings=sd[p + "embeddings.position_embedding.weight"].shape[0],
        num_hidden_layers=len(_indices(list(sd), re.escape(p) + r"encoder\.layers\.(\d+)\.")),
        intermediate_size=sd[p + "encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_attention_heads=max(1, token.shape[1] // HEAD_DIM),
    )
    return config


def open_clip_config_from_weights(sd: dict[str, torch.Tensor], prefix: str, base: dict, skip_last: bool) -> dict:
    """Config for an OpenCLIP text tower stored under `prefix`; SD2 drops the last block (penultimate layer)."""
    token = sd[prefix + "token_embedding.weight"]
    layers = len(_indices(list(sd), re.escape(prefix) + r"transformer\.resblocks\.(\d+)\."))
    config = dict(base)
    config.update(
        vocab_size=token.shape[0],
        hidden_size=token.shape[1],
        max_position_embeddings=sd[prefix + "positional_embedding"].shape[0],
        num_hidden_layers=layers - 1 if skip_last else layers,
        intermediate_size=sd[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_attention_heads=max(1, token.shape[1] // HEAD_DIM),
    )
    if prefix + "text_projection" in sd:
        config["projection_dim"] = sd[prefix + "text_projection"].shape[1]
    return config


def _strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _materialise(model: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    expected = set(model.state_dict().keys())
    weights = {k: v for k, v in weights.items() if k in expected}
    missing = expected - set(weights)
    if missing:
        sample = ", ".join(sorted(missing)[:5])
        raise ValueError(f"{what}: {len(missing)} weights missing from the checkpoint (e.g. {sample})")
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


def build_unet(checkpoint: dict[str, torch.Tensor], family: str) -> UNet2DConditionModel:
    config = unet_config_from_weights(_strip(checkpoint, UNET_PREFIX), family_config(family, "unet"), family)
    weights = convert_ldm_unet_checkpoint(checkpoint, config)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
    return _materialise(unet, weights, "UNet")


def build_vae(vae_weights: dict[str, torch.Tensor], family: str) -> AutoencoderKL:
    """`vae_weights`: LDM layout with or without the `first_stage_model.` prefix, or diffusers layout."""
    if any(k.startswith(VAE_PREFIX) for k in vae_weights):
        vae_weights = _strip(vae_weights, VAE_PREFIX)
    base = family_config(family, "vae")
    if "decoder.up_blocks.0.resnets.0.conv1.weight" in vae_weights:  # already diffusers layout
        with init_empty_weights():
            vae = AutoencoderKL.from_config(base)
        return _materialise(vae, vae_weights, "VAE")
    config = vae_config_from_weights(vae_weights, base)
    weights = convert_ldm_vae_checkpoint(vae_weights, config)
    with init_empty_weights():
        vae = AutoencoderKL.from_config(config)
    return _materialise(vae, weights, "VAE")


def build_clip(checkpoint: dict[str, torch.Tensor], prefix: str, family: str, component: str) -> CLIPTextModel:
    """A CLIP-L text encoder stored in HF layout under `prefix` (SD1 and SDXL's first encoder)."""
    config = CLIPTextConfig(**clip_config_from_weights(checkpoint, prefix, family_config(family, component)))
    weights = convert_ldm_clip_checkpoint(checkpoint, remove_prefix=prefix)
    weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    with init_empty_weights():
        model = CLIPTextModel(config)
    return _materialise(model, weights, "text encoder")


def build_open_clip(checkpoint: dict[str, torch.Tensor], prefix: str, family: str, component: str,
                    with_projection: bool, skip_last: bool) -> CLIPTextModel | CLIPTextModelWithProjection:
    """An OpenCLIP text tower (SD2's ViT-H, SDXL's bigG) converted to transformers' CLIP classes."""
    config = CLIPTextConfig(**open_clip_config_from_weights(checkpoint, prefix, family_config(family, component),
                                                            skip_last))
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with init_empty_weights():
        model = cls(config)
    weights = convert_open_clip_checkpoint(model, checkpoint, prefix=prefix)
    if not hasattr(model, "text_model"):
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    return _materialise(model, weights, "text encoder")
