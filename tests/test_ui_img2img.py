"""The img2img tab end to end: the real server driven through gradio_client, and the Inpaint editor in Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from modules.ui import img2img
from tests.test_server import server  # noqa: F401  (the running-server fixture)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def settings(seed: int = 123, mask_blur: int = 0, **overrides) -> list:
    """The /img2img inputs after the five image inputs, in order (64x64, 4 steps: fast)."""
    values = {"prompt": "a yellow circle", "negative": "", "sampler": "Euler a", "scheduler": "Automatic",
              "steps": 4, "cfg": 7, "denoising": 0.75, "seed": seed, "width": 64, "height": 64, "batch_count": 1,
              "batch_size": 1, "resize_mode": "Just resize", "mask_blur": mask_blur, "mask_mode": "Inpaint masked",
              "fill": "original", "area": "Whole picture", "padding": 32}
    values.update(overrides)
    return list(values.values())


@pytest.fixture
def pictures(tmp_path) -> tuple[Path, Path]:
    image = Image.new("RGB", (64, 64), (30, 120, 200))
    ImageDraw.Draw(image).ellipse((10, 10, 40, 40), fill=(250, 200, 0))
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    image.save(tmp_path / "init.png")
    mask.save(tmp_path / "mask.png")
    return tmp_path / "init.png", tmp_path / "mask.png"


def test_mask_from_editor_layers_is_white_where_painted():
    layer = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    layer.putpixel((2, 3), (255, 255, 255, 128))
    mask = img2img.mask_from_layers([layer], (8, 8))
    assert mask.mode == "L" and mask.getpixel((2, 3)) == 255 and mask.getpixel((0, 0)) == 0
    assert img2img.mask_from_layers([Image.new("RGBA", (8, 8))], (8, 8)) is None  # nothing painted
    image, mask = img2img.init_image_and_mask(
        "Inpaint", None, None, {"background": Image.new("RGBA", (8, 8), "red"), "layers": [layer],
                                "composite": None}, None, None)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 0, 0) and mask.getpixel((2, 3)) == 255


def test_plain_img2img_returns_requested_size_and_saves_with_infotext(server, pictures):  # noqa: F811
    from gradio_client import Client, handle_file

    url, data_dir, _ = server
    client = Client(url, verbose=False)
    init, _ = pictures
    gallery, info, html_info = client.predict("img2img", handle_file(str(init)), None, None, None, None,
                                              *settings(seed=4242, width=72, height=64), api_name="/img2img")
    assert len(gallery) == 1
    assert Image.open(gallery[0]["image"]).size == (72, 64)
    assert "Denoising strength: 0.75" in info and "Seed: 4242, Size: 72x64" in info
    assert "Mask blur" not in info and "Denoising strength" in html_info
    saved = list((data_dir / "outputs" / "img2img-images").rglob("*-4242.png"))
    assert len(saved) == 1
    assert Image.open(saved[0]).text["parameters"] == info


def test_inpaint_upload_changes_only_the_masked_area(server, pictures):  # noqa: F811
    from gradio_client import Client, handle_file

    url, _, _ = server
    client = Client(url, verbose=False)
    init, mask = pictures
    gallery, info, _ = client.predict("Inpaint upload", None, None, None, handle_file(str(init)),
                                      handle_file(str(mask)), *settings(seed=7, mask_blur=0), api_name="/img2img")
    out = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"), dtype=int)
    original = np.asarray(Image.open(init).convert("RGB"), dtype=int)
    outside = np.asarray(Image.open(mask)) == 0
    assert out.shape == original.shape
    assert np.abs(out - original)[outside].max() == 0
    assert np.abs(out - original)[~outside].mean() > 5
    assert "Mask blur: 0" in info and "Masked content: original" in info

    # the same through the Inpaint editor's value: background + a painted layer (white = repaint), inverted mode
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(layer).rectangle((16, 16, 47, 47), fill=(255, 255, 255, 255))
    layer_path = init.parent / "layer.png"
    layer.save(layer_path)
    editor = {"background": handle_file(str(init)), "layers": [handle_file(str(layer_path))], "composite": None}
    gallery, info, _ = client.predict("Inpaint", None, None, editor, None, None,
                                      *settings(seed=7, mask_blur=0, mask_mode="Inpaint not masked"),
                                      api_name="/img2img")
    out = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"), dtype=int)
    assert np.abs(out - original)[~outside].max() == 0  # inverted: the painted square is kept
    assert np.abs(out - original)[outside].mean() > 5


def test_sketch_uses_the_composite_and_only_masked_inpaint_runs(server, pictures):  # noqa: F811
    from gradio_client import Client, handle_file

    url, _, _ = server
    client = Client(url, verbose=False)
    init, mask = pictures
    sketch = {"background": handle_file(str(init)), "layers": [], "composite": handle_file(str(init))}
    gallery, info, _ = client.predict("Sketch", None, sketch, None, None, None,
                                      *settings(seed=11, resize_mode="Crop and resize"), api_name="/img2img")
    assert Image.open(gallery[0]["image"]).size == (64, 64) and "Denoising strength: 0.75" in info
    gallery, info, _ = client.predict("Inpaint upload", None, None, None, handle_file(str(init)),
                                      handle_file(str(mask)), *settings(seed=12, area="Only masked", padding=8,
                                                                        fill="latent noise"), api_name="/img2img")
    assert Image.open(gallery[0]["image"]).size == (64, 64)
    assert "Masked content: latent noise" in info


def test_missing_image_is_a_clear_error(server, pictures):  # noqa: F811
    from gradio_client import Client, handle_file

    url, _, _ = server
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="Upload an image first"):
        client.predict("img2img", None, None, None, None, None, *settings(), api_name="/img2img")
    with pytest.raises(Exception, match="Upload a mask"):
        client.predict("Inpaint upload", None, None, None, handle_file(str(pictures[0])), None, *settings(),
                       api_name="/img2img")
    with pytest.raises(Exception, match="Paint the area"):
        editor = {"background": handle_file(str(pictures[0])), "layers": [], "composite": None}
        client.predict("Inpaint", None, None, editor, None, None, *settings(), api_name="/img2img")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_inpaint_by_drawing_on_the_editor_in_the_browser(server, pictures):  # noqa: F811
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import sync_playwright

    url, data_dir, _ = server
    ARTIFACTS.mkdir(exist_ok=True)
    init, _ = pictures
    before = set((data_dir / "outputs").rglob("*.png"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            page.goto(url, wait_until="load")
            page.wait_for_selector("#txt2img_prompt textarea")
            page.locator("#tab_img2img-button").click()
            page.locator("#img2img_inpaint_tab-button").click()
            # The editor places the file as its background asynchronously: a stroke drawn, or a Generate sent,
            # before that is lost ("Upload an image first"). Placed = its crop area is no longer marked empty and
            # the "Upload an image" prompt is gone. Gradio's editor starts its canvas on the first file; on a busy
            # machine that first file can be dropped while it starts (it then waits empty), so a file not placed
            # is given again, as a user would drop it again.
            placed = ("() => { const e = document.querySelector('#img2maskimg');"
                      " return e.querySelector('.pixi-target-crop') && !e.querySelector('.pixi-target-crop.empty')"
                      " && !e.innerText.includes('Upload an image'); }")
            # A file given again restarts the placing, so each try waits long enough for a loaded 2-core machine.
            for attempt in range(2):
                page.locator("#img2maskimg input[type=file]").set_input_files(str(init))
                try:
                    page.wait_for_function(placed, timeout=40000)
                    break
                except PlaywrightTimeoutError:
                    page.screenshot(path=str(ARTIFACTS / f"img2img_inpaint_not_placed_{attempt}.png"))
                    if attempt == 1:
                        raise
            canvas = page.locator("#img2maskimg canvas").first
            canvas.wait_for()
            page.wait_for_timeout(1000)
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx - 40, cy)
            page.mouse.down()
            for i in range(1, 9):
                page.mouse.move(cx - 40 + i * 10, cy + (i % 2) * 4)
            page.mouse.up()
            page.screenshot(path=str(ARTIFACTS / "img2img_inpaint_drawn.png"))
            page.locator("#img2img_prompt textarea").fill("a yellow circle")
            page.locator("#img2img_steps input[type=number]").fill("4")
            page.locator("#img2img_seed input").fill("2718")
            page.locator("#img2img_seed input").press("Tab")
            page.locator("#img2img_generate").click()
            # Either the result or an error toast; an error fails at once with the page's own message.
            page.wait_for_function(
                "() => document.querySelector('#img2img_gallery img') || document.querySelector('.toast-body')",
                timeout=90000)
            errors = page.locator(".toast-body").all_inner_texts()
            page.screenshot(path=str(ARTIFACTS / "img2img_inpaint_after_generate.png"), full_page=True)
            assert not errors, errors
            page.locator("#img2img_gallery img").first.wait_for(timeout=60000)
            page.wait_for_function(
                "() => document.querySelector('#img2img_infotext textarea').value.includes('Seed')")
            text = page.locator("#img2img_infotext textarea").input_value()
            page.screenshot(path=str(ARTIFACTS / "img2img_inpaint_result.png"), full_page=True)
        finally:
            browser.close()
    assert text.startswith("a yellow circle\nSteps: 4, ")
    assert "Seed: 2718, Size: 64x64" in text and "Denoising strength: 0.75" in text
    assert "Mask blur: 4" in text and "Masked content: original" in text
    new = [Path(f) for f in set((data_dir / "outputs").rglob("*.png")) - before]
    assert [f.parent.parent.name for f in new] == ["img2img-images"]
    out = np.asarray(Image.open(new[0]).convert("RGB"), dtype=int)
    assert np.abs(out - np.asarray(Image.open(init).convert("RGB"), dtype=int)).max() > 0
