"""The txt2img tab in a real browser (Debian's Chromium driven by Playwright): type, Ctrl+Enter, see the image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_server import server  # noqa: F401  (the running-server fixture)

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context.new_page()
        browser.close()


def test_generate_from_the_page(server, page):  # noqa: F811
    url, data_dir, _ = server
    page.goto(url, wait_until="load")
    page.wait_for_selector("#txt2img_prompt textarea")
    checkpoint = page.locator("#setting_sd_model_checkpoint input")
    assert "(demo model)" in checkpoint.input_value()
    before = set((data_dir / "outputs").rglob("*.png"))
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("a green triangle at the top")
    page.locator("#txt2img_width input[type=number]").fill("64")
    page.locator("#txt2img_height input[type=number]").fill("64")
    page.locator("#txt2img_steps input[type=number]").fill("3")
    page.locator("#txt2img_seed input").fill("31337")
    page.locator("#txt2img_seed input").press("Tab")
    prompt.click()
    page.keyboard.press("Control+Enter")
    page.locator("#txt2img_gallery img").first.wait_for(timeout=60000)
    infotext = page.locator("#txt2img_infotext textarea")
    page.wait_for_function("() => document.querySelector('#txt2img_infotext textarea').value.includes('Seed')")
    text = infotext.input_value()
    assert text.startswith("a green triangle at the top\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras")
    assert "Seed: 31337, Size: 64x64" in text
    new = set((data_dir / "outputs").rglob("*.png")) - before
    assert [Path(p).name.split("-", 1)[1] for p in new] == ["31337.png"]
