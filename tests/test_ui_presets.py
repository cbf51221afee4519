"""The few-step model card in the browser: a prompt with an LCM LoRA shows "wants 4 steps, CFG 1.5, LCM" under the
sampling settings, and Apply sets them (on the run's shared UI server, with Chromium)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_ui_extra_networks import write_lora

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_an_lcm_lora_in_the_prompt_shows_the_card_and_apply_sets_its_settings(webui_server):
    from playwright.sync_api import sync_playwright

    url, data_dir, _ = webui_server
    lora = write_lora(data_dir / "models" / "Lora" / "lcm-lora-sdv1-5.safetensors")
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
                page.goto(url, wait_until="load")
                prompt = page.locator("#txt2img_prompt textarea")
                prompt.wait_for()
                assert not page.locator("#txt2img_preset_apply").is_visible()  # an ordinary model: no card
                prompt.fill("a red circle <lora:lcm-lora-sdv1-5:1>")
                hint = page.locator("#txt2img_preset_hint")
                hint.wait_for(state="visible", timeout=20000)
                page.wait_for_function("() => document.querySelector('#txt2img_preset_hint').innerText"
                                       ".includes('wants 4 steps, CFG 1.5, LCM')", timeout=20000)
                page.locator("#txt2img_preset_apply").click()
                page.wait_for_function("() => document.querySelector('#txt2img_steps input[type=number]').value"
                                       " === '4'", timeout=20000)
                assert page.locator("#txt2img_cfg_scale input[type=number]").input_value() == "1.5"
                assert page.locator("#txt2img_sampling input").input_value() == "LCM"
                page.screenshot(path=str(ARTIFACTS / "txt2img_preset_card.png"))
                prompt.fill("a red circle")
                page.locator("#txt2img_preset_apply").wait_for(state="hidden", timeout=20000)
            finally:
                browser.close()
    finally:
        lora.unlink()
