import json
import logging
import os
import threading

import pytest

from modules.options import OptionInfo, Options, default_option_table

A1111_KEYS = [
    "sd_model_checkpoint", "sd_vae", "sd_vae_overrides_per_model_preferences", "CLIP_stop_at_last_layers",
    "samples_save", "samples_format", "samples_filename_pattern", "save_images_add_number", "grid_save",
    "grid_format", "grid_extended_filename", "n_rows", "outdir_samples", "outdir_txt2img_samples",
    "outdir_img2img_samples", "outdir_extras_samples", "outdir_grids", "outdir_txt2img_grids", "outdir_img2img_grids",
    "outdir_save", "outdir_init_images", "save_to_dirs", "grid_save_to_dirs", "directories_filename_pattern",
    "enable_pnginfo", "save_txt", "randn_source", "eta_noise_seed_delta", "eta_ancestral", "eta_ddim", "s_churn",
    "s_tmin", "s_tmax", "s_noise", "sd_checkpoint_cache", "sd_vae_checkpoint_cache", "live_previews_enable",
    "show_progress_every_n_steps", "live_preview_content", "img2img_fix_steps", "initial_noise_multiplier",
    "img2img_color_correction", "img2img_background_color", "inpainting_mask_weight", "comma_padding_backtrack",
    "emphasis", "auto_vae_precision", "sdxl_crop_top", "sdxl_crop_left", "sdxl_refiner_low_aesthetic_score",
    "sdxl_refiner_high_aesthetic_score", "disabled_extensions", "disable_all_extensions", "quicksettings_list",
    "save_images_before_highres_fix", "jpeg_quality", "webp_lossless", "add_model_hash_to_info",
    "add_model_name_to_info", "add_vae_hash_to_info", "add_vae_name_to_info", "add_version_to_infotext",
    "add_user_name_to_info", "sd_vae_as_default", "use_old_emphasis_implementation", "enable_emphasis", "return_grid",
    "do_not_show_images",
]


@pytest.fixture
def opts() -> Options:
    return Options()


def test_defaults_have_a1111_names_and_values(opts):
    assert opts.sd_model_checkpoint is None
    assert opts.sd_vae == "Automatic"
    assert opts.CLIP_stop_at_last_layers == 1
    assert opts.samples_save is True
    assert opts.samples_format == "png"
    assert opts.outdir_txt2img_samples == "outputs/txt2img-images"
    assert opts.outdir_img2img_grids == "outputs/img2img-grids"
    assert opts.outdir_save == "log/images"
    assert opts.directories_filename_pattern == "[date]"
    assert opts.randn_source == "GPU"
    assert opts.eta_ancestral == 1.0 and isinstance(opts.eta_ancestral, float)
    assert opts.eta_noise_seed_delta == 0
    assert opts.jpeg_quality == 80
    assert opts.sdxl_refiner_low_aesthetic_score == 2.5
    assert opts.disable_all_extensions == "none"
    assert opts.disabled_extensions == []
    assert opts.quicksettings_list == ["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"]
    assert opts.data == {}


def test_every_default_option_has_label_and_section():
    table = default_option_table()
    assert set(A1111_KEYS) <= set(table)
    for key, info in table.items():
        assert info.label, key
        assert info.section and info.section_title, key
    assert table["samples_save"].section == "saving-images"
    assert table["samples_save"].section_title == "Saving images/grids"
    assert table["eta_ddim"].section == "sampler-params"
    assert table["randn_source"].choices == ["GPU", "CPU", "NV"]
    assert table["CLIP_stop_at_last_layers"].infotext == "Clip skip"


def test_mutating_a_returned_default_does_not_change_it(opts):
    opts.quicksettings_list.append("jpeg_quality")
    assert opts.quicksettings_list == ["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"]


def test_set_coerces_to_default_type(opts):
    assert opts.set("samples_save", "false") is True
    assert opts.samples_save is False
    assert opts.set("jpeg_quality", "95") is True
    assert opts.jpeg_quality == 95 and isinstance(opts.jpeg_quality, int)
    assert opts.set("n_rows", 3.0) is True
    assert opts.n_rows == 3 and isinstance(opts.n_rows, int)
    assert opts.set("eta_ddim", 1) is True
    assert opts.eta_ddim == 1.0 and isinstance(opts.eta_ddim, float)
    assert opts.set("s_noise", "0.5") is True
    assert opts.s_noise == 0.5
    assert opts.set("quicksettings_list", "sd_vae, jpeg_quality") is True
    assert opts.quicksettings_list == ["sd_vae", "jpeg_quality"]
    assert opts.set("sd_model_checkpoint", "model.safetensors [6ce0161689]") is True
    assert opts.sd_model_checkpoint == "model.safetensors [6ce0161689]"


def test_set_returns_false_when_unchanged(opts):
    assert opts.set("jpeg_quality", 80) is False
    assert "jpeg_quality" not in opts.data
    assert opts.set("jpeg_quality", 81) is True
    assert opts.set("jpeg_quality", "81") is False


def test_attribute_assignment_goes_through_set(opts):
    opts.jpeg_quality = "70"
    assert opts.data["jpeg_quality"] == 70


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("jpeg_quality", "high", "setting 'jpeg_quality' expects an integer, got str 'high'"),
        ("jpeg_quality", True, "setting 'jpeg_quality' expects an integer, got bool True"),
        ("jpeg_quality", 2.5, "setting 'jpeg_quality' expects an integer, got float 2.5"),
        ("samples_save", "maybe", "setting 'samples_save' expects a boolean, got str 'maybe'"),
        ("samples_save", 2, "setting 'samples_save' expects a boolean, got int 2"),
        ("eta_ddim", [1], "setting 'eta_ddim' expects a number, got list [1]"),
        ("eta_ddim", "nan", "setting 'eta_ddim' expects a finite number, got str 'nan'"),
        ("samples_format", None, "setting 'samples_format' expects a string, got NoneType None"),
        ("disabled_extensions", 5, "setting 'disabled_extensions' expects a list, got int 5"),
        ("randn_source", "TPU", "setting 'randn_source': 'TPU' is not one of ['GPU', 'CPU', 'NV']"),
    ],
)
def test_wrong_type_raises_value_error_naming_the_key(opts, key, value, expected):
    before = getattr(opts, key)
    with pytest.raises(ValueError) as error:
        opts.set(key, value)
    assert str(error.value) == expected
    assert getattr(opts, key) == before


def test_unknown_key_raises_key_error(opts):
    with pytest.raises(KeyError, match="no_such_setting"):
        opts.set("no_such_setting", 1)
    with pytest.raises(AttributeError, match="no_such_setting"):
        _ = opts.no_such_setting


def test_save_load_round_trip(opts, tmp_path):
    path = tmp_path / "config.json"
    opts.set("samples_format", "webp")
    opts.set("CLIP_stop_at_last_layers", 2)
    opts.set("disabled_extensions", ["a", "b"])
    opts.save(str(path))

    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk == {"samples_format": "webp", "CLIP_stop_at_last_layers": 2, "disabled_extensions": ["a", "b"]}

    fresh = Options()
    fresh.load(str(path))
    assert fresh.samples_format == "webp"
    assert fresh.CLIP_stop_at_last_layers == 2
    assert fresh.disabled_extensions == ["a", "b"]
    assert fresh.jpeg_quality == 80  # not in the file: default


def test_save_is_atomic_and_leaves_no_temp_file(opts, tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"jpeg_quality": 50}', encoding="utf-8")
    opts.load(str(path))
    opts.set("jpeg_quality", 60)
    opts.save(str(path))
    assert os.listdir(tmp_path) == ["config.json"]
    assert json.loads(path.read_text(encoding="utf-8")) == {"jpeg_quality": 60}
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # normal permissions, not mkstemp's 0600


def test_save_failure_keeps_old_file_and_removes_temp(opts, tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"jpeg_quality": 50}', encoding="utf-8")
    opts.data["outdir_save"] = object()  # not JSON-serialisable: json.dump fails midway
    with pytest.raises(TypeError):
        opts.save(str(path))
    assert path.read_text(encoding="utf-8") == '{"jpeg_quality": 50}'
    assert os.listdir(tmp_path) == ["config.json"]


def test_missing_file_means_defaults(opts, tmp_path):
    opts.load(str(tmp_path / "absent.json"))
    assert opts.data == {}
    assert opts.samples_save is True


@pytest.mark.parametrize("content", ["{not json", "[1, 2, 3]", ""])
def test_corrupt_file_is_backed_up_and_defaults_used(opts, tmp_path, caplog, content):
    path = tmp_path / "config.json"
    path.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="webui"):
        opts.load(str(path))

    assert opts.data == {}
    assert opts.jpeg_quality == 80
    assert not path.exists()
    backups = [name for name in os.listdir(tmp_path) if name.startswith("config.json.corrupt-")]
    assert len(backups) == 1
    assert (tmp_path / backups[0]).read_text(encoding="utf-8") == content
    warnings = [record for record in caplog.records if record.name == "webui" and record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert backups[0] in warnings[0].getMessage()

    opts.save(str(path))  # saving afterwards writes a fresh valid file next to the backup
    assert json.loads(path.read_text(encoding="utf-8")) == {}


def test_bad_value_in_file_falls_back_to_default_with_warning(opts, tmp_path, caplog):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"jpeg_quality": "very high", "samples_format": "jpg"}), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="webui"):
        opts.load(str(path))
    assert opts.jpeg_quality == 80
    assert opts.samples_format == "jpg"
    assert "jpeg_quality" in caplog.text


def test_unknown_keys_are_kept_and_written_back(opts, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"my_ext_strength": 0.7, "samples_format": "jpg"}), encoding="utf-8")
    opts.load(str(path))
    assert opts.my_ext_strength == 0.7
    opts.set("samples_format", "webp")
    opts.save(str(path))
    assert json.loads(path.read_text(encoding="utf-8")) == {"my_ext_strength": 0.7, "samples_format": "webp"}
    assert json.loads(opts.dumpjson())["my_ext_strength"] == 0.7


def test_add_option_for_extensions(opts, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"my_ext_steps": "12"}), encoding="utf-8")
    opts.load(str(path))
    # A1111 positional form: component and component_args third and fourth, section as (id, title).
    opts.add_option(
        "my_ext_steps", OptionInfo(4, "My steps", object, {"minimum": 1}, section=("my-ext", "My Ext")).info("hint")
    )
    assert opts.my_ext_steps == 12  # the string loaded earlier is coerced once the type is known
    info = opts.data_labels["my_ext_steps"]
    assert info.section == "my-ext" and info.section_title == "My Ext"
    assert info.help_text == "hint"
    with pytest.raises(ValueError, match="my_ext_steps"):
        opts.set("my_ext_steps", "many")

    # Our short form: a string in the third position is the section id.
    opts.add_option("my_ext_flag", OptionInfo(False, "Flag", "saving-images"))
    assert opts.data_labels["my_ext_flag"].section == "saving-images"
    assert opts.data_labels["my_ext_flag"].component is None
    assert opts.my_ext_flag is False


def test_dumpjson_contains_every_value(opts):
    opts.set("jpeg_quality", 90)
    dumped = json.loads(opts.dumpjson())
    assert dumped["jpeg_quality"] == 90
    assert dumped["sd_vae"] == "Automatic"
    assert set(default_option_table()) <= set(dumped)


def test_onchange_fires_on_change_only(opts):
    calls = []
    opts.onchange("sd_vae", lambda: calls.append(opts.sd_vae), call=False)
    opts.set("sd_vae", "None")
    opts.set("sd_vae", "None")  # unchanged: no call
    opts.set("sd_vae", "vae.safetensors")
    assert calls == ["None", "vae.safetensors"]


def test_onchange_call_true_runs_immediately(opts):
    calls = []
    opts.onchange("jpeg_quality", lambda: calls.append(opts.jpeg_quality))
    assert calls == [80]


def test_failing_callback_restores_old_value(opts, caplog):
    def fail() -> None:
        raise RuntimeError("model failed to load")

    opts.onchange("sd_model_checkpoint", fail, call=False)
    assert opts.set("sd_model_checkpoint", "broken.safetensors") is False
    assert opts.sd_model_checkpoint is None
    assert "sd_model_checkpoint" not in opts.data
    assert "model failed to load" in caplog.text


def test_frozen_settings_refuse_changes(tmp_path):
    frozen = Options(frozen=True)
    assert frozen.set("jpeg_quality", 10) is False
    assert frozen.jpeg_quality == 80


def test_restricted_option_not_settable_from_api(opts):
    opts.add_option("secret_path", OptionInfo("", "Secret", section="ui", restrict_api=True))
    assert opts.set("secret_path", "/etc", is_api=True) is False
    assert opts.set("secret_path", "/srv") is True


def test_old_quicksettings_string_is_migrated(opts, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"quicksettings": "sd_model_checkpoint, jpeg_quality"}), encoding="utf-8")
    opts.load(str(path))
    assert opts.quicksettings_list == ["sd_model_checkpoint", "jpeg_quality"]


def test_concurrent_set_and_save(opts, tmp_path):
    path = str(tmp_path / "config.json")

    def worker(index: int) -> None:
        for step in range(20):
            opts.set("jpeg_quality", 1 + (index * 20 + step) % 100)
            opts.save(path)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert os.listdir(tmp_path) == ["config.json"]
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle)["jpeg_quality"] == opts.jpeg_quality
