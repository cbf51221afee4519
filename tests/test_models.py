"""Checkpoint discovery, family detection, offline loading, safe unpickling, VAE choice and model switching."""

from __future__ import annotations

import gc
import json
import os
import shutil
import weakref
from pathlib import Path

import psutil
import pytest
import torch

from modules.devices import choose_policy
from modules.models import detection
from modules.models.loader import load_model, resolve_vae
from modules.models.registry import CheckpointInfo
from modules.models.safe_load import CheckpointLoadError, load_state_dict
from modules.processing import Context, Job, JobError, process_images
from modules.state import State

CPU = choose_policy(use_cpu=["all"])


def _generate(model, opts, tmp_path, **job_fields) -> list:
    job = Job(prompt="a red circle", negative_prompt="blurry", steps=2, width=64, height=64, seed=3,
              do_not_save_samples=True, do_not_save_grid=True, **job_fields)
    return process_images(job, Context(model=model, opts=opts, state=State(), data_dir=str(tmp_path))).images


@pytest.mark.parametrize("family", detection.FAMILIES)
def test_every_family_is_detected_loaded_and_generates(family, tiny_checkpoints, tmp_path, network_guard):
    from modules.options import Options

    path = tiny_checkpoints[family]
    model = load_model(CheckpointInfo(str(path), path.name), CPU)
    assert model.family == family
    assert model.is_sdxl == family.startswith("sdxl")
    assert model.unet.config.in_channels == (9 if family.endswith("inpaint") else 4)
    assert model.scheduler_config["prediction_type"] == ("v_prediction" if family == "sd2-v" else "epsilon")
    expected_encoders = {"sdxl": 2, "sdxl-inpaint": 2}.get(family, 1)
    assert len(model.text_encoders) == expected_encoders
    images = _generate(model, Options(), tmp_path)
    assert images[0].size == (64, 64)
    assert network_guard.attempts == []


def test_loaded_weights_equal_the_file(tiny_checkpoints):
    from safetensors.torch import load_file

    path = tiny_checkpoints["sd1"]
    raw = load_file(str(path))
    model = load_model(CheckpointInfo(str(path), path.name), CPU)
    assert torch.equal(model.unet.conv_in.weight, raw["model.diffusion_model.input_blocks.0.0.weight"])
    assert torch.equal(model.vae.decoder.conv_out.weight, raw["first_stage_model.decoder.conv_out.weight"])
    token = raw["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]
    assert torch.equal(model.text_encoders[0].get_input_embeddings().weight, token)


def test_sd2_epsilon_and_v_prediction_are_told_apart_by_weights_not_names(tiny_checkpoints, tmp_path):
    v_file = tmp_path / "epsilon-model.safetensors"  # a misleading name
    shutil.copy(tiny_checkpoints["sd2-v"], v_file)
    eps_file = tmp_path / "768-v-ema.safetensors"
    shutil.copy(tiny_checkpoints["sd2"], eps_file)
    assert detection.detect_family(load_state_dict(v_file)).family == "sd2-v"
    assert detection.detect_family(load_state_dict(eps_file)).family == "sd2"


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _RunsCode(str(marker))}, evil)
    with pytest.raises(CheckpointLoadError) as error:
        load_state_dict(evil)
    assert "evil.ckpt" in str(error.value) and "refused" in str(error.value)
    assert not marker.exists()


def test_plain_ckpt_pickle_loads_through_the_restricted_unpickler(tiny_checkpoints, tmp_path):
    from safetensors.torch import load_file

    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(tiny_checkpoints["sd1"])), "global_step": 10}, ckpt)
    model = load_model(CheckpointInfo(str(ckpt), ckpt.name), CPU)
    assert model.family == "sd1"


@pytest.mark.parametrize("content, reason", [
    (b"\x00" * 4, "too short"),
    ((10**9).to_bytes(8, "little") + b"{}", "header length"),
    (b"", "too short"),
])
def test_broken_safetensors_give_a_message_naming_the_file(tmp_path, content, reason):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(content)
    with pytest.raises(CheckpointLoadError, match=f"broken.safetensors.*{reason}"):
        load_state_dict(bad)


def test_truncated_download_is_reported(tiny_checkpoints, tmp_path):
    data = tiny_checkpoints["sd1"].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointLoadError, match="cut.safetensors.*outside the file"):
        load_state_dict(cut)


def test_lora_in_checkpoint_folder_is_explained(tmp_path):
    from safetensors.torch import save_file

    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320)}, str(lora))
    with pytest.raises(CheckpointLoadError, match="style.safetensors.*LoRA"):
        load_model(CheckpointInfo(str(lora), lora.name), CPU)


def _install(app, tiny_checkpoints, *families: str) -> list[str]:
    names = []
    for family in families:
        target = Path(app.cmd_opts.ckpt_dir) / f"{family}-model.safetensors"
        shutil.copy(tiny_checkpoints[family], target)
        names.append(target.name)
    app.models.refresh()
    return names


def test_registry_titles_hashes_and_cache(app, tiny_checkpoints):
    import hashlib

    (name,) = _install(app, tiny_checkpoints, "sd1")
    info = app.models.registry.find(name)
    digest = hashlib.sha256(Path(info.filename).read_bytes()).hexdigest()
    assert info.sha256 == digest
    assert info.title == f"{name} [{digest[:10]}]"
    assert app.models.registry.find(digest[:10]) is info
    cache = json.loads(Path(app.cache_path).read_text())
    assert digest in json.dumps(cache)
    sub = Path(app.cmd_opts.ckpt_dir) / "sub"
    sub.mkdir()
    shutil.copy(tiny_checkpoints["sd2"], sub / "nested.safetensors")
    titles = [c.name for c in app.models.refresh()]
    assert "sub/nested.safetensors" in titles


def test_demo_model_is_created_when_the_folder_is_empty(app):
    titles = app.models.registry.titles()
    assert len(titles) == 1 and titles[0].startswith("demo-shapes-sd1.safetensors [")
    assert app.models.get().family == "sd1"


def test_bad_checkpoint_keeps_the_previous_model(app, tiny_checkpoints):
    (good,) = _install(app, tiny_checkpoints, "sd1")
    app.models.select(good)
    bad = Path(app.cmd_opts.ckpt_dir) / "bad.safetensors"
    bad.write_bytes(b"garbage that is not a model")
    app.models.refresh()
    with pytest.raises(CheckpointLoadError, match="bad.safetensors"):
        app.models.select("bad.safetensors")
    assert app.models.current.checkpoint.name == good
    with pytest.raises(CheckpointLoadError, match="not found. Available"):
        app.models.select("missing.safetensors")


def test_selected_checkpoint_persists_in_config(app, tiny_checkpoints):
    (name,) = _install(app, tiny_checkpoints, "sd2")
    info = app.models.select(name).checkpoint
    saved = json.loads(Path(app.config_path).read_text())
    assert saved["sd_model_checkpoint"] == info.title


def test_vae_choice_automatic_none_and_named(app, tiny_checkpoints, tmp_path):
    from modules.models.ldm_layout import save_single_file, vae_to_ldm
    from modules.models.tiny import build_tiny_components

    (name,) = _install(app, tiny_checkpoints, "sd1")
    ckpt = Path(app.cmd_opts.ckpt_dir) / name
    vae_model = build_tiny_components("sd1", seed=42)["vae"]
    vae_sd = vae_to_ldm(vae_model.state_dict(), dict(vae_model.config))
    save_single_file(vae_sd, Path(app.cmd_opts.vae_dir) / "other.safetensors")
    assert resolve_vae("Automatic", str(ckpt), [app.cmd_opts.vae_dir]) is None
    assert resolve_vae("None", str(ckpt), [app.cmd_opts.vae_dir]) is None
    named = resolve_vae("other.safetensors", str(ckpt), [app.cmd_opts.vae_dir])
    assert named.name == "other.safetensors"
    save_single_file(vae_sd, ckpt.with_name(ckpt.stem + ".vae.safetensors"))
    auto = resolve_vae("Automatic", str(ckpt), [app.cmd_opts.vae_dir])
    assert auto.name == ckpt.stem + ".vae.safetensors"
    with pytest.raises(CheckpointLoadError, match="nope.pt"):
        resolve_vae("nope.pt", str(ckpt), [app.cmd_opts.vae_dir])

    model = app.models.select(name)
    assert model.vae_info.name == ckpt.stem + ".vae.safetensors"
    assert torch.equal(model.vae.decoder.conv_out.weight, vae_model.decoder.conv_out.weight)
    app.opts.set("sd_vae", "None")
    assert app.models.current.vae_info is None
    assert not torch.equal(app.models.current.vae.decoder.conv_out.weight, vae_model.decoder.conv_out.weight)


def test_switching_checkpoints_frees_the_previous_one(app, tiny_checkpoints):
    first, second = _install(app, tiny_checkpoints, "sdxl", "sd2")
    process = psutil.Process()
    app.models.select(first)
    gc.collect()
    baseline = process.memory_info().rss
    for _ in range(5):
        app.models.select(second)
        app.models.select(first)
    gc.collect()
    after = process.memory_info().rss
    assert after <= baseline * 1.10, f"RSS grew from {baseline >> 20} MiB to {after >> 20} MiB"
    if torch.cuda.is_available():  # pragma: no cover - CI has no GPU
        assert torch.cuda.memory_allocated() < 2 * 1024**3


def test_a_model_that_ran_jobs_is_freed_before_the_next_one_is_read(app, tiny_checkpoints):
    """Jobs give the model LoRA/hypernetwork patchers and the token counter an encoder; none of them may keep it
    alive once another checkpoint is chosen, and it must be gone before the new file is read (VRAM holds one)."""
    from modules.models import loader

    first, second = _install(app, tiny_checkpoints, "sd1", "sd2")
    model = app.models.select(first)
    app.run_job(Job(prompt="a red circle <lora:missing:1>", seed=1, width=64, height=64, steps=2))
    assert app.token_count("a red circle", 20)[0] > 0
    unet = weakref.ref(model.unet)
    del model
    alive_when_read = []
    real = loader.load_state_dict
    loader.load_state_dict = lambda path, *a, **k: (alive_when_read.append(unet() is not None), real(path, *a, **k))[1]
    try:
        app.models.select(second)
    finally:
        loader.load_state_dict = real
    assert alive_when_read == [False]
    app.opts.set("sd_checkpoint_cache", 1)  # kept in RAM on purpose: then it stays, with its own weights
    kept = weakref.ref(app.models.current.unet)
    app.models.select(first)
    assert kept() is not None


def test_override_settings_choose_the_model_for_one_job(app, tiny_checkpoints):
    """A1111 reloads for a job's sd_model_checkpoint / sd_vae overrides: the whole job runs on that model, once
    loaded, and the previous one comes back afterwards unless override_settings_restore_afterwards is off."""
    from modules.models import loader

    first, second = _install(app, tiny_checkpoints, "sd1", "sd2")
    old_unet = weakref.ref(app.models.select(first).unet)
    small = {"width": 64, "height": 64, "steps": 2, "do_not_save_samples": True}
    reads, old_alive = [], []
    real = loader.load_state_dict

    def reading(path, *args, **kwargs):
        reads.append(Path(path).name)
        old_alive.append(old_unet() is not None)
        return real(path, *args, **kwargs)

    loader.load_state_dict = reading
    try:
        processed = app.run_job(Job(prompt="p", seed=1, override_settings={"sd_model_checkpoint": second}, **small))
        assert "Model: sd2-model," in processed.info
        assert app.models.current.checkpoint.name == first and app.opts.sd_model_checkpoint.startswith(first)
        assert reads == [second, first]
        assert old_alive[0] is False  # the model before the override was freed before the override's was read

        reads.clear()
        vae = Path(app.cmd_opts.vae_dir) / "other.safetensors"
        shutil.copy(tiny_checkpoints["sd1"], vae)  # a full checkpoint holds a VAE the loader can take
        processed = app.run_job(Job(prompt="p", seed=1, override_settings={"sd_vae": "other.safetensors"}, **small))
        assert "VAE: other.safetensors" in processed.info
        assert app.opts.sd_vae == "Automatic" and app.models.current.vae_info is None
        assert reads == [first, "other.safetensors", first]  # one load for the job, one to go back

        job = Job(prompt="p", seed=1, override_settings={"sd_model_checkpoint": second},
                  override_settings_restore_afterwards=False, **small)
        app.run_job(job)
        assert app.models.current.checkpoint.name == second

        with pytest.raises(JobError, match="override_settings: Checkpoint 'nope' not found"):
            app.run_job(Job(prompt="p", override_settings={"sd_model_checkpoint": "nope"}, **small))
        assert app.models.current.checkpoint.name == second
    finally:
        loader.load_state_dict = real


def test_safetensors_twin_is_preferred_and_pickles_are_marked(tmp_path):
    from modules.models.registry import CheckpointRegistry
    from modules.ui.common import checkpoint_label

    for name in ("model.ckpt", "model.safetensors", "other.ckpt"):
        (tmp_path / name).write_bytes(b"x")
    registry = CheckpointRegistry([str(tmp_path)], cache_path=None, hashing=False)
    registry.refresh()
    assert registry.find("model").name == "model.safetensors"
    assert registry.find("model.ckpt").name == "model.ckpt"
    marks = {c.name: c.is_pickle for c in registry.checkpoints}
    assert marks == {"model.safetensors": False, "model.ckpt": True, "other.ckpt": True}
    assert checkpoint_label("other.ckpt", is_pickle=True) == "other.ckpt ⚠ pickle"
    assert checkpoint_label("model.safetensors") == "model.safetensors"
