"""Original (LDM / A1111) single-file layout writer and tiny models: files written here must load back through
diffusers' own converters into models that give bit-identical outputs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re
from functools import cache

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
    infer_diffusers_model_type,
    is_clip_model,
    is_clip_sdxl_model,
    is_open_clip_model,
    is_open_clip_sdxl_model,
    is_open_clip_sdxl_refiner_model,
)
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from modules.models.ldm_layout import (
    open_clip_to_ldm,
    save_single_file,
    to_single_file,
    unet_to_ldm,
    vae_to_ldm,
)
from modules.models.tiny import (
    FAMILIES,
    build_tiny_components,
    tiny_configs,
    v_prediction_probe_key,
    write_tiny_checkpoint,
)

UNET = "model.diffusion_model."
TOKENS = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 70])
# Where each family's text encoders live in the file, and whether they are OpenCLIP towers.
TEXT_ENCODER_PREFIXES = {
    "sd1": {"text_encoder": ("cond_stage_model.transformer.", False)},
    "sd2": {"text_encoder": ("cond_stage_model.model.", True)},
    "sdxl": {"text_encoder": ("conditioner.embedders.0.transformer.", False),
             "text_encoder_2": ("conditioner.embedders.1.model.", True)},
    "sdxl-refiner": {"text_encoder_2": ("conditioner.embedders.0.model.", True)},
}


def _layout(family: str) -> str:
    return family.removesuffix("-inpaint").removesuffix("-v")


@cache
def _tiny(family: str) -> tuple[dict[str, torch.nn.Module], dict[str, torch.Tensor]]:
    components = build_tiny_components(family, seed=0)
    return components, to_single_file(components, family)


def _fresh(cls, config: dict) -> torch.nn.Module:
    torch.manual_seed(1234)  # different weights from the originals, so only loading can make them equal
    return cls.from_config(config).eval()


def _unet_inputs(config: dict) -> dict:
    generator = torch.Generator().manual_seed(7)
    size = config["sample_size"]
    inputs = {
        "sample": torch.randn(1, config["in_channels"], size, size, generator=generator),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 77, config["cross_attention_dim"], generator=generator),
    }
    if config.get("addition_embed_type") == "text_time":
        time_ids = (config["projection_class_embeddings_input_dim"] - 64) // config["addition_time_embed_dim"]
        inputs["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 64, generator=generator),
                                       "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0][:time_ids]])}
    return inputs


def _assert_same_weights(model: torch.nn.Module, other: torch.nn.Module) -> None:
    theirs = other.state_dict()
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, theirs[key]), key


@pytest.mark.parametrize("family", FAMILIES)
def test_unet_round_trip(family: str) -> None:
    components, checkpoint = _tiny(family)
    config = tiny_configs(family)["unet"]
    unet = _fresh(UNet2DConditionModel, config)
    unet.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, config), strict=True)
    _assert_same_weights(components["unet"], unet)
    inputs = _unet_inputs(config)
    with torch.no_grad():
        assert torch.equal(components["unet"](**inputs).sample, unet(**inputs).sample)


@pytest.mark.parametrize("family", FAMILIES)
def test_vae_round_trip(family: str) -> None:
    components, checkpoint = _tiny(family)
    config = tiny_configs(family)["vae"]
    vae = _fresh(AutoencoderKL, config)
    vae.load_state_dict(convert_ldm_vae_checkpoint(checkpoint, config), strict=True)
    _assert_same_weights(components["vae"], vae)
    generator = torch.Generator().manual_seed(3)
    latents, image = torch.randn(1, 4, 8, 8, generator=generator), torch.rand(1, 3, 64, 64, generator=generator)
    with torch.no_grad():
        assert torch.equal(components["vae"].decode(latents).sample, vae.decode(latents).sample)
        original, loaded = components["vae"].encode(image).latent_dist, vae.encode(image).latent_dist
        assert torch.equal(original.mean, loaded.mean) and torch.equal(original.std, loaded.std)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_encoders_round_trip(family: str) -> None:
    components, checkpoint = _tiny(family)
    configs = tiny_configs(family)
    encoders = TEXT_ENCODER_PREFIXES[_layout(family)]
    assert set(encoders) == {k for k in components if k.startswith("text_encoder")}
    for name, (prefix, is_open_clip) in encoders.items():
        original = components[name]
        config = CLIPTextConfig.from_dict(configs[name])
        torch.manual_seed(1234)
        fresh = type(original)(config).eval()
        if is_open_clip:
            weights = convert_open_clip_checkpoint(fresh, checkpoint, prefix=prefix)
        else:
            weights = convert_ldm_clip_checkpoint(checkpoint)
        if _layout(family) == "sd2":
            # SD2 files hold one more OpenCLIP block than the encoder uses (penultimate-layer conditioning).
            extra = config.num_hidden_layers
            assert f"{prefix}transformer.resblocks.{extra}.attn.in_proj_weight" in checkpoint
            assert f"{prefix}transformer.resblocks.{extra + 1}.ln_1.weight" not in checkpoint
            extra_keys = [k for k in weights if k.startswith(f"text_model.encoder.layers.{extra}.")]
            assert len(extra_keys) == 16  # 12 original tensors, q/k/v split out of the fused in_proj weight/bias
            weights = {k: v for k, v in weights.items() if k not in extra_keys}
        if not hasattr(fresh, "text_model"):  # transformers 5 flattened CLIPTextModel
            weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
        fresh.load_state_dict(weights, strict=True)
        _assert_same_weights(original, fresh)
        with torch.no_grad():
            expected, actual = original(TOKENS, output_hidden_states=True), fresh(TOKENS, output_hidden_states=True)
        assert torch.equal(expected.last_hidden_state, actual.last_hidden_state)
        assert torch.equal(expected.hidden_states[-2], actual.hidden_states[-2])
        if isinstance(original, CLIPTextModelWithProjection):
            assert torch.equal(expected.text_embeds, actual.text_embeds)


def test_sd1_keys_look_like_a_real_checkpoint() -> None:
    _, checkpoint = _tiny("sd1")
    for key in ("model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.time_embed.0.weight",
                "model.diffusion_model.input_blocks.1.1.proj_in.weight",
                "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
                "model.diffusion_model.input_blocks.2.0.op.weight",
                "model.diffusion_model.input_blocks.3.0.skip_connection.weight",
                "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
                "model.diffusion_model.output_blocks.1.1.conv.weight",  # upsampler after a plain resnet
                "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.ff.net.0.proj.weight",
                "model.diffusion_model.out.2.weight",
                "first_stage_model.decoder.up.0.block.0.conv1.weight",
                "first_stage_model.decoder.up.3.upsample.conv.weight",
                "first_stage_model.encoder.down.0.downsample.conv.weight",
                "first_stage_model.encoder.down.2.block.0.nin_shortcut.weight",
                "first_stage_model.encoder.mid.attn_1.q.weight", "first_stage_model.post_quant_conv.weight",
                "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                "cond_stage_model.transformer.text_model.final_layer_norm.weight"):
        assert key in checkpoint, key
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in checkpoint  # lowest level: no upsampler
    assert checkpoint["model.diffusion_model.input_blocks.1.1.proj_in.weight"].ndim == 4  # SD1: 1x1 conv
    assert checkpoint["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    # decoder.up.N counts from the lowest resolution: up.0 holds the 32-channel full-resolution block
    assert checkpoint["first_stage_model.decoder.up.0.block.0.conv1.weight"].shape[0] == 32
    assert checkpoint["first_stage_model.decoder.up.3.block.0.conv1.weight"].shape[0] == 64
    assert not any(k.startswith(("unet.", "vae.", "text_encoder")) for k in checkpoint)


def test_sd2_and_sdxl_keys_look_like_real_checkpoints() -> None:
    _, sd2 = _tiny("sd2")
    assert sd2[UNET + "input_blocks.1.1.proj_in.weight"].ndim == 2  # use_linear_projection
    assert sd2["cond_stage_model.model.text_projection"].shape == (64, 64)
    assert torch.equal(sd2["cond_stage_model.model.text_projection"], torch.eye(64))
    assert sd2["cond_stage_model.model.logit_scale"].ndim == 0
    assert sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (192, 64)

    components, sdxl = _tiny("sdxl")
    for key in ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
                "conditioner.embedders.1.model.positional_embedding", "conditioner.embedders.1.model.ln_final.bias",
                "conditioner.embedders.0.transformer.text_model.encoder.layers.1.mlp.fc2.weight",
                "model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.label_emb.0.2.weight",
                "model.diffusion_model.input_blocks.3.1.transformer_blocks.1.attn1.to_q.weight",
                "model.diffusion_model.middle_block.1.transformer_blocks.1.norm3.weight",
                "model.diffusion_model.output_blocks.1.2.conv.weight"):  # upsampler after the attention
        assert key in sdxl, key
    assert sdxl[UNET + "label_emb.0.0.weight"].shape[1] == 1600
    # text_projection is stored transposed ([hidden, projection]) relative to transformers' Linear weight
    projection = components["text_encoder_2"].state_dict()["text_projection.weight"]
    assert torch.equal(sdxl["conditioner.embedders.1.model.text_projection"], projection.T)
    assert not any(k.startswith("cond_stage_model.") for k in sdxl)

    _, refiner = _tiny("sdxl-refiner")
    assert "conditioner.embedders.0.model.text_projection" in refiner
    assert not any(k.startswith(("conditioner.embedders.1.", "conditioner.embedders.0.transformer.")) for k in refiner)
    assert refiner[UNET + "label_emb.0.0.weight"].shape[1] == 1344


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_classifies_tiny_checkpoints(family: str) -> None:
    _, checkpoint = _tiny(family)
    inpaint = family.endswith("-inpaint")
    assert checkpoint[UNET + "input_blocks.0.0.weight"].shape[1] == (9 if inpaint else 4)
    # diffusers tells v2 by a cross-attention width of 1024 at input_blocks.2.1 and SDXL by OpenCLIP block 9: real
    # sizes that tiny models lack, so it can only tell inpainting (and falls back to v1) here. Its text-encoder
    # checks are by key alone and do tell the layouts apart.
    assert infer_diffusers_model_type(checkpoint) == ("inpainting" if inpaint else "v1")
    layout = _layout(family)
    assert is_clip_model(checkpoint) == (layout == "sd1")
    assert is_open_clip_model(checkpoint) == (layout == "sd2")
    assert is_clip_sdxl_model(checkpoint) == is_open_clip_sdxl_model(checkpoint) == (layout == "sdxl")
    assert is_open_clip_sdxl_refiner_model(checkpoint) == (layout == "sdxl-refiner")


def _small_open_clip(layers: int) -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_attention_heads=1, num_hidden_layers=layers,
                            vocab_size=100, max_position_embeddings=77, projection_dim=32, hidden_act="gelu")
    torch.manual_seed(0)
    return CLIPTextModelWithProjection(config).eval()


@pytest.mark.parametrize(("family", "expected"), [("sdxl", "xl_base"), ("sdxl-inpaint", "xl_inpaint"),
                                                  ("sdxl-refiner", "xl_refiner")])
def test_diffusers_classifies_sdxl_with_real_open_clip_depth(family: str, expected: str) -> None:
    _, checkpoint = _tiny(family)
    prefix = "conditioner.embedders.0.model." if family == "sdxl-refiner" else "conditioner.embedders.1.model."
    deep = {prefix + k: v for k, v in open_clip_to_ldm(_small_open_clip(10).state_dict()).items()}
    assert infer_diffusers_model_type({**checkpoint, **deep}) == expected


def _round_trip_unet(config: dict) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config).eval()
    original = unet_to_ldm(unet.state_dict(), unet.config)
    loaded = _fresh(UNet2DConditionModel, config)
    loaded.load_state_dict(convert_ldm_unet_checkpoint({UNET + k: v for k, v in original.items()}, config),
                           strict=True)
    _assert_same_weights(unet, loaded)
    return original


def test_unet_writer_handles_full_sd_structure() -> None:
    """Real SD1/SD2 depth (4 levels, 2 layers per block) at tiny widths gives the real key names."""
    config = {**tiny_configs("sd2")["unet"], "block_out_channels": [32, 32, 64, 64], "layers_per_block": 2,
              "attention_head_dim": 1, "cross_attention_dim": 1024, "sample_size": 8,
              "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
              "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}
    keys = _round_trip_unet(config)
    for key in ("input_blocks.3.0.op.weight", "input_blocks.11.0.in_layers.2.weight", "output_blocks.2.1.conv.weight",
                "output_blocks.5.2.conv.weight", "output_blocks.8.2.conv.weight",
                "output_blocks.11.0.skip_connection.weight", "output_blocks.11.1.transformer_blocks.0.norm1.bias"):
        assert key in keys, key
    assert not any(k.startswith(("input_blocks.12.", "output_blocks.12.", "output_blocks.11.2.")) for k in keys)
    # with the real cross-attention width and depth diffusers recognises SD2 from the UNet keys
    assert infer_diffusers_model_type({UNET + k: v for k, v in keys.items()}) == "v2"


def test_unet_writer_handles_sdxl_transformer_depths() -> None:
    config = {**tiny_configs("sdxl")["unet"], "block_out_channels": [32, 64, 64], "layers_per_block": 2,
              "transformer_layers_per_block": [1, 2, 3], "attention_head_dim": [1, 1, 1],
              "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
              "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]}
    keys = _round_trip_unet(config)
    depth = {int(m.group(1)): int(m.group(2)) + 1
             for k in keys if (m := re.match(r"input_blocks\.(\d+)\.1\.transformer_blocks\.(\d+)\.", k))}
    assert depth == {4: 2, 5: 2, 7: 3, 8: 3}
    for key in ("output_blocks.2.2.conv.weight", "output_blocks.5.2.conv.weight",
                "output_blocks.8.0.out_layers.3.weight", "middle_block.1.transformer_blocks.2.attn2.to_v.weight",
                "label_emb.0.2.bias"):
        assert key in keys, key
    assert not any(k.startswith(("output_blocks.6.1.", "output_blocks.8.1.", "output_blocks.9.")) for k in keys)


def test_unknown_keys_and_families_are_refused() -> None:
    components, _ = _tiny("sd1")
    with pytest.raises(ValueError, match="unknown family"):
        to_single_file(components, "sd3")
    with pytest.raises(ValueError, match="unknown family"):
        tiny_configs("sd3")
    vae = components["vae"]
    with pytest.raises(ValueError, match="no original-layout name"):
        vae_to_ldm({**vae.state_dict(), "encoder.extra.weight": torch.zeros(1)}, vae.config)


def test_tiny_configs_follow_the_conventions() -> None:
    sd1 = tiny_configs("sd1")
    assert sd1["unet"]["block_out_channels"] == [32, 64] and sd1["unet"]["attention_head_dim"] == 8
    assert sd1["text_encoder"]["hidden_act"] == "quick_gelu" and sd1["text_encoder"]["num_attention_heads"] == 1
    assert sd1["vae"]["block_out_channels"] == [32, 32, 64, 64] and sd1["vae"]["scaling_factor"] == 0.18215
    sd2v = tiny_configs("sd2-v")
    assert sd2v["unet"]["attention_head_dim"] == [1, 2] and sd2v["unet"]["upcast_attention"] is True
    assert sd2v["text_encoder"]["hidden_act"] == "gelu" and sd2v["text_encoder"]["num_hidden_layers"] == 2
    sdxl = tiny_configs("sdxl-inpaint")
    assert sdxl["unet"]["in_channels"] == 9 and sdxl["unet"]["cross_attention_dim"] == 128
    assert sdxl["unet"]["projection_class_embeddings_input_dim"] == 1600 and sdxl["vae"]["scaling_factor"] == 0.13025
    assert sdxl["text_encoder_2"]["architectures"] == ["CLIPTextModelWithProjection"]
    refiner = tiny_configs("sdxl-refiner")
    assert set(refiner) == {"unet", "vae", "text_encoder_2"}
    assert refiner["unet"]["transformer_layers_per_block"] == [1, 2]
    assert refiner["unet"]["projection_class_embeddings_input_dim"] == 1344


def test_tiny_components_are_deterministic_float32_eval() -> None:
    first, second = build_tiny_components("sd1", seed=5), build_tiny_components("sd1", seed=5)
    other = build_tiny_components("sd1", seed=6)
    probes = {"unet": "conv_in.weight", "vae": "encoder.conv_in.weight",
              "text_encoder": "embeddings.token_embedding.weight"}
    assert set(first) == set(probes)
    for name, model in first.items():
        assert not model.training
        assert all(p.dtype == torch.float32 for p in model.parameters())
        _assert_same_weights(model, second[name])
        assert not torch.equal(model.state_dict()[probes[name]], other[name].state_dict()[probes[name]])
    assert isinstance(first["text_encoder"], CLIPTextModel)


def test_write_tiny_checkpoint_is_deterministic(tmp_path) -> None:
    first = write_tiny_checkpoint("sd1", tmp_path / "a.safetensors", seed=0, metadata={"note": "tiny"})
    second = write_tiny_checkpoint("sd1", tmp_path / "b.safetensors", seed=0, metadata={"note": "tiny"})
    other = write_tiny_checkpoint("sd1", tmp_path / "c.safetensors", seed=1, metadata={"note": "tiny"})
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    with safe_open(str(first), "pt") as handle:
        assert handle.metadata() == {"note": "tiny"}
    saved = load_file(str(first))
    _, expected = _tiny("sd1")
    assert saved.keys() == expected.keys()
    assert all(torch.equal(saved[k], expected[k]) for k in expected)


def test_write_tiny_checkpoint_in_half_precision(tmp_path) -> None:
    path = write_tiny_checkpoint("sdxl-refiner", tmp_path / "half.safetensors", dtype=torch.float16)
    saved = load_file(str(path))
    assert {t.dtype for t in saved.values()} == {torch.float16}
    _, expected = _tiny("sdxl-refiner")
    assert all(torch.equal(saved[k], expected[k].half()) for k in expected)


def test_v_prediction_marks_only_the_probe_bias(tmp_path) -> None:
    eps = load_file(str(write_tiny_checkpoint("sd2", tmp_path / "eps.safetensors", v_prediction=False)))
    v = load_file(str(write_tiny_checkpoint("sd2", tmp_path / "v.safetensors", v_prediction=True)))
    default_v = load_file(str(write_tiny_checkpoint("sd2-v", tmp_path / "sd2v.safetensors")))
    probe = v_prediction_probe_key(v)
    assert probe == UNET + "output_blocks.3.1.transformer_blocks.0.norm1.bias"
    assert [k for k in eps if not torch.equal(eps[k], v[k])] == [probe]
    assert float(eps[probe].std(unbiased=False)) == 0.0
    assert float(v[probe].std(unbiased=False)) == pytest.approx(0.2, abs=1e-5)  # above the 0.09 threshold
    assert torch.equal(default_v[probe], v[probe])


def test_save_single_file_casts_floats_only(tmp_path) -> None:
    state = {"w": torch.ones(2, 3).T, "ids": torch.arange(4)}  # a non-contiguous view and an integer tensor
    save_single_file(state, tmp_path / "sub" / "x.safetensors", dtype=torch.bfloat16)
    saved = load_file(str(tmp_path / "sub" / "x.safetensors"))
    assert saved["w"].dtype == torch.bfloat16 and saved["w"].shape == (3, 2)
    assert saved["ids"].dtype == torch.int64 and torch.equal(saved["ids"], torch.arange(4))
