"""LoRA / LyCORIS weight patching: exact deltas per format, key mapping, exact restore, file cache, registry."""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from modules.devices import choose_policy
from modules.models.loader import cast, load_model
from modules.models.registry import CheckpointInfo
from modules.models.safe_load import CheckpointLoadError
from modules.models.tiny import build_tiny_components
from modules.networks import lora
from modules.networks.registry import hypernetwork_registry, lora_registry

DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo"
TO_Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
TO_Q_KEY = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


def tiny_model(family: str = "sd1", dtype: torch.dtype = torch.float32) -> SimpleNamespace:
    parts = {name: cast(module, dtype) for name, module in build_tiny_components(family).items()}
    encoders = [parts[name] for name in ("text_encoder", "text_encoder_2") if name in parts]
    return SimpleNamespace(unet=parts["unet"], text_encoders=encoders, family=family)


def snapshot(model: SimpleNamespace) -> dict[str, torch.Tensor]:
    state = {"unet." + k: v.clone() for k, v in model.unet.state_dict().items()}
    for i, encoder in enumerate(model.text_encoders):
        state.update({f"te{i}.{k}": v.clone() for k, v in encoder.state_dict().items()})
    return state


def changed(model: SimpleNamespace, before: dict[str, torch.Tensor]) -> set[str]:
    after = snapshot(model)
    return {k for k in before if not torch.equal(before[k], after[k])} | (set(after) - set(before))


def write_lora(path: Path, layers: dict[str, dict[str, torch.Tensor]], metadata: dict[str, str] | None = None
               ) -> Path:
    tensors = {f"{layer}.{part}": t.contiguous() for layer, parts in layers.items() for part, t in parts.items()}
    save_file(tensors, str(path), metadata=metadata)
    return path


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def lora_layer(out_dim: int, in_dim: int, rank: int, alpha: float, seed: int = 0) -> dict[str, torch.Tensor]:
    return {"lora_down.weight": randn(rank, in_dim, seed=seed), "lora_up.weight": randn(out_dim, rank, seed=seed + 1),
            "alpha": torch.tensor(alpha)}


# ---------------------------------------------------------------------------------------------------------------------
# LoRA: exact delta, nothing else, exact restore
# ---------------------------------------------------------------------------------------------------------------------

def test_lora_changes_exactly_the_target_by_up_down_alpha_over_rank(tmp_path):
    model = tiny_model()
    before = snapshot(model)
    layer = lora_layer(32, 32, rank=4, alpha=2.0)
    path = write_lora(tmp_path / "one.safetensors", {TO_Q_KEY: layer})

    patcher = lora.LoraPatcher(model)
    patcher.apply([(lora.load_lora_file(path), 1.0, 0.7)])

    weight = model.unet.get_submodule(TO_Q).weight
    expected = before["unet." + TO_Q + ".weight"] + 0.7 * (layer["lora_up.weight"] @ layer["lora_down.weight"]) * 2 / 4
    assert torch.allclose(weight, expected, rtol=0, atol=1e-6)
    assert changed(model, before) == {"unet." + TO_Q + ".weight"}
    assert patcher.reports[0].applied == 1 and patcher.reports[0].unmatched == []

    patcher.restore()
    assert changed(model, before) == set()
    assert patcher.active == []


def test_text_encoder_and_unet_multipliers_are_separate(tmp_path):
    model = tiny_model()
    before = snapshot(model)
    te_key = "lora_te_text_model_encoder_layers_1_self_attn_v_proj"
    te_layer, unet_layer = lora_layer(64, 64, 2, 1.0, seed=3), lora_layer(32, 32, 4, 4.0, seed=5)
    path = write_lora(tmp_path / "both.safetensors", {te_key: te_layer, TO_Q_KEY: unet_layer})
    file = lora.load_lora_file(path)
    patcher = lora.LoraPatcher(model)

    patcher.apply([(file, 0.5, 2.0)])
    te_weight = model.text_encoders[0].encoder.layers[1].self_attn.v_proj.weight
    te_delta = te_layer["lora_up.weight"] @ te_layer["lora_down.weight"] * (1.0 / 2)
    assert torch.allclose(te_weight, before["te0.encoder.layers.1.self_attn.v_proj.weight"] + 0.5 * te_delta,
                          rtol=0, atol=1e-6)
    unet_delta = unet_layer["lora_up.weight"] @ unet_layer["lora_down.weight"] * (4.0 / 4)
    assert torch.allclose(model.unet.get_submodule(TO_Q).weight, before[f"unet.{TO_Q}.weight"] + 2.0 * unet_delta,
                          rtol=0, atol=1e-6)

    patcher.apply([(file, 0.0, 1.0)])  # te multiplier 0: the text encoder is left alone
    assert changed(model, before) == {f"unet.{TO_Q}.weight"}


def test_same_set_is_a_no_op_and_another_set_restores_first(tmp_path, monkeypatch):
    model = tiny_model()
    before = snapshot(model)
    layer = lora_layer(32, 32, 4, 4.0)
    file = lora.load_lora_file(write_lora(tmp_path / "a.safetensors", {TO_Q_KEY: layer}))
    other_key = "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    other = lora.load_lora_file(write_lora(tmp_path / "b.safetensors", {other_key: lora_layer(32, 64, 2, 2.0)}))
    calls = []
    original_delta = lora.layer_delta
    monkeypatch.setattr(lora, "layer_delta", lambda *a: calls.append(a[0].key) or original_delta(*a))
    patcher = lora.LoraPatcher(model)

    patcher.apply([(file, 1.0, 1.0)])
    patcher.apply([(file, 1.0, 1.0)])
    assert calls == [TO_Q_KEY]  # the second apply computed nothing

    patcher.apply([(file, 1.0, 0.5)])  # not 1.5: the first application was undone
    delta = layer["lora_up.weight"] @ layer["lora_down.weight"]
    assert torch.allclose(model.unet.get_submodule(TO_Q).weight, before[f"unet.{TO_Q}.weight"] + 0.5 * delta,
                          rtol=0, atol=1e-6)

    patcher.apply([(other, 1.0, 1.0)])
    assert changed(model, before) == {"unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"}
    patcher.apply([])
    assert changed(model, before) == set()


def test_fp16_model_gets_the_float32_sum_rounded_once_and_restores_bit_exactly(tmp_path):
    model = tiny_model(dtype=torch.float16)
    before = snapshot(model)
    layer = {k: v.half() if v.ndim else v for k, v in lora_layer(32, 32, 4, 1.0).items()}
    file = lora.load_lora_file(write_lora(tmp_path / "half.safetensors", {TO_Q_KEY: layer}))
    patcher = lora.LoraPatcher(model)
    patcher.apply([(file, 1.0, 0.8)])

    weight = model.unet.get_submodule(TO_Q).weight
    delta = layer["lora_up.weight"].float() @ layer["lora_down.weight"].float() * (1.0 / 4) * 0.8
    assert weight.dtype == torch.float16
    assert torch.equal(weight, (before[f"unet.{TO_Q}.weight"].float() + delta).half())
    patcher.restore()
    assert changed(model, before) == set()


def test_patcher_for_keeps_one_patcher_per_unet_and_never_loses_backups(tmp_path):
    model = tiny_model()
    before = snapshot(model)
    file = lora.load_lora_file(write_lora(tmp_path / "a.safetensors", {TO_Q_KEY: lora_layer(32, 32, 4, 4.0)}))
    patcher = lora.patcher_for(model)
    patcher.apply([(file, 1.0, 1.0)])
    rewrapped = SimpleNamespace(unet=model.unet, text_encoders=model.text_encoders, family="sd1")
    assert lora.patcher_for(rewrapped) is patcher     # restored first, then bound to the new object
    assert changed(model, before) == set() and patcher.model is rewrapped
    assert lora.patcher_for(tiny_model()) is not patcher


# ---------------------------------------------------------------------------------------------------------------------
# LyCORIS formats
# ---------------------------------------------------------------------------------------------------------------------

CONV = "down_blocks.0.resnets.0.conv1"            # Conv2d 32 -> 32, 3x3
CONV_KEY = "lora_unet_down_blocks_0_resnets_0_conv1"


def test_locon_conv_layer(tmp_path):
    model = tiny_model()
    before = snapshot(model)
    down, up = randn(4, 32, 3, 3, seed=1), randn(32, 4, 1, 1, seed=2)
    file = lora.load_lora_file(write_lora(tmp_path / "locon.safetensors", {
        CONV_KEY: {"lora_down.weight": down, "lora_up.weight": up, "alpha": torch.tensor(8.0)}}))
    lora.LoraPatcher(model).apply([(file, 1.0, 1.0)])

    expected = (up.flatten(1) @ down.flatten(1)).reshape(32, 32, 3, 3) * (8.0 / 4)
    assert torch.allclose(model.unet.get_submodule(CONV).weight - before[f"unet.{CONV}.weight"], expected,
                          rtol=0, atol=1e-5)
    assert changed(model, before) == {f"unet.{CONV}.weight"}


def test_locon_tucker_mid_weight(tmp_path):
    model = tiny_model()
    before = snapshot(model)
    down, mid, up = randn(4, 32, 1, 1, seed=1), randn(4, 4, 3, 3, seed=2), randn(32, 4, 1, 1, seed=3)
    file = lora.load_lora_file(write_lora(tmp_path / "tucker.safetensors", {
        CONV_KEY: {"lora_down.weight": down, "lora_mid.weight": mid, "lora_up.weight": up,
                   "alpha": torch.tensor(2.0)}}))
    lora.LoraPatcher(model).apply([(file, 1.0, 1.0)])

    # up [out, r] x mid [r, r] per kernel position x down [r, in], laid out [out, in, kh, kw]
    per_position = up.flatten(1) @ mid.permute(2, 3, 0, 1) @ down.flatten(1)      # [3, 3, 32, 32]
    expected = per_position.permute(2, 3, 0, 1) * (2.0 / 4)
    assert torch.allclose(model.unet.get_submodule(CONV).weight - before[f"unet.{CONV}.weight"], expected,
                          rtol=0, atol=1e-5)


def test_loha_delta(tmp_path):
    model = tiny_model()
    before = snapshot(model)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"     # Linear 64 -> 32
    w1a, w1b, w2a, w2b = randn(32, 2, seed=1), randn(2, 64, seed=2), randn(32, 2, seed=3), randn(2, 64, seed=4)
    file = lora.load_lora_file(write_lora(tmp_path / "loha.safetensors", {"lora_unet_" + name.replace(".", "_"): {
        "hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b, "alpha": torch.tensor(1.0)}}))
    lora.LoraPatcher(model).apply([(file, 1.0, 0.6)])

    expected = (w1a @ w1b) * (w2a @ w2b) * (1.0 / 2) * 0.6
    assert torch.allclose(model.unet.get_submodule(name).weight - before[f"unet.{name}.weight"], expected,
                          rtol=0, atol=1e-5)
    assert changed(model, before) == {f"unet.{name}.weight"}


def test_lokr_delta_with_factored_and_full_factors(tmp_path):
    model = tiny_model()
    before = snapshot(model)
    factored = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v"   # 32 x 32
    full = "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k"         # 32 x 32
    w1, w2a, w2b = randn(4, 4, seed=1), randn(8, 2, seed=2), randn(2, 8, seed=3)
    v1, v2 = randn(2, 4, seed=4), randn(16, 8, seed=5)
    file = lora.load_lora_file(write_lora(tmp_path / "lokr.safetensors", {
        "lora_unet_" + factored.replace(".", "_"): {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b,
                                                     "alpha": torch.tensor(1.0)},
        # Both factors stored whole: no rank, so alpha is not applied (A1111).
        "lora_unet_" + full.replace(".", "_"): {"lokr_w1": v1, "lokr_w2": v2, "alpha": torch.tensor(7.0)},
    }))
    lora.LoraPatcher(model).apply([(file, 1.0, 1.0)])

    assert torch.allclose(model.unet.get_submodule(factored).weight - before[f"unet.{factored}.weight"],
                          torch.kron(w1, w2a @ w2b) * (1.0 / 2), rtol=0, atol=1e-5)
    assert torch.allclose(model.unet.get_submodule(full).weight - before[f"unet.{full}.weight"],
                          torch.kron(v1, v2), rtol=0, atol=1e-5)


def test_dora_rescales_the_merged_weight_per_input_column(tmp_path):
    model = tiny_model()
    before = snapshot(model)
    layer = lora_layer(32, 32, 4, 2.0)
    layer["dora_scale"] = randn(1, 32, seed=9).abs() + 0.5
    file = lora.load_lora_file(write_lora(tmp_path / "dora.safetensors", {TO_Q_KEY: layer}))
    lora.LoraPatcher(model).apply([(file, 1.0, 0.5)])

    original = before[f"unet.{TO_Q}.weight"]
    merged = original + layer["lora_up.weight"] @ layer["lora_down.weight"] * (2.0 / 4)
    decomposed = merged * layer["dora_scale"] / merged.norm(dim=0, keepdim=True)
    expected = original + 0.5 * (decomposed - original)
    assert torch.allclose(model.unet.get_submodule(TO_Q).weight, expected, rtol=0, atol=1e-5)


def test_full_diff_and_bias_diff_even_on_a_layer_without_bias(tmp_path):
    model = tiny_model()
    before = snapshot(model)
    out_name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"   # has a bias
    diff, diff_b, q_bias = randn(32, 32, seed=1), randn(32, seed=2), randn(32, seed=3)
    file = lora.load_lora_file(write_lora(tmp_path / "full.safetensors", {
        "lora_unet_" + out_name.replace(".", "_"): {"diff": diff, "diff_b": diff_b},
        TO_Q_KEY: {"diff": torch.zeros(32, 32), "diff_b": q_bias},   # to_q has no bias: one is added
    }))
    patcher = lora.LoraPatcher(model)
    patcher.apply([(file, 1.0, 0.25)])

    module = model.unet.get_submodule(out_name)
    assert torch.allclose(module.weight, before[f"unet.{out_name}.weight"] + 0.25 * diff, rtol=0, atol=1e-6)
    assert torch.allclose(module.bias, before[f"unet.{out_name}.bias"] + 0.25 * diff_b, rtol=0, atol=1e-6)
    assert torch.equal(model.unet.get_submodule(TO_Q).bias, 0.25 * q_bias)

    patcher.restore()
    assert model.unet.get_submodule(TO_Q).bias is None
    assert changed(model, before) == set()


def test_ia3_scales_output_rows(tmp_path):
    model = tiny_model()
    before = snapshot(model)
    scale = randn(32, seed=4)
    file = lora.load_lora_file(write_lora(tmp_path / "ia3.safetensors", {
        TO_Q_KEY: {"weight": scale, "on_input": torch.tensor(False)}}))
    lora.LoraPatcher(model).apply([(file, 1.0, 1.0)])
    original = before[f"unet.{TO_Q}.weight"]
    assert torch.allclose(model.unet.get_submodule(TO_Q).weight, original + original * scale[:, None],
                          rtol=0, atol=1e-6)


def test_inpainting_conv_in_gets_the_delta_on_its_first_four_channels(tmp_path):
    model = tiny_model("sd1-inpaint")
    before = snapshot(model)["unet.conv_in.weight"]        # [32, 9, 3, 3]
    down, up = randn(2, 4, 3, 3, seed=1), randn(32, 2, 1, 1, seed=2)
    file = lora.load_lora_file(write_lora(tmp_path / "inpaint.safetensors", {
        "lora_unet_conv_in": {"lora_down.weight": down, "lora_up.weight": up}}))
    lora.LoraPatcher(model).apply([(file, 1.0, 1.0)])
    delta = model.unet.conv_in.weight - before
    assert torch.allclose(delta[:, :4], (up.flatten(1) @ down.flatten(1)).reshape(32, 4, 3, 3), rtol=0, atol=1e-5)
    assert torch.equal(delta[:, 4:], torch.zeros(32, 5, 3, 3))


# ---------------------------------------------------------------------------------------------------------------------
# Key mapping
# ---------------------------------------------------------------------------------------------------------------------

def test_sdxl_te1_and_te2_keys_hit_their_own_encoders(tmp_path):
    model = tiny_model("sdxl")
    before = snapshot(model)
    file = lora.load_lora_file(write_lora(tmp_path / "xl.safetensors", {
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": lora_layer(64, 64, 2, 2.0, seed=1),
        "lora_te2_text_model_encoder_layers_1_mlp_fc1": lora_layer(128, 64, 2, 2.0, seed=2),
        "lora_te_text_model_encoder_layers_0_self_attn_k_proj": lora_layer(64, 64, 2, 2.0, seed=3),
    }))
    patcher = lora.LoraPatcher(model)
    patcher.apply([(file, 1.0, 1.0)])

    # CLIPTextModel (CLIP-L) has no text_model level in transformers 5; CLIPTextModelWithProjection (bigG) does.
    assert changed(model, before) == {"te0.encoder.layers.0.self_attn.q_proj.weight",
                                      "te1.text_model.encoder.layers.1.mlp.fc1.weight"}
    # A1111 matches no plain lora_te_ key on SDXL: reported, not guessed.
    assert patcher.reports[0].unmatched == ["lora_te_text_model_encoder_layers_0_self_attn_k_proj"]


@pytest.mark.parametrize(("family", "key", "module"), [
    ("sd1", "input_blocks_1_1_proj_in", "down_blocks.0.attentions.0.proj_in"),
    ("sd1", "input_blocks_1_0_in_layers_2", "down_blocks.0.resnets.0.conv1"),
    ("sd1", "input_blocks_2_0_op", "down_blocks.0.downsamplers.0.conv"),
    ("sd1", "input_blocks_0_0", "conv_in"),
    ("sd1", "time_embed_0", "time_embedding.linear_1"),
    ("sd1", "middle_block_0_emb_layers_1", "mid_block.resnets.0.time_emb_proj"),
    ("sd1", "middle_block_1_transformer_blocks_0_attn2_to_k", "mid_block.attentions.0.transformer_blocks.0.attn2.to_k"),
    ("sd1", "output_blocks_1_1_conv", "up_blocks.0.upsamplers.0.conv"),
    ("sd1", "output_blocks_2_1_transformer_blocks_0_ff_net_2", "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2"
     ),
    ("sd1", "output_blocks_2_0_skip_connection", "up_blocks.1.resnets.0.conv_shortcut"),
    ("sd1", "out_2", "conv_out"),
    ("sdxl", "input_blocks_3_1_transformer_blocks_1_attn1_to_q",
     "down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q"),
    ("sdxl", "label_emb_0_0", "add_embedding.linear_1"),
    ("sdxl", "output_blocks_0_1_proj_out", "up_blocks.0.attentions.0.proj_out"),
])
def test_ldm_style_unet_names_map_to_diffusers_modules(family, key, module):
    model = tiny_model(family)
    target = lora.LoraPatcher(model).lookup["lora_unet_" + key]
    assert (target.component, target.name) == ("unet", module)
    assert target.module is model.unet.get_submodule(module)


def test_ldm_named_lora_applies_like_its_diffusers_named_twin(tmp_path):
    layer = lora_layer(32, 32, 4, 4.0)   # proj_in of SD1 is a 1x1 conv; a 2-D LoRA fits it
    results = []
    for key in ("lora_unet_input_blocks_1_1_proj_in", "lora_unet_down_blocks_0_attentions_0_proj_in"):
        model = tiny_model()
        file = lora.load_lora_file(write_lora(tmp_path / f"{key}.safetensors", {key: layer}))
        lora.LoraPatcher(model).apply([(file, 1.0, 1.0)])
        results.append(model.unet.down_blocks[0].attentions[0].proj_in.weight.clone())
    assert torch.equal(results[0], results[1])
    expected = tiny_model().unet.down_blocks[0].attentions[0].proj_in.weight + (
        layer["lora_up.weight"] @ layer["lora_down.weight"]).reshape(32, 32, 1, 1)
    assert torch.allclose(results[0], expected, rtol=0, atol=1e-6)


def test_diffusers_peft_keys_apply_like_kohya_keys(tmp_path):
    layer = lora_layer(32, 32, 4, 4.0)
    model = tiny_model()
    peft = {f"unet.{TO_Q}.lora_A.weight": layer["lora_down.weight"],
            f"unet.{TO_Q}.lora_B.weight": layer["lora_up.weight"]}
    save_file(peft, str(tmp_path / "peft.safetensors"))
    lora.LoraPatcher(model).apply([(lora.load_lora_file(tmp_path / "peft.safetensors"), 1.0, 1.0)])
    expected = tiny_model().unet.get_submodule(TO_Q).weight + layer["lora_up.weight"] @ layer["lora_down.weight"]
    assert torch.allclose(model.unet.get_submodule(TO_Q).weight, expected, rtol=0, atol=1e-6)


def test_unknown_keys_are_reported_not_raised(tmp_path, caplog):
    model = tiny_model()
    before = snapshot(model)
    file = lora.load_lora_file(write_lora(tmp_path / "messy.safetensors", {
        TO_Q_KEY: lora_layer(32, 32, 4, 4.0),
        "lora_unet_no_such_layer": lora_layer(8, 8, 2, 2.0),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k": {"oft_blocks": torch.zeros(4, 8, 8)},
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v": lora_layer(77, 5, 2, 2.0),  # bad shape
        "something_else": {"weight": torch.zeros(2)},
    }))
    patcher = lora.LoraPatcher(model)
    with caplog.at_level(logging.WARNING, logger="webui"):
        patcher.apply([(file, 1.0, 1.0)])

    report = patcher.reports[0]
    assert report.applied == 1
    assert report.unmatched == ["lora_unet_no_such_layer"]
    assert report.unsupported == ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k",
                                  "something_else.weight"]
    assert report.failed == ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_v"]
    assert changed(model, before) == {f"unet.{TO_Q}.weight"}
    assert "messy: 4 layer(s) not applied" in caplog.text
    assert "lora_unet_no_such_layer" in caplog.text


# ---------------------------------------------------------------------------------------------------------------------
# The shipped demo LoRA on the shipped demo model
# ---------------------------------------------------------------------------------------------------------------------

def test_demo_lora_maps_every_key_onto_the_demo_model():
    checkpoint = CheckpointInfo(str(DEMO / "demo-shapes-sd1.safetensors"), "demo")
    model = load_model(checkpoint, choose_policy(use_cpu=["all"]))
    file = lora.load_lora_file(DEMO / "lora-striped.safetensors")
    assert len(file.layers) == 80 and file.unsupported == {} and file.unparsed_keys == []
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    te_before = {k: v.clone() for k, v in model.text_encoders[0].state_dict().items()}
    sample, timestep = randn(1, 4, 8, 8, seed=1), torch.tensor([500])
    context = randn(1, 77, model.unet.config.cross_attention_dim, seed=2)
    with torch.no_grad():
        reference = model.unet(sample, timestep, context).sample

    patcher = lora.patcher_for(model)
    assert lora.patcher_for(model) is patcher
    patcher.apply([(file, 1.0, 1.0)])
    report = patcher.reports[0]
    assert (report.applied, report.unmatched, report.failed) == (80, [], [])
    patched = {k for k, v in model.unet.state_dict().items() if not torch.equal(v, unet_before[k])}
    assert len(patched) == 80 and all(".attn" in k for k in patched)
    assert all(torch.equal(v, te_before[k]) for k, v in model.text_encoders[0].state_dict().items())
    with torch.no_grad():
        assert not torch.allclose(model.unet(sample, timestep, context).sample, reference, atol=1e-3)

    patcher.restore()
    assert all(torch.equal(v, unet_before[k]) for k, v in model.unet.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model.unet(sample, timestep, context).sample, reference)


def test_demo_lora_hash_alias_and_infotext():
    path = DEMO / "lora-striped.safetensors"
    file = lora.load_lora_file(path)
    assert file.metadata["ss_network_dim"] == "4"
    assert file.alias == "lora-striped"
    data = path.read_bytes()  # no sshs_model_hash in the file: the addnet hash of the bytes after the header
    expected = hashlib.sha256(data[8 + struct.unpack("<Q", data[:8])[0]:]).hexdigest()[:12]
    assert file.shorthash == expected
    assert lora.lora_hashes_infotext([("lora-striped", file)]) == f"lora-striped: {expected}"
    assert lora.lora_hashes_infotext([]) is None


def test_shorthash_prefers_sshs_model_hash_else_hashes_the_tensor_bytes(tmp_path):
    layers = {TO_Q_KEY: lora_layer(32, 32, 4, 4.0)}
    with_meta = write_lora(tmp_path / "a.safetensors", layers, {"sshs_model_hash": "0123456789abcdef" * 4})
    plain = write_lora(tmp_path / "b.safetensors", layers, {"ss_output_name": "nice name"})
    assert lora.load_lora_file(with_meta).shorthash == "0123456789ab"
    data = plain.read_bytes()
    (header_length,) = struct.unpack("<Q", data[:8])
    plain_file = lora.load_lora_file(plain)
    assert plain_file.shorthash == hashlib.sha256(data[8 + header_length:]).hexdigest()[:12]
    assert plain_file.alias == "nice name"
    assert lora.lora_hashes_infotext([("x:y,z", plain_file)]) == f"xyz: {plain_file.shorthash}"


# ---------------------------------------------------------------------------------------------------------------------
# Files: cache, pickles, prompt arguments
# ---------------------------------------------------------------------------------------------------------------------

def test_parsed_files_are_cached_until_the_file_changes(tmp_path):
    path = write_lora(tmp_path / "cached.safetensors", {TO_Q_KEY: lora_layer(32, 32, 4, 4.0)})
    reads = lora.read_count
    first = lora.load_lora_file(path)
    assert lora.load_lora_file(path) is first
    assert lora.load_lora_file(str(path)) is first
    assert lora.read_count == reads + 1

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert lora.load_lora_file(path) is not first
    assert lora.read_count == reads + 2


def test_cache_is_least_recently_used(tmp_path, monkeypatch):
    monkeypatch.setattr(lora._cache, "size", 2)
    paths = [write_lora(tmp_path / f"{i}.safetensors", {TO_Q_KEY: lora_layer(32, 32, 4, 4.0)}) for i in range(3)]
    reads = lora.read_count
    lora.load_lora_file(paths[0])
    lora.load_lora_file(paths[1])
    lora.load_lora_file(paths[0])            # 0 is now the most recent
    lora.load_lora_file(paths[2])            # evicts 1
    lora.load_lora_file(paths[0])
    assert lora.read_count == reads + 3
    lora.load_lora_file(paths[1])
    assert lora.read_count == reads + 4


def test_pickled_lora_loads_through_the_restricted_unpickler(tmp_path):
    layer = lora_layer(32, 32, 4, 4.0)
    torch.save({f"{TO_Q_KEY}.{part}": t for part, t in layer.items()}, tmp_path / "old.pt")
    file = lora.load_lora_file(tmp_path / "old.pt")
    assert set(file.layers) == {TO_Q_KEY} and file.metadata == {}

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return open, (str(marker), "w")

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointLoadError, match="refused"):
        lora.load_lora_file(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize(("items", "expected"), [
    (["a"], ("a", 1.0, 1.0)),
    (["a", "0.5"], ("a", 0.5, 0.5)),
    (["a", "0.5", "0.8"], ("a", 0.5, 0.8)),
    (["a", "te=0.3", "unet=0.9"], ("a", 0.3, 0.9)),
    (["a", "0.4", "unet=0"], ("a", 0.4, 0.0)),
])
def test_lora_tag_arguments(items, expected):
    assert lora.parse_lora_args(items) == expected


# ---------------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------------

def test_lora_registry_finds_by_name_or_alias_recursively(tmp_path):
    folder = tmp_path / "Lora"
    (folder / "styles").mkdir(parents=True)
    write_lora(folder / "plain.safetensors", {TO_Q_KEY: lora_layer(32, 32, 4, 4.0)})
    write_lora(folder / "styles" / "inked_v2.safetensors", {TO_Q_KEY: lora_layer(32, 32, 4, 4.0)},
               {"ss_output_name": "inked", "ss_base_model_version": "sdxl_base_v1-0"})
    torch.save({f"{TO_Q_KEY}.alpha": torch.tensor(1.0)}, folder / "old.pt")
    (folder / "notes.txt").write_text("not a network")

    registry = lora_registry(str(folder))
    assert [(e.name, e.alias, e.relative) for e in registry.refresh()] == [
        ("old", "old", "old.pt"), ("plain", "plain", "plain.safetensors"),
        ("inked_v2", "inked", "styles/inked_v2.safetensors")]
    assert registry.find("inked") is registry.find("inked_v2")
    assert registry.find("inked").path == str((folder / "styles" / "inked_v2.safetensors").resolve())
    assert registry.find("inked").sd_version == "SDXL"
    assert registry.find("plain").sd_version == "Unknown"
    assert registry.find("missing") is None

    write_lora(folder / "new.safetensors", {TO_Q_KEY: lora_layer(32, 32, 4, 4.0)})
    assert registry.find("new").name == "new"     # a miss rescans the folder


def test_hypernetwork_registry_lists_pt_files(tmp_path):
    folder = tmp_path / "hypernetworks"
    (folder / "sub").mkdir(parents=True)
    for name in ("anime.pt", "sub/ink.pt", "None.pt", "other.safetensors"):
        torch.save({"step": 1}, folder / name)
    registry = hypernetwork_registry(folder)
    assert registry.names() == ["anime", "ink"]
    assert registry.find("ink").relative == "sub/ink.pt"
    assert registry.find("None") is None
