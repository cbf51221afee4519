"""The extra-networks browser: prompt tag toggling, card lists, LoRA metadata, and clicking cards in a real browser."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from modules.ui.extra_networks import cards, lora_metadata, preview_data_uri, refresh_all, toggle_tag
from tests.servers import running_webui

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHAPEY = ROOT / "assets" / "demo" / "shapey.safetensors"


def write_lora(path: Path, output_name: str = "") -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"ss_network_dim": "4", "ss_tag_frequency": '{"set": {"cat": 3}}', "other": "x"}
    if output_name:
        metadata["ss_output_name"] = output_name
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)},
              str(path), metadata=metadata)
    return path


# --- toggle_tag (A1111's extraNetworks.js rule, separator " ") -----------------------------------------------------

def test_toggle_adds_with_a_space_and_removes():
    assert toggle_tag("a cat", "<lora:foo:1>") == "a cat <lora:foo:1>"
    assert toggle_tag("a cat <lora:foo:1>", "<lora:foo:1>") == "a cat"
    assert toggle_tag("", "<lora:foo:1>") == "<lora:foo:1>"        # no leading space on an empty prompt
    assert toggle_tag("<lora:foo:1>", "<lora:foo:1>") == ""
    assert toggle_tag("a cat,", "<hypernet:h:1>") == "a cat, <hypernet:h:1>"


def test_toggle_removes_any_weight_and_keeps_other_tags():
    assert toggle_tag("a cat <lora:foo:0.6> <lora:bar:1>", "<lora:foo:1>") == "a cat <lora:bar:1>"
    assert toggle_tag("a cat <lora:foobar:1>", "<lora:foo:1>") == "a cat <lora:foobar:1> <lora:foo:1>"
    assert toggle_tag("a cat <hypernet:foo:1>", "<lora:foo:1>") == "a cat <hypernet:foo:1> <lora:foo:1>"
    assert toggle_tag("<lora:foo:1>, a cat", "<lora:foo:1>") == "a cat"     # at the start: drop the ", " after
    assert toggle_tag("a <lora:foo:1> cat", "<lora:foo:1>") == "a cat"


def test_toggle_plain_embedding_name_is_a_whole_word():
    assert toggle_tag("a cat", "shapey") == "a cat shapey"
    assert toggle_tag("a cat shapey", "shapey") == "a cat"
    assert toggle_tag("a shapeys cat", "shapey") == "a shapeys cat shapey"
    assert toggle_tag("shapey, a cat", "shapey") == "a cat"


# --- cards ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def networks(app):
    data = Path(app.cmd_opts.data_dir)
    lora_dir = Path(app.cmd_opts.lora_dir)
    write_lora(lora_dir / "zeta.safetensors", output_name="zeta_trained")
    write_lora(lora_dir / "sub" / "Alpha.safetensors")
    os.utime(lora_dir / "zeta.safetensors", (time.time() + 100, time.time() + 100))  # the newest
    Image.new("RGB", (300, 200), (10, 200, 30)).save(lora_dir / "zeta.preview.png")
    (Path(app.cmd_opts.hypernetwork_dir) / "hyper.pt").write_bytes(b"not read for the list")
    shutil.copy(SHAPEY, Path(app.cmd_opts.embeddings_dir) / "shapey.safetensors")
    refresh_all()
    return data


def test_lora_cards_search_sort_and_preview(networks):
    names = [c["name"] for c in cards("lora")]
    assert names == ["Alpha", "zeta"]                       # case-insensitive by name
    assert [c["name"] for c in cards("lora", sort="Date modified")] == ["zeta", "Alpha"]
    assert [c["tag"] for c in cards("lora")] == ["<lora:Alpha:1>", "<lora:zeta:1>"]
    assert [c["name"] for c in cards("lora", search="TRAINED")] == ["zeta"]   # the alias is searched too
    assert [c["name"] for c in cards("lora", search="sub/")] == ["Alpha"]     # and the folder
    assert cards("lora", search="nothing") == []
    zeta = cards("lora", search="zeta")[0]
    assert zeta["preview"].endswith("zeta.preview.png")
    assert cards("lora", search="alpha")[0]["preview"] is None
    uri = preview_data_uri(zeta["preview"])
    assert uri.startswith("data:image/jpeg;base64,")


def test_other_kinds_and_refresh(networks, app):
    assert [(c["name"], c["tag"]) for c in cards("hypernetworks")] == [("hyper", "<hypernet:hyper:1>")]
    assert [(c["name"], c["tag"]) for c in cards("textual_inversion")] == [("shapey", "shapey")]
    checkpoints = cards("checkpoints")
    assert checkpoints and checkpoints[0]["title"] in app.models.registry.titles()
    write_lora(Path(app.cmd_opts.lora_dir) / "late.safetensors")
    assert "late" not in [c["name"] for c in cards("lora")]
    refresh_all()
    assert "late" in [c["name"] for c in cards("lora")]
    with pytest.raises(ValueError):
        cards("nope")


def test_lora_metadata_shows_ss_keys_only(networks):
    assert lora_metadata("zeta") == {"ss_network_dim": "4", "ss_output_name": "zeta_trained",
                                     "ss_tag_frequency": {"set": {"cat": 3}}}
    assert lora_metadata("missing") == {}


def test_ui_builds_with_the_accordion_under_the_prompt(networks):
    from modules.ui import create_ui

    config = create_ui().get_config_file()
    ids = {c["id"]: c["props"].get("elem_id") for c in config["components"]}

    def find(node, parent=None):
        if ids.get(node["id"]) == "txt2img_extra_networks":
            return parent
        for child in node.get("children", []):
            found = find(child, node)
            if found is not None:
                return found
        return None

    tab = find(config["layout"])
    assert ids[tab["id"]] == "tab_txt2img"
    order = [ids.get(child["id"]) for child in tab["children"]]
    assert order.index("txt2img_extra_networks") == 1   # right after the prompt row


# --- a real server and browser --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("extranet-server")
    write_lora(data_dir / "models" / "Lora" / "cardtest.safetensors")
    Image.new("RGB", (64, 64), (220, 40, 40)).save(data_dir / "models" / "Lora" / "cardtest.png")
    with running_webui(data_dir) as (url, _):
        yield url, data_dir


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_clicking_a_lora_card_toggles_the_tag(lora_server):
    from playwright.sync_api import sync_playwright

    url, _ = lora_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
        page.goto(url, wait_until="domcontentloaded", timeout=120000)
        prompt = page.locator("#txt2img_prompt textarea")
        prompt.wait_for(timeout=120000)
        prompt.fill("a cat")
        page.locator("#txt2img_extra_networks").get_by_text("Extra networks").first.click()
        page.locator("#txt2img_extra_tabs button[role=tab]", has_text="Lora").click()
        card = page.locator("#txt2img_lora_cards").get_by_text("cardtest").first
        preview = page.locator('#txt2img_lora_cards img[src^="data:image/jpeg;base64,"]')
        preview.first.wait_for(timeout=10000)   # the preview beside the file, inlined (no file route)
        card.click()
        page.wait_for_function(
            "() => document.querySelector('#txt2img_prompt textarea').value === 'a cat <lora:cardtest:1>'")
        page.wait_for_function(
            "() => document.querySelector('#txt2img_lora_metadata').textContent.includes('ss_network_dim')")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "extra_networks_lora.png"), full_page=True)
        card.click()
        page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value === 'a cat'")
        page.locator("#txt2img_extra_tabs button[role=tab]", has_text="Checkpoints").click()
        page.locator("#txt2img_checkpoints_cards").get_by_text("demo-shapes-sd1").first.click()
        page.wait_for_function("() => document.querySelector('#txt2img_extra_checkpoint_status')"
                               ".textContent.includes('Loaded demo-shapes-sd1')", timeout=120000)
        browser.close()
