"""The original single-file layout of SD 3.x transformers: writing a diffusers model in it and reading it back with
diffusers' own converter (the loading code) gives every weight back unchanged."""

from __future__ import annotations

import pytest
import torch
from diffusers import SD3Transformer2DModel
from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

from modules.models.dit_layout import SD3_PREFIX, sd3_to_original

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("variant", [{}, {"dual_attention_layers": (0,), "qk_norm": "rms_norm"},
                                     {"qk_norm": "rms_norm"}], ids=["sd3", "sd3.5-medium", "sd3.5-large"])
def test_sd3_original_layout_round_trips_through_diffusers_converter(variant):
    torch.manual_seed(0)
    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                  pooled_projection_dim=32, out_channels=16, pos_embed_max_size=16, **variant)
    state = model.state_dict()
    original = sd3_to_original(state)
    assert all(key.startswith(SD3_PREFIX) for key in original)
    assert SD3_PREFIX + "joint_blocks.1.context_block.adaLN_modulation.1.weight" in original
    assert (SD3_PREFIX + "joint_blocks.0.x_block.attn2.qkv.weight" in original) == ("dual_attention_layers" in variant)
    back = convert_sd3_transformer_checkpoint_to_diffusers(dict(original))
    assert set(back) == set(state)
    assert all(torch.equal(back[key], state[key]) for key in state)


def test_unmapped_weights_are_an_error():
    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, num_layers=1, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16,
                                  pooled_projection_dim=32, out_channels=16, pos_embed_max_size=16)
    state = {**model.state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="extra.weight"):
        sd3_to_original(state)


@pytest.mark.parametrize("guidance", [False, True], ids=["schnell", "dev"])
def test_flux_original_layout_round_trips_and_loads(guidance):
    from diffusers import FluxTransformer2DModel

    from modules.models.dit_layout import flux_to_diffusers, flux_to_original

    def tiny() -> FluxTransformer2DModel:
        return FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                                      attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                      pooled_projection_dim=16, guidance_embeds=guidance, axes_dims_rope=(2, 2, 4))

    torch.manual_seed(0)
    model = tiny()
    state = model.state_dict()
    original = flux_to_original(state)
    assert SD3_PREFIX + "double_blocks.1.img_attn.qkv.weight" in original
    assert SD3_PREFIX + "single_blocks.1.linear1.weight" in original
    assert (SD3_PREFIX + "guidance_in.in_layer.weight" in original) == guidance
    back = flux_to_diffusers(original)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    # BFL's own files have no prefix: read the same
    bare = {k.removeprefix(SD3_PREFIX): v for k, v in original.items()}
    fresh = tiny()
    fresh.load_state_dict(flux_to_diffusers(bare), strict=True)
    assert all(torch.equal(fresh.state_dict()[k], state[k]) for k in state)


def test_transformer_checkpoints_are_named_in_the_load_error():
    from modules.models import detection

    sd3 = sd3_to_original(SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, num_layers=1,
                                                attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                                caption_projection_dim=16, pooled_projection_dim=32,
                                                out_channels=16, pos_embed_max_size=16).state_dict())
    with pytest.raises(detection.UnknownModelError, match="Stable Diffusion 3 / 3.5 checkpoint"):
        detection.detect_family(sd3)
    with pytest.raises(detection.UnknownModelError, match="FLUX.1 transformer"):
        detection.detect_family({"double_blocks.0.img_attn.qkv.weight": torch.zeros(1)})
