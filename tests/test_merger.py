"""The Checkpoint Merger: arithmetic, options, file safety, lazy reading, and a merged model that generates.

Real files throughout: tiny single-file checkpoints (modules/models/tiny.py) and, for the memory checks, plain
safetensors files of large tensors.
"""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from modules.merger import MergeError, MergeRequest, default_output_name, merge_checkpoints
from modules.models.registry import CheckpointRegistry
from modules.models.safe_load import read_safetensors_metadata

ROOT = Path(__file__).resolve().parents[1]
UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
VAE_KEY = "first_stage_model.decoder.conv_out.weight"
CLIP_KEY = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
SAMPLE_KEYS = (UNET_IN, VAE_KEY, CLIP_KEY, "model.diffusion_model.out.2.bias",
               "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """A, B, C: tiny SD1 models of different seeds; an SD1 inpainting model; an SD2 model (other shapes);
    a VAE in LDM layout and the same VAE in diffusers layout."""
    from modules.models.ldm_layout import save_single_file, vae_to_ldm
    from modules.models.tiny import build_tiny_components, write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("merger-inputs")
    made = {
        "a": write_tiny_checkpoint("sd1", folder / "tiny-a.safetensors", seed=1,
                                   metadata={"modelspec.title": "tiny A", "sd_merge_models": "{}"}),
        "b": write_tiny_checkpoint("sd1", folder / "tiny-b.safetensors", seed=2),
        "c": write_tiny_checkpoint("sd1", folder / "tiny-c.safetensors", seed=3),
        "inpaint": write_tiny_checkpoint("sd1-inpaint", folder / "tiny-inpaint.safetensors", seed=4),
        "sd2": write_tiny_checkpoint("sd2", folder / "tiny-sd2.safetensors", seed=5),
    }
    vae_folder = folder / "VAE"
    vae = build_tiny_components("sd1", seed=42)["vae"]
    made["vae"] = vae_folder / "other.vae.safetensors"
    save_single_file(vae_to_ldm(vae.state_dict(), dict(vae.config)), made["vae"])
    made["vae_diffusers"] = vae_folder / "diffusers-layout.safetensors"
    save_single_file(vae.state_dict(), made["vae_diffusers"])
    return made


def _merge(ckpts, tmp_path, **fields) -> tuple[Path, dict[str, torch.Tensor]]:
    fields.setdefault("primary", str(ckpts["a"]))
    path = merge_checkpoints(MergeRequest(output_dir=str(tmp_path), **fields), vae_folders=[str(ckpts["vae"].parent)])
    return Path(path), load_file(path)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- arithmetic ----------------------------------------------------------------------------------------------

def test_weighted_sum_is_a_times_one_minus_m_plus_b_times_m(ckpts, tmp_path):
    m = 0.3
    path, out = _merge(ckpts, tmp_path, secondary=str(ckpts["b"]), interp_method="Weighted sum", multiplier=m)
    a, b = load_file(ckpts["a"]), load_file(ckpts["b"])
    assert path.name == "0.7(tiny-a) + 0.3(tiny-b).safetensors" == default_output_name("Weighted sum", m, "tiny-a",
                                                                                       "tiny-b") + ".safetensors"
    assert set(out) == set(a)
    for key in a:
        assert out[key].dtype == torch.float32
        assert torch.equal(out[key], a[key] * (1 - m) + b[key] * m), key
    for key in SAMPLE_KEYS:  # independently, in numpy float32: bit for bit
        expected = a[key].numpy() * np.float32(1 - m) + b[key].numpy() * np.float32(m)
        assert np.array_equal(out[key].numpy(), expected), key
        assert not torch.equal(out[key], a[key])


def test_add_difference_is_a_plus_b_minus_c_times_m(ckpts, tmp_path):
    m = 0.55
    path, out = _merge(ckpts, tmp_path, secondary=str(ckpts["b"]), tertiary=str(ckpts["c"]),
                       interp_method="Add difference", multiplier=m)
    a, b, c = (load_file(ckpts[x]) for x in "abc")
    assert path.name == "tiny-a + 0.55(tiny-b - tiny-c).safetensors"
    for key in a:
        assert torch.equal(out[key], a[key] + (b[key] - c[key]) * m), key
    for key in SAMPLE_KEYS:
        expected = a[key].numpy() + (b[key].numpy() - c[key].numpy()) * np.float32(m)
        assert np.array_equal(out[key].numpy(), expected), key


def test_keys_only_in_a_are_kept_and_keys_only_in_b_dropped(ckpts, tmp_path):
    a = load_file(ckpts["a"])
    b = load_file(ckpts["b"])
    del a[CLIP_KEY]  # A without it, B with it
    extra = {"model.diffusion_model.extra_only_in_a": torch.arange(6.0), "alphas_cumprod": torch.rand(10)}
    save_file({**a, **extra}, tmp_path / "a2.safetensors")
    b["alphas_cumprod"] = torch.rand(10)  # not a "model" key: A1111 never merges it
    save_file(b, tmp_path / "b2.safetensors")
    out_dir = tmp_path / "out"
    _, out = _merge(ckpts, out_dir, primary=str(tmp_path / "a2.safetensors"),
                    secondary=str(tmp_path / "b2.safetensors"), multiplier=0.5)
    assert CLIP_KEY not in out
    assert torch.equal(out["model.diffusion_model.extra_only_in_a"], extra["model.diffusion_model.extra_only_in_a"])
    assert torch.equal(out["alphas_cumprod"], extra["alphas_cumprod"])
    assert torch.equal(out[VAE_KEY], a[VAE_KEY] * 0.5 + b[VAE_KEY] * 0.5)  # the VAE is merged like the rest


def test_no_interpolation_copies_a_and_fp16_makes_every_float_tensor_half(ckpts, tmp_path):
    path, out = _merge(ckpts, tmp_path, interp_method="No interpolation", save_as_half=True)
    a = load_file(ckpts["a"])
    assert path.name == "tiny-a.safetensors"
    assert set(out) == set(a)
    assert all(t.dtype == torch.float16 for t in out.values())
    assert all(torch.equal(out[k], a[k].half()) for k in a)


def test_fp16_weighted_sum(ckpts, tmp_path):
    _, out = _merge(ckpts, tmp_path, secondary=str(ckpts["b"]), multiplier=0.25, save_as_half=True)
    a, b = load_file(ckpts["a"]), load_file(ckpts["b"])
    assert all(t.dtype == torch.float16 for t in out.values())
    for key in SAMPLE_KEYS:
        assert torch.equal(out[key], (a[key] * 0.75 + b[key] * 0.25).half())


@pytest.mark.parametrize("vae_name", ["other.vae.safetensors", "diffusers-layout.safetensors"])
def test_bake_in_vae_replaces_the_first_stage_model(ckpts, tmp_path, vae_name):
    path, out = _merge(ckpts, tmp_path, secondary=str(ckpts["b"]), multiplier=0.3, bake_in_vae=vae_name)
    vae = load_file(ckpts["vae"])  # the LDM-layout file: both layouts bake in the same weights
    a, b = load_file(ckpts["a"]), load_file(ckpts["b"])
    vae_keys = [k for k in out if k.startswith("first_stage_model.")]
    assert len(vae_keys) == len(vae) > 50
    for key in vae_keys:
        assert torch.equal(out[key], vae[key.removeprefix("first_stage_model.")]), key
    assert not torch.equal(out[VAE_KEY], a[VAE_KEY] * 0.7 + b[VAE_KEY] * 0.3)
    assert torch.equal(out[UNET_IN], a[UNET_IN] * 0.7 + b[UNET_IN] * 0.3)  # the rest is merged as usual
    assert json.loads(read_safetensors_metadata(path)["sd_merge_recipe"])["bake_in_vae"] == vae_name


def test_unknown_or_unfitting_vae_is_refused(ckpts, tmp_path):
    with pytest.raises(MergeError, match="VAE 'nope.pt' not found"):
        _merge(ckpts, tmp_path, interp_method="No interpolation", bake_in_vae="nope.pt")
    save_file({"something.else": torch.zeros(3)}, tmp_path / "notavae.safetensors")
    with pytest.raises(MergeError, match="none of its weights fit"):
        _merge(ckpts, tmp_path / "out", interp_method="No interpolation",
               bake_in_vae=str(tmp_path / "notavae.safetensors"))
    assert not (tmp_path / "out").exists() or _files(tmp_path / "out") == []


def test_discard_weights_drops_matching_keys(ckpts, tmp_path):
    _, out = _merge(ckpts, tmp_path, secondary=str(ckpts["b"]), discard_weights=r"^cond_stage_model\.|attn2")
    a = load_file(ckpts["a"])
    dropped = [k for k in a if k.startswith("cond_stage_model.") or "attn2" in k]
    assert dropped and not any(k in out for k in dropped)
    assert set(out) == set(a) - set(dropped)
    with pytest.raises(MergeError, match="invalid regular expression"):
        _merge(ckpts, tmp_path, secondary=str(ckpts["b"]), discard_weights="(unclosed")


def test_inpainting_a_with_normal_b_merges_the_first_four_input_channels(ckpts, tmp_path):
    m = 0.4
    path, out = _merge(ckpts, tmp_path, primary=str(ckpts["inpaint"]), secondary=str(ckpts["b"]), multiplier=m)
    a, b = load_file(ckpts["inpaint"]), load_file(ckpts["b"])
    assert path.name == "0.6(tiny-inpaint) + 0.4(tiny-b).inpainting.safetensors"
    assert a[UNET_IN].shape[1] == 9 and out[UNET_IN].shape == a[UNET_IN].shape
    assert torch.equal(out[UNET_IN][:, :4], a[UNET_IN][:, :4] * (1 - m) + b[UNET_IN] * m)
    assert torch.equal(out[UNET_IN][:, 4:], a[UNET_IN][:, 4:])
    assert json.loads(read_safetensors_metadata(path)["sd_merge_recipe"])["is_inpainting"] is True
    with pytest.raises(MergeError, match="A must be the inpainting model"):
        _merge(ckpts, tmp_path, primary=str(ckpts["b"]), secondary=str(ckpts["inpaint"]))


def test_ckpt_input_goes_through_the_restricted_loader(ckpts, tmp_path):
    a = load_file(ckpts["a"])
    torch.save({"state_dict": a}, tmp_path / "pickled.ckpt")
    _, out = _merge(ckpts, tmp_path / "out", primary=str(tmp_path / "pickled.ckpt"), secondary=str(ckpts["b"]))
    b = load_file(ckpts["b"])
    assert all(torch.equal(out[k], a[k] * 0.7 + b[k] * 0.3) for k in SAMPLE_KEYS)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"state_dict": a, "x": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(Exception, match="refused to load"):
        _merge(ckpts, tmp_path / "out", primary=str(tmp_path / "evil.ckpt"), secondary=str(ckpts["b"]))
    assert not (tmp_path / "pwned").exists()


# --- metadata ------------------------------------------------------------------------------------------------

def test_merge_recipe_and_models_in_the_header(ckpts, tmp_path):
    import hashlib

    from modules.hashes import model_hash_legacy

    first, _ = _merge(ckpts, tmp_path, secondary=str(ckpts["b"]), multiplier=0.3, custom_name="first.safetensors",
                      metadata_json='{"author": "me", "steps": 3}')
    meta = read_safetensors_metadata(first)
    assert first.name == "first.safetensors"
    assert meta["modelspec.title"] == "tiny A" and meta["author"] == "me" and meta["steps"] == "3"
    assert meta["format"] == "pt"
    recipe = json.loads(meta["sd_merge_recipe"])
    sha = {x: hashlib.sha256(ckpts[x].read_bytes()).hexdigest() for x in "abc"}
    assert recipe == {"type": "webui", "primary_model_hash": sha["a"], "secondary_model_hash": sha["b"],
                      "tertiary_model_hash": None, "interp_method": "Weighted sum", "multiplier": 0.3,
                      "save_as_half": False, "custom_name": "first.safetensors", "config_source": 3,
                      "bake_in_vae": "None", "discard_weights": "", "is_inpainting": False,
                      "is_instruct_pix2pix": False}
    models = json.loads(meta["sd_merge_models"])
    assert models == {sha["a"]: {"name": "tiny-a.safetensors", "legacy_hash": model_hash_legacy(str(ckpts["a"])),
                                 "sd_merge_recipe": None},
                      sha["b"]: {"name": "tiny-b.safetensors", "legacy_hash": model_hash_legacy(str(ckpts["b"])),
                                 "sd_merge_recipe": None}}
    # A merge of a merge carries the ancestry along.
    second, _ = _merge(ckpts, tmp_path, primary=str(first), secondary=str(ckpts["c"]), custom_name="second")
    models = json.loads(read_safetensors_metadata(second)["sd_merge_models"])
    assert set(models) == {hashlib.sha256(first.read_bytes()).hexdigest(), sha["a"], sha["b"], sha["c"]}
    assert models[hashlib.sha256(first.read_bytes()).hexdigest()]["sd_merge_recipe"] == recipe
    plain, _ = _merge(ckpts, tmp_path, secondary=str(ckpts["b"]), custom_name="plain", save_metadata=False)
    assert read_safetensors_metadata(plain) == {}


# --- refusals and failures -----------------------------------------------------------------------------------

def test_existing_output_is_refused_and_left_unchanged(ckpts, tmp_path):
    existing = tmp_path / "taken.safetensors"
    existing.write_bytes(b"precious")
    before = existing.stat().st_mtime_ns
    with pytest.raises(MergeError, match="already exists"):
        _merge(ckpts, tmp_path, secondary=str(ckpts["b"]), custom_name="taken")
    assert existing.read_bytes() == b"precious" and existing.stat().st_mtime_ns == before
    assert _files(tmp_path) == ["taken.safetensors"]


def test_missing_models_are_refused(ckpts, tmp_path):
    with pytest.raises(MergeError, match=r"Interpolation method \(Add difference\) requires a tertiary model"):
        _merge(ckpts, tmp_path, secondary=str(ckpts["b"]), interp_method="Add difference")
    with pytest.raises(MergeError, match="requires a secondary model"):
        _merge(ckpts, tmp_path, interp_method="Weighted sum")
    with pytest.raises(MergeError, match="requires a primary model"):
        _merge(ckpts, tmp_path, primary="", interp_method="No interpolation")
    with pytest.raises(MergeError, match=r"Secondary model \(B\) 'gone.safetensors' not found"):
        _merge(ckpts, tmp_path, secondary="gone.safetensors")
    with pytest.raises(MergeError, match="only safetensors"):
        _merge(ckpts, tmp_path, interp_method="No interpolation", checkpoint_format="ckpt")
    with pytest.raises(MergeError, match="Invalid checkpoint name"):
        _merge(ckpts, tmp_path, interp_method="No interpolation", custom_name="../escape")
    assert _files(tmp_path) == []


def test_different_architectures_fail_before_anything_is_written(ckpts, tmp_path):
    with pytest.raises(MergeError, match="different architectures"):
        _merge(ckpts, tmp_path, secondary=str(ckpts["sd2"]))
    with pytest.raises(MergeError, match="B and C must have the same architecture"):
        a = load_file(ckpts["a"])
        a[UNET_IN] = torch.zeros(32, 4, 5, 5)
        save_file(a, tmp_path / "odd-c.safetensors")
        _merge(ckpts, tmp_path / "out", secondary=str(ckpts["b"]), tertiary=str(tmp_path / "odd-c.safetensors"),
               interp_method="Add difference")
    assert _files(tmp_path) == ["odd-c.safetensors"]


def test_interrupted_midway_leaves_nothing(ckpts, tmp_path):
    seen = []

    def progress(stage: str, done: int, total: int) -> None:
        seen.append((stage, done, total))
        if stage.startswith("Merging") and done == total // 2:
            raise MergeError("Interrupted")

    with pytest.raises(MergeError, match="Interrupted"):
        merge_checkpoints(MergeRequest(primary=str(ckpts["a"]), secondary=str(ckpts["b"]),
                                       output_dir=str(tmp_path)), progress=progress)
    assert seen[-1][0] == "Merging A and B" and seen[-1][1] == seen[-1][2] // 2 > 100
    assert _files(tmp_path) == []


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_failed_write_leaves_no_half_written_file(ckpts, tmp_path):
    """A real write failure halfway through the file (a file-size limit, like a full disk): no output, no temp."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = 4 * 1024 * 1024  # the output is ~20 MB
    if hard != resource.RLIM_INFINITY and hard < limit:
        pytest.skip("file size limit already below the test's")
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(MergeError, match="Could not write") as raised:
            merge_checkpoints(MergeRequest(primary=str(ckpts["a"]), secondary=str(ckpts["b"]),
                                           output_dir=str(tmp_path)))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert "large" in str(raised.value).lower() or "27" in str(raised.value)  # EFBIG: File too large (os error 27)
    assert _files(tmp_path) == []


# --- lazy reading ----------------------------------------------------------------------------------------------

BIG_SHAPE = (768, 1024)  # 3 MiB of float32: a shape nothing else in the process has
BIG_KEYS = 12


def _big_checkpoint(path: Path, seed: int) -> Path:
    generator = torch.Generator().manual_seed(seed)
    save_file({f"model.diffusion_model.w{i:02d}": torch.randn(BIG_SHAPE, generator=generator)
               for i in range(BIG_KEYS)}, path)
    return path


def _live_big_tensors() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is torch.Tensor and tuple(o.shape) == BIG_SHAPE)


def test_inputs_are_read_one_key_at_a_time(tmp_path):
    """At every key, at most one key's input tensors are alive besides the finished outputs. Reading A and B whole
    (A1111's way) keeps 2 x BIG_KEYS input tensors alive: the control below shows the probe sees exactly that."""
    a = _big_checkpoint(tmp_path / "big-a.safetensors", 1)
    b = _big_checkpoint(tmp_path / "big-b.safetensors", 2)
    c = _big_checkpoint(tmp_path / "big-c.safetensors", 3)
    gc.collect()
    baseline = _live_big_tensors()
    eager = [load_file(a), load_file(b)]
    assert _live_big_tensors() - baseline == 2 * BIG_KEYS  # the control: eager reading is visible
    del eager
    gc.collect()

    excess = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage.startswith("Merging") or stage == "Saving":
            excess.append(_live_big_tensors() - baseline - done)  # `done` outputs exist by now

    merge_checkpoints(MergeRequest(primary=str(a), secondary=str(b), tertiary=str(c), interp_method="Add difference",
                                   output_dir=str(tmp_path / "out")), progress=progress)
    assert len(excess) == BIG_KEYS + 1
    assert max(excess) <= 3, excess  # at most A, B and C of one key
    with safe_open(str(next((tmp_path / "out").iterdir())), "pt") as f:
        assert len(list(f.keys())) == BIG_KEYS


MEMORY_PROBE = """
import gc, json, sys, threading
import torch
from modules.merger import MergeRequest, merge_checkpoints

def rss_anon():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024

torch.set_num_threads(2)
primary, secondary, output = sys.argv[1:4]
gc.collect()
baseline = peak = rss_anon()
stop = threading.Event()

def sample():
    global peak
    while not stop.is_set():
        peak = max(peak, rss_anon())
        stop.wait(0.0005)

sampler = threading.Thread(target=sample)
sampler.start()
def at_each_key(stage, done, total):
    global peak
    peak = max(peak, rss_anon())
merge_checkpoints(MergeRequest(primary=primary, secondary=secondary, output_dir=output), progress=at_each_key)
stop.set()
sampler.join()
print(json.dumps({"growth": peak - baseline}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_memory_holds_one_model_not_three(tmp_path):
    """Peak anonymous memory during a weighted sum stays below 1.5x one model: the output is held once and inputs
    are not copied into memory (safetensors maps them from the page cache). Measured in a fresh process whose
    malloc returns every large block on free (a fixed mmap threshold), so RSS follows live memory exactly."""
    a = _big_checkpoint(tmp_path / "big-a.safetensors", 1)
    b = _big_checkpoint(tmp_path / "big-b.safetensors", 2)
    model_bytes = BIG_KEYS * math.prod(BIG_SHAPE) * 4
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(a), str(b), str(tmp_path / "out")], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    growth = json.loads(done.stdout.strip().splitlines()[-1])["growth"]
    assert 0.9 * model_bytes < growth < 1.5 * model_bytes, growth / model_bytes


# --- the app: registry titles, the tab, loading and generating -------------------------------------------------

def test_merged_checkpoint_loads_and_generates(app, ckpts):
    import shutil

    from modules.models.loader import load_model
    from modules.processing import Job
    from modules.ui import merger as merger_ui

    ckpt_dir = Path(app.cmd_opts.ckpt_dir)
    for name in ("a", "b"):
        shutil.copy(ckpts[name], ckpt_dir / ckpts[name].name)
    shutil.copy(ckpts["vae"], Path(app.cmd_opts.vae_dir) / ckpts["vae"].name)
    app.models.refresh()
    title_a, title_b = (app.models.registry.find(f"tiny-{x}.safetensors").title for x in "ab")

    outcome = {}

    def merge_in_ui() -> None:
        outcome["result"] = merger_ui.merge(title_a, title_b, None, "Weighted sum", 0.5, False, "", "safetensors",
                                            "other.vae.safetensors", "", True, True, True, "{}")

    expected = ckpt_dir / "0.5(tiny-a) + 0.5(tiny-b).safetensors"
    with app.queue_lock:  # a generation is running: the merge waits for it
        worker = threading.Thread(target=merge_in_ui)
        worker.start()
        worker.join(1.0)
        assert worker.is_alive() and not expected.exists()
    worker.join(60)
    status, result_html = outcome["result"]
    assert status == f"Checkpoint saved to {expected}"
    assert "Checkpoint saved to" in result_html
    info = app.models.registry.find(expected.name)  # the UI refreshed the registry
    assert info is not None and info.sha256

    again, _ = merger_ui.merge(title_a, title_b, None, "Weighted sum", 0.5, False, "", "safetensors", "None", "",
                               True, True, True, "{}")
    assert again.startswith("Failed: ") and "already exists" in again
    missing, _ = merger_ui.merge(title_a, title_b, None, "Add difference", 0.5, False, "x", "safetensors", "None",
                                 "", True, True, True, "{}")
    assert missing == "Failed: Interpolation method (Add difference) requires a tertiary model."

    model = load_model(info, app.models.policy)
    merged = load_file(expected)
    assert torch.equal(model.unet.conv_in.weight, merged[UNET_IN])
    a, b = load_file(ckpts["a"]), load_file(ckpts["b"])
    assert torch.equal(merged[UNET_IN], a[UNET_IN] * 0.5 + b[UNET_IN] * 0.5)
    del model

    app.models.select(info.title)
    processed = app.run_job(Job(prompt="a red circle", steps=2, width=64, height=64, seed=3,
                                do_not_save_samples=True, do_not_save_grid=True))
    assert processed.images[0].size == (64, 64)
    assert app.models.current.checkpoint.filename == str(expected)


def test_titles_resolve_through_the_registry(ckpts, tmp_path):
    registry = CheckpointRegistry([str(ckpts["a"].parent)], cache_path=None)
    registry.refresh()
    info_a, info_b = registry.find("tiny-a.safetensors"), registry.find("tiny-b")
    path = merge_checkpoints(MergeRequest(primary=info_a.title, secondary=info_b.shorthash, multiplier=0.3,
                                          output_dir=str(tmp_path)), registry=registry)
    assert Path(path).name == "0.7(tiny-a) + 0.3(tiny-b).safetensors"
    a, b = load_file(ckpts["a"]), load_file(ckpts["b"])
    assert torch.equal(load_file(path)[UNET_IN], a[UNET_IN] * 0.7 + b[UNET_IN] * 0.3)


def test_tab_has_a1111_elem_ids(app):
    from modules.ui import merger as merger_ui

    with gr.Blocks() as demo:
        with gr.Tabs():
            merger_ui.create_tab()
    ids = {block.elem_id for block in demo.blocks.values()}
    for elem_id in ("tab_modelmerger", "modelmerger_primary_model_name", "modelmerger_secondary_model_name",
                    "modelmerger_tertiary_model_name", "modelmerger_custom_name", "modelmerger_interp_amount",
                    "modelmerger_interp_method", "modelmerger_save_as_half", "modelmerger_bake_in_vae",
                    "modelmerger_discard_weights", "modelmerger_merge", "modelmerger_result"):
        assert elem_id in ids, elem_id
    assert "A * (1 - M) + B * M" in merger_ui.interp_description("Weighted sum")
    assert merger_ui.vae_choices()[0] == "None"
