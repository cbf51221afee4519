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


TAB_NAMES = ("txt2img", "img2img", "Extras", "PNG Info", "Checkpoint Merger", "Settings", "Extensions")


def test_every_tab_opens_and_is_screenshotted(server, page):  # noqa: F811
    """Each A1111 tab is there and shows its controls; a screenshot of each goes to tests/artifacts/."""
    url, _, _ = server
    artifacts = Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    page.goto(url, wait_until="load")
    page.wait_for_selector("#txt2img_prompt textarea")
    first_control = {"txt2img": "#txt2img_prompt", "img2img": "#img2img_prompt", "Extras": "#extras_upscaler_1",
                     "PNG Info": "#pnginfo_image", "Checkpoint Merger": "#modelmerger_primary_model_name",
                     "Settings": "#settings_submit", "Extensions": "#extensions_apply"}
    for name in TAB_NAMES:
        page.get_by_role("tab", name=name, exact=True).click()
        page.locator(first_control[name]).first.wait_for(state="visible", timeout=20000)
        page.screenshot(path=str(artifacts / f"tab_{name.lower().replace(' ', '_')}.png"), full_page=True)
