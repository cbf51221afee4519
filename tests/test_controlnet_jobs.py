"""ControlNet units in real jobs on the demo model, beyond what the API tests cover: a T2I-Adapter file (its features
enter the UNet's down blocks), an original-layout .pth ControlNet read through the restricted unpickler, a unit that
does not fit refused with its message, or left out with the setting that allows it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modules.processing import JobError, StableDiffusionProcessingTxt2Img

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "extensions-builtin" / "sd-webui-controlnet"))


def _square() -> np.ndarray:
    picture = np.zeros((64, 64, 3), np.uint8)
    picture[16:48, 36:60] = 255
    return picture


@pytest.fixture(scope="module")
def cn_app(tmp_path_factory):
    from diffusers import ControlNetModel, T2IAdapter

    from modules import cmd_args, script_callbacks, scripts, shared

    data = tmp_path_factory.mktemp("controlnet-jobs")
    folder = data / "models" / "ControlNet"
    folder.mkdir(parents=True)
    shared.initialize(cmd_args.parse_args(["--data-dir", str(data), "--use-cpu", "all"], environ={}))
    scripts.load_scripts()  # every extension: another test may have loaded the repository's scripts only
    script_callbacks.ui_settings_callback()  # the extensions' settings, as a server start adds them
    unet = shared.models.get().unet
    torch.manual_seed(0)
    adapter = T2IAdapter(in_channels=3, channels=list(unet.config.block_out_channels), num_res_blocks=1,
                         downscale_factor=8, adapter_type="full_adapter")
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(folder / "t2iadapter_test.safetensors"))
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256))
    for block in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
        torch.nn.init.normal_(block.weight, std=0.05)
    from lib_controlnet import models

    original = models.to_original_layout(controlnet.state_dict(), dict(controlnet.config))
    torch.save({"state_dict": original}, folder / "control_test_original.pth")
    yield shared
    shared.models.unload()


def _run(app, *units: dict, seed: int = 3) -> object:
    from modules import scripts

    runner = scripts.scripts_txt2img
    args = runner.default_args()
    script = next(s for s in runner.alwayson_scripts if s.title() == "ControlNet")
    for offset, unit in enumerate(units):
        args[script.args_from + offset] = {"enabled": True, "module": "canny", "image": _square(),
                                           "pixel_perfect": True, **unit}
    job = StableDiffusionProcessingTxt2Img(prompt="a red circle on the left", width=64, height=64, steps=8,
                                           cfg_scale=7.0, seed=seed, sampler_name="Euler",
                                           do_not_save_samples=True, do_not_save_grid=True)
    runner.attach(job, args)
    return app.run_job(job)


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_t2i_adapter_and_pth_controlnet_change_the_picture(cn_app):
    plain = _run(cn_app)
    adapter = _run(cn_app, {"model": "t2iadapter_test", "weight": 2.0})
    assert 'ControlNet 0: "Module: canny, Model: t2iadapter_test [' in adapter.infotexts[0]
    assert np.abs(_pixels(adapter.images[0]) - _pixels(plain.images[0])).mean() > 1  # random features, weak
    pth = _run(cn_app, {"model": "control_test_original"})
    assert "Model: control_test_original [" in pth.infotexts[0]
    assert np.abs(_pixels(pth.images[0]) - _pixels(plain.images[0])).mean() > 2
    both = _run(cn_app, {"model": "t2iadapter_test"}, {"model": "control_test_original", "weight": 0.5})
    assert "ControlNet 0: " in both.infotexts[0] and "ControlNet 1: " in both.infotexts[0]
    assert len(both.images) == 3  # the picture and both detected maps


def test_a_unit_that_cannot_run_refuses_the_job_unless_allowed(cn_app):
    with pytest.raises(JobError, match='ControlNet unit 0: ControlNet model "no-such-model" not found in '
                                       "models/ControlNet"):
        _run(cn_app, {"model": "no-such-model"})
    cn_app.opts.set("control_net_skip_unfit_units", True)
    try:
        processed = _run(cn_app, {"model": "no-such-model"}, {"model": "t2iadapter_test"})
    finally:
        cn_app.opts.set("control_net_skip_unfit_units", False)
    assert any("ControlNet unit left out: ControlNet unit 0" in c for c in processed.comments)
    assert "ControlNet 0: " not in processed.infotexts[0] and "ControlNet 1: " in processed.infotexts[0]


def test_low_vram_unit_gives_the_same_picture_and_leaves_the_model_on_the_cpu(cn_app):
    normal = _run(cn_app, {"model": "control_test_original"})
    low = _run(cn_app, {"model": "control_test_original", "low_vram": True})
    assert np.array_equal(_pixels(low.images[0]), _pixels(normal.images[0]))
    from lib_controlnet import models, runtime

    cached = runtime.cache().get(models.find_model("control_test_original", runtime.model_folders()))
    assert all(p.device.type == "cpu" for p in cached.module.parameters())  # the same object the jobs used
