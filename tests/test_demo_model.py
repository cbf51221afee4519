"""What the trained demo model draws: prompts, CFG, negative prompts, img2img, inpainting, hires fix, seeds.

The demo model (assets/demo, tools/train_demo.py) draws one coloured shape on a coloured background at 64x64;
tools/shapes.analyse reads a picture back, so these tests check meaning, not just plumbing.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from modules.models import demo
from modules.processing import Job
from tools import shapes

CAPTIONS = [
    "a large red circle on the left, blue background",
    "a large yellow square on the right, purple background",
    "a small green triangle at the top, white background",
    "a large white circle at the bottom, black background",
    "a small orange square in the center, green background",
    "a large purple triangle on the left, yellow background",
    "a large blue circle at the top, orange background",
    "a large black square at the bottom, red background",
]


def _draw(app, prompt: str, seed: int, **fields) -> np.ndarray:
    fields = {"width": 64, "height": 64, "steps": 20, "cfg_scale": 7.0, "sampler_name": "DPM++ 2M",
              "do_not_save_samples": True, **fields}
    processed = app.run_job(Job(prompt=prompt, seed=seed, **fields))
    return np.asarray(processed.images[0].convert("RGB"))


def _expected(caption: str) -> dict[str, str]:
    words = caption.replace(",", "").split()
    colour = words[2]
    position = next(p for p, phrase in shapes.POSITION_PHRASES.items() if phrase in caption)
    return {"colour": colour, "background": words[-2], "position": position, "size": words[1]}


@pytest.mark.parametrize("caption", CAPTIONS)
def test_the_picture_answers_the_prompt(app, caption):
    assert app.models.get().checkpoint.name == demo.DEMO_FILENAME
    for seed in (1, 2):
        reading = shapes.analyse(_draw(app, caption, seed))
        expected = _expected(caption)
        got = {k: getattr(reading, k) for k in expected}
        assert got == expected, (caption, seed)


def test_seeds_vary_the_picture_but_not_its_meaning(app):
    a = _draw(app, CAPTIONS[0], 10)
    b = _draw(app, CAPTIONS[0], 11)
    assert np.abs(a.astype(int) - b).mean() > 1
    assert np.array_equal(a, _draw(app, CAPTIONS[0], 10))


def _colour_share(image: np.ndarray, colour: str) -> float:
    names = list(shapes.COLOURS)
    table = np.array([shapes.COLOURS[n] for n in names], dtype=np.float32)
    nearest = ((image.reshape(-1, 1, 3).astype(np.float32) - table[None]) ** 2).sum(-1).argmin(1)
    return float((nearest == names.index(colour)).mean())


def _hits(app, specs: list[shapes.Spec], cfg_scale: float) -> int:
    """How many attributes (colour, shape, position, background, size) the analyser reads back as asked."""
    processed = app.run_job(Job(prompt=[shapes.caption(s) for s in specs], seed=100, batch_size=len(specs),
                                width=64, height=64, steps=20, cfg_scale=cfg_scale, sampler_name="DPM++ 2M",
                                do_not_save_samples=True))
    images = processed.images[processed.index_of_first_image:]
    readings = [shapes.analyse(np.asarray(im.convert("RGB"))) for im in images]
    attributes = ("colour", "shape", "position", "background", "size")
    return sum(getattr(r, a) == getattr(s, a) for r, s in zip(readings, specs, strict=True) for a in attributes)


def test_cfg_scale_strengthens_adherence(app):
    rng = random.Random(7)
    specs = [shapes.random_spec(rng) for _ in range(40)]  # 200 attributes read back at each scale
    assert _hits(app, specs, cfg_scale=7.0) > _hits(app, specs, cfg_scale=1.0)


def test_negative_prompt_naming_the_colour_lowers_its_share(app):
    rng = random.Random(3)
    captions = [shapes.caption(shapes.random_spec(rng, colour="red")) for _ in range(16)]

    def red_share(negative: str) -> float:
        processed = app.run_job(Job(prompt=captions, negative_prompt=negative, seed=1, batch_size=len(captions),
                                    width=64, height=64, steps=20, cfg_scale=7.0, sampler_name="DPM++ 2M",
                                    do_not_save_samples=True, do_not_save_grid=True))
        images = processed.images[processed.index_of_first_image:]
        return float(np.mean([_colour_share(np.asarray(im.convert("RGB")), "red") for im in images]))

    assert red_share("red") < red_share("")


def _render(caption_spec: shapes.Spec) -> Image.Image:
    return Image.fromarray(shapes.to_uint8(shapes.render([caption_spec], jitter=0))[0])


def test_img2img_strength_keeps_or_replaces_the_init_image(app):
    init = _render(shapes.Spec("circle", "red", "blue", "left", "large"))
    prompt = "a large yellow square on the right, purple background"
    kept = _draw(app, prompt, 3, init_images=[init], denoising_strength=0.1)
    assert np.abs(kept.astype(int) - np.asarray(init)).mean() < 16
    reading = shapes.analyse(kept)
    assert (reading.background, reading.position) == ("blue", "left")
    replaced = shapes.analyse(_draw(app, prompt, 3, init_images=[init], denoising_strength=0.9))
    assert (replaced.colour, replaced.background, replaced.position) == ("yellow", "purple", "right")


def test_inpainting_paints_the_prompt_into_the_mask_only(app):
    """The red circle on the left is masked and the prompt asks for a yellow one there: the masked region turns
    yellow, every pixel outside stays as it was."""
    init = _render(shapes.Spec("circle", "red", "blue", "left", "large"))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 8, 34, 56))
    before = np.asarray(init)
    outside = np.asarray(mask) == 0
    for seed in (4, 5):
        after = _draw(app, "a large yellow circle on the left, blue background", seed, init_images=[init],
                      image_mask=mask, mask_blur=0, denoising_strength=1.0, inpainting_fill=1)
        assert np.array_equal(after[outside], before[outside])
        assert _colour_share(after[~outside], "yellow") > 0.2 > _colour_share(before[~outside], "yellow")
        assert _colour_share(after[~outside], "red") < 0.02 < _colour_share(before[~outside], "red")


def test_hires_fix_doubles_the_size_and_keeps_the_first_pass(app):
    """The shape keeps its colour and place. (The demo model was trained at 64x64 only; at 128x128 its
    backgrounds drift in hue, so only the shape is compared.)"""
    prompt = "a large green circle in the center, orange background"
    first = shapes.analyse(_draw(app, prompt, 6))
    hires = _draw(app, prompt, 6, enable_hr=True, hr_scale=2.0, hr_upscaler="Latent", denoising_strength=0.3,
                  hr_second_pass_steps=10)
    assert hires.shape == (128, 128, 3)
    down = shapes.analyse(np.asarray(Image.fromarray(hires).resize((64, 64), Image.Resampling.LANCZOS)))
    assert (down.colour, down.position, down.size) == (first.colour, first.position, first.size) == \
        ("green", "center", "large")


def test_lora_and_embedding_fixtures_are_in_a1111_formats(app):
    model = app.models.get()
    lora = load_file(str(demo.DEMO_LORA))
    modules = dict(model.unet.named_modules())
    downs = [k for k in lora if k.endswith(".lora_down.weight")]
    assert downs and all(k.startswith("lora_unet_") for k in lora)
    for key in downs:
        stem = key[: -len(".lora_down.weight")]
        assert f"{stem}.lora_up.weight" in lora and f"{stem}.alpha" in lora
        path = stem.removeprefix("lora_unet_")
        target = next((name for name in modules if name.replace(".", "_") == path), None)
        assert target is not None, f"{key} names no UNet module"
        assert lora[key].shape[1] == modules[target].in_features
    embedding = load_file(str(demo.DEMO_EMBEDDING))
    assert list(embedding) == ["emb_params"]
    hidden = model.text_encoders[0].config.hidden_size
    assert embedding["emb_params"].shape == (1, hidden)
