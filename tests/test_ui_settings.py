"""The Settings tab and the quick-settings bar: in-process checks of the apply logic, then the real server through
gradio_client and a real browser (Debian's Chromium via Playwright)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gradio as gr
import pytest

from modules import cmd_args, shared
from modules.options import Options
from modules.ui import settings
from tests.test_server import server  # noqa: F401  (the running-server fixture)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _defaults(keys: list[str]) -> list:
    opts = Options()
    return [opts.get_default(key) for key in keys]


@pytest.fixture
def fresh_opts(monkeypatch, tmp_path):
    monkeypatch.setattr(shared, "opts", Options())
    monkeypatch.setattr(shared, "cmd_opts", cmd_args.parse_args(["--data-dir", str(tmp_path)], environ={}))
    monkeypatch.setattr(shared, "config_path", str(tmp_path / "config.json"))
    monkeypatch.setattr(settings, "SETTINGS_KEYS", settings.settings_keys())
    return tmp_path / "config.json"


# ---- in process ----------------------------------------------------------------------------------------------

def test_components_follow_option_types(fresh_opts):
    with gr.Blocks():
        with gr.Tabs():
            settings.create_tab()
    keys = settings.SETTINGS_KEYS
    assert "sd_vae" not in keys and "CLIP_stop_at_last_layers" not in keys  # shown in the top bar instead
    assert "disabled_extensions" not in keys  # hidden section
    assert "save_txt" in keys and "quicksettings_list" in keys

    def component(key):
        return settings.create_setting_component(key)

    with gr.Blocks():
        assert isinstance(component("save_txt"), gr.Checkbox)
        assert isinstance(component("jpeg_quality"), gr.Slider)
        number = component("eta_noise_seed_delta")
        assert isinstance(number, gr.Number) and number.precision == 0
        dropdown = component("randn_source")
        assert isinstance(dropdown, gr.Dropdown) and dropdown.elem_id == "setting_randn_source"
        assert isinstance(component("outdir_save"), gr.Textbox)
        multi = component("quicksettings_list")
        assert isinstance(multi, gr.Dropdown) and multi.multiselect


def test_apply_sets_changed_values_and_saves(fresh_opts):
    keys = settings.SETTINGS_KEYS
    values = _defaults(keys)
    values[keys.index("save_txt")] = True
    values[keys.index("jpeg_quality")] = 91
    message = settings.apply_settings(*values)
    assert "2 settings changed: save_txt, jpeg_quality." in message
    saved = json.loads(fresh_opts.read_text())
    assert saved["save_txt"] is True and saved["jpeg_quality"] == 91
    assert "0 settings changed." in settings.apply_settings(*values)


def test_bad_value_is_refused_and_nothing_is_applied(fresh_opts):
    keys = settings.SETTINGS_KEYS
    values = _defaults(keys)
    values[keys.index("save_txt")] = True
    values[keys.index("jpeg_quality")] = "very good"
    with pytest.raises(gr.Error, match="jpeg_quality"):
        settings.apply_settings(*values)
    assert shared.opts.save_txt is False and not fresh_opts.exists()
    values[keys.index("jpeg_quality")] = 101  # outside the slider's 1..100
    with pytest.raises(gr.Error, match="jpeg_quality.*1..100"):
        settings.apply_settings(*values)


def test_frozen_settings_are_not_applied(fresh_opts, monkeypatch):
    monkeypatch.setattr(shared, "opts", Options(frozen=True))
    values = _defaults(settings.SETTINGS_KEYS)
    values[settings.SETTINGS_KEYS.index("save_txt")] = True
    assert "frozen" in settings.apply_settings(*values)
    assert shared.opts.save_txt is False and not fresh_opts.exists()


# ---- the real server -------------------------------------------------------------------------------------------

def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_apply_settings_endpoint_persists(server):  # noqa: F811
    url, data_dir, _ = server
    client = _client(url)
    keys = settings.settings_keys()
    values = _defaults(keys)
    values[keys.index("samples_format")] = "jpg"
    values[keys.index("eta_noise_seed_delta")] = 31337
    result = client.predict(*values, api_name="/apply_settings")
    assert "2 settings changed: samples_format, eta_noise_seed_delta." in result
    config = json.loads((data_dir / "config.json").read_text())
    assert config["samples_format"] == "jpg" and config["eta_noise_seed_delta"] == 31337
    values[keys.index("samples_format")] = "png"
    values[keys.index("eta_noise_seed_delta")] = 0
    client.predict(*values, api_name="/apply_settings")  # back to defaults for the other tests


def test_apply_settings_endpoint_refuses_bad_value(server):  # noqa: F811
    url, data_dir, _ = server
    client = _client(url)
    keys = settings.settings_keys()
    values = _defaults(keys)
    values[keys.index("outdir_save")] = "somewhere/else"
    values[keys.index("n_rows")] = "many"
    with pytest.raises(Exception, match="n_rows"):
        client.predict(*values, api_name="/apply_settings")
    config_path = data_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    assert "outdir_save" not in config and "n_rows" not in config


def test_quicksettings_vae_and_clip_skip_persist(server):  # noqa: F811
    url, data_dir, _ = server
    client = _client(url)
    client.predict("None", api_name="/change_vae")
    client.predict(2, api_name="/change_setting_CLIP_stop_at_last_layers")
    config = json.loads((data_dir / "config.json").read_text())
    assert config["sd_vae"] == "None" and config["CLIP_stop_at_last_layers"] == 2
    with pytest.raises(Exception, match="not in the list of choices"):
        client.predict("no-such.vae.pt", api_name="/change_vae")  # not one of the choices
    client.predict("Automatic", api_name="/change_vae")
    client.predict(1, api_name="/change_setting_CLIP_stop_at_last_layers")
    config = json.loads((data_dir / "config.json").read_text())
    assert config["sd_vae"] == "Automatic" and config["CLIP_stop_at_last_layers"] == 1


@pytest.fixture
def page():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        yield context.new_page()
        browser.close()


def _open_section(page, title):
    page.locator("#tabs button[role=tab]", has_text="Settings").first.click()
    page.locator("#settings_tabs button[role=tab]", has_text=title).first.click()


def test_settings_tab_in_the_browser(server, page):  # noqa: F811
    url, data_dir, _ = server
    page.goto(url, wait_until="load")
    page.wait_for_selector("#txt2img_prompt textarea")
    assert page.locator("#setting_sd_vae input").input_value() == "Automatic"
    _open_section(page, "Saving images/grids")
    checkbox = page.locator("#setting_save_txt input[type=checkbox]")
    assert not checkbox.is_checked()
    checkbox.check()
    page.locator("#settings_submit").click()
    page.wait_for_function(
        "() => (document.querySelector('#settings_result')?.innerText || '').includes('settings changed')")
    assert "1 settings changed: save_txt." in page.locator("#settings_result").inner_text()
    assert json.loads((data_dir / "config.json").read_text())["save_txt"] is True

    page.reload(wait_until="load")

    page.wait_for_selector("#txt2img_prompt textarea")
    _open_section(page, "Saving images/grids")
    page.wait_for_function("() => document.querySelector('#setting_save_txt input[type=checkbox]')?.checked")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "settings_tab.png"), full_page=True)
    # back to the default so other tests see A1111's defaults
    page.locator("#setting_save_txt input[type=checkbox]").uncheck()
    page.locator("#settings_submit").click()
    page.wait_for_function(
        "() => (document.querySelector('#settings_result')?.innerText || '').includes('save_txt')")
