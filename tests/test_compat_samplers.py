"""A1111's sampler modules for extensions (`sd_samplers`, `sd_samplers_common`, `sd_samplers_kdiffusion`): the
table under A1111's names, and the two ways extensions change sampling, exercised in real generations on the tiny
SD1 model:

- a sampler entry whose constructor puts a CFGDenoiser subclass on the sampler (sd-dynamic-thresholding's way):
  the loop guides with its `combine_denoised`;
- `KDiffusionSampler.callback_state` replaced on the class (sd-webui-vectorscope-cc's way): called every step with
  k-diffusion's dict, and what it changes in `denoised` goes into the step.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from modules import scripts, sd_samplers, sd_samplers_common, sd_samplers_kdiffusion, sd_samplers_timesteps
from modules.processing import Job
from modules.sampling import samplers as core_samplers
from modules.sampling.loop import KDiffusionView

SMALL = {"width": 64, "height": 64, "steps": 4, "prompt": "a red circle", "negative_prompt": "blue", "seed": 5,
         "do_not_save_samples": True, "do_not_save_grid": True}

# The shape of sd-dynamic-thresholding: in process_batch, a sampler entry named after the job's sampler whose
# constructor wraps it and replaces its CFGDenoiser, p.sampler_name set to it; undone in postprocess_batch.
GUIDANCE_EXTENSION = '''
import torch
from modules import scripts, sd_samplers, sd_samplers_common
from modules.sd_samplers_kdiffusion import CFGDenoiserKDiffusion

calls = []


class HalfScaleDenoiser(CFGDenoiserKDiffusion):
    """Guidance at half the job's scale, computed here on the denoised predictions."""

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
        calls.append((self.step, self.total_steps, [list(c) for c in conds_list], tuple(x_out.shape)))
        return super().combine_denoised(x_out, conds_list, uncond, cond_scale / 2)


class HalfScale(scripts.Script):
    def title(self):
        return "Half scale"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process_batch(self, p, *args, **kwargs):
        original = sd_samplers.all_samplers_map[p.sampler_name]

        def constructor(model):
            sampler = original.constructor(model)
            sampler.model_wrap_cfg = HalfScaleDenoiser(sampler)
            return sampler

        p.orig_sampler_name = p.sampler_name
        p.sampler_name = p.sampler_name + "_half"
        sd_samplers.all_samplers_map[p.sampler_name] = sd_samplers_common.SamplerData(
            p.sampler_name, constructor, original.aliases, original.options)

    def postprocess_batch(self, p, *args, **kwargs):
        del sd_samplers.all_samplers_map[p.sampler_name]
        p.sampler_name = p.orig_sampler_name
'''


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_the_table_has_a1111s_names_and_makes_sampler_objects():
    assert [data.name for data in sd_samplers.all_samplers] == core_samplers.sampler_names()
    assert set(sd_samplers.all_samplers_map) == set(core_samplers.sampler_names())
    assert sd_samplers.find_sampler_config("k_euler_a").name == "Euler a"
    assert sd_samplers.find_sampler_config("nonsense") is None
    assert sd_samplers.samplers_map["k_dpmpp_2m"] == "DPM++ 2M"
    euler = sd_samplers.create_sampler("Euler a", None)
    assert isinstance(euler, sd_samplers_kdiffusion.KDiffusionSampler)
    assert euler.config is sd_samplers.all_samplers_map["Euler a"] and euler.funcname == "sample_euler_ancestral"
    assert isinstance(euler.model_wrap_cfg, sd_samplers_kdiffusion.CFGDenoiserKDiffusion)
    assert euler.model_wrap_cfg.sampler is euler and euler.config.options == {"uses_ensd": True}
    ddim = sd_samplers.create_sampler("DDIM", None)
    assert isinstance(ddim, sd_samplers_timesteps.CompVisSampler) and ddim.eta_default == 0.0
    assert sd_samplers.all_samplers_map["Heun"].total_steps(10) == 20
    with pytest.raises(AssertionError, match="bad sampler name: Nope"):
        sd_samplers.create_sampler("Nope", None)
    assert sd_samplers.get_sampler_and_scheduler("DPM++ 2M Karras", None) == ("DPM++ 2M", "Automatic")
    assert sd_samplers.get_sampler_and_scheduler("Euler", "karras") == ("Euler", "Karras")
    assert sd_samplers.get_hr_sampler_and_scheduler({"Sampler": "Euler", "Schedule type": "Karras"}) == (
        "Use same sampler", "Use same scheduler")
    assert sd_samplers.get_sampler_from_infotext({"Sampler": "DPM2 a Karras"}) == "DPM2 a"
    assert sd_samplers.visible_sampler_names()[:2] == ["DPM++ 2M", "DPM++ SDE"]


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("k_space", [True, False])
def test_the_k_diffusion_view_converts_exactly_back(prediction, k_space):
    view = KDiffusionView(sigma=2.5, k_space=k_space, prediction=prediction)
    generator = torch.Generator().manual_seed(0)
    latents, output = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    x = view.x(latents)
    assert torch.allclose(view.latents(x), latents, atol=1e-6)
    assert torch.allclose(view.model_output(x, view.denoised(x, output)), output, atol=1e-5)
    if prediction == "epsilon":  # k-diffusion: x = x0 + sigma * eps
        assert torch.allclose(view.denoised(x, output), x - 2.5 * output, atol=1e-6)


def _extension_runner(tmp_path, code: str) -> tuple[scripts.ScriptRunner, object]:
    """The extension's script file, imported as the script loader does, as the one always-on script of a runner
    (the built-in scripts and the tab's UI are not needed here)."""
    folder = tmp_path / "extensions" / "half-scale" / "scripts"
    folder.mkdir(parents=True)
    (folder / "half_scale.py").write_text(textwrap.dedent(code))
    module = scripts.load_module(str(folder / "half_scale.py"))
    script = module.HalfScale()
    script.alwayson, script.filename = True, str(folder / "half_scale.py")
    runner = scripts.ScriptRunner()
    runner.scripts, runner.alwayson_scripts = [script], [script]
    return runner, module


@pytest.mark.parametrize("sampler_name", ["Euler", "DDIM"])
def test_a_cfg_denoiser_subclass_guides_the_real_loop(tiny_app, tmp_path, sampler_name):
    runner, module = _extension_runner(tmp_path, GUIDANCE_EXTENSION)
    job = Job(**SMALL, sampler_name=sampler_name, cfg_scale=8.0, batch_size=2)
    runner.attach(job, [0])
    guided = tiny_app.run_job(job)

    # every step went through the extension's combine_denoised, with A1111's step counter and conds_list
    assert [call[0] for call in module.calls] == [0, 1, 2, 3]
    assert all(call[1] == 4 and call[2] == [[(0, 1.0)], [(1, 1.0)]] for call in module.calls)
    assert module.calls[0][3] == (4, 4, 8, 8)  # two prompt rows, then two negative rows
    assert job.sampler_name == sampler_name and not guided.comments  # the extension restored it
    assert sampler_name + "_half" not in sd_samplers.all_samplers_map

    # guidance at half the scale, done on denoised latents, is the plain job at that scale
    half = tiny_app.run_job(Job(**SMALL, sampler_name=sampler_name, cfg_scale=4.0, batch_size=2))
    for with_extension, expected in zip(guided.images, half.images, strict=True):
        assert np.abs(_pixels(with_extension) - _pixels(expected)).max() <= 1
    if sampler_name == "Euler":  # and not the job at the scale asked for
        full = tiny_app.run_job(Job(**SMALL, sampler_name=sampler_name, cfg_scale=8.0, batch_size=2))
        assert np.abs(_pixels(guided.images[0]) - _pixels(full.images[0])).max() > 8


@pytest.fixture
def patched_callback_state():
    """KDiffusionSampler.callback_state as it is (inherited from the Sampler base), put back afterwards exactly:
    inherited again, not as a class attribute of its own, which would hide a later patch of the base."""
    cls = sd_samplers_kdiffusion.KDiffusionSampler
    own = vars(cls).get("callback_state")
    yield cls.callback_state
    if own is None:
        if "callback_state" in vars(cls):
            del cls.callback_state
    else:
        cls.callback_state = own


def test_a_replaced_callback_state_sees_and_changes_every_step(tiny_app, patched_callback_state):
    seen = []

    def callback(self, d):  # vectorscope-cc's shape: read d, change d["denoised"] in place, call the original
        seen.append({"keys": set(d), "i": d["i"], "sigma": float(d["sigma"]), "sigma_hat": float(d["sigma_hat"]),
                     "x": d["x"].clone(), "is_sdxl": self.p.sd_model.is_sdxl, "sampler": self})
        d["denoised"][:, 0] += 4.0
        seen[-1]["denoised"] = d["denoised"].clone()
        return patched_callback_state(self, d)

    sd_samplers_kdiffusion.KDiffusionSampler.callback_state = callback
    job = Job(**SMALL, sampler_name="Euler")
    changed = tiny_app.run_job(job)
    sd_samplers_kdiffusion.KDiffusionSampler.callback_state = patched_callback_state
    plain = tiny_app.run_job(Job(**SMALL, sampler_name="Euler"))

    assert [s["i"] for s in seen] == [0, 1, 2, 3]
    assert all(s["keys"] == {"x", "i", "sigma", "sigma_hat", "denoised"} for s in seen)
    assert all(s["sampler"] is job.sampler and isinstance(s["sampler"], sd_samplers_kdiffusion.KDiffusionSampler)
               for s in seen)
    assert not seen[0]["is_sdxl"]
    assert job.sampler.last_latent is not None  # the original callback_state ran too
    sigmas = [s["sigma"] for s in seen]
    assert sigmas == sorted(sigmas, reverse=True) and sigmas[0] > 10 and all(s["sigma_hat"] == s["sigma"]
                                                                            for s in seen)
    # each step is k-diffusion's Euler step from the changed denoised: x' = x + (x - denoised) / sigma * dt
    for now, after in zip(seen, seen[1:]):
        expected = now["x"] + (now["x"] - now["denoised"]) / now["sigma"] * (after["sigma"] - now["sigma"])
        assert torch.allclose(after["x"], expected, atol=1e-4)
    assert np.abs(_pixels(changed.images[0]) - _pixels(plain.images[0])).max() > 8


def test_interrupted_exception_is_a_base_exception():
    assert issubclass(sd_samplers_common.InterruptedException, BaseException)
    assert not issubclass(sd_samplers_common.InterruptedException, Exception)
    assert sd_samplers_common.approximation_indexes == {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}


def test_an_extension_entry_names_the_core_sampler_it_runs_as():
    from modules import hooks

    original = sd_samplers.all_samplers_map["DPM++ 2M"]
    sd_samplers.all_samplers_map["DPM++ 2M_custom7"] = sd_samplers_common.SamplerData(
        "DPM++ 2M_custom7", original.constructor, original.aliases, original.options)
    try:
        for name, expected in (("DPM++ 2M_custom7", "DPM++ 2M"), ("Euler", "Euler"), ("unknown", "unknown")):
            params = hooks.SamplerNameParams(name)
            hooks.fire("sampler_name", params)
            assert params.name == expected
    finally:
        del sd_samplers.all_samplers_map["DPM++ 2M_custom7"]


def test_latent_image_helpers_use_the_models_vae(tiny_app):
    model = tiny_app.models.get()
    pixels = torch.rand(2, 3, 64, 64)
    latents = sd_samplers_common.images_tensor_to_samples(pixels)
    assert latents.shape == (2, model.latent_channels, 8, 8)
    image = sd_samplers_common.sample_to_image(latents, index=1)
    assert image.size == (64, 64) and image.mode == "RGB"
    decoded = sd_samplers_common.samples_to_images_tensor(latents, sd_samplers_common.approximation_indexes["Full"])
    expected = np.asarray(image, dtype=np.float32)
    from_tensor = ((decoded[1].clamp(-1, 1) + 1) / 2 * 255).permute(1, 2, 0).cpu().numpy()
    assert np.abs(from_tensor - expected).max() <= 1.0
    grid = sd_samplers_common.samples_to_image_grid(latents)
    assert grid.size[0] >= 128 or grid.size[1] >= 128
    sd_samplers_common.store_latent(latents)
    assert tiny_app.state.current_latent is latents


@pytest.mark.parametrize("sampler_name", ["DPM++ 2M", "Heun", "Euler a"])
def test_a_callback_that_changes_nothing_changes_no_pixel(tiny_app, patched_callback_state, sampler_name):
    """The k-diffusion view of each scheduler's step converts back exactly: multistep solvers in the variance-
    preserving scaling, a second-order one (one callback per step, as k-diffusion), an ancestral one."""
    steps = []

    def callback(self, d):
        steps.append(d["i"])
        return patched_callback_state(self, d)

    small = {**SMALL, "steps": 3, "sampler_name": sampler_name}
    sd_samplers_kdiffusion.KDiffusionSampler.callback_state = callback
    watched = tiny_app.run_job(Job(**small))
    sd_samplers_kdiffusion.KDiffusionSampler.callback_state = patched_callback_state
    plain = tiny_app.run_job(Job(**small))
    assert steps == [0, 1, 2]
    assert np.abs(_pixels(watched.images[0]) - _pixels(plain.images[0])).max() <= 1


def test_the_loop_is_handed_what_extensions_replaced_and_nothing_else():
    """Which of a job's sampler object's methods the loop must call: none by default (its own guidance is the
    same maths, and faster); a callback_state replaced on KDiffusionSampler or on the Sampler base (as
    multidiffusion-upscaler does); a combine_denoised replaced on the CFGDenoiser class."""
    from modules import hooks
    from modules.sd_samplers_cfg_denoiser import CFGDenoiser

    def attached(sampler_name: str = "Euler") -> hooks.SamplerStartParams:
        params = hooks.SamplerStartParams(Job(sampler_name=sampler_name), None, 4, 4)
        hooks.fire("sampler_start", params)
        return params

    plain = attached()
    assert plain.step_callback is None and plain.combine_denoised is None
    assert isinstance(plain.job.sampler, sd_samplers_kdiffusion.KDiffusionSampler) and plain.job.sampler.p is plain.job
    original_callback, original_combine = sd_samplers_common.Sampler.callback_state, CFGDenoiser.combine_denoised
    try:
        sd_samplers_common.Sampler.callback_state = lambda self, d: None
        CFGDenoiser.combine_denoised = lambda self, x_out, conds_list, uncond, cond_scale: x_out[:1]
        patched = attached()
        assert patched.step_callback is not None and patched.combine_denoised is not None
        assert attached("DDIM").step_callback is not None  # the base class is every sampler's
    finally:
        sd_samplers_common.Sampler.callback_state, CFGDenoiser.combine_denoised = original_callback, original_combine
    assert sd_samplers_common.apply_refiner(None) is False
