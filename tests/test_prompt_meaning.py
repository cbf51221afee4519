"""The prompt engine end to end on the trained demo model: weights, editing, AND, CLIP skip, LoRA, embeddings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from modules.models import demo
from modules.processing import Job
from tests.test_demo_model import _colour_share
from tools import shapes

SEEDS = (1, 2, 3, 4)


def _images(app, prompt: str, **fields) -> list[np.ndarray]:
    fields = {"width": 64, "height": 64, "steps": 20, "cfg_scale": 7.0, "sampler_name": "DPM++ 2M",
              "do_not_save_samples": True, "do_not_save_grid": True, **fields}
    processed = app.run_job(Job(prompt=prompt, seed=SEEDS[0], batch_size=len(SEEDS), **fields))
    return [np.asarray(im.convert("RGB")) for im in processed.images[processed.index_of_first_image:]]


def _share(images: list[np.ndarray], colour: str) -> float:
    return float(np.mean([_colour_share(im, colour) for im in images]))


def test_emphasis_weight_changes_the_colour_share(app):
    """"a red blue circle" names two colours, so the weight on "red" decides how much of the circle is red."""
    strong = _share(_images(app, "a large (red:1.5) blue circle in the center, white background"), "red")
    weak = _share(_images(app, "a large (red:0.5) blue circle in the center, white background"), "red")
    assert strong > 2 * weak


def test_prompt_editing_lands_between_the_two_prompts(app):
    """Early steps set the composition, late steps the fine colour: switching red→blue late (0.85) gives a shape
    that is neither the red nor the blue prompt's; switching early gives blue, very late red."""
    red = _images(app, "a large red circle in the center, white background")
    blue = _images(app, "a large blue circle in the center, white background")
    between = _images(app, "a large [red:blue:0.85] circle in the center, white background")
    assert _share(between, "red") < _share(red, "red") / 2
    assert _share(between, "blue") < _share(blue, "blue") / 2
    early = _images(app, "a large [red:blue:0.3] circle in the center, white background")
    late = _images(app, "a large [red:blue:0.95] circle in the center, white background")
    assert _share(early, "blue") > _share(early, "red")
    assert _share(late, "red") > _share(late, "blue")


def test_and_combines_two_prompts(app):
    """Composable diffusion: a red circle AND a blue circle in the same place make a purple one, which neither
    sub-prompt draws alone."""
    red = "a large red circle in the center, white background"
    blue = "a large blue circle in the center, white background"
    both = _share(_images(app, f"{red} AND {blue}"), "purple")
    assert both > 0.03
    assert both > 5 * max(_share(_images(app, red), "purple"), _share(_images(app, blue), "purple"))


def test_clip_skip_2_still_follows_the_prompt(app):
    app.opts.set("CLIP_stop_at_last_layers", 2)
    processed = app.run_job(Job(prompt="a large yellow circle on the right, purple background", seed=5, steps=20,
                                width=64, height=64, do_not_save_samples=True))
    reading = shapes.analyse(np.asarray(processed.images[0].convert("RGB")))
    assert (reading.colour, reading.background) == ("yellow", "purple")
    assert "Clip skip: 2" in processed.info


def _install_lora(app) -> None:
    shutil.copy(demo.DEMO_LORA, Path(app.cmd_opts.lora_dir) / "striped.safetensors")
    app.loras.refresh()


def test_lora_changes_the_style_and_weight_zero_does_not(app):
    _install_lora(app)
    prompt = "a large green square in the center, black background"
    plain = _images(app, prompt)
    striped = _images(app, prompt + " <lora:striped:1>")
    zero = _images(app, prompt + " <lora:striped:0>")
    after = _images(app, prompt)
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(plain, striped, strict=True)]) > 3
    assert all(np.array_equal(a, b) for a, b in zip(plain, zero, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(plain, after, strict=True))  # fully removed after the job
    processed = app.run_job(Job(prompt=prompt + " <lora:striped:0.8>", seed=1, steps=4, width=64, height=64))
    assert 'Lora hashes: "striped: ' in processed.info
    assert processed.info.startswith(prompt + " <lora:striped:0.8>")  # the tag stays in the infotext prompt


def test_missing_lora_is_a_warning_not_a_failure(app):
    prompt = "a large green square in the center, black background"
    plain = _images(app, prompt)
    processed = app.run_job(Job(prompt=prompt + " <lora:nope:1>", seed=SEEDS[0], batch_size=len(SEEDS), steps=20,
                                width=64, height=64, sampler_name="DPM++ 2M", do_not_save_samples=True,
                                do_not_save_grid=True))
    assert processed.comments == ["Networks not found: nope"]
    images = [np.asarray(im.convert("RGB")) for im in processed.images[1:]]
    assert all(np.array_equal(a, b) for a, b in zip(plain, images, strict=True))


def test_embedding_word_draws_its_trained_combination(app):
    shutil.copy(demo.DEMO_EMBEDDING, Path(app.cmd_opts.embeddings_dir) / "shapey.safetensors")
    processed = app.run_job(Job(prompt="a large shapey in the center, blue background", seed=SEEDS[0],
                                batch_size=len(SEEDS), steps=20, width=64, height=64, sampler_name="DPM++ 2M",
                                do_not_save_samples=True, do_not_save_grid=True))
    readings = [shapes.analyse(np.asarray(im.convert("RGB"))) for im in processed.images[1:]]
    assert sum(r.colour == "orange" for r in readings) >= 3
    assert 'TI hashes: "shapey: ' in processed.info


def test_hypernetwork_tag_changes_the_picture_and_multiplier_zero_does_not(app):
    from tests.test_hypernetwork import write_hypernetwork

    write_hypernetwork(Path(app.cmd_opts.hypernetwork_dir) / "boost.pt", sizes=(96,))  # demo cross-attn width
    app.hypernetworks.refresh()
    prompt = "a large green square in the center, black background"
    plain = _images(app, prompt)
    changed = _images(app, prompt + " <hypernet:boost:1>")
    zero = _images(app, prompt + " <hypernet:boost:0>")
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(plain, changed, strict=True)]) > 1
    assert all(np.array_equal(a, b) for a, b in zip(plain, zero, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(plain, _images(app, prompt), strict=True))


def test_a_pasted_civitai_prompt_runs_with_everything_applied(app):
    shutil.copy(demo.DEMO_LORA, Path(app.cmd_opts.lora_dir) / "add_detail.safetensors")
    shutil.copy(demo.DEMO_EMBEDDING, Path(app.cmd_opts.embeddings_dir) / "my_embedding.safetensors")
    app.loras.refresh()
    tail = ", ".join(f"detail{i}" for i in range(100))  # a long tail: several 75-token chunks
    prompt = ("masterpiece, (detailed face:1.3), [cat:dog:0.4], [red|blue] hair, <lora:add_detail:0.7>, "
              f"my_embedding BREAK city at night, {tail}")
    processed = app.run_job(Job(prompt=prompt, negative_prompt="(blurry:1.2), lowres", seed=9, steps=6,
                                width=64, height=64, do_not_save_samples=True))
    info = processed.info
    assert info.startswith(prompt + "\nNegative prompt: (blurry:1.2), lowres\n")
    assert 'Lora hashes: "add_detail: ' in info and 'TI hashes: "my_embedding: ' in info
    assert processed.comments == []
    from modules import infotext

    parsed = infotext.parse_generation_parameters(info)
    assert parsed["Prompt"] == prompt and parsed["Steps"] == "6"
