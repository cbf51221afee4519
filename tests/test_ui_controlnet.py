"""The ControlNet accordion (extensions-builtin/sd-webui-controlnet/lib_controlnet/ui*.py): the values -> unit rules
its events use, the script's default arguments and infotext paste fields in-process, and the whole flow in Chromium
(enable a unit, upload a control image, Control Type "Canny", preview the edge map, generate with a tiny random
ControlNet, see the infotext and the detected map in the gallery)."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.test_browser import CHROMIUM, page  # noqa: F401  (Chromium's page fixture)
from tests.test_server import server  # noqa: F401  (the running-server fixture)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "extensions-builtin" / "sd-webui-controlnet"))

from lib_controlnet import ui_unit  # noqa: E402  (the extension folder is put on sys.path above)
from lib_controlnet.units import ControlMode, ControlNetUnit, HiResFixOption, ResizeMode  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DEMO_CHECKPOINT = ROOT / "assets" / "demo" / "demo-shapes-sd1.safetensors"
UNIT0 = "#txt2img_controlnet_ControlNet-0"


# --- the values -> unit rules ---------------------------------------------------------------------------------


def test_unit_from_values_clamps_what_is_out_of_range_and_falls_back_to_defaults():
    unit = ui_unit.unit_from_values({
        "enabled": True, "module": "canny", "model": "m [1]", "weight": 7, "guidance_start": 0.9,
        "guidance_end": 0.4, "processor_res": 99999, "threshold_a": -50, "threshold_b": "nan",
        "control_mode": "no such mode", "resize_mode": "Just Resize", "hr_option": "Low res only",
        "pixel_perfect": True, "low_vram": True})
    assert (unit.enabled, unit.module, unit.model, unit.weight) == (True, "canny", "m [1]", 2.0)
    assert (unit.guidance_start, unit.guidance_end) == (0.4, 0.4)  # a start after the end is moved to the end
    assert (unit.processor_res, unit.threshold_a, unit.threshold_b) == (2048, 1, 200)  # canny: 1..255, default 200
    assert unit.control_mode is ControlMode.BALANCED and unit.resize_mode is ResizeMode.RESIZE
    assert unit.hr_option is HiResFixOption.LOW_RES_ONLY and unit.pixel_perfect and unit.low_vram

    empty = ui_unit.unit_from_values({})
    assert empty == ControlNetUnit()  # nothing given: the extension's default unit (disabled)
    unknown = ui_unit.unit_from_values({"module": "no_such_preprocessor", "processor_res": 512, "threshold_a": 9})
    # an unknown preprocessor is "none", which has no sliders: -1 ("the default") for all three
    assert (unknown.module, unknown.processor_res, unknown.threshold_a, unknown.threshold_b) == ("none", -1, -1, -1)
    assert ui_unit.unit_from_values({"module": "depth"}).module == "depth_midas"  # the extension's older name


def test_img2img_unit_has_its_own_image_only_with_upload_independent_control_image():
    picture = np.zeros((32, 48, 3), np.uint8)
    mask = np.zeros((16, 24), np.uint8)
    mask[4:8, 4:8] = 255
    values = {"enabled": True, "image": picture, "mask": mask}
    assert ui_unit.unit_from_values(values, is_img2img=True).image is None  # uses the img2img input
    own = ui_unit.unit_from_values({**values, "independent": True}, is_img2img=True)
    assert own.image is picture
    assert own.mask.shape == (32, 48) and own.mask[8:16, 8:16].min() == 255 and own.mask.sum() == 255 * 64
    image, fitted = own.images()  # the job's check of mask and image sizes passes
    assert image.shape == (32, 48, 3) and fitted.shape == (32, 48)
    assert ui_unit.unit_from_values({**values, "mask": np.zeros((16, 24), np.uint8)}).mask is None  # empty: none
    assert ui_unit.unit_from_values(values, is_img2img=False).image is picture


def test_sliders_follow_the_preprocessor_and_pixel_perfect():
    resolution, low, high = ui_unit.slider_updates("canny", pixel_perfect=False, reset=True)
    assert resolution == {"__type__": "update", "label": "Preprocessor Resolution", "minimum": 64, "maximum": 2048,
                          "step": 8, "visible": True, "value": 512}
    assert (low["label"], low["minimum"], low["maximum"], low["value"]) == ("Low Threshold", 1, 255, 100)
    assert (high["label"], high["value"], high["visible"]) == ("High Threshold", 200, True)
    kept = ui_unit.slider_updates("canny", pixel_perfect=True, reset=False)
    assert kept[0]["visible"] is False  # Pixel Perfect computes the resolution
    assert all("value" not in update for update in kept)  # a pasted module keeps the pasted values
    assert [u["visible"] for u in ui_unit.slider_updates("none", False, True)] == [False, False, False]
    mlsd = ui_unit.slider_updates("mlsd", False, True)
    assert (mlsd[1]["label"], mlsd[2]["label"]) == ("MLSD Value Threshold", "MLSD Distance Threshold")


def test_control_type_narrows_the_preprocessors_and_models_and_picks_their_defaults():
    titles = ["None", "control_v11p_sd15_canny [a1]", "control_v11f1p_sd15_depth [b2]", "my-softedge-hed [c3]"]
    module, model, resolution, low, _ = ui_unit.control_type_updates("Canny", False, titles)
    assert module["choices"] == ["none", "canny", "invert (from white bg & black line)"]
    assert module["value"] == "canny"
    assert model == {"__type__": "update", "choices": ["None", "control_v11p_sd15_canny [a1]"],
                     "value": "control_v11p_sd15_canny [a1]"}
    assert (resolution["value"], low["value"]) == (512, 100)
    _, model, *_ = ui_unit.control_type_updates("SoftEdge", False, titles)
    assert model["choices"] == ["None", "my-softedge-hed [c3]"]
    module, model, *_ = ui_unit.control_type_updates("All", False, titles)
    assert (module["value"], model["value"], model["choices"]) == ("none", "None", titles)
    _, model, *_ = ui_unit.control_type_updates("OpenPose", False, titles)
    assert model["choices"] == ["None"] and model["value"] == "None"  # no openpose model installed


def test_preview_without_an_image_is_a_message_for_the_user():
    with pytest.raises(ValueError, match="ControlNet Unit 1: upload a control image"):
        ui_unit.preview_map(1, None, None, "canny", 512, 100, 200)


# --- the script's arguments and paste fields, in-process ------------------------------------------------------


def test_default_args_are_disabled_units_and_a_pasted_infotext_fills_the_unit_fields(app):
    from modules import scripts
    from modules.infotext import quote
    from modules.ui import paste

    scripts.load_scripts()  # every extension: another test may have loaded the repository's scripts only
    runner = scripts.scripts_txt2img
    runner.ensure_ui()
    script = next(s for s in runner.alwayson_scripts if s.title() == "ControlNet")
    defaults = runner.default_args()[script.args_from:script.args_to]
    assert len(defaults) == 3  # control_net_unit_count
    # JSON values (Gradio clients read a State's initial value), the script reads them as units
    assert all(unit == ControlNetUnit().to_dict() and ControlNetUnit.coerce(unit) == ControlNetUnit()
               for unit in defaults)

    sent = ControlNetUnit(enabled=True, module="canny", model="tiny-canny [4bf8a3e0]", weight=0.55,
                          resize_mode="Just Resize", processor_res=256, threshold_a=80, threshold_b=160,
                          guidance_start=0.1, guidance_end=0.9, pixel_perfect=True,
                          control_mode="My prompt is more important")
    text = f"a cat\nSteps: 3, Sampler: Euler a, Seed: 5, Size: 64x64, ControlNet 1: {quote(sent.serialize())}"
    params = paste.parse_pasted(text)
    pasted = {key: params[key] for _, key in script.infotext_fields if key in params}
    assert sorted(pasted) == sorted(f"ControlNet 1 {field}" for field in ui_unit.PASTE_FIELDS)  # unit 1 only
    assert script.paste_field_names == [key for _, key in script.infotext_fields]
    # each key fills its own unit's component, and the State its rebuild event makes from the pasted values is the
    # unit that was sent
    for component, key in script.infotext_fields:
        assert component.elem_id.startswith(f"txt2img_controlnet_ControlNet-{key.split(' ')[1]}_controlnet_")
    rebuilt = ui_unit.unit_from_values({key.split(" ", 2)[2]: value for key, value in pasted.items()})
    assert rebuilt == sent


# --- the page -------------------------------------------------------------------------------------------------


def write_tiny_controlnet(path: Path) -> str:
    """A random-weight ControlNet copied from the demo checkpoint's UNet (diffusers layout, one safetensors file);
    returns its title as the model list shows it."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel
    from lib_controlnet import models
    from safetensors import safe_open
    from safetensors.torch import save_file

    from modules.models.architecture import family_config, unet_config_from_weights

    prefix = "model.diffusion_model."
    with safe_open(str(DEMO_CHECKPOINT), "pt") as f:
        unet_weights = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(unet_config_from_weights(unet_weights, family_config("sd1", "unet"),
                                                                     "sd1"))
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in controlnet.state_dict().items()}, str(path),
              metadata={"config": json.dumps(dict(controlnet.config))})
    return next(info.title for info in models.list_models([str(path.parent)]) if info.path == str(path))


def fetch_picture(browser_page, src: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(browser_page.request.get(src).body())).convert("L"))


def assert_square_edges(edges: np.ndarray, size: int) -> None:
    """A map of a white square on black (its sides at a quarter and three quarters of `size`): edge pixels along
    the sides, nothing inside or outside."""
    assert edges.shape == (size, size)
    near, far = size // 4, size * 3 // 4
    assert edges[near - 2:near + 3, near:far].max() > 0 and edges[near:far, far - 3:far + 2].max() > 0
    assert edges[near + 4:far - 4, near + 4:far - 4].max() == 0  # inside the square
    assert edges[:near - 4].max() == 0 and edges[far + 4:].max() == 0  # above and below it


def prepare(server_info, tmp_path: Path, size: int) -> tuple[str, str, Path]:  # noqa: ANN001
    """(url, ControlNet model title, control picture): the tiny ControlNet in the server's model folder (written
    once per server) and a white square on black, `size` pixels wide, its sides at a quarter and three quarters."""
    url, data_dir, _ = server_info
    path = data_dir / "models" / "ControlNet" / "tiny-canny-control.safetensors"
    if path.is_file():
        from lib_controlnet import models

        title = next(info.title for info in models.list_models([str(path.parent)]) if info.path == str(path))
    else:
        title = write_tiny_controlnet(path)
    picture = Image.new("RGB", (size, size), "black")
    ImageDraw.Draw(picture).rectangle((size // 4, size // 4, size * 3 // 4 - 1, size * 3 // 4 - 1), fill="white")
    picture.save(tmp_path / "square.png")
    return url, title, tmp_path / "square.png"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_controlnet_unit_previews_canny_and_generates_with_it_in_the_browser(server, page, tmp_path):  # noqa: F811
    url, title, square = prepare(server, tmp_path, 256)
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(url, wait_until="load")
    page.wait_for_selector("#txt2img_prompt textarea")
    for selector, value in (("#txt2img_prompt textarea", "a red circle"), ("#txt2img_width input[type=number]", "64"),
                            ("#txt2img_height input[type=number]", "64"), ("#txt2img_steps input[type=number]", "3"),
                            ("#txt2img_seed input", "4321")):
        page.locator(selector).fill(value)
    page.locator("#txt2img_seed input").press("Tab")
    page.locator("#script_txt2img_controlnet_controlnet > button.label-wrap").click()
    page.locator(f"{UNIT0}_controlnet_enable_checkbox").wait_for(timeout=20000)  # the accordion draws its tabs
    tabs = page.locator("#txt2img_controlnet_tabs [role=tab]").all_inner_texts()
    assert tabs == ["ControlNet Unit 0", "ControlNet Unit 1", "ControlNet Unit 2"]

    # the preview without an image: a warning on the page, nothing else happens
    page.locator(f"{UNIT0}_controlnet_trigger_preprocessor").click()
    page.locator(".toast-body").first.wait_for(timeout=20000)
    assert "upload a control image" in page.locator(".toast-body").first.inner_text()

    page.locator(f"{UNIT0}_controlnet_refresh_models").click()  # the model was written after the start
    page.locator(f"{UNIT0}_controlnet_enable_checkbox input").check()
    page.locator(f"{UNIT0}_input_image input[type=file]").set_input_files(str(square))
    page.locator(f"{UNIT0}_input_image img").first.wait_for(timeout=20000)
    page.locator(f"{UNIT0}_controlnet_type_filter_radio").get_by_label("Canny", exact=True).check()
    page.wait_for_function(f"() => document.querySelector('{UNIT0}_controlnet_preprocessor_dropdown input')"
                           ".value === 'canny'", timeout=20000)
    assert page.locator(f"{UNIT0}_controlnet_threshold_A_slider").is_visible()
    model = page.locator(f"{UNIT0}_controlnet_model_dropdown input")
    model.click()
    page.get_by_role("option", name=title).click()
    assert model.input_value() == title

    page.locator(f"{UNIT0}_controlnet_trigger_preprocessor").click()
    preview = page.locator(f"{UNIT0}_generated_image img").first
    preview.wait_for(timeout=30000)
    # at the preprocessor resolution (512: the 256-pixel picture's short side scaled up), as the extension shows it
    assert_square_edges(fetch_picture(page, preview.get_attribute("src")), 512)
    assert page.locator(f"{UNIT0}_controlnet_preprocessor_preview_checkbox input").is_checked()

    page.locator("#txt2img_generate").click()
    page.wait_for_function("() => document.querySelectorAll('#txt2img_gallery img').length >= 2",
                           timeout=60000)
    page.wait_for_function("() => document.querySelector('#txt2img_infotext textarea').value"
                           ".includes('Seed')", timeout=20000)
    text = page.locator("#txt2img_infotext textarea").input_value()
    sources = page.evaluate("() => [...document.querySelectorAll('#txt2img_gallery img')].map(i => i.src)")
    page.screenshot(path=str(ARTIFACTS / "txt2img_controlnet_result.png"), full_page=True)
    pictures = [fetch_picture(page, src) for src in sources]
    assert "Seed: 4321, Size: 64x64" in text
    assert f'ControlNet 0: "Module: canny, Model: {title}, Weight: 1.0, Resize Mode: Crop and Resize' in text
    assert "Threshold A: 100.0, Threshold B: 200.0" in text
    assert len(pictures) == 2 and pictures[0].shape == (64, 64)
    assert_square_edges(pictures[1], 64)  # the detected map, fitted to the generation size


def _core_pastes_script_fields() -> bool:
    from modules import scripts

    return hasattr(scripts.ScriptRunner, "infotext_fields")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
@pytest.mark.skipif(not _core_pastes_script_fields(), reason="the tabs do not paste Script.infotext_fields yet")
def test_pasted_infotext_restores_a_unit_and_generation_uses_it(server, page, tmp_path):  # noqa: F811
    """PNG Info's "Send to txt2img" with a picture made with ControlNet fills unit 1's controls (not its image); the
    unit's State follows them, so the generation runs with the pasted settings."""
    from PIL.PngImagePlugin import PngInfo

    from modules.infotext import quote

    url, title, square = prepare(server, tmp_path, 256)
    pasted = ControlNetUnit(enabled=True, module="canny", model=title, weight=0.55, resize_mode="Just Resize",
                            processor_res=256, threshold_a=80, threshold_b=160, guidance_start=0.1,
                            guidance_end=0.9, control_mode="My prompt is more important").serialize()
    info = PngInfo()
    info.add_text("parameters", "a red circle\nSteps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, "
                                f"Seed: 99, Size: 64x64, ControlNet 1: {quote(pasted)}")
    Image.new("RGB", (64, 64), "gray").save(tmp_path / "made.png", pnginfo=info)
    unit1 = "#txt2img_controlnet_ControlNet-1"
    page.goto(url, wait_until="load")
    page.wait_for_selector("#txt2img_prompt textarea")
    page.locator("#script_txt2img_controlnet_controlnet > button.label-wrap").click()
    page.locator("#txt2img_controlnet_tabs [role=tab]", has_text="ControlNet Unit 1").click()
    page.locator(f"{unit1}_controlnet_refresh_models").click()  # the model was written after the start
    page.get_by_role("tab", name="PNG Info", exact=True).click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(tmp_path / "made.png"))
    page.wait_for_function("() => document.querySelector('#pnginfo_generation_info textarea').value"
                           ".includes('ControlNet 1')", timeout=20000)
    page.locator("#pnginfo_send_to_txt2img").click()
    page.wait_for_function(f"() => document.querySelector('{unit1}_controlnet_preprocessor_dropdown input')"
                           ".value === 'canny'", timeout=20000)
    assert page.locator(f"{unit1}_controlnet_enable_checkbox input").is_checked()
    assert page.locator(f"{unit1}_controlnet_model_dropdown input").input_value() == title
    assert page.locator(f"{unit1}_controlnet_threshold_A_slider input[type=number]").input_value() == "80"
    assert page.locator("#txt2img_prompt textarea").input_value() == "a red circle"
    page.locator(f"{unit1}_input_image input[type=file]").set_input_files(str(square))
    page.locator(f"{unit1}_input_image img").first.wait_for(timeout=20000)
    page.locator("#txt2img_generate").click()
    page.wait_for_function("() => document.querySelector('#txt2img_infotext textarea').value.includes('Seed: 99')",
                           timeout=60000)
    text = page.locator("#txt2img_infotext textarea").input_value()
    assert f"ControlNet 1: {quote(pasted)}" in text


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_img2img_unit_uses_the_img2img_input_unless_given_its_own_image(server, page, tmp_path):  # noqa: F811
    url, title, square = prepare(server, tmp_path, 64)
    unit0 = "#img2img_controlnet_ControlNet-0"
    page.goto(url, wait_until="load")
    page.wait_for_selector("#txt2img_prompt textarea")
    page.locator("#tab_img2img-button").click()
    page.locator("#img2img_image input[type=file]").set_input_files(str(square))
    page.locator("#img2img_image img").first.wait_for(timeout=20000)
    page.locator("#img2img_prompt textarea").fill("a red circle")
    page.locator("#img2img_steps input[type=number]").fill("3")
    page.locator("#script_img2img_controlnet_controlnet > button.label-wrap").click()
    independent = page.locator(f"{unit0}_controlnet_same_img2img_checkbox input")
    independent.wait_for(timeout=20000)
    assert not page.locator(f"{unit0}_input_image").is_visible()  # the unit takes the img2img input
    independent.check()
    page.locator(f"{unit0}_input_image").wait_for(state="visible", timeout=20000)
    independent.uncheck()
    page.locator(f"{unit0}_input_image").wait_for(state="hidden", timeout=20000)
    assert page.locator(f"{unit0}_controlnet_hr_option_radio").count() == 0  # no hires fix on img2img
    page.locator(f"{unit0}_controlnet_refresh_models").click()  # the model was written after the start
    page.locator(f"{unit0}_controlnet_enable_checkbox input").check()
    page.locator(f"{unit0}_controlnet_type_filter_radio").get_by_label("Canny", exact=True).check()
    page.wait_for_function(f"() => document.querySelector('{unit0}_controlnet_preprocessor_dropdown input')"
                           ".value === 'canny'", timeout=20000)
    model = page.locator(f"{unit0}_controlnet_model_dropdown input")
    model.click()
    page.get_by_role("option", name=title).click()
    page.locator("#img2img_generate").click()
    page.wait_for_function("() => document.querySelectorAll('#img2img_gallery img').length >= 2", timeout=60000)
    page.wait_for_function("() => document.querySelector('#img2img_infotext textarea').value.includes('Seed')",
                           timeout=20000)
    text = page.locator("#img2img_infotext textarea").input_value()
    sources = page.evaluate("() => [...document.querySelectorAll('#img2img_gallery img')].map(i => i.src)")
    assert f'ControlNet 0: "Module: canny, Model: {title}' in text
    assert_square_edges(fetch_picture(page, sources[1]), 64)  # the edges of the img2img input
