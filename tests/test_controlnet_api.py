"""ControlNet through the API on the real server (issue 16): `alwayson_scripts.controlnet` units in every form
clients send (dicts with the extension's fields and its legacy aliases, legacy positional lists, numbers as strings,
modes by name or number), what they change in the image, the infotext, the detected maps appended to the response,
hires fix and batches, the 4xx answers that name the field, and the `/controlnet/*` routes, driven by plain
`requests`; then the same through the real clients, webuiapi 0.9.17 and sd-backend-client 0.5.0.

The ControlNets are random-weight modules the tests write (once per run) into the shared API server's
models/ControlNet/ folder: one made from the demo checkpoint's UNet (random weights still change the image
measurably) and a tiny SDXL one for the family mismatch.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import webuiapi
from diffusers import ControlNetModel, UNet2DConditionModel
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

SMALL = {"prompt": "a large blue square in the center, white background", "width": 64, "height": 64, "steps": 4,
         "sampler_name": "Euler", "seed": 11}
TIMEOUT = 120
RESIDUAL_SCALE = 0.02  # random zero-convolution weights: a visible change, not noise
ROOT = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINT = ROOT / "assets" / "demo" / "demo-shapes-sd1.safetensors"
SQUARE = (16, 16, 47, 47)  # the control picture's blue square (left, top, right, bottom), on white
EDGE_TOLERANCE = 2  # pixels an edge may sit off the square's border (canny's gradient, the resize to 64x64)
# An edge map detected at 512 px and shrunk to 64 px (area averaging) keeps 1-px lines as grey (about 32)
EDGE_LEVEL = 8


def square_image(size: int = 64) -> Image.Image:
    picture = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(picture).rectangle(SQUARE, fill=(30, 70, 220))
    return picture


b64 = webuiapi.raw_b64_img  # PNG as base64 text, as a real client encodes it


def pixels(text: str) -> np.ndarray:
    """A base64 image of a response as an RGB array."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


def mean_difference(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.abs(first.astype(np.float32) - second.astype(np.float32)).mean())


def assert_edges_on_square_border(edges: np.ndarray) -> None:
    """Every edge pixel of a canny map of `square_image` lies on the square's outline, and each side has some."""
    ys, xs = np.nonzero(edges > EDGE_LEVEL)
    assert len(xs) > 0, "no edges"
    left, top, right, bottom = SQUARE
    near_x = (np.abs(xs - left) <= EDGE_TOLERANCE) | (np.abs(xs - right) <= EDGE_TOLERANCE)
    near_y = (np.abs(ys - top) <= EDGE_TOLERANCE) | (np.abs(ys - bottom) <= EDGE_TOLERANCE)
    inside = (xs >= left - EDGE_TOLERANCE) & (xs <= right + EDGE_TOLERANCE) & \
        (ys >= top - EDGE_TOLERANCE) & (ys <= bottom + EDGE_TOLERANCE)
    on_border = inside & (near_x | near_y)
    assert on_border.all(), f"edge pixels off the border: {list(zip(xs[~on_border], ys[~on_border]))[:10]}"
    for side, hits in (("left", np.abs(xs - left) <= EDGE_TOLERANCE), ("right", np.abs(xs - right) <= EDGE_TOLERANCE),
                       ("top", np.abs(ys - top) <= EDGE_TOLERANCE), ("bottom", np.abs(ys - bottom) <= EDGE_TOLERANCE)):
        assert hits.sum() >= (right - left) // 2, f"the {side} side has too few edge pixels"


# --- the test ControlNets -------------------------------------------------------------------------------------

def _randomise_zero_convolutions(controlnet: ControlNetModel, seed: int, scale: float) -> ControlNetModel:
    """from_unet zero-initialises the hint embedding's last conv and every residual conv (the paper's "zero
    convolutions"), so the new ControlNet adds nothing: random weights there make it add something."""
    generator = torch.Generator().manual_seed(seed)
    zero_initialised = ("controlnet_cond_embedding.conv_out.", "controlnet_down_blocks.", "controlnet_mid_block.")
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith(zero_initialised):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return controlnet.eval()


def _save_diffusers_layout(controlnet: ControlNetModel, path: Path) -> Path:
    weights = {key: value.detach().contiguous() for key, value in controlnet.state_dict().items()}
    save_file(weights, str(path), metadata={"config": json.dumps(dict(controlnet.config))})
    return path


@pytest.fixture(scope="session")
def controlnet_files(tmp_path_factory) -> dict[str, Path]:
    """A ControlNet for the demo checkpoint (its UNet's encoder, random zero convolutions) and a tiny SDXL one,
    both single diffusers-layout safetensors files, made once per run."""
    from modules.models.architecture import build_unet
    from modules.models.tiny import tiny_configs

    folder = tmp_path_factory.mktemp("controlnets")
    demo_unet = build_unet(load_file(str(DEMO_CHECKPOINT)), "sd1")
    demo = ControlNetModel.from_unet(demo_unet, conditioning_embedding_out_channels=(16, 32, 96, 256))
    sdxl_unet = UNet2DConditionModel.from_config(tiny_configs("sdxl")["unet"])
    sdxl = ControlNetModel.from_unet(sdxl_unet, conditioning_embedding_out_channels=(16, 32))
    return {
        "demo": _save_diffusers_layout(_randomise_zero_convolutions(demo, seed=1, scale=RESIDUAL_SCALE),
                                       folder / "demo_random_canny.safetensors"),
        "sdxl": _save_diffusers_layout(_randomise_zero_convolutions(sdxl, seed=2, scale=RESIDUAL_SCALE),
                                       folder / "tiny_sdxl_random_canny.safetensors"),
    }


@dataclass(frozen=True)
class ControlNetServer:
    url: str
    data_dir: Path
    title: str       # the demo ControlNet as /controlnet/model_list names it ("name [hash]")
    sdxl_title: str


@pytest.fixture(scope="module")
def server(webui_api_server, controlnet_files) -> ControlNetServer:
    """The run's shared API server with the test ControlNets in its models/ControlNet/ (listed per request)."""
    url, data_dir, _ = webui_api_server
    folder = data_dir / "models" / "ControlNet"
    folder.mkdir(parents=True, exist_ok=True)
    for path in controlnet_files.values():
        shutil.copyfile(path, folder / path.name)
    checkpoint = requests.get(f"{url}/sdapi/v1/options", timeout=30).json()["sd_model_checkpoint"]
    assert checkpoint.startswith(DEMO_CHECKPOINT.name), f"the demo ControlNet needs the demo checkpoint: {checkpoint}"
    titles = requests.get(f"{url}/controlnet/model_list", timeout=30).json()["model_list"]

    def title(name: str) -> str:
        return next(t for t in titles if t.startswith(f"{name} ["))

    return ControlNetServer(url, data_dir, title(controlnet_files["demo"].stem), title(controlnet_files["sdxl"].stem))


def _unit(server, **fields) -> dict:
    unit = {"enabled": True, "module": "canny", "model": server.title, "image": b64(square_image()),
            "processor_res": 64, "threshold_a": 100, "threshold_b": 200, "resize_mode": "Just Resize"}
    unit.update(fields)
    return unit


def _post(server, route: str, body: dict, status: int = 200) -> dict:
    response = requests.post(f"{server.url}/sdapi/v1/{route}", json=body, timeout=TIMEOUT)
    assert response.status_code == status, response.text
    return response.json()


def _generate(server, *units, route: str = "txt2img", **fields) -> tuple[list[np.ndarray], dict]:
    """(the response's images as arrays, its info) for a job with these ControlNet args."""
    body = {**SMALL, **fields}
    if units:
        body["alwayson_scripts"] = {"controlnet": {"args": list(units)}}
    answer = _post(server, route, body)
    return [pixels(image) for image in answer["images"]], json.loads(answer["info"])


def test_routes_version_lists_settings_and_control_types(server):
    def get(path: str) -> dict:
        response = requests.get(f"{server.url}/controlnet/{path}", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    assert get("version") == {"version": 2}
    assert get("settings") == {"control_net_unit_count": 3}
    models = get("model_list")["model_list"]
    assert models[0] == "None" and server.title in models and server.sdxl_title in models
    modules = get("module_list")
    assert "canny" in modules["module_list"] and "none" in modules["module_list"]
    sliders = [slider["name"] for slider in modules["module_detail"]["canny"]["sliders"]]
    assert len(sliders) == 3 and "Resolution" in sliders[0]
    canny = get("control_types")["control_types"]["Canny"]
    assert "canny" in canny["module_list"] and canny["model_list"][0] == "None"


def test_detect_canny_returns_the_square_outline(server):
    answer = requests.post(f"{server.url}/controlnet/detect", json={
        "controlnet_module": "canny", "controlnet_input_images": [b64(square_image())],
        "controlnet_processor_res": 64, "controlnet_threshold_a": 100, "controlnet_threshold_b": 200},
        timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["info"] == "Success" and len(body["images"]) == 1
    edges = pixels(body["images"][0])
    assert edges.shape == (64, 64, 3)
    assert_edges_on_square_border(edges[:, :, 0])
    missing = requests.post(f"{server.url}/controlnet/detect", json={"controlnet_module": "canny"}, timeout=30)
    assert missing.status_code == 422 and "controlnet_input_images" in missing.text
    unknown = requests.post(f"{server.url}/controlnet/detect", json={
        "controlnet_module": "no_such_preprocessor", "controlnet_input_images": [b64(square_image())]}, timeout=30)
    assert unknown.status_code == 422 and "no_such_preprocessor" in unknown.text


def test_unit_changes_the_image_and_is_recorded_with_its_detected_map(server):
    (plain,), _ = _generate(server)
    images, info = _generate(server, _unit(server))
    assert len(images) == 2  # the generated image, then the detected map
    assert mean_difference(images[0], plain) > 2.0
    assert_edges_on_square_border(images[1][:, :, 0])
    text = info["infotexts"][0]
    assert (f'ControlNet 0: "Module: canny, Model: {server.title}, Weight: 1.0, Resize Mode: Just Resize, '
            "Processor Res: 64, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, "
            'Pixel Perfect: False, Control Mode: Balanced"') in text


def test_aliases_names_numbers_strings_and_legacy_lists_give_the_same_job(server):
    """One unit written four ways: the extension's names, its aliases with modes as numbers and numbers as
    strings, modes by name in other case, the 1.1 API's positional list (one per unit). (A flat list of several
    units' values cannot pass the API: the script's slice holds one value per unit, as in A1111.)"""
    canonical, info = _generate(server, _unit(server, control_mode="Balanced"))
    image = b64(square_image())
    aliased = {"enabled": "true", "module": "canny", "model": server.title, "input_image": image, "weight": "1.0",
               "resize_mode": 0, "control_mode": "0", "processor_res": "64", "threshold_a": "100",
               "threshold_b": "200", "guidance_start": "0", "guidance": "1", "lowvram": "false"}
    legacy = [True, "canny", server.title, 1.0, image, "Just Resize", False, 64, 100, 200, 0.0, 1.0, False,
              "Balanced"]
    variants = {
        "aliases, numbers, strings": [aliased],
        "modes by name": [_unit(server, resize_mode="just resize", control_mode="balanced")],
        "legacy list per unit": [legacy],
    }
    for label, args in variants.items():
        images, other = _generate(server, *args)
        assert len(images) == 2, label
        assert np.array_equal(images[0], canonical[0]), label
        assert other["infotexts"][0] == info["infotexts"][0], label
    _, by_number = _generate(server, _unit(server, resize_mode=1, control_mode=2))
    assert "Resize Mode: Crop and Resize" in by_number["infotexts"][0]
    assert "Control Mode: ControlNet is more important" in by_number["infotexts"][0]


def test_guidance_end_and_weight_zero(server):
    (plain,), _ = _generate(server)
    full, _ = _generate(server, _unit(server, guidance_end=1.0))
    first_step_only, _ = _generate(server, _unit(server, guidance_end=0.0))
    assert mean_difference(full[0], first_step_only[0]) > 1.0
    assert mean_difference(first_step_only[0], plain) > 0.0
    weightless, info = _generate(server, _unit(server, weight=0))
    assert np.array_equal(weightless[0], plain)  # weight 0 adds nothing: the same pixels as no unit
    assert "Weight: 0.0" in info["infotexts"][0]


def test_two_units_batch_of_two_and_hires_fix(server):
    one, _ = _generate(server, _unit(server))
    two, info = _generate(server, _unit(server, weight=0.5), _unit(server, weight=0.5, guidance_start=0.5))
    assert len(two) == 3  # image + one map per unit
    assert mean_difference(two[0], one[0]) > 0.5
    text = info["infotexts"][0]
    assert 'ControlNet 0: "Module: canny' in text and "Weight: 0.5, " in text
    assert 'ControlNet 1: "Module: canny' in text and "Guidance Start: 0.5" in text

    batch, info = _generate(server, _unit(server), batch_size=2)
    assert [image.shape[:2] for image in batch] == [(64, 128), (64, 64), (64, 64), (64, 64)]  # grid, 2, map
    assert info["all_seeds"] == [11, 12]
    assert all('ControlNet 0: "Module: canny' in text for text in info["infotexts"])
    assert mean_difference(batch[1], one[0]) < 0.05  # the single job's image (batched sums round differently)

    # (a second pass of 2 steps at 0.6 is changed by a control only slightly: 3 of 4 steps at 0.9 are enough)
    hires_fix = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.9,
                 "hr_second_pass_steps": 4}
    hires, info = _generate(server, _unit(server), **hires_fix)
    assert [image.shape for image in hires] == [(128, 128, 3), (64, 64, 3)]  # the map of the first pass
    text = info["infotexts"][0]
    assert 'ControlNet 0: "Module: canny' in text and "Hires upscale: 2" in text
    (hires_plain,), _ = _generate(server, **hires_fix)
    assert mean_difference(hires[0], hires_plain) > 2.0
    # the second pass is controlled too (its control map resized to 128x128): leaving it out changes the image
    first_pass_only, _ = _generate(server, _unit(server, hr_option="Low res only"), **hires_fix)
    assert mean_difference(hires[0], first_pass_only[0]) > 2.0


def test_img2img_unit_without_an_image_uses_the_init_image(server):
    square = b64(square_image())
    img2img = {"init_images": [square], "denoising_strength": 0.75}
    (plain,), _ = _generate(server, route="img2img", **img2img)
    own, info = _generate(server, _unit(server, image=None), route="img2img", **img2img)
    assert len(own) == 2
    assert_edges_on_square_border(own[1][:, :, 0])
    assert mean_difference(own[0], plain) > 1.0
    assert 'ControlNet 0: "Module: canny' in info["infotexts"][0]
    explicit, _ = _generate(server, _unit(server, image=square), route="img2img", **img2img)
    assert np.array_equal(explicit[0], own[0])
    empty_string, _ = _generate(server, _unit(server, image=""), route="img2img", **img2img)
    assert np.array_equal(empty_string[0], own[0])  # webuiapi sends "" for a unit without an image


@pytest.mark.parametrize(("fields", "words"), [
    ({"weight": 3}, ["alwayson_scripts.controlnet.args[0].weight: 3.0 is outside 0..2"]),
    ({"module": "no_such_preprocessor"}, ["module: Unknown ControlNet preprocessor 'no_such_preprocessor'",
                                          "canny"]),
    ({"model": "no_such_controlnet"}, ['ControlNet unit 0: ControlNet model "no_such_controlnet" not found',
                                       "demo_random_canny"]),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, ["args[0].guidance_start (0.8) is after guidance_end (0.2)"]),
    ({"image": "%%% not base64 %%%"}, ["ControlNet unit 0: image: not a base64-encoded image"]),
    ({"resize_mode": "Sideways"}, ["args[0].resize_mode: 'Sideways' is not one of 0 / 'Just Resize'"]),
    ({"control_mode": 7}, ["args[0].control_mode: 7 is not one of 0 / 'Balanced'"]),
    ({"model": "None"}, ["ControlNet unit 0 is enabled but has no model"]),
    ({"module": "reference_only"}, ['Preprocessor "reference_only" (reference) is not supported yet']),
    ("sdxl", ["SDXL", "SD 1.x"]),
])
def test_bad_units_are_refused_with_a_message_naming_the_field(server, fields, words):
    unit = _unit(server, model=server.sdxl_title) if fields == "sdxl" else _unit(server, **fields)
    answer = requests.post(f"{server.url}/sdapi/v1/txt2img",
                           json={**SMALL, "alwayson_scripts": {"controlnet": {"args": [unit]}}}, timeout=TIMEOUT)
    assert answer.status_code == 400, answer.text  # as other job errors (an unknown sampler); the job never runs
    message = answer.json()["detail"]
    for word in words:
        assert word in message, (word, message)
    assert requests.get(f"{server.url}/controlnet/version", timeout=30).status_code == 200  # still serving


def test_no_detectmap_setting_drops_the_extra_image(server):
    def set_option(value: bool) -> None:
        response = requests.post(f"{server.url}/sdapi/v1/options", json={"control_net_no_detectmap": value},
                                 timeout=30)
        assert response.status_code == 200, response.text

    set_option(True)
    try:
        images, info = _generate(server, _unit(server))
        assert len(images) == 1 and 'ControlNet 0: "Module: canny' in info["infotexts"][0]
    finally:
        set_option(False)
    assert requests.get(f"{server.url}/sdapi/v1/options", timeout=30).json()["control_net_no_detectmap"] is False
    images, _ = _generate(server, _unit(server))
    assert len(images) == 2


# --- the real clients -------------------------------------------------------------------------------------------

def test_webuiapi_lists_detects_and_generates_with_a_unit(server):
    port = int(server.url.rsplit(":", 1)[1])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler", steps=4)
    assert api.controlnet_version() == 2
    assert server.title in api.controlnet_model_list()
    assert "canny" in api.controlnet_module_list()
    detected = api.controlnet_detect(images=[square_image()], module="canny")  # sends "controlnet_images"
    # at the preprocessor resolution (webuiapi's default 512), as the extension answers
    assert len(detected.images) == 1 and detected.images[0].size == (512, 512)
    assert_edges_on_square_border(np.asarray(detected.images[0].convert("L").resize((64, 64), Image.BOX)))

    generation = {"prompt": SMALL["prompt"], "width": 64, "height": 64, "seed": 11}
    plain = api.txt2img(**generation)
    unit = webuiapi.ControlNetUnit(image=square_image(), module="canny", model=server.title)
    controlled = api.txt2img(**generation, controlnet_units=[unit])
    assert len(plain.images) == 1 and len(controlled.images) == 2  # the image, then the detected map
    assert mean_difference(np.asarray(controlled.images[0]), np.asarray(plain.images[0])) > 2.0
    assert_edges_on_square_border(np.asarray(controlled.images[1].convert("L")))
    assert (f'ControlNet 0: "Module: canny, Model: {server.title}, Weight: 1.0, Resize Mode: Resize and Fill, '
            "Processor Res: 512, Threshold A: 64.0, Threshold B: 64.0, Guidance Start: 0.0, Guidance End: 1.0, "
            'Pixel Perfect: False, Control Mode: Balanced"') in controlled.info["infotexts"][0]

    img2img = {**generation, "images": [square_image()], "denoising_strength": 0.75}
    plain = api.img2img(**img2img)
    no_image_unit = webuiapi.ControlNetUnit(module="canny", model=server.title)  # its image goes out as ""
    controlled = api.img2img(**img2img, controlnet_units=[no_image_unit])
    assert len(controlled.images) == 2
    assert mean_difference(np.asarray(controlled.images[0]), np.asarray(plain.images[0])) > 1.0
    assert_edges_on_square_border(np.asarray(controlled.images[1].convert("L")))  # the init image's edges
    assert 'ControlNet 0: "Module: canny' in controlled.info["infotexts"][0]


def test_sd_backend_client_finds_canny_and_generates_with_a_unit(server):
    from sd_backend_client import (
        A1111Webservice,
        ControlNetModel,
        ControlNetUnit,
        DiffusionParams,
        PreprocessorParams,
    )

    backend = A1111Webservice(server.url)
    assert backend.get_capabilities().controlnet
    assert backend.get_controlnet_version() == 2
    assert backend.get_controlnet_settings() == {"control_net_unit_count": 3}
    assert server.title in [model.full_model_name for model in backend.list_controlnet_models()]
    # the client's README flow: the Canny control type names the preprocessor and the models
    canny = backend.get_controlnet_type_categories()["Canny"]
    assert "canny" in canny["module_list"] and server.title in canny["model_list"]
    preprocessor = next(p for p in backend.get_controlnet_preprocessors() if p.name == "canny")
    assert {parameter.key: parameter.default_value for parameter in preprocessor.parameters} == {
        "control_mode": "Balanced", "resize_mode": "Crop and Resize", "processor_res": 512, "threshold_a": 100,
        "threshold_b": 200}

    preview = backend.submit_preprocessor_preview(square_image(), preprocessor).wait(timeout=TIMEOUT)
    assert preview.images[0].size == (512, 512)  # at the preprocessor resolution, as the extension answers
    assert_edges_on_square_border(np.asarray(preview.images[0].convert("L").resize((64, 64), Image.BOX)))

    unit = ControlNetUnit(image=square_image(), preprocessor=PreprocessorParams(typedef=preprocessor),
                          model=ControlNetModel(server.title))
    params = DiffusionParams(prompt=SMALL["prompt"], width=64, height=64, steps=4, seed=11, sampler="Euler")
    plain = backend.submit_txt2img(params).wait(timeout=TIMEOUT)
    params.controlnet_units = [unit]
    controlled = backend.submit_txt2img(params).wait(timeout=TIMEOUT)
    assert controlled.seeds == [11] and len(controlled.images) == 1 and len(controlled.control_maps) == 1
    assert mean_difference(np.asarray(controlled.images[0].convert("RGB")),
                           np.asarray(plain.images[0].convert("RGB"))) > 2.0
    assert_edges_on_square_border(np.asarray(controlled.control_maps[0].convert("L")))
    infotext = controlled.raw_info.infotexts[0]
    # pixel perfect (the client's default): the preprocessor ran at the generation's 64 px
    assert f'ControlNet 0: "Module: canny, Model: {server.title}, Weight: 1.0, Resize Mode: Crop and Resize' in infotext
    assert "Processor Res: 64, Threshold A: 100.0, Threshold B: 200.0" in infotext and "Pixel Perfect: True" in infotext
