"""ControlNet / T2I-Adapter model files (issue 16): listing and titles as sd-webui-controlnet shows them, finding a
model by what the UI or API names, detection of kind and family from keys and shapes, loading every layout offline
into modules that compute exactly what the source modules computed, clear errors, and the LRU cache.

Every model here is a tiny random-weight diffusers module written by the test in the original single-file layout
(lllyasviel / TencentARC keys), in diffusers layout, and as a pickle.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import ControlNetModel, T2IAdapter, UNet2DConditionModel
from safetensors.torch import save_file

from modules.models.architecture import family_config
from modules.models.tiny import tiny_configs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "extensions-builtin" / "sd-webui-controlnet"))

from lib_controlnet.model_detection import build_adapter  # noqa: E402  (the extension folder is on sys.path)
from lib_controlnet.models import (  # noqa: E402
    ControlModelError,
    ModelCache,
    check_compatible,
    detect,
    find_model,
    list_models,
    load,
    to_original_layout,
)

# Hint-embedding widths smaller than the standard (16, 32, 96, 256): the original layout then ends at
# input_hint_block.6 instead of .14, which diffusers' own converter cannot read.
TINY_EMBEDDING = (8, 16)
HINT_SCALE = 2 ** (len(TINY_EMBEDDING) - 1)
LATENT = 8
TIME_IDS = 6
TIME_EMBED_DIM = 256


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere: from_unet zero-initialises the output convs, which would make every output 0 and
    every comparison pass."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return module.eval()


def _tiny_controlnet(family: str) -> ControlNetModel:
    unet = UNet2DConditionModel.from_config(tiny_configs(family)["unet"])
    return _randomise(ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=TINY_EMBEDDING), seed=1)


@pytest.fixture(scope="module")
def controlnets() -> dict[str, ControlNetModel]:
    return {family: _tiny_controlnet(family) for family in ("sd1", "sd2", "sdxl")}


def _controlnet_outputs(module: ControlNetModel) -> list[torch.Tensor]:
    """Residuals for fixed random inputs shaped by the module's config."""
    config = module.config
    generator = torch.Generator().manual_seed(7)
    sample = torch.randn(1, config.in_channels, LATENT, LATENT, generator=generator)
    hint = torch.randn(1, config.conditioning_channels, LATENT * HINT_SCALE, LATENT * HINT_SCALE, generator=generator)
    context = torch.randn(1, 5, config.cross_attention_dim, generator=generator)
    extra = {}
    if config.addition_embed_type == "text_time":
        text_embeds = config.projection_class_embeddings_input_dim - TIME_IDS * config.addition_time_embed_dim
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(1, text_embeds, generator=generator),
                                      "time_ids": torch.randn(1, TIME_IDS, generator=generator)}
    with torch.no_grad():
        down, mid = module(sample, 10, context, hint, return_dict=False, **extra)
    return [*down, mid]


def _assert_same_outputs(expected: list[torch.Tensor], actual: list[torch.Tensor]) -> None:
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual, strict=True):
        assert want.shape == got.shape
        assert torch.allclose(want, got, atol=1e-5), (want - got).abs().max()


def _original_file(module: ControlNetModel, path: Path, prefix: str = "control_model.") -> Path:
    state = to_original_layout(module.state_dict(), module.config, prefix=prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, str(path))
    return path


def _legacy_hash(path: Path) -> str:
    """A1111's legacy model hash, computed here from the bytes: sha256 of the 64 KiB at 1 MiB, 8 hex."""
    return hashlib.sha256(path.read_bytes()[0x100000:0x110000]).hexdigest()[:8]


# --- the original layout ----------------------------------------------------------------------------------------

def test_original_layout_has_the_extensions_key_names_for_a_full_size_sd15_and_sdxl_controlnet():
    expected = {
        "sd1": (340, ["input_hint_block.14.weight", "zero_convs.11.0.weight", "middle_block_out.0.bias",
                      "input_blocks.1.1.proj_in.weight", "input_blocks.3.0.op.weight", "time_embed.2.bias",
                      "input_blocks.11.0.out_layers.3.weight",
                      "middle_block.1.transformer_blocks.0.attn2.to_k.weight"]),
        "sdxl": (None, ["label_emb.0.0.weight", "label_emb.0.2.bias",
                        "input_blocks.8.1.transformer_blocks.9.norm3.weight", "zero_convs.8.0.weight",
                        "input_hint_block.14.bias", "middle_block.1.proj_in.weight"]),
    }
    for family, (count, names) in expected.items():
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(family_config(family, "unet"))
            controlnet = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
        state = to_original_layout(controlnet.state_dict(), controlnet.config)
        if count is not None:
            assert len(state) == count
        for name in names:
            assert "control_model." + name in state, (family, name)
        assert "control_model.zero_convs.9.0.weight" not in state or family == "sd1"
        assert detect(state) == ("controlnet", family)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_original_safetensors_controlnet_loads_and_computes_what_the_source_computed(family, controlnets, tmp_path):
    source = controlnets[family]
    path = _original_file(source, tmp_path / "ControlNet" / f"control_tiny_{family}.safetensors")
    (info,) = list_models([str(tmp_path / "ControlNet")])
    assert info.name == f"control_tiny_{family}"
    assert info.title == f"control_tiny_{family} [{_legacy_hash(path)}]"

    model = load(info)
    assert (model.kind, model.family) == ("controlnet", family)
    assert isinstance(model.module, ControlNetModel)
    assert next(model.module.parameters()).device.type == "cpu"
    assert model.module.config.cross_attention_dim == source.config.cross_attention_dim
    _assert_same_outputs(_controlnet_outputs(source), _controlnet_outputs(model.module))


def test_controlnet_without_the_control_model_prefix_loads_as_thibauds_sd21_files_do(controlnets, tmp_path):
    path = _original_file(controlnets["sd2"], tmp_path / "controlnet_sd21_tiny.safetensors", prefix="")
    model = load(find_model("controlnet_sd21_tiny", [str(tmp_path)]))
    assert (model.kind, model.family) == ("controlnet", "sd2")
    assert path.exists()
    _assert_same_outputs(_controlnet_outputs(controlnets["sd2"]), _controlnet_outputs(model.module))


def test_pickled_controlnet_loads_through_the_restricted_unpickler(controlnets, tmp_path):
    source = controlnets["sd1"]
    _original_file(source, tmp_path / "control_sd15_tiny.pth")
    wrapped = to_original_layout(source.state_dict(), source.config)
    torch.save({"state_dict": wrapped}, str(tmp_path / "control_sd15_wrapped.ckpt"))
    for name in ("control_sd15_tiny", "control_sd15_wrapped"):
        model = load(find_model(name, [str(tmp_path)]))
        assert (model.kind, model.family) == ("controlnet", "sd1")
        _assert_same_outputs(_controlnet_outputs(source), _controlnet_outputs(model.module))


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_code_is_refused_before_anything_in_it_runs(tmp_path, capsys):
    torch.save({"control_model.input_hint_block.0.weight": _RunsCodeWhenUnpickled()}, str(tmp_path / "evil.pth"))
    with pytest.raises(ControlModelError) as error:
        load(find_model("evil", [str(tmp_path)]))
    assert "evil.pth" in str(error.value) and "refused" in str(error.value)
    assert "this must never run" not in capsys.readouterr().out


# --- diffusers layout -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_diffusers_folder_and_single_file_controlnets_load_equal(family, controlnets, tmp_path):
    source = controlnets[family]
    source.save_pretrained(str(tmp_path / f"diffusers_{family}_folder"))
    save_file({k: v.contiguous() for k, v in source.state_dict().items()},
              str(tmp_path / f"diffusers_{family}_file.safetensors"))
    models = list_models([str(tmp_path)])
    assert [m.name for m in models] == [f"diffusers_{family}_file", f"diffusers_{family}_folder"]
    folder = models[1]
    weights = tmp_path / f"diffusers_{family}_folder" / "diffusion_pytorch_model.safetensors"
    assert folder.title == f"diffusers_{family}_folder [{_legacy_hash(weights)}]"
    for info in models:
        model = load(info)
        assert (model.kind, model.family) == ("controlnet", family)
        _assert_same_outputs(_controlnet_outputs(source), _controlnet_outputs(model.module))


def test_shuffle_controlnets_pool_their_residuals_as_the_extension_does(controlnets, tmp_path):
    _original_file(controlnets["sd1"], tmp_path / "control_v11e_sd15_shuffle.safetensors")
    _original_file(controlnets["sd1"], tmp_path / "control_v11p_sd15_canny.safetensors")
    assert load(find_model("control_v11e_sd15_shuffle", [str(tmp_path)])).module.config.global_pool_conditions
    assert not load(find_model("control_v11p_sd15_canny", [str(tmp_path)])).module.config.global_pool_conditions


# --- T2I-Adapters -----------------------------------------------------------------------------------------------

ADAPTERS = {
    # name: (diffusers adapter_type, channels, family)
    "full": ("full_adapter", [32, 64], "sd1"),
    "light": ("light_adapter", [32, 64], "sd1"),
    "xl": ("full_adapter_xl", [32, 64, 64], "sdxl"),
}


def _tiny_adapter(name: str) -> T2IAdapter:
    adapter_type, channels, family = ADAPTERS[name]
    factor = 16 if family == "sdxl" else 8
    adapter = T2IAdapter(in_channels=3, channels=channels, num_res_blocks=2, downscale_factor=factor,
                         adapter_type=adapter_type)
    return _randomise(adapter, seed=3)


def _adapter_to_original(adapter: T2IAdapter) -> dict[str, torch.Tensor]:
    """TencentARC's layout: the full adapter numbers its resnet blocks in one run over all levels (the first block
    of a widening level carries in_conv); the light adapter nests `body.N.body.M`."""
    blocks = adapter.config.num_res_blocks
    light = adapter.config.adapter_type == "light_adapter"
    out = {}
    for key, tensor in adapter.state_dict().items():
        key = key.removeprefix("adapter.")
        parts = key.split(".")
        if parts[0] == "body" and light:
            key = key.replace(".resnets.", ".body.")
        elif parts[0] == "body" and parts[2] == "resnets":
            key = ".".join(["body", str(int(parts[1]) * blocks + int(parts[3])), *parts[4:]])
        elif parts[0] == "body":  # in_conv of the level's first block
            key = ".".join(["body", str(int(parts[1]) * blocks), *parts[2:]])
        out[key] = tensor
    return out


def _adapter_outputs(adapter: T2IAdapter) -> list[torch.Tensor]:
    image = torch.randn(1, adapter.config.in_channels, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return list(adapter(image))


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_t2i_adapters_in_the_original_layout_load_and_compute_what_the_source_computed(name, tmp_path):
    source = _tiny_adapter(name)
    original = _adapter_to_original(source)
    assert "conv_in.weight" in original or "body.0.in_conv.weight" in original
    save_file({k: v.contiguous() for k, v in original.items()}, str(tmp_path / f"t2iadapter_{name}.safetensors"))
    model = load(find_model(f"t2iadapter_{name}", [str(tmp_path)]))
    assert (model.kind, model.family) == ("t2i_adapter", ADAPTERS[name][2])
    assert model.module.config.adapter_type == ADAPTERS[name][0]
    _assert_same_outputs(_adapter_outputs(source), _adapter_outputs(model.module))


def test_full_size_adapters_in_tencentarcs_layout_have_its_key_names_and_are_read_back():
    """The names and shapes diffusers' conversion script (scripts/convert_original_t2i_adapter.py) asserts for the
    released SD1.4 adapters: 8 numbered full-adapter blocks with in_conv where the width grows, 4 light levels."""
    with init_empty_weights():
        full = T2IAdapter(in_channels=3, adapter_type="full_adapter")
        light = T2IAdapter(in_channels=3, channels=[320, 640, 1280], num_res_blocks=4, adapter_type="light_adapter")
    original = _adapter_to_original(full)
    assert original["conv_in.weight"].shape == (320, 192, 3, 3)
    assert original["body.0.block1.weight"].shape == (320, 320, 3, 3)
    assert original["body.2.in_conv.weight"].shape == (640, 320, 1, 1)
    assert original["body.4.in_conv.weight"].shape == (1280, 640, 1, 1)
    assert original["body.6.block1.weight"].shape == (1280, 1280, 3, 3)
    assert "body.7.block2.bias" in original and "body.6.in_conv.weight" not in original
    assert detect(original) == ("t2i_adapter", "sd1")
    original_light = _adapter_to_original(light)
    assert {"body.0.in_conv.weight", "body.3.body.3.block2.bias", "body.3.out_conv.weight"} <= set(original_light)
    assert detect(original_light) == ("t2i_adapter", "sd1")
    for source, weights in ((full, original), (light, original_light)):
        rebuilt = build_adapter(weights, "sd1")
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in source.state_dict().items()}
        fields = ("adapter_type", "in_channels", "channels", "num_res_blocks", "downscale_factor")
        assert [rebuilt.config[f] for f in fields] == [source.config[f] for f in fields]


def test_t2i_adapter_in_diffusers_layout_file_and_folder(tmp_path):
    source = _tiny_adapter("full")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "t2i_diffusers.safetensors"))
    source.save_pretrained(str(tmp_path / "t2i_folder"))
    for name in ("t2i_diffusers", "t2i_folder"):
        model = load(find_model(name, [str(tmp_path)]))
        assert (model.kind, model.family) == ("t2i_adapter", "sd1")
        _assert_same_outputs(_adapter_outputs(source), _adapter_outputs(model.module))


# --- control-LoRA -----------------------------------------------------------------------------------------------

def _control_lora_from(controlnet: ControlNetModel, base: UNet2DConditionModel, rank: int = 2) -> dict:
    """Turn `controlnet` (copied from `base`) into what Stability ships, changing it on the way: every other
    encoder weight gets a random low-rank change stored as `<layer>.up`/`.down`, every third norm a full new
    weight; the ControlNet's own layers are stored whole; whatever equals the base UNet is left out."""
    generator = torch.Generator().manual_seed(11)
    stored_whole, low_rank = set(), {}
    with torch.no_grad():
        named = [(k, p) for k, p in controlnet.named_parameters() if k.startswith(("down_blocks.", "mid_block."))]
        matrices = [p for k, p in named if k.endswith(".weight") and p.ndim in (2, 4)]
        for parameter in matrices[::2]:
            up_shape = (parameter.shape[0], rank, *([1, 1] if parameter.ndim == 4 else []))
            up = torch.randn(up_shape, generator=generator) * 0.1
            down = torch.randn(rank, *parameter.shape[1:], generator=generator) * 0.1
            parameter += (up.flatten(1) @ down.flatten(1)).reshape(parameter.shape)
            low_rank[parameter.data_ptr()] = (up, down)
        for parameter in [p for k, p in named if "norm" in k and p.ndim == 1][::3]:
            parameter += torch.randn(parameter.shape, generator=generator) * 0.1
            stored_whole.add(parameter.data_ptr())
    original = to_original_layout(controlnet.state_dict(), controlnet.config, prefix="")
    own = ("input_hint_block.", "zero_convs.", "middle_block_out.")
    out = {"lora_controlnet": torch.tensor([])}
    for key, tensor in original.items():
        if tensor.data_ptr() in low_rank:
            layer = key.removesuffix(".weight")
            out[layer + ".up"], out[layer + ".down"] = low_rank[tensor.data_ptr()]
        elif key.startswith(own) or tensor.data_ptr() in stored_whole:
            out[key] = tensor.clone()
    assert len(out) < len(original)  # most of the encoder comes from the base UNet
    return out


def test_control_lora_is_made_whole_from_the_base_unet_and_computes_what_the_full_controlnet_computes(tmp_path):
    base = _randomise(UNet2DConditionModel.from_config(tiny_configs("sdxl")["unet"]), seed=2)
    controlnet = ControlNetModel.from_unet(base, conditioning_embedding_out_channels=TINY_EMBEDDING).eval()
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith("controlnet_"):  # the zero-initialised output convs and the hint embedding
                parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(4)) * 0.05)
    save_file(_control_lora_from(controlnet, base), str(tmp_path / "control-lora-canny-rank2-tiny.safetensors"))
    info = find_model("control-lora-canny-rank2-tiny", [str(tmp_path)])

    with pytest.raises(ControlModelError, match="control-LoRA .* can only be loaded with a checkpoint loaded"):
        load(info)
    model = load(info, base_unet=base)
    assert (model.kind, model.family) == ("control_lora", "sdxl")
    _assert_same_outputs(_controlnet_outputs(controlnet), _controlnet_outputs(model.module))
    with pytest.raises(ControlModelError, match='control-LoRA "control-lora-canny-rank2-tiny" is for SDXL'):
        check_compatible(model, "sd1")

    sd1_base = UNet2DConditionModel.from_config(tiny_configs("sd1")["unet"])
    with pytest.raises(ControlModelError, match="the checkpoint's UNet does not have in that shape"):
        load(info, base_unet=sd1_base)

    cache = ModelCache()
    cached = cache.get(info, base_unet=base)
    assert cache.get(info, base_unet=base) is cached
    other_base = _randomise(UNet2DConditionModel.from_config(tiny_configs("sdxl")["unet"]), seed=9)
    assert cache.get(info, base_unet=other_base) is not cached  # merged again into the other checkpoint


# --- compatibility ----------------------------------------------------------------------------------------------

def test_family_mismatch_gives_the_message_that_names_both(controlnets, tmp_path):
    _original_file(controlnets["sdxl"], tmp_path / "controlnet_xl_tiny.safetensors")
    _original_file(controlnets["sd1"], tmp_path / "control_sd15_tiny.safetensors")
    xl = load(find_model("controlnet_xl_tiny", [str(tmp_path)]))
    sd15 = load(find_model("control_sd15_tiny", [str(tmp_path)]))
    with pytest.raises(ControlModelError) as error:
        check_compatible(xl, "sd1")
    assert str(error.value) == ('ControlNet "controlnet_xl_tiny" is for SDXL; the loaded checkpoint is SD 1.x. '
                                "Choose an SD 1.x ControlNet.")
    with pytest.raises(ControlModelError, match=r'"control_sd15_tiny" is for SD 1.x; .* is SDXL'):
        check_compatible(sd15, "sdxl-inpaint")
    with pytest.raises(ControlModelError, match="SDXL refiner"):
        check_compatible(xl, "sdxl-refiner")
    check_compatible(xl, "sdxl")
    check_compatible(xl, "sdxl-inpaint")
    check_compatible(sd15, "sd1-inpaint")


def test_controlnet_whose_context_width_differs_from_the_base_unet_is_refused(controlnets, tmp_path):
    _original_file(controlnets["sd1"], tmp_path / "control_sd15_tiny.safetensors")
    info = find_model("control_sd15_tiny", [str(tmp_path)])
    sdxl_unet = tiny_configs("sdxl")["unet"]
    with pytest.raises(ControlModelError) as error:
        load(info, base_unet_config=sdxl_unet)
    message = str(error.value)
    assert '"control_sd15_tiny"' in message
    assert f"width of {controlnets['sd1'].config.cross_attention_dim}" in message
    assert f"has {sdxl_unet['cross_attention_dim']}" in message
    assert load(info, base_unet_config=tiny_configs("sd1")["unet"]).family == "sd1"


# --- files that are no ControlNet -------------------------------------------------------------------------------

def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.clone() for k, v in tensors.items()}, str(path))
    return path


def test_files_that_are_not_control_models_say_what_they_look_like(tmp_path):
    weight = torch.zeros(4, 4)
    _save(tmp_path / "checkpoint.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": weight,
                                                "first_stage_model.encoder.conv_in.weight": weight})
    _save(tmp_path / "lora.safetensors", {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": weight})
    _save(tmp_path / "vae.safetensors", {"encoder.conv_in.weight": weight, "decoder.conv_in.weight": weight})
    _save(tmp_path / "random.safetensors", {"something.weight": weight})
    _save(tmp_path / "control_lora_rank128.safetensors", {"lora_controlnet": torch.zeros(1),
                                                          "input_hint_block.0.weight": weight})
    expected = {"checkpoint": "Stable Diffusion checkpoint, not a ControlNet: put it in models/Stable-diffusion",
                "lora": "LoRA, not a ControlNet: put it in models/Lora",
                "vae": "VAE, not a ControlNet",
                "random": "not a ControlNet or T2I-Adapter",
                "control_lora_rank128": "this is a control-LoRA"}
    for name, text in expected.items():
        with pytest.raises(ControlModelError) as error:
            load(find_model(name, [str(tmp_path)]))
        assert f'"{name}"' in str(error.value) and text in str(error.value), str(error.value)


def test_truncated_file_names_the_file(controlnets, tmp_path):
    path = _original_file(controlnets["sd1"], tmp_path / "control_broken.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ControlModelError) as error:
        load(find_model("control_broken", [str(tmp_path)]))
    assert "control_broken" in str(error.value) and "truncated" in str(error.value)


# --- listing and finding ----------------------------------------------------------------------------------------

def _touch_model(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(path, {"control_model.input_hint_block.0.weight": torch.full((2,), float(seed))})


def test_listing_order_folders_annotators_and_duplicates(tmp_path):
    first, second = tmp_path / "models" / "ControlNet", tmp_path / "extra"
    _touch_model(first / "control_v11p_sd15_openpose.safetensors", 1)
    _touch_model(first / "control_v11p_sd15_canny.pth", 2)
    _touch_model(first / "sub" / "t2iadapter_color.safetensors", 3)
    _touch_model(first / "annotators" / "body_pose_model.pth", 4)
    _touch_model(first / "None.safetensors", 5)
    (first / "notes.txt").write_text("not a model")
    _touch_model(second / "control_v11p_sd15_canny.pth", 2)  # same name and hash: the first folder's wins
    _touch_model(second / "a_second_folder_model.ckpt", 6)
    (first / "sub" / "loop").symlink_to(first, target_is_directory=True)  # must not recurse forever
    models = list_models([str(first), str(second), str(tmp_path / "missing")])
    assert [m.name for m in models] == ["control_v11p_sd15_canny", "control_v11p_sd15_openpose",
                                        "t2iadapter_color", "a_second_folder_model"]
    assert models[0].path == str(first / "control_v11p_sd15_canny.pth")
    assert all(m.title == f"{m.name} [{m.hash}]" and len(m.hash) == 8 for m in models)


def test_listing_sort_orders_and_name_filter_as_the_extension_settings(tmp_path):
    older = _touch_model(tmp_path / "b_older.safetensors", 1)
    newer = _touch_model(tmp_path / "a" / "c_newer.safetensors", 2)
    _touch_model(tmp_path / "a_middle.pth", 3)
    os.utime(older, (1_000_000, 1_000_000))
    os.utime(newer, (3_000_000, 3_000_000))
    os.utime(tmp_path / "a_middle.pth", (2_000_000, 2_000_000))
    folders = [str(tmp_path)]
    assert [m.name for m in list_models(folders)] == ["a_middle", "b_older", "c_newer"]
    assert [m.name for m in list_models(folders, sort_by="date")] == ["c_newer", "a_middle", "b_older"]
    assert [m.name for m in list_models(folders, sort_by="path name")] == ["c_newer", "a_middle", "b_older"]
    assert [m.name for m in list_models(folders, name_filter=" OLDER ")] == ["b_older"]
    with pytest.raises(ValueError, match="unknown sort order"):
        list_models(folders, sort_by="size")


def test_hash_is_the_legacy_model_hash_of_bytes_past_the_first_mebibyte(tmp_path):
    path = _save(tmp_path / "big_control.safetensors",
                 {"control_model.input_hint_block.0.weight": torch.arange(400_000, dtype=torch.float32)})
    assert path.stat().st_size > 0x110000
    (info,) = list_models([str(tmp_path)])
    assert info.hash == _legacy_hash(path) != hashlib.sha256(b"").hexdigest()[:8]


def test_find_model_by_title_name_file_name_other_hash_and_part_of_the_name(tmp_path):
    _touch_model(tmp_path / "control_v11p_sd15_canny.safetensors", 1)
    _touch_model(tmp_path / "control_v11p_sd15_canny_anime.safetensors", 2)
    _touch_model(tmp_path / "control_v11f1p_sd15_depth.pth", 3)
    folders = [str(tmp_path)]
    canny = next(m for m in list_models(folders) if m.name == "control_v11p_sd15_canny")
    for query in (canny.title, "control_v11p_sd15_canny", "Control_V11p_SD15_Canny",
                  "control_v11p_sd15_canny [0123abcd]", "control_v11p_sd15_canny.safetensors", "sd15_canny"):
        assert find_model(query, folders) == canny, query
    assert find_model("depth", folders).name == "control_v11f1p_sd15_depth"
    for none in ("None", "none", ""):
        with pytest.raises(ControlModelError, match="no ControlNet model chosen"):
            find_model(none, folders)
    with pytest.raises(ControlModelError) as error:
        find_model("control_v11p_sd15_openpose", folders)
    assert '"control_v11p_sd15_openpose" not found' in str(error.value)
    assert "control_v11p_sd15_canny" in str(error.value)


# --- cache ------------------------------------------------------------------------------------------------------

def test_cache_keeps_the_most_recently_used_models_and_can_shrink(controlnets, tmp_path):
    for name in ("a", "b", "c"):
        _original_file(controlnets["sd1"], tmp_path / f"control_{name}.safetensors")
    folders = [str(tmp_path)]
    a, b, c = (find_model(f"control_{name}", folders) for name in ("a", "b", "c"))
    cache = ModelCache(size=2)
    first_a = cache.get(a)
    first_b = cache.get(b)
    assert cache.get(a) is first_a  # a hit, and now the most recent
    cache.get(c)  # evicts b, the least recently used
    assert cache.names() == [a.title, c.title]
    assert cache.get(a) is first_a
    assert cache.get(b) is not first_b  # read again
    assert cache.names() == [a.title, b.title]

    cache.resize(1)
    assert cache.names() == [b.title]
    assert cache.get(a, dtype=torch.float16).module.dtype == torch.float16
    assert cache.names() == [a.title]
    cache.clear()
    assert cache.names() == []

    unbounded_off = ModelCache(size=0)
    assert unbounded_off.get(a) is not unbounded_off.get(a)
    assert unbounded_off.names() == []


def test_cache_reads_a_replaced_file_again_and_checks_the_base_unet_on_hits(controlnets, tmp_path):
    path = _original_file(controlnets["sd1"], tmp_path / "control_x.safetensors")
    info = find_model("control_x", [str(tmp_path)])
    cache = ModelCache()
    first = cache.get(info)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    assert cache.get(info) is not first
    with pytest.raises(ControlModelError, match="cross-attention width"):
        cache.get(info, base_unet_config=tiny_configs("sdxl")["unet"])
