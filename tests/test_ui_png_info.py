"""Pasting parameters into txt2img (↙, PNG Info's "Send to txt2img"), the PNG Info tab, and the seed/size buttons."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules.infotext import build_infotext, parse_generation_parameters
from modules.ui import paste
from tests.test_server import server  # noqa: F401  (the running-server fixture)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

KARRAS_INFOTEXT = build_infotext(
    "a red circle, (sharp:1.2)", "blurry, text",
    {"Steps": 27, "Sampler": "DPM++ 2M Karras", "CFG scale": 6.5, "Seed": 987654, "Size": "64x128",
     "Model hash": "0123456789", "Model": "demo-shapes-sd1", "Denoising strength": 0.45, "Clip skip": 2},
    version="v1.10.1")
EULER_INFOTEXT = build_infotext(
    "a blue square\nsecond line", "",
    {"Steps": 12, "Sampler": "Euler a", "Schedule type": "Karras", "CFG scale": 7.0, "Seed": 31337, "Size": "96x64"})


def values_of(text: str) -> dict[str, object]:
    return paste.txt2img_values(parse_generation_parameters(text))


# --- paste.txt2img_values ----------------------------------------------------------------------------------------

def test_legacy_karras_sampler_name_and_all_fields():
    assert KARRAS_INFOTEXT.splitlines()[2].startswith("Steps: 27, Sampler: DPM++ 2M Karras, CFG scale: 6.5, ")
    values = values_of(KARRAS_INFOTEXT)
    assert values == {
        "prompt": "a red circle, (sharp:1.2)",
        "negative_prompt": "blurry, text",
        "steps": 27,
        "cfg_scale": 6.5,
        "seed": 987654,
        "width": 64,
        "height": 128,
        "denoising_strength": 0.45,
        # A1111: Karras is DPM++ 2M's default schedule, so the legacy name gives the sampler with "Automatic".
        "sampler_name": "DPM++ 2M",
        "scheduler": "Automatic",
        # parse_generation_parameters' defaults for infotexts without hires fix (A1111 pastes them as well).
        "hr_resize_x": 0,
        "hr_resize_y": 0,
        "hr_sampler_name": "Use same sampler",
        "hr_scheduler": "Use same scheduler",
        "hr_prompt": "",
        "hr_negative_prompt": "",
    }
    assert isinstance(values["steps"], int) and isinstance(values["seed"], int)


def test_explicit_schedule_type_and_multiline_prompt():
    values = values_of(EULER_INFOTEXT)
    assert values["prompt"] == "a blue square\nsecond line"
    assert values["negative_prompt"] == ""
    assert (values["sampler_name"], values["scheduler"]) == ("Euler a", "Karras")
    assert (values["steps"], values["cfg_scale"], values["seed"]) == (12, 7, 31337)
    assert (values["width"], values["height"]) == (96, 64)
    assert "denoising_strength" not in values and "batch_size" not in values


def test_legacy_name_with_non_default_schedule():
    values = values_of("cat\nSteps: 20, Sampler: Euler a Karras, CFG scale: 7, Seed: 1, Size: 512x512")
    assert (values["sampler_name"], values["scheduler"]) == ("Euler a", "Karras")


def test_only_present_keys_and_bad_values_are_skipped():
    assert paste.txt2img_values({"Prompt": "x", "Steps": "abc", "Seed": "12.0", "CFG scale": "7"}) == {
        "prompt": "x", "seed": 12, "cfg_scale": 7}
    assert paste.txt2img_values({}) == {}
    assert paste.txt2img_values({"Hires upscale": "2", "Hires upscaler": "Latent", "Batch size": "4"}) == {
        "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "batch_size": 4}


def test_plain_prompt_paste_sets_prompt_and_default_sampler():
    values = paste.infotext_values("just words, nothing else")
    assert values["prompt"] == "just words, nothing else"
    assert "steps" not in values and "seed" not in values
    assert (values["sampler_name"], values["scheduler"]) == ("DPM++ 2M", "Automatic")
    assert paste.infotext_values("   ") == {}


def test_seed_from_infotext():
    assert paste.seed_from_infotext(KARRAS_INFOTEXT) == 987654
    assert paste.seed_from_infotext("") is None
    assert paste.seed_from_infotext("a prompt only") is None


# --- the tab functions without a server ----------------------------------------------------------------------------

def png_with_parameters(path: Path, text: str, **extra: str) -> Path:
    info = PngInfo()
    info.add_text("parameters", text)
    for key, value in extra.items():
        info.add_text(key, value)
    Image.new("RGB", (64, 128), (200, 30, 30)).save(path, pnginfo=info)
    return path


def test_image_info_reads_parameters_and_other_items(tmp_path):
    from modules.ui import png_info

    path = png_with_parameters(tmp_path / "a.png", KARRAS_INFOTEXT, Software="<tool>")
    text, html_info = png_info.image_info(str(path))
    assert text == KARRAS_INFOTEXT
    assert "<b>parameters</b>" in html_info and "&lt;tool&gt;" in html_info and "Software" in html_info
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert png_info.image_info(str(tmp_path / "plain.png")) == ("", "<div><p>Nothing found in the image.</p></div>")
    assert png_info.image_info(None) == ("", "")


def test_paste_parameters_and_reuse_seed_updates():
    from modules.ui import txt2img

    updates = txt2img.paste_parameters(KARRAS_INFOTEXT, "")
    by_name = dict(zip(txt2img.FIELD_NAMES, updates))
    assert by_name["prompt"]["value"] == "a red circle, (sharp:1.2)"
    assert by_name["sampler_name"]["value"] == "DPM++ 2M" and by_name["scheduler"]["value"] == "Automatic"
    assert by_name["steps"]["value"] == 27 and by_name["seed"]["value"] == 987654
    assert "value" not in by_name["batch_count"] and "value" not in by_name["batch_size"]
    # An empty prompt box pastes the last result's infotext.
    by_name = dict(zip(txt2img.FIELD_NAMES, txt2img.paste_parameters("", EULER_INFOTEXT)))
    assert by_name["seed"]["value"] == 31337 and by_name["width"]["value"] == 96
    assert txt2img.reuse_seed(EULER_INFOTEXT)["value"] == 31337
    assert txt2img.reuse_seed("")["value"] == -1


# --- the running server ----------------------------------------------------------------------------------------

def test_pnginfo_endpoint_returns_parameters(server, tmp_path):  # noqa: F811
    from gradio_client import Client, handle_file

    url, _, _ = server
    path = png_with_parameters(tmp_path / "params.png", KARRAS_INFOTEXT)
    client = Client(url, verbose=False)
    text, html_info = client.predict(handle_file(str(path)), api_name="/pnginfo")
    assert text == KARRAS_INFOTEXT
    assert "DPM++ 2M Karras" in html_info


@pytest.fixture
def page():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        yield context.new_page()
        browser.close()


def wait_for_value(page, selector: str, expected: str, timeout: int = 15000) -> None:
    page.wait_for_function("([s, v]) => { const e = document.querySelector(s); return e && e.value === v; }",
                           arg=[selector, expected], timeout=timeout)


def test_png_info_send_to_txt2img_in_browser(server, page, tmp_path):  # noqa: F811
    url, _, _ = server
    path = png_with_parameters(tmp_path / "from-disk.png", EULER_INFOTEXT)
    page.goto(url, wait_until="load")
    page.wait_for_selector("#txt2img_prompt textarea")
    page.get_by_role("tab", name="PNG Info").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(path))
    wait_for_value(page, "#pnginfo_generation_info textarea", EULER_INFOTEXT)
    page.locator("#pnginfo_html_info").get_by_text("parameters").wait_for()
    page.screenshot(path=str(ARTIFACTS / "pnginfo_tab.png"), full_page=True)

    page.locator("#pnginfo_send_to_txt2img").click()
    wait_for_value(page, "#txt2img_prompt textarea", "a blue square\nsecond line")
    page.locator("#txt2img_prompt textarea").wait_for(state="visible")  # switched to the txt2img tab
    assert page.locator("#txt2img_seed input").input_value() == "31337"
    assert page.locator("#txt2img_steps input[type=number]").input_value() == "12"
    assert page.locator("#txt2img_width input[type=number]").input_value() == "96"
    assert page.locator("#txt2img_height input[type=number]").input_value() == "64"
    assert page.locator("#txt2img_sampling input").input_value() == "Euler a"
    assert page.locator("#txt2img_scheduler input").input_value() == "Karras"
    page.screenshot(path=str(ARTIFACTS / "pnginfo_sent_to_txt2img.png"), full_page=True)

    page.get_by_role("tab", name="PNG Info").click()
    page.locator("#pnginfo_send_to_img2img").click()
    page.wait_for_function(
        "() => (document.querySelector('#img2img_prompt textarea')?.value || '') === 'a blue square\\nsecond line'")
    page.locator("#img2img_image img").first.wait_for(timeout=20000)
    assert page.locator("#img2img_seed input").input_value() == "31337"
    assert page.locator("#img2img_steps input[type=number]").input_value() == "12"


def test_paste_button_and_seed_size_buttons_in_browser(server, page):  # noqa: F811
    url, _, _ = server
    page.goto(url, wait_until="load")
    page.wait_for_selector("#txt2img_prompt textarea")
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill(KARRAS_INFOTEXT)
    page.locator("#txt2img_paste").click()
    wait_for_value(page, "#txt2img_prompt textarea", "a red circle, (sharp:1.2)")
    assert page.locator("#txt2img_neg_prompt textarea").input_value() == "blurry, text"
    assert page.locator("#txt2img_seed input").input_value() == "987654"
    assert page.locator("#txt2img_steps input[type=number]").input_value() == "27"
    assert page.locator("#txt2img_cfg_scale input[type=number]").input_value() == "6.5"
    assert page.locator("#txt2img_sampling input").input_value() == "DPM++ 2M"
    assert page.locator("#txt2img_scheduler input").input_value() == "Automatic"
    page.screenshot(path=str(ARTIFACTS / "txt2img_pasted.png"), full_page=True)

    page.locator("#txt2img_res_switch_btn").click()
    wait_for_value(page, "#txt2img_width input[type=number]", "128")
    assert page.locator("#txt2img_height input[type=number]").input_value() == "64"

    page.locator("#txt2img_random_seed").click()
    wait_for_value(page, "#txt2img_seed input", "-1")

    page.locator("#txt2img_clear_prompt").click()
    wait_for_value(page, "#txt2img_prompt textarea", "")
    assert page.locator("#txt2img_neg_prompt textarea").input_value() == ""


def test_reuse_seed_after_generating_in_browser(server, page):  # noqa: F811
    url, _, _ = server
    page.goto(url, wait_until="load")
    page.wait_for_selector("#txt2img_prompt textarea")
    page.locator("#txt2img_prompt textarea").fill("a tiny square")
    for field, value in (("width", "64"), ("height", "64"), ("steps", "2")):
        page.locator(f"#txt2img_{field} input[type=number]").fill(value)
    page.locator("#txt2img_seed input").fill("4321")
    page.locator("#txt2img_seed input").press("Tab")
    page.locator("#txt2img_generate").click()
    page.wait_for_function(
        "() => document.querySelector('#txt2img_infotext textarea').value.includes('Seed: 4321')", timeout=60000)
    page.locator("#txt2img_random_seed").click()
    wait_for_value(page, "#txt2img_seed input", "-1")
    page.locator("#txt2img_reuse_seed").click()
    wait_for_value(page, "#txt2img_seed input", "4321")
    # ↙ with an empty prompt box pastes the last result's parameters.
    page.locator("#txt2img_prompt textarea").fill("")
    page.locator("#txt2img_paste").click()
    wait_for_value(page, "#txt2img_prompt textarea", "a tiny square")
    page.screenshot(path=str(ARTIFACTS / "txt2img_reuse_seed.png"), full_page=True)
