"""Model-family engines and the sampling loop's seam: one denoiser call per step, extra inputs from denoiser hooks.

Real tiny checkpoints of each family (tests/conftest.py), a real diffusers ControlNet built from the tiny UNet;
nothing is mocked. A hook is an object with `before_denoiser(call)`; the engine sums hooks' residuals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel

from modules import engines
from modules.devices import choose_policy
from modules.engines import stable_diffusion
from modules.engines.base import DenoiserCall, DenoiserExtras, Engine, merge_hook_kwargs
from modules.models.loader import load_model
from modules.models.registry import CheckpointInfo
from modules.options import Options
from modules.processing import Context, Job, process_images
from modules.prompts.guidance import PromptGuidance, StepConditioning
from modules.sampling import rng as rng_mod
from modules.sampling import samplers
from modules.sampling.loop import SamplingLoop
from modules.state import State

pytestmark = pytest.mark.integration

CPU = choose_policy(use_cpu=["all"])
ROOT = Path(__file__).resolve().parents[1]
_models: dict[str, object] = {}


@pytest.fixture
def load(tiny_checkpoints):
    """Tiny models by family, loaded once for this module (they are only read)."""
    def get(family: str):
        if family not in _models:
            path = tiny_checkpoints[family]
            _models[family] = load_model(CheckpointInfo(str(path), path.name), CPU)
        return _models[family]
    return get


def _step_conditioning(engine: Engine, prompts: list[str]) -> StepConditioning:
    """One row per prompt, then one unconditional row per prompt (the loop's layout)."""
    cond, _ = engine.encode(prompts + [""] * len(prompts))
    n = len(prompts)
    return StepConditioning(cond.embeds, cond.pooled, list(range(n)), [1.0] * n)


def _inputs(engine: Engine, rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, *engine.latent_shape(64, 64), generator=g), torch.tensor(500)


class ResidualHook:
    """Returns fixed residuals (the shapes a ControlNet of this UNet gives)."""

    def __init__(self, down: tuple[torch.Tensor, ...] | None, mid: torch.Tensor) -> None:
        self.down, self.mid = down, mid
        self.calls: list[DenoiserCall] = []

    def before_denoiser(self, call: DenoiserCall) -> dict:
        self.calls.append(call)
        residuals = {"mid_block_additional_residual": self.mid}
        if self.down is not None:
            residuals["down_block_additional_residuals"] = self.down
        return residuals


class ControlNetHook:
    """A ControlNet as a denoiser hook: residuals from (x, t, text, the family's added inputs); no patching."""

    def __init__(self, controlnet: ControlNetModel, image: torch.Tensor) -> None:
        self.controlnet, self.image = controlnet, image

    def before_denoiser(self, call: DenoiserCall) -> dict:
        control = self.image.expand(len(call.x), -1, -1, -1)
        down, mid = self.controlnet(call.x, call.t, encoder_hidden_states=call.cond.embeds, controlnet_cond=control,
                                    added_cond_kwargs=call.added_cond_kwargs, return_dict=False)
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


def _controlnet(unet: torch.nn.Module, randomise: bool) -> ControlNetModel:
    # a small hint encoder: the test is about the residuals, not the hint's features
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 8))
    controlnet.eval().requires_grad_(False)
    if randomise:  # a fresh ControlNet's zero convolutions output zeros; give them weights to make it act
        g = torch.Generator().manual_seed(7)
        for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.1)
    return controlnet


def _residuals(engine: Engine, x: torch.Tensor, t: torch.Tensor, cond: StepConditioning, scale: float
               ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Random residuals shaped like this UNet's down/mid outputs (taken from a ControlNet of it)."""
    call = DenoiserCall(x, t, cond, 0, 1, None, engine.added_cond_kwargs(cond, 1, 64, 64), engine)
    down, mid = ControlNetHook(_controlnet(engine.denoiser_module, True), torch.zeros(1, 3, 64, 64)).before_denoiser(
        call).values()
    g = torch.Generator().manual_seed(int(scale * 10))
    return tuple(torch.randn(d.shape, generator=g) * scale for d in down), torch.randn(mid.shape, generator=g) * scale


def test_engine_for_picks_the_family_class(load):
    assert type(engines.engine_for(load("sd1"), Options())) is stable_diffusion.SD1Engine
    assert type(engines.engine_for(load("sdxl"), Options())) is stable_diffusion.SDXLEngine
    inpaint = engines.engine_for(load("sd1-inpaint"), Options())
    assert inpaint.takes_image_conditioning and not engines.engine_for(load("sd1"), Options()).takes_image_conditioning
    assert engines.engine_for(load("sd1"), Options()).image_conditioning(1, 64, 64) is None
    assert inpaint.latent_shape(64, 48) == (4, 6, 8)


@pytest.mark.parametrize("family", ["sd1", "sd2-v", "sdxl", "sdxl-refiner", "sd1-inpaint"])
def test_engine_denoise_equals_a_direct_unet_call(load, family):
    model = load(family)
    engine = engines.engine_for(model, Options())
    cond = _step_conditioning(engine, ["a red circle"])
    x, t = _inputs(engine, 2)
    image_cond = engine.image_conditioning(1, 64, 64)
    rows = None if image_cond is None else torch.cat([image_cond, image_cond])
    out = engine.denoise(x, t, cond, DenoiserExtras((64, 64), rows))

    added = None
    if family == "sdxl":
        added = {"text_embeds": cond.pooled, "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
    elif family == "sdxl-refiner":  # aesthetic scores 6.0 (prompt) and 2.5 (negative) replace the target size
        added = {"text_embeds": cond.pooled, "time_ids": torch.tensor([[64.0, 64, 0, 0, 6.0], [64.0, 64, 0, 0, 2.5]])}
    unet_in = x if rows is None else torch.cat([x, rows], dim=1)
    assert unet_in.shape[1] == model.unet.config.in_channels
    direct = model.unet(unet_in, t, encoder_hidden_states=cond.embeds, added_cond_kwargs=added).sample
    assert torch.equal(out, direct)


def test_merge_hook_kwargs_sums_residuals_and_joins_added_inputs():
    a, b = torch.ones(2), torch.full((2,), 2.0)
    merged = merge_hook_kwargs([{"mid_block_additional_residual": a, "down_block_additional_residuals": (a, b),
                                 "added_cond_kwargs": {"image_embeds": a}},
                                None,
                                {"mid_block_additional_residual": b, "down_block_additional_residuals": (b, b),
                                 "added_cond_kwargs": {"hint": b}}])
    assert torch.equal(merged["mid_block_additional_residual"], a + b)
    assert [r.tolist() for r in merged["down_block_additional_residuals"]] == [[3.0, 3.0], [4.0, 4.0]]
    assert set(merged["added_cond_kwargs"]) == {"image_embeds", "hint"}
    with pytest.raises(ValueError, match="image_embeds"):
        merge_hook_kwargs([{"added_cond_kwargs": {"image_embeds": a}}, {"added_cond_kwargs": {"image_embeds": b}}])
    with pytest.raises(ValueError, match="together"):
        merge_hook_kwargs([{"mid_block_additional_residual": a}])
    assert isinstance(merge_hook_kwargs([{"down_intrablock_additional_residuals": (a, b)}])[
        "down_intrablock_additional_residuals"], list)
    with pytest.raises(ValueError, match="lengths"):
        merge_hook_kwargs([{"down_block_additional_residuals": (a,)}, {"down_block_additional_residuals": (a, b)}])


def test_residual_hooks_change_the_unet_output_and_two_hooks_add(load):
    engine = engines.engine_for(load("sd1"), Options())
    cond = _step_conditioning(engine, ["a red circle"])
    x, t = _inputs(engine, 2)
    plain = engine.denoise(x, t, cond, DenoiserExtras((64, 64)))
    down1, mid1 = _residuals(engine, x, t, cond, 0.5)
    down2, mid2 = _residuals(engine, x, t, cond, 0.3)
    first, second = ResidualHook(down1, mid1), ResidualHook(down2, mid2)
    both = engine.denoise(x, t, cond, DenoiserExtras((64, 64), hooks=[first, second], step=3, total_steps=9))
    assert not torch.allclose(both, plain)
    assert (first.calls[0].step, first.calls[0].total_steps, first.calls[0].x is x) == (3, 9, True)
    summed = ResidualHook(tuple(a + b for a, b in zip(down1, down2)), mid1 + mid2)
    assert torch.equal(both, engine.denoise(x, t, cond, DenoiserExtras((64, 64), hooks=[summed])))
    with pytest.raises(ValueError, match="together"):  # diffusers would silently ignore a lone mid residual
        engine.denoise(x, t, cond, DenoiserExtras((64, 64), hooks=[ResidualHook(None, mid1)]))


class AdapterHook:
    """T2I-Adapter-style features, one per down block, added inside the UNet's down path; the same list every step
    (the UNet pops from what it is given, so the engine must hand it a copy)."""

    def __init__(self, features: list[torch.Tensor]) -> None:
        self.features = features

    def before_denoiser(self, call: DenoiserCall) -> dict:
        return {"down_intrablock_additional_residuals": self.features}


def test_adapter_features_change_the_output_and_survive_repeated_calls(load):
    engine = engines.engine_for(load("sd1"), Options())
    cond = _step_conditioning(engine, ["a red circle"])
    x, t = _inputs(engine, 2)
    channels = engine.denoiser_module.config.block_out_channels
    g = torch.Generator().manual_seed(2)
    features = [torch.randn(2, ch, 8 // 2 ** i, 8 // 2 ** i, generator=g) for i, ch in enumerate(channels)]
    hook = AdapterHook(features)
    first = engine.denoise(x, t, cond, DenoiserExtras((64, 64), hooks=[hook]))
    assert not torch.allclose(first, engine.denoise(x, t, cond, DenoiserExtras((64, 64))))
    assert len(hook.features) == len(channels)
    assert torch.equal(engine.denoise(x, t, cond, DenoiserExtras((64, 64), hooks=[hook])), first)


def test_sdxl_controlnet_hook_sees_the_family_inputs_and_changes_the_output(load):
    engine = engines.engine_for(load("sdxl"), Options())
    cond = _step_conditioning(engine, ["a red circle"])
    x, t = _inputs(engine, 2)
    hook = ControlNetHook(_controlnet(engine.denoiser_module, True), torch.rand(1, 3, 64, 64))
    plain = engine.denoise(x, t, cond, DenoiserExtras((64, 64)))
    controlled = engine.denoise(x, t, cond, DenoiserExtras((64, 64), hooks=[hook]))
    assert not torch.allclose(controlled, plain)


def _image(model, hooks: list, **fields) -> np.ndarray:
    job = Job(prompt="a red circle", negative_prompt="blurry", steps=2, width=64, height=64, seed=3,
              do_not_save_samples=True, do_not_save_grid=True, **fields)
    ctx = Context(model=model, opts=Options(), state=State(), data_dir=".", hooks=hooks)
    return np.asarray(process_images(job, ctx).images[0])


def test_a_controlnet_with_zero_output_leaves_the_image_bit_identical_and_a_trained_one_changes_it(load):
    model = load("sd1")
    hint = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    plain = _image(model, [])
    zero = _image(model, [ControlNetHook(_controlnet(model.unet, False), hint)])
    assert np.array_equal(zero, plain)
    assert not np.array_equal(_image(model, [ControlNetHook(_controlnet(model.unet, True), hint)]), plain)


class RecordingEngine(Engine):
    """A real engine underneath; records which parts of the engine interface the loop uses."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def encode(self, prompts: list[str], min_chunks: int = 1):  # noqa: ANN201
        self.calls.append("encode")
        return self.inner.encode(prompts, min_chunks)

    @property
    def device(self) -> torch.device:
        self.calls.append("device")
        return self.inner.device

    @property
    def dtype(self) -> torch.dtype:
        self.calls.append("dtype")
        return self.inner.dtype

    @property
    def latent_channels(self) -> int:
        self.calls.append("latent_channels")
        return self.inner.latent_channels

    @property
    def vae_scale_factor(self) -> int:
        self.calls.append("vae_scale_factor")
        return self.inner.vae_scale_factor

    def denoiser_loaded(self):  # noqa: ANN201
        self.calls.append("denoiser_loaded")
        return self.inner.denoiser_loaded()

    @property
    def denoiser_module(self) -> torch.nn.Module:
        self.calls.append("denoiser_module")
        return self.inner.denoiser_module

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: StepConditioning, extra: DenoiserExtras
                ) -> torch.Tensor:
        self.calls.append("denoise")
        return self.inner.denoise(x, t, cond, extra)

    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls.append("vae_encode")
        return self.inner.vae_encode(pixels)

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.calls.append("vae_decode")
        return self.inner.vae_decode(latents)


def _run_loop(model, engine: Engine, real: Engine) -> torch.Tensor:
    sampler = samplers.create_sampler("DPM++ 2M", "Automatic", model.scheduler_config, seeds=[3])
    image_rng = rng_mod.ImageRNG(real.latent_shape(64, 64), [3])
    noise = image_rng.first()
    guidance = PromptGuidance(["a [red:blue:1] circle"], ["blurry"], 3,
                              lambda texts, chunks: real.encode(texts, chunks)[0], real.encoder.count_chunks)
    return SamplingLoop(engine, State()).run(sampler, noise, noise, guidance, 3, image_rng, cfg_scale=7.0,
                                             image_size=(64, 64))


def test_the_loop_calls_only_the_engine(load):
    model = load("sdxl")
    real = engines.engine_for(model, Options())
    expected = _run_loop(model, real, real)
    recording = RecordingEngine(real)
    unet_calls = []
    handle = model.unet.register_forward_pre_hook(lambda *_: unet_calls.append(1))  # observes, changes nothing
    try:
        result = _run_loop(model, recording, real)
    finally:
        handle.remove()
    assert torch.equal(result, expected)
    assert recording.calls.count("denoise") == len(unet_calls) == 3  # every UNet call came through the engine
    assert set(recording.calls) <= {"device", "denoiser_loaded", "denoise", "denoiser_module"}


FORBIDDEN = ("gradio", "fastapi", "modules.shared", "modules.script_callbacks", "modules.scripts", "modules.ui",
             "modules.api")


@pytest.mark.parametrize("path", [*sorted((ROOT / "modules" / "engines").glob("*.py")),
                                  ROOT / "modules" / "sampling" / "loop.py"], ids=lambda p: p.name)
def test_engines_and_the_loop_import_no_adapter(path):
    imported = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported += [f"{node.module}.{alias.name}" for alias in node.names] + [node.module or ""]
    bad = [name for name in imported if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == []
    if path.name == "loop.py":
        assert "unet" not in path.read_text()  # the loop sees only the engine protocol
