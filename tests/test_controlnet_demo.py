"""The demo ControlNet really controls (assets/demo/demo-canny-controlnet.safetensors, tools/train_controlnet_demo.py).

Through the whole path a user takes (the built-in ControlNet script's unit on a txt2img job, its canny preprocessor,
the demo model), with the prompt "a red circle on the left" and the edges of a square on the right: the shape is drawn
where the edges are, against the prompt, while its colour still follows the prompt; at weight 0 the prompt wins; an
early guidance end weakens the control; two weak units combine. tools/shapes reads the pictures back.

The shipped demo ControlNet was trained on the CPU (no GPU was available to this session): it moves the shape to the
edges in almost every seed but draws the edges' square (instead of the prompt's circle) in only about a quarter of
them; the thresholds below are what it does, with margin (issue 16's closing note has the figures).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from modules.processing import StableDiffusionProcessingTxt2Img
from tools import shapes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "extensions-builtin" / "sd-webui-controlnet"))

DEMO = ROOT / "assets" / "demo" / "demo-canny-controlnet.safetensors"
PROMPT = "a red circle on the left"
SEEDS = 36
STEPS = 20


def _edges_source(colour: str = "blue", background: str = "white") -> np.ndarray:
    spec = shapes.Spec(shape="square", colour=colour, background=background, position="right", size="large")
    return shapes.to_uint8(shapes.render([spec], 64, jitter=0.0))[0]


@pytest.fixture(scope="module")
def controlnet_app(tmp_path_factory):
    """The application with the demo model, the ControlNet folder holding only the demo ControlNet (put there by
    the extension's first-start copy)."""
    from modules import cmd_args, scripts, shared

    data = tmp_path_factory.mktemp("controlnet-demo")
    args = cmd_args.parse_args(["--data-dir", str(data), "--use-cpu", "all"], environ={})
    shared.initialize(args)
    scripts.load_scripts()  # every extension: another test may have loaded the repository's scripts only
    from lib_controlnet import runtime

    runtime.ensure_demo_controlnet()
    assert (data / "models" / "ControlNet" / DEMO.name).is_file()
    yield shared
    shared.models.unload()


def _readings(app, units: list[dict], seed: int = 1000, n: int = SEEDS, prompt: str = PROMPT):
    from modules import scripts

    runner = scripts.scripts_txt2img
    args = runner.default_args()
    script = next(s for s in runner.alwayson_scripts if s.title() == "ControlNet")
    for offset, unit in enumerate(units):
        args[script.args_from + offset] = {"enabled": True, "module": "canny", "model": "demo-canny-controlnet",
                                           "pixel_perfect": True, **unit}
    job = StableDiffusionProcessingTxt2Img(prompt=prompt, width=64, height=64, steps=STEPS, cfg_scale=7.0,
                                           seed=seed, batch_size=n, sampler_name="DPM++ 2M",
                                           do_not_save_samples=True, do_not_save_grid=True)
    runner.attach(job, args)
    processed = app.run_job(job)
    generated = processed.images[:n]
    return [shapes.analyse(np.asarray(image.convert("RGB"))) for image in generated], processed


def _share(readings, shape: str, position: str) -> float:
    return sum(r.shape == shape and r.position == position for r in readings) / len(readings)


def test_the_demo_controlnet_is_shipped_small_and_in_the_original_layout():
    from safetensors import safe_open

    assert DEMO.stat().st_size <= 10 * 2 ** 20
    with safe_open(str(DEMO), "pt") as f:
        keys = list(f.keys())
        metadata = f.metadata()
    assert any(k.startswith("control_model.input_hint_block.") for k in keys)
    assert any(k.startswith("control_model.zero_convs.") for k in keys)
    assert metadata["script"] == "tools/train_controlnet_demo.py"


def _right(readings) -> float:
    return sum(r.position == "right" for r in readings) / len(readings)


def _squares(readings) -> float:
    return sum(r.shape == "square" for r in readings) / len(readings)


def test_the_edges_beat_the_prompt_for_the_position(controlnet_app):
    readings, processed = _readings(controlnet_app, [{"image": _edges_source(), "weight": 1.0}])
    assert _right(readings) >= 0.85, readings  # the prompt says "on the left"
    assert sum(r.colour == "red" for r in readings) / len(readings) >= 0.8  # the colour still follows the prompt
    assert _squares(readings) >= 0.1  # without the control: no squares at all (next test)
    assert 'ControlNet 0: "Module: canny, Model: demo-canny-controlnet [' in processed.infotexts[0]
    detected = np.asarray(processed.images[-1].convert("L"))  # the detected map comes back after the images
    assert detected.shape == (64, 64) and detected[:, 40:].max() == 255 and detected[:, :32].max() == 0


def test_at_weight_zero_the_prompt_wins(controlnet_app):
    readings, _ = _readings(controlnet_app, [{"image": _edges_source(), "weight": 0.0}], n=16)
    assert _share(readings, "circle", "left") >= 0.8, readings
    assert _squares(readings) <= 0.05


def test_an_early_guidance_end_weakens_the_control(controlnet_app):
    full, _ = _readings(controlnet_app, [{"image": _edges_source(), "weight": 1.0}], n=16)
    early, _ = _readings(controlnet_app, [{"image": _edges_source(), "weight": 1.0, "guidance_end": 0.1}], n=16)
    assert _right(early) <= _right(full) - 0.5


def test_two_units_combine(controlnet_app):
    # the second unit's edges come from another colouring of the same square: only the edges matter
    one_weak, _ = _readings(controlnet_app, [{"image": _edges_source(), "weight": 0.3}], n=16)
    two_weak, processed = _readings(controlnet_app, [{"image": _edges_source(), "weight": 0.3},
                                                     {"image": _edges_source("green", "black"), "weight": 0.3}],
                                    n=16)
    assert _right(two_weak) >= _right(one_weak) + 0.4
    assert "ControlNet 0: " in processed.infotexts[0] and "ControlNet 1: " in processed.infotexts[0]


def test_first_start_copies_the_demo_controlnet_only_into_an_empty_folder(tmp_path):
    from lib_controlnet import runtime

    folder = tmp_path / "ControlNet"
    runtime.ensure_demo_controlnet(str(folder))
    assert (folder / DEMO.name).read_bytes() == DEMO.read_bytes()
    (folder / DEMO.name).unlink()
    shutil.copyfile(DEMO, folder / "my-own.safetensors")
    runtime.ensure_demo_controlnet(str(folder))
    assert not (folder / DEMO.name).exists()  # the user's own models: nothing added


def test_xyz_plot_controlnet_weight_axis(controlnet_app):
    from modules import scripts

    runner = scripts.scripts_txt2img
    xyz = runner.selectable_scripts[runner.titles.index("X/Y/Z plot")]
    controlnet = next(s for s in runner.alwayson_scripts if s.title() == "ControlNet")
    args = runner.default_args()
    args[0] = runner.selectable_scripts.index(xyz) + 1
    args[xyz.args_from + 0], args[xyz.args_from + 1] = "[ControlNet] Weight", "0, 1"
    args[xyz.args_from + 10] = True  # "Include Sub Images": the cells come back after the grid
    args[controlnet.args_from] = {"enabled": True, "module": "canny", "model": "demo-canny-controlnet",
                                  "image": _edges_source(), "pixel_perfect": True}
    job = StableDiffusionProcessingTxt2Img(prompt=PROMPT, width=64, height=64, steps=STEPS, cfg_scale=7.0, seed=7,
                                           sampler_name="DPM++ 2M", do_not_save_samples=True)
    runner.attach(job, args)
    processed = controlnet_app.run_job(job)
    cells = [i for i, text in enumerate(processed.infotexts) if "ControlNet 0: " in text]
    weights = [processed.infotexts[i].split("ControlNet 0: ")[1].split("Weight: ")[1].split(",")[0] for i in cells]
    assert weights[-2:] == ["0.0", "1.0"]
    first, second = (np.asarray(processed.images[i].convert("RGB"), dtype=int) for i in cells[-2:])
    assert np.abs(first - second).mean() > 5  # the axis really changed the control
