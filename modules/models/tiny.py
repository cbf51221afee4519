"""Tiny random-initialised models of every family, written as original-layout single-file checkpoints.

Tests and the built-in demo model use them: they load through the same detection and conversion code as real
checkpoints, in well under a second on CPU. Each family's tiny config is its shipped config (configs/<family>/)
with only the sizes shrunk, following the conventions the loader uses to re-derive a config from weight shapes
(modules/models/architecture.py): SD1 UNets use 8 heads; SD2/SDXL UNets and all text encoders use 64-dim heads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from modules.models.ldm_layout import FAMILY_LAYOUTS, UNET_PREFIX, save_single_file, to_single_file

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
MODEL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
FAMILIES = tuple(FAMILY_LAYOUTS)

# Std of the probe bias in tiny v-prediction files; the loader's threshold (ComfyUI's heuristic) is 0.09.
V_PREDICTION_BIAS_STD = 0.2

_TEXT_ENCODER = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 1, "intermediate_size": 128,
                 "vocab_size": 49408, "max_position_embeddings": 77, "projection_dim": 64}
_VAE = {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "norm_num_groups": 32, "latent_channels": 4,
        "sample_size": 64}
_SD_UNET_BLOCKS = {"down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                   "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}
_SDXL_UNET_BLOCKS = {"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                     "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
                     "transformer_layers_per_block": [1, 2]}
_TIME_EMBED_DIM = 256
_UNETS = {
    "sd1": {**_SD_UNET_BLOCKS, "block_out_channels": [32, 64], "attention_head_dim": 8, "cross_attention_dim": 64},
    "sd2": {**_SD_UNET_BLOCKS, "block_out_channels": [64, 128], "attention_head_dim": [1, 2],
            "cross_attention_dim": 64, "use_linear_projection": True},
    # cross_attention_dim = CLIP-L hidden + bigG hidden; text_embeds = bigG projection + 6 size/crop embeddings.
    "sdxl": {**_SDXL_UNET_BLOCKS, "block_out_channels": [64, 128], "attention_head_dim": [1, 2],
             "cross_attention_dim": 128, "addition_time_embed_dim": _TIME_EMBED_DIM,
             "projection_class_embeddings_input_dim": 64 + 6 * _TIME_EMBED_DIM},
    # The refiner conditions on bigG alone and on 5 size/crop/aesthetic-score embeddings.
    "sdxl-refiner": {**_SDXL_UNET_BLOCKS, "block_out_channels": [64, 128], "attention_head_dim": [1, 2],
                     "cross_attention_dim": 64, "addition_time_embed_dim": _TIME_EMBED_DIM,
                     "projection_class_embeddings_input_dim": 64 + 5 * _TIME_EMBED_DIM},
}
_COMMON_UNET = {"layers_per_block": 1, "norm_num_groups": 32, "sample_size": 8}


def _check_family(family: str) -> None:
    if family not in FAMILY_LAYOUTS:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILY_LAYOUTS)}")


def tiny_configs(family: str) -> dict[str, dict]:
    """Configs of the family's model components ("unet", "vae", "text_encoder", "text_encoder_2" as the family
    has them): the shipped config with sizes shrunk; activations, scaling factor, upcasting etc. kept."""
    _check_family(family)
    configs: dict[str, dict] = {}
    for component in MODEL_COMPONENTS:
        path = CONFIGS_DIR / family / component / "config.json"
        if path.is_file():
            configs[component] = json.loads(path.read_text())
    unet = configs["unet"]
    unet.update(_COMMON_UNET)
    unet.update(_UNETS[FAMILY_LAYOUTS[family]])
    if family.endswith("-inpaint"):
        unet["in_channels"] = 9  # 4 noisy latents + 4 masked-image latents + 1 mask
    configs["vae"].update(_VAE)
    for component in ("text_encoder", "text_encoder_2"):
        if component in configs:
            configs[component].update(_TEXT_ENCODER)
    return configs


def _build_text_encoder(config: dict) -> CLIPTextModel | CLIPTextModelWithProjection:
    with_projection = config.get("architectures", ["CLIPTextModel"])[0] == "CLIPTextModelWithProjection"
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(CLIPTextConfig.from_dict(config))


def build_tiny_components(family: str, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Random-initialised float32 models in eval mode, deterministic for a seed (the global RNG is reseeded
    before each component, so each one is the same whatever else the family holds)."""
    components: dict[str, torch.nn.Module] = {}
    for component, config in tiny_configs(family).items():
        torch.manual_seed(seed)
        if component == "unet":
            model = UNet2DConditionModel.from_config(config)
        elif component == "vae":
            model = AutoencoderKL.from_config(config)
        else:
            model = _build_text_encoder(config)
        if next(model.parameters()).dtype != torch.float32:  # only if the default dtype was changed
            model = model.to(torch.float32)
        components[component] = model.eval()
    return components


def v_prediction_probe_key(checkpoint: dict[str, torch.Tensor]) -> str:
    """Original key of the first transformer block's norm1 bias in the last output block with attention: the
    tensor whose std tells SD2 v-prediction from epsilon models (ComfyUI's heuristic)."""
    suffix = ".1.transformer_blocks.0.norm1.bias"
    start = UNET_PREFIX + "output_blocks."
    candidates = [k for k in checkpoint if k.startswith(start) and k.endswith(suffix)]
    if not candidates:
        raise ValueError("the UNet has no output block with attention")
    return max(candidates, key=lambda k: int(k[len(start):].split(".")[0]))


def write_tiny_checkpoint(family: str, path: str | Path, seed: int = 0, dtype: torch.dtype = torch.float32,
                          v_prediction: bool | None = None, metadata: dict[str, str] | None = None) -> Path:
    """Build the family's tiny models, convert them to the original single-file layout and save `.safetensors`.

    Weights are left as diffusers/transformers initialise them (default PyTorch init; LayerNorms are ones/zeros),
    with one exception that marks v-prediction the way real files show it: SD2 v models have a clearly non-zero
    `model.diffusion_model.output_blocks.<last with attention>.1.transformer_blocks.0.norm1.bias` (ComfyUI's
    heuristic: std > 0.09 means v-prediction), and the loader reads that, not the file name. With `v_prediction`
    True that bias becomes a seeded random vector of std 0.2; with False it stays at its init (zeros, std 0).
    None means True for "sd2-v" only. The file then differs from `build_tiny_components(family, seed)` only there.
    """
    _check_family(family)
    if v_prediction is None:
        v_prediction = family == "sd2-v"
    state_dict = to_single_file(build_tiny_components(family, seed), family)
    if v_prediction:
        key = v_prediction_probe_key(state_dict)
        generator = torch.Generator().manual_seed(seed)
        bias = state_dict[key]
        # A new tensor, not an in-place edit: the dict shares memory with the models.
        noise = torch.randn(bias.shape, generator=generator, dtype=torch.float32)
        noise = noise / noise.std(unbiased=False) * V_PREDICTION_BIAS_STD  # exactly std 0.2, whatever the width
        state_dict[key] = noise.to(bias.dtype)
    path = Path(path)
    save_single_file(state_dict, path, metadata=metadata, dtype=dtype)
    return path
