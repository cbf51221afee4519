"""The SDXL refiner (A1111 1.6+): another checkpoint takes the last steps of a pass, through the real job path
(`shared.run_job`) on tiny random SDXL base / SDXL refiner / SD 1.x checkpoints in the original single-file layout.
Each model's UNet calls are counted with forward pre-hooks, so the tests see which model ran which step."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch

from modules import infotext
from modules.processing import Job, JobError

pytestmark = pytest.mark.integration

SMALL = {"width": 64, "height": 64, "sampler_name": "Euler", "scheduler": "Uniform", "prompt": "a red circle",
         "seed": 5, "do_not_save_samples": True, "do_not_save_grid": True}


@pytest.fixture
def xl_app(tmp_path, tiny_checkpoints):
    """An application whose models folder holds tiny SDXL base, SDXL refiner and SD 1.x checkpoints; SDXL loaded."""
    from modules import cmd_args, shared

    folder = tmp_path / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    for family in ("sdxl", "sdxl-refiner", "sd1"):
        (folder / f"tiny-{family}.safetensors").write_bytes(tiny_checkpoints[family].read_bytes())
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"], environ={})
    shared.initialize(args)
    shared.models.select("tiny-sdxl.safetensors")
    yield shared
    shared.models.unload()


class UNetCalls:
    """Counts denoiser calls per loaded model (by checkpoint file name) while it is attached."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.order: list[str] = []
        self._handles: list[Any] = []

    def watch(self, model: Any) -> None:
        name = model.checkpoint.name_for_extra

        def count(module: torch.nn.Module, args: Any) -> None:
            self.calls[name] += 1
            self.order.append(name)

        self._handles.append(model.unet.register_forward_pre_hook(count))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def _run(app: Any, watch: tuple[str, ...] = ("tiny-sdxl", "tiny-sdxl-refiner", "tiny-sd1"), **fields: Any
         ) -> tuple[Any, UNetCalls]:
    """Load the refiner (so its UNet can be watched), then run the job through the queue."""
    counter = UNetCalls()
    counter.watch(app.models.get())
    refiner = fields.get("refiner_checkpoint")
    if refiner:
        counter.watch(app.models.refiner(refiner))
    try:
        processed = app.run_job(Job(**{**SMALL, **fields}))
    finally:
        counter.close()
    return processed, counter


def test_switch_by_sampling_steps_runs_the_rest_on_the_refiner(xl_app):
    xl_app.opts.set("refiner_switch_by_sample_steps", True)
    processed, counter = _run(xl_app, steps=10, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5)
    assert counter.order == ["tiny-sdxl"] * 5 + ["tiny-sdxl-refiner"] * 5
    params = infotext.parse_generation_parameters(processed.infotexts[0])
    refiner_info = xl_app.models.refiner("tiny-sdxl-refiner").checkpoint
    assert params["Refiner"] == f"tiny-sdxl-refiner [{refiner_info.shorthash}]"
    assert float(params["Refiner switch at"]) == 0.5
    assert params["Refiner switch by sampling steps"] in (True, "True")
    assert processed.images[0].size == (64, 64)


def test_switch_by_timestep_is_a1111s_default(xl_app):
    # Euler, Uniform, 10 steps: t = 999, 888, ..., 111, 0; A1111 switches once (999 - t) / 1000 >= 0.8, i.e. t <= 199
    processed, counter = _run(xl_app, steps=10, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.8)
    assert counter.order == ["tiny-sdxl"] * 8 + ["tiny-sdxl-refiner"] * 2
    assert "Refiner switch by sampling steps" not in processed.infotexts[0]
    assert "Refiner switch at: 0.8" in processed.infotexts[0]


def test_the_refiner_changes_the_image_and_switch_at_one_never_switches(xl_app):
    plain, _ = _run(xl_app, steps=6)
    refined, counter = _run(xl_app, steps=6, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5)
    assert counter.calls["tiny-sdxl-refiner"] > 0
    assert refined.images[0].tobytes() != plain.images[0].tobytes()
    never, counter = _run(xl_app, steps=6, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=1.0)
    assert counter.calls["tiny-sdxl-refiner"] == 0
    assert never.images[0].tobytes() == plain.images[0].tobytes()
    assert "Refiner" not in never.infotexts[0]  # A1111 writes the keys only when the switch happened


def test_batches_and_jobs_keep_the_refiner_loaded_and_a_job_without_one_frees_it(xl_app, monkeypatch):
    from modules import model_manager

    builds: list[str] = []
    real_build = model_manager.ModelManager._build

    def counting_build(self, info, vae):  # noqa: ANN001
        builds.append(info.name)
        return real_build(self, info, vae)

    monkeypatch.setattr(model_manager.ModelManager, "_build", counting_build)
    processed, counter = _run(xl_app, steps=4, n_iter=2, batch_size=2, refiner_checkpoint="tiny-sdxl-refiner",
                              refiner_switch_at=0.5, seed=11)
    images = processed.images[processed.index_of_first_image:]
    assert len(images) == 4 and all("Refiner: tiny-sdxl-refiner" in t for t in processed.infotexts)
    assert counter.order == (["tiny-sdxl"] * 2 + ["tiny-sdxl-refiner"] * 2) * 2  # per batch: base, then refiner
    refiner = xl_app.models.second
    _run(xl_app, steps=2, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5)
    assert xl_app.models.second is refiner  # the next job takes it as it is
    assert builds == ["tiny-sdxl-refiner.safetensors"]  # read from disk once
    _run(xl_app, steps=2)
    assert xl_app.models.second is None


def test_hires_fix_runs_the_refiner_in_the_pass_the_setting_names(xl_app):
    fields = {"steps": 4, "enable_hr": True, "hr_scale": 1.5, "denoising_strength": 1.0,
              "refiner_checkpoint": "tiny-sdxl-refiner", "refiner_switch_at": 0.5}
    xl_app.opts.set("refiner_switch_by_sample_steps", True)
    processed, counter = _run(xl_app, **fields)  # default: second pass only
    assert counter.order == ["tiny-sdxl"] * 4 + ["tiny-sdxl"] * 2 + ["tiny-sdxl-refiner"] * 2
    assert "Hires refiner" not in processed.infotexts[0]
    assert processed.images[0].size == (96, 96)
    xl_app.opts.set("hires_fix_refiner_pass", "first pass")
    processed, counter = _run(xl_app, **fields)
    assert counter.order == ["tiny-sdxl"] * 2 + ["tiny-sdxl-refiner"] * 2 + ["tiny-sdxl"] * 4
    assert "Hires refiner: first pass" in processed.infotexts[0]
    xl_app.opts.set("hires_fix_refiner_pass", "both passes")
    processed, counter = _run(xl_app, **fields)
    assert counter.order == (["tiny-sdxl"] * 2 + ["tiny-sdxl-refiner"] * 2) * 2


def test_sd1_refiner_after_sdxl_goes_through_pixels(xl_app):
    """Another latent space: the base's clean-image prediction at the switch is decoded by the SDXL VAE and encoded
    by the SD 1.x one (one more base call at the switch step), and a fresh sampler takes the rest."""
    xl_app.opts.set("refiner_switch_by_sample_steps", True)
    processed, counter = _run(xl_app, steps=6, refiner_checkpoint="tiny-sd1", refiner_switch_at=0.5)
    assert counter.order == ["tiny-sdxl"] * 4 + ["tiny-sd1"] * 3
    assert "Refiner: tiny-sd1 [" in processed.infotexts[0]
    pixels = torch.tensor(list(processed.images[0].getdata()), dtype=torch.float32)
    assert torch.isfinite(pixels).all() and pixels.std() > 0


def test_img2img_with_refiner(xl_app):
    from PIL import Image

    xl_app.opts.set("refiner_switch_by_sample_steps", True)
    source = Image.new("RGB", (64, 64), (200, 30, 30))
    processed, counter = _run(xl_app, steps=8, denoising_strength=0.5, init_images=[source],
                              refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.75)
    # img2img runs the last 4 of 8 steps; the switch is at 3/4 of those
    assert counter.order == ["tiny-sdxl"] * 3 + ["tiny-sdxl-refiner"] * 1
    assert "Refiner: tiny-sdxl-refiner" in processed.infotexts[0]


def test_unknown_refiner_and_bad_switch_at_are_refused_naming_the_field(xl_app):
    with pytest.raises(JobError, match="refiner_checkpoint: .*'no-such-model' not found"):
        xl_app.run_job(Job(**SMALL, steps=2, refiner_checkpoint="no-such-model"))
    with pytest.raises(JobError, match="refiner_switch_at must be between 0 and 1"):
        xl_app.run_job(Job(**SMALL, steps=2, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=1.5))
    assert xl_app.models.get().checkpoint.name == "tiny-sdxl.safetensors"  # the job's model is still loaded


def test_the_refiner_script_sets_the_job_fields_only_when_enabled(xl_app):
    from modules import scripts

    scripts.load_scripts()
    runner = scripts.scripts_txt2img
    refiner_script = next(s for s in runner.alwayson_scripts if s.title() == "Refiner")
    args = runner.default_args()
    assert args[refiner_script.args_from:refiner_script.args_to] == [False, "", 0.8]
    xl_app.opts.set("refiner_switch_by_sample_steps", True)
    job = Job(**SMALL, steps=4)
    runner.attach(job, args)
    assert "Refiner" not in xl_app.run_job(job).infotexts[0]
    args[refiner_script.args_from:refiner_script.args_to] = [True, "tiny-sdxl-refiner", 0.5]
    job = Job(**SMALL, steps=4)
    runner.attach(job, args)
    assert "Refiner: tiny-sdxl-refiner" in xl_app.run_job(job).infotexts[0]
    # disabled accordion: an API request's own fields stand
    args[refiner_script.args_from] = False
    job = Job(**SMALL, steps=4, refiner_checkpoint="tiny-sdxl-refiner", refiner_switch_at=0.5)
    runner.attach(job, args)
    assert "Refiner: tiny-sdxl-refiner" in xl_app.run_job(job).infotexts[0]


def test_pasting_an_infotext_fills_the_refiner_accordion_in_both_tabs(xl_app):
    import gradio as gr

    from modules import scripts
    from modules.ui import paste

    scripts.load_scripts()
    refiner_title = xl_app.models.refiner("tiny-sdxl-refiner").checkpoint.title
    text = ("a red circle\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64, "
            f"Refiner: tiny-sdxl-refiner [{refiner_title.split('[')[1]}, Refiner switch at: 0.6")
    for runner in (scripts.scripts_txt2img, scripts.scripts_img2img):
        refiner_script = next(s for s in runner.alwayson_scripts if s.title() == "Refiner")
        with gr.Blocks():
            refiner_script.ui(runner is scripts.scripts_img2img)
        values = paste.script_values(refiner_script.infotext_fields, paste.parse_pasted(text))
        assert values == [True, refiner_title, 0.6]
        plain = paste.script_values(refiner_script.infotext_fields, paste.parse_pasted("a cat\nSteps: 4"))
        assert plain[0] is False and plain[1] is None  # no refiner in the infotext: the accordion closes


def test_inpainting_with_a_refiner_of_another_latent_space_keeps_the_unmasked_part(xl_app):
    import numpy as np
    from PIL import Image

    xl_app.opts.set("refiner_switch_by_sample_steps", True)
    source = Image.new("RGB", (64, 64), (200, 30, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))  # repaint the right half only
    processed, counter = _run(xl_app, steps=8, denoising_strength=1.0, init_images=[source], image_mask=mask,
                              mask_blur=0, refiner_checkpoint="tiny-sd1", refiner_switch_at=0.5)
    assert counter.calls["tiny-sd1"] == 4 and "Refiner: tiny-sd1" in processed.infotexts[0]
    pixels = np.asarray(processed.images[0].convert("RGB"), dtype=np.int16)
    assert np.abs(pixels[:, :24] - np.array([200, 30, 30])).max() <= 3  # the kept half is the original's
