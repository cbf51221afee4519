"""The fast path's CPU-checkable parts: fused QKV views, no host sync per step, caches across jobs and checkpoints,
and compiled modules that never go stale (dynamo's guards, exercised with its eager backend: inductor/CUDA graphs
need a GPU and are measured by bench/gpu_bench.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from modules.models import acceleration
from modules.models.tiny import build_tiny_components, write_tiny_checkpoint
from modules.networks import lora
from modules.processing import Job
from tests.test_lora import TO_Q, TO_Q_KEY, lora_layer, write_lora

SMALL = {"width": 64, "height": 64, "steps": 4, "do_not_save_samples": True, "do_not_save_grid": True}


def _unet_inputs(unet: torch.nn.Module) -> tuple:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, unet.config.in_channels, 8, 8, generator=g)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    return x, torch.tensor(500), context


def _unet_out(unet: torch.nn.Module, inputs: tuple) -> torch.Tensor:
    x, t, context = inputs
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=context).sample


def test_fused_qkv_views_share_storage_and_lora_edits_reach_the_fused_weight(tmp_path):
    unet = build_tiny_components("sd1")["unet"].eval().requires_grad_(False)
    inputs = _unet_inputs(unet)
    reference = _unet_out(unet, inputs)
    original_q = unet.get_submodule(TO_Q).weight.clone()

    assert acceleration.fuse_qkv(unet)
    attn = unet.get_submodule(TO_Q.rsplit(".", 1)[0])
    assert attn.fused_projections and type(attn.processor).__name__ == "FusedAttnProcessor2_0"
    fused, to_q, to_v = attn.to_qkv.weight, attn.to_q.weight, attn.to_v.weight
    assert to_q.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()  # a view, no copy
    assert torch.equal(fused[: to_q.shape[0]], original_q) and torch.equal(fused[-to_v.shape[0]:], to_v)
    torch.testing.assert_close(_unet_out(unet, inputs), reference, rtol=1e-5, atol=1e-5)

    # A LoRA on to_q, patched in place through the view, changes the fused projection the forward pass uses.
    file = write_lora(tmp_path / "q.safetensors", {TO_Q_KEY: lora_layer(to_q.shape[0], to_q.shape[1], 2, 2.0)})
    plain = build_tiny_components("sd1")["unet"].eval().requires_grad_(False)
    model = type("M", (), {"unet": unet, "text_encoders": [], "family": "sd1"})()
    plain_model = type("M", (), {"unet": plain, "text_encoders": [], "family": "sd1"})()
    patcher, plain_patcher = lora.LoraPatcher(model), lora.LoraPatcher(plain_model)
    patcher.apply([(lora.load_lora_file(file), 1.0, 1.0)])
    plain_patcher.apply([(lora.load_lora_file(file), 1.0, 1.0)])
    assert not torch.equal(attn.to_qkv.weight[: to_q.shape[0]], original_q)
    with_lora = _unet_out(unet, inputs)
    assert (with_lora - reference).abs().max() > 1e-3
    torch.testing.assert_close(with_lora, _unet_out(plain, inputs), rtol=1e-5, atol=1e-5)
    patcher.restore()
    assert torch.equal(attn.to_qkv.weight[: to_q.shape[0]], original_q)
    torch.testing.assert_close(_unet_out(unet, inputs), reference, rtol=1e-5, atol=1e-5)

    acceleration.unfuse_qkv(unet)
    assert not attn.fused_projections and not hasattr(attn, "to_qkv")
    assert attn.to_q.weight.untyped_storage().data_ptr() != attn.to_k.weight.untyped_storage().data_ptr()
    torch.testing.assert_close(_unet_out(unet, inputs), reference, rtol=1e-5, atol=1e-5)


class _SyncCounter(TorchDispatchMode):
    """Counts the ops that make the host wait for the device on CUDA: reading a value (`.item()`, `bool(t)`,
    `int(t)`, `.tolist()`: aten._local_scalar_dense), nonzero/masked_select (data-dependent sizes), and copies from
    a device tensor to the CPU."""

    SYNC_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.item")

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        name = str(func.overloadpacket)
        if name in self.SYNC_OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M"])
def test_sampling_loop_waits_for_the_device_a_fixed_number_of_times_whatever_the_steps(app, sampler):
    app.opts.set("live_previews_enable", False)
    counts = []
    for steps in (3, 9):
        job = Job(prompt="a red circle", seed=3, sampler_name=sampler, **{**SMALL, "steps": steps})
        app.run_job(Job(prompt="warm", seed=1, sampler_name=sampler, **SMALL))
        counter = _SyncCounter()
        with counter:
            app.run_job(job)
        counts.append(counter.count)
    # Set-up and decoding may read values; the steps themselves never do.
    assert counts[0] == counts[1], counts


def _count_text_encoder_runs(app) -> list[int]:
    calls = [0]
    for encoder in app.models.get().text_encoders:  # one embeddings pass per encoded text (of one chunk)
        text_model = getattr(encoder, "text_model", encoder)  # transformers 5 flattened CLIPTextModel
        text_model.embeddings.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_prompt_encodings_are_reused_by_the_next_job_and_not_when_disabled(app):
    calls = _count_text_encoder_runs(app)
    first = app.run_job(Job(prompt="a blue square", negative_prompt="blurry", seed=5, **SMALL))
    assert calls[0] == 2  # prompt and negative prompt
    second = app.run_job(Job(prompt="a blue square", negative_prompt="blurry", seed=5, **SMALL))
    assert calls[0] == 2  # nothing encoded again
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(second.images[0]))
    app.run_job(Job(prompt="a blue square", negative_prompt="sharp", seed=5, **SMALL))
    assert calls[0] == 3  # only the new negative prompt
    app.opts.set("CLIP_stop_at_last_layers", 2)  # a different encoder setting is a different key
    app.run_job(Job(prompt="a blue square", negative_prompt="blurry", seed=5, **SMALL))
    assert calls[0] == 5
    app.opts.set("persistent_cond_cache", False)
    app.run_job(Job(prompt="a blue square", negative_prompt="blurry", seed=5, **SMALL))
    assert calls[0] == 7


def test_a_cached_encoding_still_notes_its_embeddings_and_emphasis_in_the_infotext(app):
    import shutil

    from modules.models import demo

    shutil.copy(demo.DEMO_EMBEDDING, Path(app.cmd_opts.embeddings_dir) / "shapey.safetensors")
    app.opts.set("emphasis", "No norm")
    calls = _count_text_encoder_runs(app)
    infos = [app.run_job(Job(prompt="a (large) shapey", seed=5, **SMALL)).info for _ in range(2)]
    assert calls[0] == 2  # the second job took both encodings from the cache
    for info in infos:
        assert 'TI hashes: "shapey: ' in info and "Emphasis: No norm" in info


def test_a_lora_file_changed_on_disk_is_not_served_old_encodings(app):
    """The cache key holds what the networks' files were when applied, not just the tags' text."""
    import os

    text_layer = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    path = Path(app.cmd_opts.lora_dir) / "te.safetensors"
    width = app.models.get().text_encoders[0].config.hidden_size
    write_lora(path, {text_layer: lora_layer(width, width, 2, 4.0, seed=1)})
    calls = _count_text_encoder_runs(app)
    first = app.run_job(Job(prompt="a blue square <lora:te:1>", seed=5, **SMALL))
    write_lora(path, {text_layer: lora_layer(width, width, 2, 4.0, seed=2)})  # retrained, same name
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 10))
    second = app.run_job(Job(prompt="a blue square <lora:te:1>", seed=5, **SMALL))
    assert calls[0] == 4  # both prompts encoded again with the new weights
    assert not np.array_equal(np.asarray(first.images[0]), np.asarray(second.images[0]))


def test_switching_back_to_a_checkpoint_kept_in_ram_reuses_it(app, tmp_path):
    from modules.models import loader

    ckpt_dir = Path(app.cmd_opts.ckpt_dir)
    write_tiny_checkpoint("sd1", ckpt_dir / "first.safetensors", seed=1)
    write_tiny_checkpoint("sd1", ckpt_dir / "second.safetensors", seed=2)
    app.models.refresh()
    reads = []
    real = loader.load_state_dict
    loader.load_state_dict = lambda path, *a, **k: (reads.append(Path(path).name), real(path, *a, **k))[1]
    try:
        app.opts.set("sd_checkpoint_cache", 1)
        first = app.models.select("first.safetensors")
        image = app.run_job(Job(prompt="x", seed=9, **SMALL)).images[0]
        app.models.select("second.safetensors")
        assert app.models.select("first.safetensors") is first  # the same object, from RAM
        assert reads == ["first.safetensors", "second.safetensors"]
        assert np.array_equal(np.asarray(app.run_job(Job(prompt="x", seed=9, **SMALL)).images[0]),
                              np.asarray(image))
        app.opts.set("sd_checkpoint_cache", 0)
        app.models.select("second.safetensors")  # from RAM (kept earlier); "first" is now dropped
        assert app.models.select("first.safetensors") is not first
        assert reads == ["first.safetensors", "second.safetensors", "first.safetensors"]
    finally:
        loader.load_state_dict = real


def test_compiled_unet_follows_lora_and_hypernetwork_changes_and_keeps_sizes_compiled(app):
    import torch._dynamo

    from tests.test_hypernetwork import write_hypernetwork

    torch._dynamo.reset()
    app.opts.set("live_previews_enable", False)
    job = dict(prompt="a red circle", seed=4, sampler_name="Euler", **SMALL)
    model = app.models.get()
    to_q = model.unet.get_submodule(TO_Q).weight
    write_lora(Path(app.cmd_opts.lora_dir) / "q.safetensors",
               {TO_Q_KEY: lora_layer(to_q.shape[0], to_q.shape[1], 2, 8.0)})
    write_hypernetwork(Path(app.cmd_opts.hypernetwork_dir) / "hn.pt", sizes=(model.unet.config.cross_attention_dim,))
    variants = {"plain": "a red circle", "lora": "a red circle <lora:q:1>", "hypernet": "a red circle <hypernet:hn:1>"}
    eager = {name: np.asarray(app.run_job(Job(**{**job, "prompt": prompt})).images[0])
             for name, prompt in variants.items()}
    assert not np.array_equal(eager["lora"], eager["plain"]) and not np.array_equal(eager["hypernet"], eager["plain"])

    acceleration.compile_modules(model, backend="eager")
    assert model.compiled
    for name in ("plain", "lora", "plain", "hypernet", "plain"):  # each change and each restore, in turn
        image = np.asarray(app.run_job(Job(**{**job, "prompt": variants[name]})).images[0])
        assert np.array_equal(image, eager[name]), name  # never a stale graph

    # Sizes: 64 then 96 then 64 again: the third job compiles nothing new.
    stats = torch._dynamo.utils.counters["stats"]
    app.run_job(Job(**{**job, "width": 96}))
    before = stats["unique_graphs"]
    app.run_job(Job(**job))
    assert stats["unique_graphs"] == before
    torch._dynamo.reset()
