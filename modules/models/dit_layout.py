"""The original single-file layouts of the transformer (DiT) families and diffusers' layout of the same weights.

Loading goes original -> diffusers through diffusers' own converters (`diffusers.loaders.single_file_utils`), the
code diffusers' `from_single_file` runs. The other direction is here: the tiny test models and the benchmark's
full-size random checkpoints are built as diffusers modules and written as the files users have
(`model.diffusion_model.joint_blocks.*` for SD 3.x, `double_blocks.*` / `single_blocks.*` for FLUX.1).
"""

from __future__ import annotations

import torch

SD3_PREFIX = "model.diffusion_model."


def _swap_scale_shift(weight: torch.Tensor) -> torch.Tensor:
    """diffusers' AdaLayerNormContinuous keeps (scale, shift) where the original keeps (shift, scale): its own
    inverse."""
    shift, scale = weight.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def sd3_to_original(state: dict[str, torch.Tensor], prefix: str = SD3_PREFIX) -> dict[str, torch.Tensor]:
    """A diffusers `SD3Transformer2DModel` state dict in the original MMDiT layout (the inverse of diffusers'
    `convert_sd3_transformer_checkpoint_to_diffusers`)."""
    s = dict(state)
    out: dict[str, torch.Tensor] = {}

    def put(original: str, diffusers_key: str) -> None:
        out[original] = s.pop(diffusers_key)

    put("pos_embed", "pos_embed.pos_embed")
    put("x_embedder.proj.weight", "pos_embed.proj.weight")
    put("x_embedder.proj.bias", "pos_embed.proj.bias")
    for i, n in ((0, 1), (2, 2)):
        put(f"t_embedder.mlp.{i}.weight", f"time_text_embed.timestep_embedder.linear_{n}.weight")
        put(f"t_embedder.mlp.{i}.bias", f"time_text_embed.timestep_embedder.linear_{n}.bias")
        put(f"y_embedder.mlp.{i}.weight", f"time_text_embed.text_embedder.linear_{n}.weight")
        put(f"y_embedder.mlp.{i}.bias", f"time_text_embed.text_embedder.linear_{n}.bias")
    put("context_embedder.weight", "context_embedder.weight")
    put("context_embedder.bias", "context_embedder.bias")
    layers = sorted({int(k.split(".")[1]) for k in s if k.startswith("transformer_blocks.")})
    last = layers[-1]
    for i in layers:
        d, o = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        for part in ("weight", "bias"):
            out[f"{o}x_block.attn.qkv.{part}"] = torch.cat([s.pop(f"{d}attn.to_{x}.{part}") for x in "qkv"])
            out[f"{o}context_block.attn.qkv.{part}"] = torch.cat(
                [s.pop(f"{d}attn.add_{x}_proj.{part}") for x in "qkv"])
            put(f"{o}x_block.attn.proj.{part}", f"{d}attn.to_out.0.{part}")
            put(f"{o}x_block.adaLN_modulation.1.{part}", f"{d}norm1.linear.{part}")
            put(f"{o}x_block.mlp.fc1.{part}", f"{d}ff.net.0.proj.{part}")
            put(f"{o}x_block.mlp.fc2.{part}", f"{d}ff.net.2.{part}")
            if i != last:
                put(f"{o}context_block.attn.proj.{part}", f"{d}attn.to_add_out.{part}")
                put(f"{o}context_block.adaLN_modulation.1.{part}", f"{d}norm1_context.linear.{part}")
                put(f"{o}context_block.mlp.fc1.{part}", f"{d}ff_context.net.0.proj.{part}")
                put(f"{o}context_block.mlp.fc2.{part}", f"{d}ff_context.net.2.{part}")
            else:  # the last block's context stream only conditions: diffusers swaps its (scale, shift)
                out[f"{o}context_block.adaLN_modulation.1.{part}"] = _swap_scale_shift(
                    s.pop(f"{d}norm1_context.linear.{part}"))
            if f"{d}attn2.to_q.{part}" in s:  # SD 3.5 Medium's second self-attention (MMDiT-X)
                out[f"{o}x_block.attn2.qkv.{part}"] = torch.cat([s.pop(f"{d}attn2.to_{x}.{part}") for x in "qkv"])
                put(f"{o}x_block.attn2.proj.{part}", f"{d}attn2.to_out.0.{part}")
        for diffusers_norm, original_norm in (("norm_q", "x_block.attn.ln_q"), ("norm_k", "x_block.attn.ln_k"),
                                              ("norm_added_q", "context_block.attn.ln_q"),
                                              ("norm_added_k", "context_block.attn.ln_k")):
            if f"{d}attn.{diffusers_norm}.weight" in s:  # SD 3.5's RMS q/k norms
                put(f"{o}{original_norm}.weight", f"{d}attn.{diffusers_norm}.weight")
        for diffusers_norm, original_norm in (("norm_q", "ln_q"), ("norm_k", "ln_k")):
            if f"{d}attn2.{diffusers_norm}.weight" in s:
                put(f"{o}x_block.attn2.{original_norm}.weight", f"{d}attn2.{diffusers_norm}.weight")
    put("final_layer.linear.weight", "proj_out.weight")
    put("final_layer.linear.bias", "proj_out.bias")
    out["final_layer.adaLN_modulation.1.weight"] = _swap_scale_shift(s.pop("norm_out.linear.weight"))
    out["final_layer.adaLN_modulation.1.bias"] = _swap_scale_shift(s.pop("norm_out.linear.bias"))
    if s:
        raise ValueError(f"SD3 weights not mapped to the original layout: {sorted(s)[:5]}")
    return {prefix + k: v for k, v in out.items()}


# --- FLUX.1 ------------------------------------------------------------------------------------------------------
# diffusers' own FLUX converter assumes the full-size width (3072); these read it from the weights, so the same code
# loads the real files and the tests' tiny ones. (original name, diffusers name) per block, for weight and bias.
_FLUX_TOP = [("time_in.in_layer", "time_text_embed.timestep_embedder.linear_1"),
             ("time_in.out_layer", "time_text_embed.timestep_embedder.linear_2"),
             ("vector_in.in_layer", "time_text_embed.text_embedder.linear_1"),
             ("vector_in.out_layer", "time_text_embed.text_embedder.linear_2"),
             ("txt_in", "context_embedder"), ("img_in", "x_embedder"), ("final_layer.linear", "proj_out")]
_FLUX_GUIDANCE = [("guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_1"),
                  ("guidance_in.out_layer", "time_text_embed.guidance_embedder.linear_2")]
_FLUX_DOUBLE = [("img_mod.lin", "norm1.linear"), ("txt_mod.lin", "norm1_context.linear"),
                ("img_mlp.0", "ff.net.0.proj"), ("img_mlp.2", "ff.net.2"), ("txt_mlp.0", "ff_context.net.0.proj"),
                ("txt_mlp.2", "ff_context.net.2"), ("img_attn.proj", "attn.to_out.0"),
                ("txt_attn.proj", "attn.to_add_out")]
_FLUX_DOUBLE_NORMS = [("img_attn.norm.query_norm.scale", "attn.norm_q.weight"),
                      ("img_attn.norm.key_norm.scale", "attn.norm_k.weight"),
                      ("txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight"),
                      ("txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight")]
_FLUX_SINGLE = [("modulation.lin", "norm.linear"), ("linear2", "proj_out")]
_FLUX_SINGLE_NORMS = [("norm.query_norm.scale", "attn.norm_q.weight"), ("norm.key_norm.scale", "attn.norm_k.weight")]
_PARTS = ("weight", "bias")


def _flux_blocks(keys: list[str], kind: str) -> list[int]:
    return sorted({int(k.split(".")[1]) for k in keys if k.startswith(kind + ".")})


def flux_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original-layout FLUX.1 transformer (BFL's `double_blocks.*`/`single_blocks.*`, with or without
    `model.diffusion_model.`) as a diffusers `FluxTransformer2DModel` state dict."""
    s = {k.removeprefix(SD3_PREFIX): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    top = _FLUX_TOP + (_FLUX_GUIDANCE if "guidance_in.in_layer.weight" in s else [])
    for original, diffusers_name in top:
        for part in _PARTS:
            out[f"{diffusers_name}.{part}"] = s.pop(f"{original}.{part}")
    for part in _PARTS:
        out[f"norm_out.linear.{part}"] = _swap_scale_shift(s.pop(f"final_layer.adaLN_modulation.1.{part}"))
    inner = out["x_embedder.weight"].shape[0]
    for i in _flux_blocks(list(s), "double_blocks"):
        o, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        for original, diffusers_name in _FLUX_DOUBLE:
            for part in _PARTS:
                out[f"{d}{diffusers_name}.{part}"] = s.pop(f"{o}{original}.{part}")
        for original, diffusers_name in _FLUX_DOUBLE_NORMS:
            out[f"{d}{diffusers_name}"] = s.pop(f"{o}{original}")
        for part in _PARTS:
            for stream, names in (("img_attn", ("to_q", "to_k", "to_v")),
                                  ("txt_attn", ("add_q_proj", "add_k_proj", "add_v_proj"))):
                for name, tensor in zip(names, s.pop(f"{o}{stream}.qkv.{part}").chunk(3, dim=0), strict=True):
                    out[f"{d}attn.{name}.{part}"] = tensor
    for i in _flux_blocks(list(s), "single_blocks"):
        o, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        for original, diffusers_name in _FLUX_SINGLE:
            for part in _PARTS:
                out[f"{d}{diffusers_name}.{part}"] = s.pop(f"{o}{original}.{part}")
        for original, diffusers_name in _FLUX_SINGLE_NORMS:
            out[f"{d}{diffusers_name}"] = s.pop(f"{o}{original}")
        for part in _PARTS:
            fused = s.pop(f"{o}linear1.{part}")
            q, k, v, mlp = fused.split((inner, inner, inner, fused.shape[0] - 3 * inner), dim=0)
            out[f"{d}attn.to_q.{part}"], out[f"{d}attn.to_k.{part}"], out[f"{d}attn.to_v.{part}"] = q, k, v
            out[f"{d}proj_mlp.{part}"] = mlp
    if s:
        raise ValueError(f"FLUX weights not understood: {sorted(s)[:5]}")
    return out


def flux_to_original(state: dict[str, torch.Tensor], prefix: str = SD3_PREFIX) -> dict[str, torch.Tensor]:
    """The inverse of `flux_to_diffusers` (with ComfyUI/Forge's `model.diffusion_model.` prefix by default)."""
    s = dict(state)
    out: dict[str, torch.Tensor] = {}
    top = _FLUX_TOP + (_FLUX_GUIDANCE if "time_text_embed.guidance_embedder.linear_1.weight" in s else [])
    for original, diffusers_name in top:
        for part in _PARTS:
            out[f"{original}.{part}"] = s.pop(f"{diffusers_name}.{part}")
    for part in _PARTS:
        out[f"final_layer.adaLN_modulation.1.{part}"] = _swap_scale_shift(s.pop(f"norm_out.linear.{part}"))
    for i in _flux_blocks(list(s), "transformer_blocks"):
        o, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        for original, diffusers_name in _FLUX_DOUBLE:
            for part in _PARTS:
                out[f"{o}{original}.{part}"] = s.pop(f"{d}{diffusers_name}.{part}")
        for original, diffusers_name in _FLUX_DOUBLE_NORMS:
            out[f"{o}{original}"] = s.pop(f"{d}{diffusers_name}")
        for part in _PARTS:
            out[f"{o}img_attn.qkv.{part}"] = torch.cat([s.pop(f"{d}attn.to_{x}.{part}") for x in "qkv"])
            out[f"{o}txt_attn.qkv.{part}"] = torch.cat([s.pop(f"{d}attn.add_{x}_proj.{part}") for x in "qkv"])
    for i in _flux_blocks(list(s), "single_transformer_blocks"):
        o, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        for original, diffusers_name in _FLUX_SINGLE:
            for part in _PARTS:
                out[f"{o}{original}.{part}"] = s.pop(f"{d}{diffusers_name}.{part}")
        for original, diffusers_name in _FLUX_SINGLE_NORMS:
            out[f"{o}{original}"] = s.pop(f"{d}{diffusers_name}")
        for part in _PARTS:
            out[f"{o}linear1.{part}"] = torch.cat([*(s.pop(f"{d}attn.to_{x}.{part}") for x in "qkv"),
                                                   s.pop(f"{d}proj_mlp.{part}")])
    if s:
        raise ValueError(f"FLUX weights not mapped to the original layout: {sorted(s)[:5]}")
    return {prefix + k: v for k, v in out.items()}
