"""The buttons under a gallery (save, zip, send to img2img / inpaint / extras), the txt2img hires and Extra
controls, and two browser sessions generating at once."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from modules.images import save_image_with_geninfo
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, page  # noqa: F401
from tests.test_server import server  # noqa: F401

ARTIFACTS = Path(__file__).parent / "artifacts"
INFOTEXT = "a red circle\nNegative prompt: blue\nSteps: 7, Sampler: Euler a, Schedule type: Automatic, CFG scale: 5, " \
           "Seed: 1234, Size: 64x72, Denoising strength: 0.4"


def _gallery(tmp_path, count: int = 2) -> list[tuple[str, None]]:
    items = []
    for i in range(count):
        path = tmp_path / f"g{i}.png"
        Image.new("RGB", (64, 72), (40 * i, 10, 200)).save(path)
        items.append((str(path), None))
    return items


def test_save_writes_the_selected_image_with_its_infotext_and_a_log_row(tmp_path):
    from modules.options import Options
    from modules.ui.output_panel import save_files

    gallery = _gallery(tmp_path)
    save_dir = tmp_path / "log" / "images"
    saved = save_files(gallery, ["first", INFOTEXT], 1, False, str(save_dir), opts=Options())
    assert [Path(p).name for p in saved] == ["00000-1234.png"] and Path(saved[0]).parent == save_dir
    with Image.open(saved[0]) as image:
        assert image.text["parameters"] == INFOTEXT and image.getpixel((0, 0)) == (40, 10, 200)
    # A1111's log.csv, in the save folder, with its columns
    with open(save_dir / "log.csv", encoding="utf8", newline="") as file:
        rows = list(csv.reader(file))
    assert rows == [["prompt", "seed", "width", "height", "sampler_name", "cfg_scale", "steps", "filename",
                     "negative_prompt", "sd_model_name", "sd_model_hash"],
                    ["a red circle", "1234", "64", "72", "Euler a", "5", "7", "00000-1234.png", "blue", "", ""]]


def test_zip_packs_every_image_when_none_is_selected(tmp_path):
    from modules.options import Options
    from modules.ui.output_panel import save_files

    saved = save_files(_gallery(tmp_path, 3), ["a", "b", "c"], -1, True, str(tmp_path / "out"), opts=Options())
    assert saved[0].endswith(".zip") and len(saved) == 4
    with zipfile.ZipFile(saved[0]) as archive:
        assert sorted(archive.namelist()) == sorted(Path(p).name for p in saved[1:])


def test_save_button_uses_the_saving_settings(tmp_path):
    from modules.options import Options
    from modules.ui.output_panel import save_files

    opts = Options()
    for key, value in (("samples_format", "jpg"), ("save_txt", True), ("use_save_to_dirs_for_ui", True),
                       ("directories_filename_pattern", "[seed]"), ("save_write_log_csv", False)):
        opts.set(key, value)
    saved = save_files(_gallery(tmp_path), ["first", INFOTEXT], 1, False, str(tmp_path / "out"), opts=opts)
    assert saved == [str(tmp_path / "out" / "1234" / "00000-1234.jpg"), str(tmp_path / "out" / "1234" /
                                                                            "00000-1234.txt")]
    assert not (tmp_path / "out" / "log.csv").exists()
    opts.set("save_selected_only", False)
    assert len(save_files(_gallery(tmp_path), ["first", INFOTEXT], 1, False, str(tmp_path / "all"), opts=opts)) == 4


def test_a_leading_grid_is_recognised_so_selecting_it_saves_every_image(tmp_path):
    from modules.options import Options
    from modules.ui.output_panel import grid_count, save_files

    images = _gallery(tmp_path, 2)
    grid = tmp_path / "grid.png"
    Image.new("RGB", (128, 72)).save(grid)
    gallery = [(str(grid), None), *images]
    texts = [INFOTEXT, INFOTEXT, "b"]  # the grid carries the first image's infotext
    assert grid_count(gallery, texts) == 1 and grid_count(images, texts[1:]) == 0
    assert grid_count(gallery, ["a", "b", "c"]) == 0
    assert len(save_files(gallery, texts, 0, False, str(tmp_path / "g"), opts=Options())) == 3
    assert len(save_files(gallery, texts, 1, False, str(tmp_path / "one"), opts=Options())) == 1


def test_save_with_an_empty_gallery_is_a_message(tmp_path):
    import gradio as gr

    from modules.ui.output_panel import save_files

    with pytest.raises(gr.Error, match="Nothing to save"):
        save_files([], [], -1, False, str(tmp_path))


def test_send_to_img2img_and_inpaint_carry_image_and_parameters(app, tmp_path):
    from modules.ui import send_to

    gallery = _gallery(tmp_path)
    updates = send_to.img2img_updates(gallery, 1, ["x", INFOTEXT], "img2img")
    image = updates[0]["value"]
    assert image.size == (64, 72) and image.getpixel((0, 0)) == (40, 10, 200)
    fields = dict(zip(send_to.IMG2IMG_PASTE_FIELDS, updates[1:12], strict=True))
    assert fields["prompt"]["value"] == "a red circle" and fields["negative_prompt"]["value"] == "blue"
    assert (fields["steps"]["value"], fields["cfg_scale"]["value"], fields["seed"]["value"]) == (7, 5, 1234)
    assert (fields["width"]["value"], fields["height"]["value"]) == (64, 72)
    assert fields["denoising_strength"]["value"] == 0.4 and fields["sampler_name"]["value"] == "Euler a"
    assert updates[12] == "img2img"
    inpaint = send_to.img2img_updates(gallery, 0, ["x", INFOTEXT], "Inpaint")
    assert inpaint[0]["value"]["background"].getpixel((0, 0)) == (0, 10, 200)
    assert inpaint[0]["value"]["layers"] == [] and inpaint[12] == "Inpaint"
    assert inpaint[1]["value"] == "x"  # the first image's own infotext: its first line is the prompt


def test_hires_and_variation_fields_reach_the_job():
    from modules.ui import txt2img

    job = txt2img.build_job("p", "", "Euler", "Automatic", 10, 7, 5, 64, 64, 1, 1, [], True, "Lanczos", 3, 0.45,
                            1.5, 0, 0, "DPM++ 2M", txt2img.SAME_SCHEDULER, "hires p", "", 77, 0.25, 128, 96)
    assert (job.enable_hr, job.hr_upscaler, job.hr_second_pass_steps, job.denoising_strength) == (True, "Lanczos",
                                                                                                   3, 0.45)
    assert (job.hr_scale, job.hr_sampler_name, job.hr_scheduler, job.hr_prompt) == (1.5, "DPM++ 2M", None, "hires p")
    assert (job.subseed, job.subseed_strength, job.seed_resize_from_w, job.seed_resize_from_h) == (77, 0.25, 128, 96)
    assert txt2img.build_job("p", "", "Euler", "Automatic", 10, 7, 5, 64, 64, 1, 1).seed_resize_from_w == -1


def test_infotext_pastes_hires_and_variation_fields():
    from modules.ui import txt2img

    values = txt2img.infotext_values(
        "p\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Variation seed: 9, "
        "Variation seed strength: 0.3, Seed resize from: 128x96, Denoising strength: 0.5, Hires upscale: 2, "
        "Hires steps: 3, Hires upscaler: Lanczos, Hires sampler: Euler a, Hires prompt: big")
    assert values["enable_hr"] is True and values["hr_upscaler"] == "Lanczos" and values["hr_second_pass_steps"] == 3
    assert (values["subseed"], values["subseed_strength"]) == (9, 0.3)
    assert (values["seed_resize_from_w"], values["seed_resize_from_h"]) == (128, 96)
    assert (values["hr_sampler_name"], values["hr_prompt"]) == ("Euler a", "big")


def _generate(tab_page, prompt: str, seed: int, steps: int = 3) -> None:
    tab_page.locator("#txt2img_prompt textarea").fill(prompt)
    tab_page.locator("#txt2img_width input[type=number]").fill("64")
    tab_page.locator("#txt2img_height input[type=number]").fill("64")
    tab_page.locator("#txt2img_steps input[type=number]").fill(str(steps))
    tab_page.locator("#txt2img_seed input").fill(str(seed))
    tab_page.locator("#txt2img_seed input").press("Tab")
    tab_page.locator("#txt2img_generate").click()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_send_generated_image_to_img2img_in_browser(server, page):  # noqa: F811
    url, _, _ = server
    page.goto(url, wait_until="load")
    page.wait_for_selector("#txt2img_prompt textarea")
    _generate(page, "a large red circle on the left, blue background", 4321)
    page.locator("#txt2img_gallery img").first.wait_for(timeout=60000)
    page.wait_for_function("() => document.querySelector('#txt2img_infotext textarea').value.includes('4321')")
    page.locator("#txt2img_send_to_img2img").click()
    page.wait_for_function(
        "() => (document.querySelector('#img2img_prompt textarea')?.value || '').startsWith('a large red circle')")
    page.locator("#img2img_image img").first.wait_for(timeout=20000)
    assert page.locator("#img2img_seed input").input_value() == "4321"
    assert page.locator("#tab_img2img").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "img2img_sent_from_txt2img.png"), full_page=True)
    page.locator("#img2img_generate").click()
    page.locator("#img2img_gallery img").first.wait_for(timeout=60000)
    page.wait_for_function(
        "() => (document.querySelector('#img2img_infotext textarea')?.value || '').includes('Denoising')")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_two_sessions_generating_at_once_each_get_their_own_image(server):  # noqa: F811
    from playwright.sync_api import sync_playwright

    url, _, _ = server
    prompts = {"first": "a large red circle on the left, blue background",
               "second": "a large yellow square on the right, purple background"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = {}
        for name in prompts:
            pages[name] = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            pages[name].goto(url, wait_until="load")
            pages[name].wait_for_selector("#txt2img_prompt textarea")
        for seed, name in enumerate(prompts, start=500):
            _generate(pages[name], prompts[name], seed, steps=12)
        for seed, name in enumerate(prompts, start=500):
            page_ = pages[name]
            page_.wait_for_function(
                f"() => document.querySelector('#txt2img_infotext textarea').value.includes('Seed: {seed}')",
                timeout=120000)
            text = page_.locator("#txt2img_infotext textarea").input_value()
            assert text.startswith(prompts[name]) and f"Seed: {seed}," in text
            assert page_.locator("#txt2img_gallery img").count() >= 1
        browser.close()


def test_png_with_infotext_round_trips_through_save(tmp_path):
    """The saved file keeps an existing parameters chunk byte for byte (what Save writes is what PNG Info reads)."""
    from modules.options import Options
    from modules.ui.output_panel import save_files

    source = tmp_path / "src.png"
    save_image_with_geninfo(Image.new("RGB", (8, 8)), INFOTEXT, str(source))
    saved = save_files([(str(source), None)], [INFOTEXT], 0, False, str(tmp_path / "out"), opts=Options())
    assert Image.open(saved[0]).text["parameters"] == INFOTEXT
