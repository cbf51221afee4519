"""Few-step models: presets read from file names and `modelspec.*` metadata, the UI's model card, leaving the
negative prompt out where it changes nothing (CFG 1) or where A1111's settings say so (skip_early_cond, NGMS), and
the TCD sampler -- the last ones through the real job path on the tiny SD 1.x model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from modules import hooks
from modules.models import presets
from modules.processing import Job

SMALL = {"width": 64, "height": 64, "sampler_name": "Euler", "prompt": "a red circle", "negative_prompt": "blue",
         "seed": 4, "do_not_save_samples": True, "do_not_save_grid": True}


# --- presets (unit) -------------------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize(("name", "label", "settings"), [
    ("sdxl_lightning_4step.safetensors", "SDXL-Lightning 4-step", (4, 1.0, "Euler", "SGM Uniform")),
    ("sdxl_lightning_8step_lora.safetensors", "SDXL-Lightning 8-step", (8, 1.0, "Euler", "SGM Uniform")),
    ("juggernautXL_lightning-2-steps.safetensors", "SDXL-Lightning 2-step", (2, 1.0, "Euler", "SGM Uniform")),
    ("Hyper-SDXL-8steps-lora.safetensors", "Hyper-SD 8-step", (8, 1.0, "Euler", "SGM Uniform")),
    ("Hyper-SD15-12steps-CFG-lora.safetensors", "Hyper-SD 12-step", (12, 1.0, "Euler", "SGM Uniform")),
    ("lcm-lora-sdxl.safetensors", "LCM", (4, 1.5, "LCM", "Automatic")),
    ("sub/LCM_Dreamshaper_v7.safetensors", "LCM", (4, 1.5, "LCM", "Automatic")),
    ("TCD-SDXL-LoRA.safetensors", "TCD", (4, 1.0, "TCD", "Automatic")),
    ("sd_xl_turbo_1.0_fp16.safetensors", "Turbo", (4, 1.0, "Euler a", "SGM Uniform")),
    ("dreamshaperXL_turbo.safetensors", "Turbo", (4, 1.0, "Euler a", "SGM Uniform")),
])
def test_presets_from_file_names(name, label, settings):
    preset = presets.detect(name)
    assert preset is not None and preset.label == label and preset.source == "file name"
    assert (preset.steps, preset.cfg_scale, preset.sampler_name, preset.scheduler) == settings
    assert preset.settings() == dict(zip(("steps", "cfg_scale", "sampler_name", "scheduler"), settings))


@pytest.mark.unit
@pytest.mark.parametrize("name", ["v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors",
                                  "turbovision_v2.safetensors", "clcmodel.ckpt", "add_detail.safetensors"])
def test_ordinary_models_have_no_preset(name):
    assert presets.detect(name) is None


@pytest.mark.unit
def test_metadata_wins_over_the_file_name_and_a_usage_hint_sets_the_numbers():
    preset = presets.detect("my_model.safetensors", {"modelspec.architecture": "stable-diffusion-xl-v1-base",
                                                     "modelspec.usage_hint": "LCM model: use 6 steps, CFG 2"})
    assert (preset.label, preset.steps, preset.cfg_scale, preset.sampler_name) == ("LCM", 6, 2.0, "LCM")
    assert preset.source == "modelspec.usage_hint metadata"
    preset = presets.detect("turbo_thing.safetensors", {"modelspec.title": "SDXL Lightning 2-step UNet"})
    assert (preset.label, preset.steps) == ("SDXL-Lightning 2-step", 2)
    preset = presets.detect("style.safetensors", {"ss_output_name": "Hyper-SDXL-4steps-lora"})
    assert (preset.label, preset.steps, preset.source) == ("Hyper-SD 4-step", 4, "ss_output_name metadata")
    assert presets.detect("plain.safetensors", {"modelspec.title": "SDXL 1.0 base"}) is None


@pytest.mark.unit
def test_hint_text_and_first_preset_prefers_the_loras():
    preset = presets.first_preset([("style_lora", {}), ("lcm-lora-sdv1-5", {}), ("sdxl_lightning_4step", {})])
    assert preset.label == "LCM"
    assert preset.hint() == "lcm-lora-sdv1-5 (LCM, from its file name) wants 4 steps, CFG 1.5, LCM"
    lightning = presets.detect("sdxl_lightning_4step.safetensors")
    assert lightning.hint().endswith("wants 4 steps, CFG 1, Euler SGM Uniform")


# --- the negative prompt's pass (integration) --------------------------------------------------------------------

class Rows:
    """The number of latent rows of every UNet call."""

    def __init__(self, model: Any) -> None:
        self.rows: list[int] = []
        self.handle = model.unet.register_forward_pre_hook(lambda module, args: self.rows.append(args[0].shape[0]))

    def __enter__(self) -> Rows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def _pixels(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.integration
def test_cfg_1_leaves_the_negative_prompt_out_and_gives_the_same_image(tiny_app):
    model = tiny_app.models.get()
    with Rows(model) as calls:
        fast = tiny_app.run_job(Job(**SMALL, steps=4, cfg_scale=1.0, batch_size=2)).images
    assert calls.rows == [2] * 4  # half the rows of a CFG pass
    # a cfg_denoiser listener (A1111 extensions see the negative rows there) keeps the full pass: same picture
    def listener(params: Any) -> None:
        pass

    hooks.connect("cfg_denoiser", listener)
    try:
        with Rows(model) as calls:
            full = tiny_app.run_job(Job(**SMALL, steps=4, cfg_scale=1.0, batch_size=2)).images
    finally:
        hooks.disconnect("cfg_denoiser", listener)
    assert calls.rows == [4] * 4
    for a, b in zip(fast, full):
        assert np.abs(_pixels(a) - _pixels(b)).max() <= 1
    with Rows(model) as calls:
        tiny_app.run_job(Job(**SMALL, steps=4, cfg_scale=7.0, batch_size=2))
    assert calls.rows == [4] * 4


@pytest.mark.integration
def test_and_prompts_at_cfg_1_skip_only_when_their_weights_sum_to_one(tiny_app):
    model = tiny_app.models.get()
    with Rows(model) as calls:
        tiny_app.run_job(Job(**{**SMALL, "prompt": "a red circle :0.5 AND a square :0.5"}, steps=2, cfg_scale=1.0))
    assert calls.rows == [2, 2]  # two parts, no negative row
    with Rows(model) as calls:
        tiny_app.run_job(Job(**{**SMALL, "prompt": "a red circle AND a square :0.5"}, steps=2, cfg_scale=1.0))
    assert calls.rows == [3, 3]  # weights sum to 1.5: the negative prompt still counts


@pytest.mark.integration
def test_skip_early_cond_and_ngms_follow_a1111(tiny_app):
    model = tiny_app.models.get()
    tiny_app.opts.set("skip_early_cond", 0.5)
    with Rows(model) as calls:
        processed = tiny_app.run_job(Job(**SMALL, steps=10, cfg_scale=7.0))
    assert calls.rows == [1] * 6 + [2] * 4  # step / steps <= 0.5: steps 0..5
    assert "Skip Early CFG: 0.5" in processed.infotexts[0]
    tiny_app.opts.set("skip_early_cond", 0.0)
    with Rows(model) as calls:  # NGMS: every other step below the sigma (all sigmas of SD are below 100)
        processed = tiny_app.run_job(Job(**SMALL, steps=6, cfg_scale=7.0, s_min_uncond=100.0))
    assert calls.rows == [2, 1, 2, 1, 2, 1]
    assert "NGMS: 100.0" in processed.infotexts[0]
    tiny_app.opts.set("s_min_uncond_all", True)
    with Rows(model) as calls:
        processed = tiny_app.run_job(Job(**SMALL, steps=4, cfg_scale=7.0, s_min_uncond=100.0))
    assert calls.rows == [1] * 4 and "NGMS all steps: True" in processed.infotexts[0]
    with Rows(model) as calls:  # a sigma below every step's skips nothing and writes nothing
        processed = tiny_app.run_job(Job(**SMALL, steps=4, cfg_scale=7.0, s_min_uncond=0.001))
    assert calls.rows == [2] * 4 and "NGMS" not in processed.infotexts[0]


@pytest.mark.integration
def test_tcd_and_lcm_samplers_run_few_steps(tiny_app):
    tcd = tiny_app.run_job(Job(**{**SMALL, "sampler_name": "TCD"}, steps=4, cfg_scale=1.0))
    lcm = tiny_app.run_job(Job(**{**SMALL, "sampler_name": "LCM"}, steps=4, cfg_scale=1.0))
    assert "Sampler: TCD" in tcd.infotexts[0] and "Eta" not in tcd.infotexts[0]
    assert not np.array_equal(_pixels(tcd.images[0]), _pixels(lcm.images[0]))
    again = tiny_app.run_job(Job(**{**SMALL, "sampler_name": "TCD"}, steps=4, cfg_scale=1.0))
    assert np.array_equal(_pixels(tcd.images[0]), _pixels(again.images[0]))  # its noise comes from the seed
    gamma = tiny_app.run_job(Job(**{**SMALL, "sampler_name": "TCD"}, steps=4, cfg_scale=1.0, eta=0.8))
    assert "Eta: 0.8" in gamma.infotexts[0]


@pytest.mark.integration
def test_model_card_follows_the_loaded_checkpoint_and_the_prompts_loras(tmp_path, tiny_checkpoints):
    from modules import cmd_args, shared
    from modules.ui import presets as presets_ui

    folder = tmp_path / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    (folder / "tiny_lightning_4step.safetensors").write_bytes(tiny_checkpoints["sd1"].read_bytes())
    (folder / "plain.safetensors").write_bytes(tiny_checkpoints["sd1"].read_bytes())
    lora_folder = tmp_path / "models" / "Lora"
    lora_folder.mkdir(parents=True)
    from safetensors.torch import save_file
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, str(lora_folder / "my_style.safetensors"),
              metadata={"ss_output_name": "my_style", "modelspec.usage_hint": "LCM LoRA, 5 steps, cfg 1.2"})
    shared.initialize(cmd_args.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"], environ={}))
    try:
        shared.models.select("tiny_lightning_4step.safetensors")
        assert presets_ui.preset_for("a cat").label == "SDXL-Lightning 4-step"
        text, button = presets_ui.hint("a cat")
        assert "wants 4 steps, CFG 1, Euler SGM Uniform" in text.value and button.visible
        assert presets_ui.apply("a cat", 20, 7, "DPM++ 2M", "Automatic") == (4, 1.0, "Euler", "SGM Uniform")
        # the checkpoint chosen in the dropdown decides before it has loaded
        assert presets_ui.preset_for("a cat", "plain.safetensors") is None
        assert presets_ui.hint("a cat", "plain.safetensors")[1].visible is False
        assert presets_ui.preset_for("a cat", "tiny_lightning_4step.safetensors").steps == 4
        lora = presets_ui.preset_for("a cat <lora:my_style:1>")
        assert (lora.label, lora.steps, lora.cfg_scale) == ("LCM", 5, 1.2)
    finally:
        shared.models.unload()
