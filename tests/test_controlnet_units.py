"""ControlNet units and the denoiser hook's rules (extensions-builtin/sd-webui-controlnet): what clients send becomes
a unit or an error naming the field; infotext round trip; control maps sized by the resize modes; the guidance range,
soft injection and "ControlNet is more important" applied to the residuals of a real (tiny) ControlNet."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "extensions-builtin" / "sd-webui-controlnet"))

from lib_controlnet.control import PreparedUnit, UnitHook, fit_to_size, pixel_perfect_resolution  # noqa: E402
from lib_controlnet.units import (  # noqa: E402
    ControlMode,
    ControlNetUnit,
    HiResFixOption,
    ResizeMode,
    UnitError,
    units_from_args,
)


def _png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_dict_form_with_aliases_modes_by_number_and_numbers_as_text():
    square = np.zeros((32, 48, 3), np.uint8)
    square[8:24, 16:32] = 255
    unit = ControlNetUnit.from_dict({"enabled": "true", "module": "canny", "model": "m [abc]", "weight": "0.5",
                                     "input_image": _png_base64(square), "lowvram": True, "guidance": 0.6,
                                     "resize_mode": 0, "control_mode": "2", "processor_res": "256",
                                     "some_newer_field": 1})
    assert unit.enabled is True and unit.weight == 0.5 and unit.low_vram is True and unit.guidance_end == 0.6
    assert unit.resize_mode is ResizeMode.RESIZE and unit.control_mode is ControlMode.CONTROL
    assert unit.processor_res == 256 and unit.extra == {"some_newer_field": 1}
    image, mask = unit.images()
    assert image.shape == (32, 48, 3) and mask is None and (image == square).all()
    named = ControlNetUnit.from_dict({"resize_mode": "Envelope (Outer Fit)", "control_mode": "My prompt is more "
                                                                                          "important"})
    assert named.resize_mode is ResizeMode.OUTER_FIT and named.control_mode is ControlMode.PROMPT


@pytest.mark.parametrize(("values", "message"), [
    ({"weight": 3}, "unit.weight: 3.0 is outside 0..2"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, "unit.guidance_start (0.8) is after guidance_end (0.2)"),
    ({"resize_mode": 7}, "unit.resize_mode: 7 is not one of 0 / 'Just Resize'"),
    ({"control_mode": "Louder"}, "unit.control_mode: 'Louder' is not one of"),
    ({"weight": "heavy"}, "unit.weight: 'heavy' is not a number"),
    ({"input_image": "bm90IGFuIGltYWdl", "image": "x"}, "unit: both 'input_image' and 'image' given"),
])
def test_bad_fields_are_named(values, message):
    with pytest.raises(UnitError, match=None) as caught:
        ControlNetUnit.from_dict(values).images()
    assert message in str(caught.value)


def test_bad_base64_and_mismatched_mask_are_named():
    with pytest.raises(UnitError, match="image: not a base64-encoded image"):
        ControlNetUnit.from_dict({"image": "bm90IGFuIGltYWdl"}).images()
    picture = _png_base64(np.zeros((8, 8, 3), np.uint8))
    mask = _png_base64(np.full((4, 4), 255, np.uint8))
    with pytest.raises(UnitError, match="mask: its size 4x4 differs from the image's 8x8"):
        ControlNetUnit.from_dict({"image": {"image": picture, "mask": mask}}).images()


def test_legacy_positional_forms():
    one = units_from_args([[True, "canny", "m", 0.7, None, "Just Resize", False, 512, 100, 200, 0.1, 0.9, False, 1]])
    assert len(one) == 1 and one[0].weight == 0.7 and one[0].guidance_start == 0.1
    assert one[0].control_mode is ControlMode.PROMPT and one[0].resize_mode is ResizeMode.RESIZE
    flat = units_from_args([True, "canny", "a", 1.0, None, 1, False, 512, 100, 200, 0, 1, False, 0,
                            False, "none", "b", 0.3])
    assert [u.model for u in flat] == ["a", "b"] and flat[1].enabled is False and flat[1].weight == 0.3
    with pytest.raises(UnitError, match=r"args\[1\]: expected a ControlNet unit"):
        units_from_args([{"enabled": False}, 5])


def test_infotext_round_trip_in_the_extensions_format():
    unit = ControlNetUnit(enabled=True, module="canny", model="demo [0123abcd]", weight=0.8, processor_res=512,
                          threshold_a=100, threshold_b=200, guidance_end=0.5, control_mode=ControlMode.CONTROL)
    text = unit.serialize()
    assert text == ("Module: canny, Model: demo [0123abcd], Weight: 0.8, Resize Mode: Crop and Resize, "
                    "Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, "
                    "Guidance End: 0.5, Pixel Perfect: False, Control Mode: ControlNet is more important")
    back = ControlNetUnit.parse(text)
    assert back.to_dict() == unit.to_dict()


def test_resize_modes_and_pixel_perfect():
    wide = np.zeros((100, 200, 3), np.uint8)
    wide[:, :50] = 255  # left quarter white
    just = fit_to_size(wide, 64, 64, ResizeMode.RESIZE)
    crop = fit_to_size(wide, 64, 64, ResizeMode.INNER_FIT)
    fill = fit_to_size(wide, 64, 64, ResizeMode.OUTER_FIT)
    assert just.shape == crop.shape == fill.shape == (64, 64, 3)
    assert just[:, :15].min() == 255 and just[:, 17:].max() == 0          # stretched: a quarter of the width
    assert crop[:, 0].max() == 0                                          # cropped: the white strip is cut off
    assert fill[:16].max() == 0 and fill[-16:].max() == 0 and fill[20:44, :15].min() == 255  # letterboxed
    assert pixel_perfect_resolution(wide, 64, 64, ResizeMode.INNER_FIT) == 64
    assert pixel_perfect_resolution(wide, 64, 64, ResizeMode.OUTER_FIT) == 32


@pytest.fixture(scope="module")
def tiny_engine_and_controlnet(tiny_checkpoints):
    from diffusers import ControlNetModel

    from modules import engines
    from modules.devices import choose_policy
    from modules.models.loader import load_model
    from modules.models.registry import CheckpointInfo
    from modules.options import Options

    path = tiny_checkpoints["sd1"]
    model = load_model(CheckpointInfo(str(path), path.name), choose_policy(use_cpu=["all"]))
    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(model.unet, conditioning_embedding_out_channels=(4, 8, 8, 16))
    for module in controlnet.controlnet_down_blocks:  # zero convs start at zero; make the residuals visible
        torch.nn.init.normal_(module.weight, std=0.1)
    torch.nn.init.normal_(controlnet.controlnet_mid_block.weight, std=0.1)
    return engines.engine_for(model, Options()), controlnet.eval()


def _call(engine, step: int, total: int = 10, rows: int = 2, conditional: int = 1):
    from modules.engines.base import DenoiserCall
    from modules.prompts.guidance import StepConditioning

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(rows, 4, 8, 8, generator=generator)
    dim = engine.model.unet.config.cross_attention_dim
    cond = StepConditioning(torch.randn(rows, 77, dim, generator=generator), None, list(range(conditional)),
                            [1.0] * conditional)
    return DenoiserCall(x, torch.tensor(500), cond, step, total, None, None, engine)


class _Job:
    is_hr_pass = False
    enable_hr = False


def _hook(controlnet, **unit_fields) -> UnitHook:
    square = np.zeros((64, 64, 3), np.uint8)
    square[16:48, 16:48] = 255
    model = type("Loaded", (), {"kind": "controlnet", "module": controlnet})()
    unit = ControlNetUnit(enabled=True, module="none", **unit_fields)
    return UnitHook(PreparedUnit(0, unit, model, square), _Job())


def test_guidance_range_weight_and_control_modes_on_real_residuals(tiny_engine_and_controlnet):
    engine, controlnet = tiny_engine_and_controlnet
    hook = _hook(controlnet, guidance_start=0.2, guidance_end=0.5)
    assert hook.before_denoiser(_call(engine, 1)) is None and hook.before_denoiser(_call(engine, 6)) is None
    balanced = hook.before_denoiser(_call(engine, 3))
    down, mid = balanced["down_block_additional_residuals"], balanced["mid_block_additional_residual"]
    assert mid.abs().sum() > 0 and len(down) == len(controlnet.controlnet_down_blocks)

    half = _hook(controlnet, weight=0.5).before_denoiser(_call(engine, 3))
    full = _hook(controlnet, weight=1.0).before_denoiser(_call(engine, 3))
    assert torch.allclose(half["mid_block_additional_residual"], full["mid_block_additional_residual"] * 0.5,
                          atol=1e-6)
    assert _hook(controlnet, weight=0.0).before_denoiser(_call(engine, 3)) is None

    soft = _hook(controlnet, control_mode=ControlMode.PROMPT).before_denoiser(_call(engine, 3))
    n = len(full["down_block_additional_residuals"]) + 1
    for i, (s, f) in enumerate(zip(soft["down_block_additional_residuals"], full["down_block_additional_residuals"])):
        assert torch.allclose(s, f * 0.825 ** (12 - i), atol=1e-6)
    assert torch.allclose(soft["mid_block_additional_residual"],
                          full["mid_block_additional_residual"] * 0.825 ** (12 - (n - 1)), atol=1e-6)

    control = _hook(controlnet, control_mode=ControlMode.CONTROL).before_denoiser(_call(engine, 3))
    mid_control = control["mid_block_additional_residual"]
    assert mid_control[1].abs().sum() == 0 and mid_control[0].abs().sum() > 0  # unconditional row left alone


def test_hires_option_and_hint_resized_for_the_second_pass(tiny_engine_and_controlnet):
    engine, controlnet = tiny_engine_and_controlnet
    low_only = _hook(controlnet, hr_option=HiResFixOption.LOW_RES_ONLY)
    low_only.job = type("HrJob", (), {"is_hr_pass": True, "enable_hr": True})()
    assert low_only.before_denoiser(_call(engine, 0)) is None
    hook = _hook(controlnet)
    hint = hook.prepared.hint(128, 96, torch.device("cpu"), torch.float32)
    assert hint.shape == (1, 3, 96, 128) and hint.max() == 1.0 and hint.min() == 0.0
