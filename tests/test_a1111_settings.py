"""Every A1111 v1.10 setting key reads as `shared.opts.<key>` with A1111's default (modules/a1111_settings.py).

options.py adds `a1111_options(table, OptionInfo)` to its table; each test also registers them on its own
`Options()` (which then adds nothing, every key already being there).
"""

from __future__ import annotations

import json

import pytest

from modules.a1111_settings import A1111_CHOICES, A1111_SETTINGS, SECTION, a1111_options
from modules.options import OptionInfo, Options

# Keys extensions read (census of the most-starred extensions), with A1111's defaults.
A1111_DEFAULTS_SAMPLE = {
    "ESRGAN_tile": 192,
    "ESRGAN_tile_overlap": 8,
    "lora_preferred_name": "Alias from file",
    "extra_networks_default_multiplier": 1.0,
    "face_restoration_model": "CodeFormer",
    "multiple_tqdm": True,
    "api_enable_requests": True,
    "postprocessing_operation_order": [],
    "upscaler_for_img2img": None,
    "list_hidden_files": True,
    "sd_lora": "None",
    "realesrgan_enabled_models": ["R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"],
    "code_former_weight": 0.5,
    "SWIN_tile": 192,
    "SCUNET_tile": 256,
    "ldsr_steps": 100,
    "hypertile_max_tile_vae": 128,
    "canvas_disabled_functions": ["Overlap"],
    "keyedit_delimiters": ".,\\/!?%^*;:{}=`~() ",
    "sd_noise_schedule": "Default",
    "outdir_txt2img_samples": "outputs/txt2img-images",
}


def a1111_opts() -> Options:
    opts = Options()
    opts.data_labels.update(a1111_options(opts.data_labels, OptionInfo))
    return opts


def test_every_a1111_key_is_registered_once_wired():
    existing = Options().data_labels
    added = a1111_options(existing, OptionInfo)
    missing = [key for key in A1111_SETTINGS if key not in existing and key not in added]
    assert missing == []
    assert len(A1111_SETTINGS) >= 320  # shared_options.py (~290 keys) plus the built-in extensions' settings
    opts = a1111_opts()
    for key in A1111_SETTINGS:
        getattr(opts, key)  # no AttributeError


def test_defaults_are_a1111s():
    opts = a1111_opts()
    for key, default in A1111_DEFAULTS_SAMPLE.items():
        value = getattr(opts, key)
        assert value == default and type(value) is type(default), key


def test_returned_keys_never_replace_existing_ones():
    existing = Options().data_labels
    assert not set(a1111_options(existing, OptionInfo)) & set(existing)
    assert "ESRGAN_tile" not in a1111_options({"ESRGAN_tile"}, OptionInfo)
    assert "ESRGAN_tile" in a1111_options(set(), OptionInfo)
    opts = a1111_opts()
    for key, info in existing.items():  # the program's own settings keep their own definitions
        assert opts.data_labels[key].default == info.default and opts.data_labels[key].label == info.label


def test_read_set_save_and_load(tmp_path):
    opts = a1111_opts()
    assert opts.lora_preferred_name == "Alias from file"
    assert opts.set("ESRGAN_tile", 256) is True
    assert opts.ESRGAN_tile == 256
    opts.lora_preferred_name = "Filename"
    with pytest.raises(ValueError, match="lora_preferred_name"):
        opts.set("lora_preferred_name", "Nickname")
    with pytest.raises(ValueError, match="ESRGAN_tile"):
        opts.set("ESRGAN_tile", "large")
    path = tmp_path / "config.json"
    opts.save(str(path))
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["ESRGAN_tile"] == 256 and saved["lora_preferred_name"] == "Filename"
    assert "ESRGAN_tile_overlap" not in saved  # defaults are not written, as for every setting
    reloaded = a1111_opts()
    reloaded.load(str(path))
    assert reloaded.ESRGAN_tile == 256 and reloaded.lora_preferred_name == "Filename"
    assert reloaded.ESRGAN_tile_overlap == 8
    assert json.loads(reloaded.dumpjson())["face_restoration_model"] == "CodeFormer"  # what /sdapi/v1/options lists


def test_job_overrides_reach_a1111_keys():
    opts = a1111_opts()
    snapshot = opts.snapshot({"ESRGAN_tile": "320", "face_restoration_model": "GFPGAN"})
    assert snapshot.ESRGAN_tile == 320 and snapshot.face_restoration_model == "GFPGAN"
    assert opts.ESRGAN_tile == 192  # the global value is untouched


def test_api_cannot_change_what_a1111_restricts():
    opts = a1111_opts()
    if not opts.data_labels["api_forbid_local_requests"].restrict_api:
        pytest.skip("options.py defines api_forbid_local_requests itself")
    assert opts.set("api_forbid_local_requests", False, is_api=True) is False
    assert opts.api_forbid_local_requests is True
    assert opts.set("api_forbid_local_requests", False) is True


def test_hidden_from_the_settings_tab(monkeypatch):
    from modules import shared
    from modules.ui import settings

    opts = a1111_opts()
    monkeypatch.setattr(shared, "opts", opts)
    shown = set(settings.settings_keys())
    ours = {key: info for key, info in opts.data_labels.items() if info.section_title == SECTION[1]}
    assert "lora_preferred_name" in ours and not shown & set(ours)
    assert {info.section for info in ours.values()} == {settings.HIDDEN_SECTION}
    assert "samples_save" in shown  # the program's own settings still appear


def test_fresh_objects_and_valid_choices():
    first, second = a1111_options(set(), OptionInfo), a1111_options(set(), OptionInfo)
    first["postprocessing_operation_order"].default.append("Upscale")
    assert second["postprocessing_operation_order"].default == []
    assert A1111_SETTINGS["postprocessing_operation_order"][0] == []
    assert set(A1111_CHOICES) <= set(A1111_SETTINGS)
    for key, choices in A1111_CHOICES.items():
        default = A1111_SETTINGS[key][0]
        assert all(item in choices for item in (default if isinstance(default, list) else [default])), key
    for key, info in first.items():
        assert info.label, key
