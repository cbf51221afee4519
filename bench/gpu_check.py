"""CUDA check of the generation path with tiny random checkpoints (sd1, sd2-v, sdxl). Not part of the test suite.

Run on a machine with a CUDA GPU:  PYTHONUNBUFFERED=1 python bench/gpu_check.py
It checks, through `modules.shared` exactly as the UI drives it (no Gradio import):
  1. default flags (CUDA, float16): each family loads on cuda in float16 and generates (DPM++ 2M, batch 2) images
     that are not one colour, with infotext; "Euler a" batch 4 vs the same 4 seeds one at a time (max pixel diff);
  2. the fp16 VAE NaN fallback: the decoder's conv_in is scaled so fp16 overflows while fp32 stays finite (both
     verified directly first), then a job must log "decoding again in float32" and still give a real image, and
     the VAE stays in float32 (no second fallback in the next job);
  3. checkpoint switching memory: torch.cuda.memory_allocated() after loading sdxl, then sd2 <-> sdxl five times;
  4. --no-half (float32) and --bf16 (bfloat16): sd1 loads in that dtype and generates;
  5. fused QKV (issue 9's fast path): with default flags sd1's UNet is fused (`_webui_fused_qkv`, to_q a view of
     to_qkv) and channels_last; an image equals the same job after `acceleration.unfuse_qkv` (max pixel diff ≤
     --pixel-tol), and a LoRA on to_q/k/v changes the image the same way fused and unfused;
  6. memory modes: tiny sdxl under --medvram and --lowvram gives the normal-mode image (≤ --pixel-tol), with
     torch.cuda.max_memory_allocated() per mode; vae_tiling "Always" really tiles decode and encode (a txt2img
     and an img2img job one tile + 64 px wide: 576² with the 512 px tiles), peak VRAM tiled vs untiled;
  7. the RAM cache (sd_checkpoint_cache 1): A -> B -> A gives back the same A object without reading its file,
     the same image, with the switch times;
  8. live previews (every 5 steps, methods "Auto" and "Full") of a 20-step job: a polling thread sees
     shared.state.current_image set during the job, previews are made on the side thread on CUDA, and the job's
     images equal those of the job with previews off;
  9. --compile (torch.compile "reduce-overhead", CUDA graphs; runs last so its state leaks into nothing): compiled
     vs eager images (plain, LoRA, plain, hypernetwork, plain: never stale), compile times, a size seen before
     (64² after 96²) adds no dynamo graph, a 20-step job with "Full" previews equals the same job without.
Prints a summary and writes JSON to $OUT/gpu_check.json when OUT is set, else bench/results/gpu-check-<time>.json
(rewritten after every section, so a run cut short keeps what it checked). Every section runs even if an
earlier one failed. Exit code 0 when all passed.
`--allow-cpu` runs the same steps on the CPU (float32) to test the script itself; the CPU has no fast path, so
step 5 fuses by hand and step 9 uses `compile_modules(model, backend="eager")` (dynamo's guards and graph
breaks, no inductor kernels, no CUDA graphs: inductor takes minutes on a small CPU).
`--only 5 9` runs the set-up plus the chosen sections (1-9).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

PROMPT = "a large red circle on the left, blue background"
NEGATIVE = "blurry"
CHECKPOINTS = [  # (name, family, write_tiny_checkpoint kwargs, expected detected family)
    ("tiny-sd1", "sd1", {}, "sd1"),
    ("tiny-sd2v", "sd2", {"v_prediction": True}, "sd2-v"),
    ("tiny-sdxl", "sdxl", {}, "sdxl"),
]
EXTRA_CHECKPOINTS = [("tiny-sd1-b", "sd1", {"seed": 7})]  # a second sd1 (other weights) for the RAM cache step
TO_Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
FP16_MAX = 65504.0


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, since: int = 0) -> list[str]:
        return [f"{r.levelname}: {r.getMessage()}" for r in self.records[since:]]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def image_stats(image) -> dict:
    array = np.asarray(image.convert("RGB"))
    colours = len(np.unique(array.reshape(-1, 3), axis=0))
    return {"mean": round(float(array.mean()), 2), "std": round(float(array.std()), 2), "colours": colours,
            "min": int(array.min()), "max": int(array.max())}


def image_ok(stats: dict) -> bool:
    return stats["colours"] > 1 and stats["std"] > 0.5 and stats["max"] > 0


def pixel_diff(a_images, b_images) -> dict:
    diffs = [np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)) for a, b in zip(a_images, b_images)]
    return {"max": int(max(d.max() for d in diffs)), "mean": round(float(np.mean([d.mean() for d in diffs])), 4)}


def generated(processed) -> list:
    return processed.images[processed.index_of_first_image:]


def model_dtypes(model) -> dict:
    return {"unet": dtype_name(model.unet.dtype), "unet_device": str(model.unet.device),
            "vae": dtype_name(model.vae.dtype), "vae_device": str(model.vae.device),
            "text_encoders": [dtype_name(next(te.parameters()).dtype) for te in model.text_encoders]}


def write_lora(path: Path, unet: torch.nn.Module, alpha: float = 8.0) -> Path:
    """A kohya-format LoRA (rank 2, as tests/test_lora.py writes them) on to_q, to_k and to_v of the first
    transformer block's self- and cross-attention: under fused QKV these are views into to_qkv / to_kv."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors = {}
    for attn in ("attn1", "attn2"):
        for proj in ("to_q", "to_k", "to_v"):
            module = TO_Q.replace("attn1.to_q", f"{attn}.{proj}")
            key = "lora_unet_" + module.replace(".", "_")
            out_dim, in_dim = unet.get_submodule(module).weight.shape
            tensors[f"{key}.lora_down.weight"] = torch.randn(2, in_dim, generator=g).contiguous()
            tensors[f"{key}.lora_up.weight"] = torch.randn(out_dim, 2, generator=g).contiguous()
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
    save_file(tensors, str(path))
    return path


def write_hypernetwork(path: Path, size: int) -> Path:
    """An A1111 hypernetwork file ([1, 2, 1] relu MLPs for one context width), as tests/test_hypernetwork.py."""
    def mlp(seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        return {"linear.0.weight": torch.randn(size * 2, size, generator=g) * 0.2,
                "linear.0.bias": torch.randn(size * 2, generator=g) * 0.1,
                "linear.2.weight": torch.randn(size, size * 2, generator=g) * 0.2,
                "linear.2.bias": torch.randn(size, generator=g) * 0.1}

    torch.save({size: [mlp(1), mlp(2)], "step": 1, "name": path.stem, "layer_structure": [1, 2, 1],
                "activation_func": "relu", "is_layer_norm": False, "weight_initialization": "Normal",
                "sd_checkpoint": None, "sd_checkpoint_name": None, "activate_output": False, "use_dropout": False,
                "dropout_structure": [0, 0, 0], "last_layer_dropout": False, "optional_info": None}, path)
    return path


def write_controlnet(unet: torch.nn.Module, path: Path) -> Path:
    """A ControlNet for this UNet (encoder copy; the zero convolutions made non-zero so it acts), diffusers layout."""
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256))
    for block in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
        torch.nn.init.normal_(block.weight, std=0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.float().cpu().contiguous() for k, v in controlnet.state_dict().items()}, str(path))
    return path


def mb(n_bytes: int | None) -> float | None:
    return None if n_bytes is None else round(n_bytes / 2**20, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU too (to test this script)")
    parser.add_argument("--switches", type=int, default=5)
    parser.add_argument("--pixel-tol", type=int, default=8,
                        help="max pixel difference (0-255) accepted between runs that differ only by float16 "
                             "rounding (fused vs unfused, compiled vs eager, memory modes); default 8")
    parser.add_argument("--only", nargs="+", type=int, help="run only these sections (1-9)")
    cli = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not cli.allow_cpu:
        print("CUDA is not available (use --allow-cpu to run the steps on the CPU anyway)")
        return 2
    expect_device = "cuda" if cuda else "cpu"

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    capture = Capture()
    webui_log = logging.getLogger("webui")
    webui_log.setLevel(logging.INFO)
    webui_log.addHandler(capture)

    started = time.perf_counter()
    import diffusers
    import huggingface_hub
    import tokenizers
    import transformers

    from modules import cmd_args, shared
    from modules.models.tiny import write_tiny_checkpoint
    from modules.processing import Job

    record: dict = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(), "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "versions": {"diffusers": diffusers.__version__, "transformers": transformers.__version__,
                     "huggingface_hub": huggingface_hub.__version__, "tokenizers": tokenizers.__version__},
        "sections": {},
    }
    try:
        import torchsde
        record["versions"]["torchsde"] = torchsde.__version__
    except Exception as e:  # noqa: BLE001
        record["versions"]["torchsde"] = f"import failed: {e!r}"
    samples: list = []  # (label, image) for the contact sheet

    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    data_dir = tmp / "data"
    src = tmp / "src"
    src.mkdir()
    t0 = time.perf_counter()
    for name, family, kwargs, *_ in CHECKPOINTS + EXTRA_CHECKPOINTS:
        write_tiny_checkpoint(family, src / f"{name}.safetensors", **kwargs)
    record["checkpoint_write_s"] = round(time.perf_counter() - t0, 2)

    def init(flags: list[str]) -> None:
        if shared.models is not None:
            shared.models.unload()
        args = cmd_args.parse_args(["--data-dir", str(data_dir), *flags], environ={})
        os.makedirs(args.ckpt_dir, exist_ok=True)
        for name, *_ in CHECKPOINTS + EXTRA_CHECKPOINTS:  # in place before initialize(): no demo model is written
            target = Path(args.ckpt_dir) / f"{name}.safetensors"
            if not target.exists():
                shutil.copy(src / f"{name}.safetensors", target)
        shared.initialize(args)
        shared.models.refresh()

    def job(controlnet: bool = False, **kwargs):
        fields = dict(prompt=PROMPT, negative_prompt=NEGATIVE, width=64, height=64, steps=6, batch_size=1,
                      sampler_name="DPM++ 2M", cfg_scale=7.0)
        fields.update(kwargs)
        the_job = Job(**fields)
        if controlnet:  # one canny unit of the built-in ControlNet (issue 16), as the API attaches it
            from modules import scripts

            scripts.ensure_loaded()
            runner = scripts.scripts_txt2img
            args = runner.default_args()
            script = next(s for s in runner.alwayson_scripts if s.title() == "ControlNet")
            picture = np.zeros((fields["height"], fields["width"], 3), np.uint8)
            picture[8:-8, fields["width"] // 2:-8] = 255
            args[script.args_from] = {"enabled": True, "module": "canny", "model": "check-controlnet",
                                      "image": picture, "pixel_perfect": True}
            runner.attach(the_job, args)
        sync()
        t = time.perf_counter()
        processed = shared.run_job(the_job)
        sync()
        return processed, round(time.perf_counter() - t, 3)

    out_dir = os.environ.get("OUT")
    if out_dir:
        json_path = Path(out_dir) / "gpu_check.json"
        sheet = Path(out_dir) / "gpu_check_samples.png"
    else:
        results = ROOT / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        json_path = results / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}.json"
        sheet = None

    def write_record() -> None:
        record["total_s"] = round(time.perf_counter() - started, 1)
        record["all_ok"] = all(s.get("ok") for s in record["sections"].values())
        json_path.write_text(json.dumps(record, indent=2, default=str) + "\n")

    def section(key: str):
        def wrap(fn):
            if cli.only and int(key.split("-")[0]) not in cli.only:
                return fn
            print(f"\n=== {key} ===", flush=True)
            entry: dict = {}
            record["sections"][key] = entry
            t = time.perf_counter()
            try:
                fn(entry)
                entry.setdefault("ok", True)
            except Exception:  # noqa: BLE001 - report every failure, then go on with the next section
                entry["ok"] = False
                entry["error"] = traceback.format_exc()
                print(entry["error"], flush=True)
            entry["seconds"] = round(time.perf_counter() - t, 2)
            if entry.get("summary"):
                print(f"--- {key}: {'ok' if entry['ok'] else 'FAILED'}: {entry['summary']}", flush=True)
            write_record()
            return fn
        return wrap

    # --- 1. default flags: CUDA fp16, each family ----------------------------------------------------------------
    init([])
    record["default_policy"] = {"device": str(shared.models.policy.device),
                                "dtype": dtype_name(shared.models.policy.dtype),
                                "vae_dtype": dtype_name(shared.models.policy.vae_dtype)}
    expect_dtype = torch.float16 if cuda else torch.float32

    for name, _family, _kwargs, expect_family in CHECKPOINTS:
        @section(f"1-{name}")
        def _(entry, name=name, expect_family=expect_family):
            t = time.perf_counter()
            model = shared.models.select(name)
            sync()
            entry["load_s"] = round(time.perf_counter() - t, 3)
            entry["title"] = model.checkpoint.title
            entry["family"] = model.family
            entry["prediction_type"] = model.scheduler_config.get("prediction_type")
            entry["dtypes"] = model_dtypes(model)
            problems = []
            if model.family != expect_family:
                problems.append(f"family {model.family} != {expect_family}")
            if model.unet.dtype != expect_dtype or model.unet.device.type != expect_device:
                problems.append(f"unet is {model.unet.dtype} on {model.unet.device}")
            if model.vae.dtype != expect_dtype or model.vae.device.type != expect_device:
                problems.append(f"vae is {model.vae.dtype} on {model.vae.device}")

            processed, seconds = job(batch_size=2, seed=1000)
            images = generated(processed)
            entry["dpmpp2m_batch2_s"] = seconds
            entry["images"] = [image_stats(im) for im in images]
            entry["n_images_returned"] = len(processed.images)
            entry["infotext"] = processed.info
            entry["saved_files"] = len(processed.saved_files)
            if len(images) != 2 or not all(image_ok(s) for s in entry["images"]):
                problems.append("an image is one colour (or missing)")
            info = processed.info
            if not info or len(processed.infotexts) != len(processed.images) or "Steps: 6" not in info \
                    or "Sampler: DPM++ 2M" not in info or f"Model: {name}" not in info:
                problems.append("infotext missing or incomplete")
            samples.append((f"{name} fp16", images[0]))

            batch, seconds = job(batch_size=4, seed=2000, sampler_name="Euler a")
            entry["euler_a_batch4_s"] = seconds
            batch_images = generated(batch)
            again, _ = job(batch_size=4, seed=2000, sampler_name="Euler a")
            singles = [generated(job(batch_size=1, seed=2000 + i, sampler_name="Euler a")[0])[0] for i in range(4)]
            entry["euler_a_batch4_vs_singles"] = pixel_diff(batch_images, singles)
            entry["euler_a_batch4_repeat"] = pixel_diff(batch_images, generated(again))
            entry["euler_a_images"] = [image_stats(im) for im in batch_images]
            if not all(image_ok(s) for s in entry["euler_a_images"]):
                problems.append("an Euler a image is one colour")
            entry["problems"] = problems
            entry["ok"] = not problems

    # --- 2. fp16 VAE NaN fallback ------------------------------------------------------------------------------
    @section("2-vae-nan-fallback")
    def _(entry):
        if not cuda:  # --allow-cpu dry run: a float16 VAE on the CPU, so that the fallback can trigger at all
            shared.models.unload()
            shared.models.policy = dataclasses.replace(shared.models.policy, vae_dtype=torch.float16)
        model = shared.models.select("tiny-sd1")
        vae = model.vae
        entry["vae_dtype"] = dtype_name(vae.dtype)
        if vae.dtype == torch.float32:
            entry["note"] = "VAE is float32 here: the fallback cannot trigger"
        conv = vae.decoder.conv_in
        original = conv.weight.detach().clone()
        scaling = vae.config.scaling_factor
        latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)).to(vae.device)
        vae32 = copy.deepcopy(vae).float()
        act_max: list[float] = []
        hook = vae32.decoder.conv_in.register_forward_hook(
            lambda _m, _i, out: act_max.append(float(out.abs().max())))
        trials = []
        chosen = None
        with torch.no_grad():
            for factor in (1e2, 1e3, 3e3, 1e4, 3e4, 1e5):
                w_half = (original.float() * factor).to(vae.dtype)
                if not torch.isfinite(w_half).all():
                    trials.append({"factor": factor, "weights_finite_in_vae_dtype": False})
                    continue
                vae32.decoder.conv_in.weight.copy_(w_half.float())
                act_max.clear()
                out32 = vae32.decode(latents.float() / scaling).sample
                conv.weight.copy_(w_half)
                out16 = vae.decode(latents.to(vae.dtype) / scaling).sample
                conv.weight.copy_(original)
                trial = {"factor": factor, "conv_in_out_absmax_fp32": round(act_max[0], 1),
                         "fp32_finite": bool(torch.isfinite(out32).all()),
                         f"{dtype_name(vae.dtype)}_finite": bool(torch.isfinite(out16).all())}
                split = trial["fp32_finite"] and not bool(torch.isfinite(out16).all())
                trial["split"] = split
                trials.append(trial)
                # Margin: the sampler's latents are not randn, so overflow by a wide factor, not just barely.
                if split and chosen is None and act_max[0] > 8 * FP16_MAX:
                    chosen = factor
            if chosen is None:
                splits = [t["factor"] for t in trials if t.get("split")]
                chosen = splits[-1] if splits else None
        hook.remove()
        del vae32
        entry["trials"] = trials
        entry["factor"] = chosen
        if chosen is None:
            entry["ok"] = False
            entry["problems"] = ["no scale factor makes fp16 overflow while fp32 stays finite"]
            return
        with torch.no_grad():
            conv.weight.copy_((original.float() * chosen).to(vae.dtype))
        mark = len(capture.records)
        try:
            processed, seconds = job(batch_size=2, seed=3000)
        finally:
            with torch.no_grad():
                conv.weight.copy_(original.to(conv.weight.dtype))
        logs = capture.messages(mark)
        images = generated(processed)
        entry["job_s"] = seconds
        entry["logs"] = logs
        entry["warning_logged"] = any("decoding again in float32" in m for m in logs)
        entry["images"] = [image_stats(im) for im in images]
        entry["vae_dtype_after"] = dtype_name(vae.dtype)
        problems = []
        if not entry["warning_logged"]:
            problems.append("no 'decoding again in float32' warning")
        if not all(image_ok(s) and s["mean"] > 1 for s in entry["images"]):
            problems.append("an image is black or one colour")
        if vae.dtype != torch.float32:  # processing.Sampling.vae_decode: A1111's auto_vae_precision
            problems.append(f"VAE in {vae.dtype} after the fallback; it should stay in float32 from then on")
        mark = len(capture.records)
        _, entry["next_job_s"] = job(batch_size=2, seed=3001)
        entry["next_job_warned_again"] = any("decoding again in float32" in m for m in capture.messages(mark))
        if entry["next_job_warned_again"]:
            problems.append("the next job decoded in float16 and fell back again")
        samples.append(("vae nan fallback", images[0]))
        entry["problems"] = problems
        entry["ok"] = not problems

    # --- 3. checkpoint switching memory --------------------------------------------------------------------
    @section("3-switch-memory")
    def _(entry):
        def mem() -> dict:
            gc.collect()
            sync()
            return {"allocated": torch.cuda.memory_allocated() if cuda else 0,
                    "reserved": torch.cuda.memory_reserved() if cuda else 0,
                    "rss": psutil.Process().memory_info().rss}

        shared.models.select("tiny-sdxl")
        first = mem()
        entry["first_sdxl"] = first
        history = []
        for i in range(cli.switches):
            for name in ("tiny-sd2v", "tiny-sdxl"):
                t = time.perf_counter()
                shared.models.select(name)
                sync()
                load_s = round(time.perf_counter() - t, 3)
                after_load = mem()
                _, job_s = job(steps=2, seed=4000 + i)
                history.append({"cycle": i + 1, "model": name, "load_s": load_s, "job_s": job_s, **after_load})
        last = mem()
        entry["history"] = history
        entry["last_sdxl"] = last
        entry["max_allocated"] = torch.cuda.max_memory_allocated() if cuda else 0
        base = first["allocated"]
        entry["allocated_ratio"] = round(last["allocated"] / base, 4) if base else None
        entry["rss_growth_mb"] = round((last["rss"] - first["rss"]) / 2**20, 1)
        entry["ok"] = (not cuda) or abs(last["allocated"] - base) <= 0.10 * base

    # --- 4. precision flags ------------------------------------------------------------------------------------
    for flag, expect in (("--no-half", torch.float32), ("--bf16", torch.bfloat16 if cuda else torch.float32)):
        @section(f"4-{flag.strip('-')}")
        def _(entry, flag=flag, expect=expect):
            init([flag])
            policy = shared.models.policy
            entry["policy"] = {"device": str(policy.device), "dtype": dtype_name(policy.dtype),
                               "vae_dtype": dtype_name(policy.vae_dtype)}
            model = shared.models.select("tiny-sd1")
            entry["dtypes"] = model_dtypes(model)
            processed, seconds = job(batch_size=2, seed=5000)
            images = generated(processed)
            entry["job_s"] = seconds
            entry["images"] = [image_stats(im) for im in images]
            entry["infotext"] = processed.info
            problems = []
            if model.unet.dtype != expect or model.vae.dtype != expect or model.unet.device.type != expect_device:
                problems.append(f"unet {model.unet.dtype} / vae {model.vae.dtype} on {model.unet.device}, "
                                f"expected {expect}")
            if len(images) != 2 or not all(image_ok(s) for s in entry["images"]):
                problems.append("an image is one colour (or missing)")
            if not processed.info or "Steps: 6" not in processed.info:
                problems.append("infotext missing")
            samples.append((f"sd1 {flag}", images[0]))
            entry["problems"] = problems
            entry["ok"] = not problems

    # --- 5..9: issue 9's fast path --------------------------------------------------------------------------------
    from modules import memory
    from modules.models import acceleration

    tol = cli.pixel_tol
    lora_prompt = PROMPT + " <lora:gpucheck-q:1>"
    hypernet_prompt = PROMPT + " <hypernet:gpucheck-hn:1>"

    def cuda_mem() -> dict:
        if not cuda:
            return {"allocated_mb": None, "max_allocated_mb": None}
        sync()
        return {"allocated_mb": mb(torch.cuda.memory_allocated()),
                "max_allocated_mb": mb(torch.cuda.max_memory_allocated())}

    def reset_peak() -> None:
        gc.collect()
        if cuda:
            sync()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def timed_select(name: str):
        sync()
        t = time.perf_counter()
        model = shared.models.select(name)
        sync()
        return model, round(time.perf_counter() - t, 3)

    def networks_for(model) -> None:
        """The test LoRA (q/k/v) and hypernetwork (for the cross-attention width) in the app's folders."""
        write_lora(Path(shared.cmd_opts.lora_dir) / "gpucheck-q.safetensors", model.unet)
        write_hypernetwork(Path(shared.cmd_opts.hypernetwork_dir) / "gpucheck-hn.pt",
                           model.unet.config.cross_attention_dim)

    def saved_opts(*names: str) -> dict:
        return {name: getattr(shared.opts, name) for name in names}

    def restore_opts(values: dict) -> None:
        for name, value in values.items():
            shared.opts.set(name, value)
        shared.save_settings()  # the next init() reads config.json, which a model load saved with our values

    def close(diff: dict) -> bool:
        return diff["max"] <= tol

    # 5. fused QKV on the device, equal to unfused, LoRA through the fused weight
    @section("5-fused-qkv")
    def _(entry):
        init([])
        model = shared.models.select("tiny-sd1")
        unet = model.unet
        problems = []
        entry["fused_by_default"] = bool(getattr(unet, "_webui_fused_qkv", False))
        conv = next(p for p in unet.parameters() if p.ndim == 4)
        entry["channels_last"] = conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        if cuda:
            if not entry["fused_by_default"]:
                problems.append("UNet not fused with default flags on CUDA")
            if not entry["channels_last"]:
                problems.append("UNet not channels_last on CUDA")
        else:
            entry["note"] = "CPU: no fast path by default; fused by hand with acceleration.fuse_qkv"
            entry["fused_by_hand"] = acceleration.fuse_qkv(unet)
        attn = unet.get_submodule(TO_Q.rsplit(".", 1)[0])
        entry["processor"] = type(attn.processor).__name__
        entry["to_q_view_of_to_qkv"] = bool(
            getattr(attn, "fused_projections", False) and hasattr(attn, "to_qkv")
            and attn.to_q.weight.untyped_storage().data_ptr() == attn.to_qkv.weight.untyped_storage().data_ptr())
        if not entry["to_q_view_of_to_qkv"]:
            problems.append("to_q is not a view of the fused to_qkv weight")
        networks_for(model)
        base = dict(width=64, height=64, steps=6, sampler_name="Euler", seed=6000, batch_size=2)
        plain_f, entry["fused_job_s"] = job(**base)
        lora_f, _ = job(**base, prompt=lora_prompt)
        plain_f2, _ = job(**base)  # the LoRA taken off again: the fused weight is restored
        acceleration.unfuse_qkv(unet)
        entry["unfused"] = not getattr(unet, "_webui_fused_qkv", False) and not hasattr(attn, "to_qkv")
        entry["processor_unfused"] = type(attn.processor).__name__
        plain_u, entry["unfused_job_s"] = job(**base)
        lora_u, _ = job(**base, prompt=lora_prompt)
        d = {"fused_vs_unfused": pixel_diff(generated(plain_f), generated(plain_u)),
             "lora_fused_vs_unfused": pixel_diff(generated(lora_f), generated(lora_u)),
             "lora_effect_fused": pixel_diff(generated(lora_f), generated(plain_f)),
             "lora_effect_unfused": pixel_diff(generated(lora_u), generated(plain_u)),
             "fused_after_lora_restore": pixel_diff(generated(plain_f2), generated(plain_f))}
        entry["diffs"] = d
        if not entry["unfused"]:
            problems.append("unfuse_qkv left the UNet fused")
        for key in ("fused_vs_unfused", "lora_fused_vs_unfused", "fused_after_lora_restore"):
            if not close(d[key]):
                problems.append(f"{key}: max pixel diff {d[key]['max']} > {tol}")
        for key in ("lora_effect_fused", "lora_effect_unfused"):
            if d[key]["max"] <= 3 * tol:
                problems.append(f"{key}: the LoRA barely changes the image (max {d[key]['max']})")
        if not all(image_ok(image_stats(im)) for im in generated(plain_f) + generated(lora_f)):
            problems.append("an image is one colour")
        samples.append(("sd1 fused lora", generated(lora_f)[0]))
        shared.models.unload()
        entry["problems"] = problems
        entry["ok"] = not problems
        entry["summary"] = (f"fused={entry['fused_by_default']} channels_last={entry['channels_last']} "
                            f"view={entry['to_q_view_of_to_qkv']} fused-vs-unfused={d['fused_vs_unfused']} "
                            f"lora fused-vs-unfused={d['lora_fused_vs_unfused']} lora effect "
                            f"{d['lora_effect_fused']['max']}/{d['lora_effect_unfused']['max']} "
                            f"restore={d['fused_after_lora_restore']['max']}")

    # 6. memory modes: same image, peak VRAM each; tiled VAE "Always"
    @section("6-memory-modes")
    def _(entry):
        problems = []
        base = dict(width=64, height=64, steps=6, sampler_name="Euler", seed=7000, batch_size=1)
        reference = None
        modes: dict = {}
        entry["modes"] = modes
        for mode, flags in (("normal", []), ("medvram", ["--medvram"]), ("lowvram", ["--lowvram"])):
            info: dict = {"flags": flags}
            modes[mode] = info
            try:
                init(flags)
                reset_peak()
                model, info["load_s"] = timed_select("tiny-sdxl")
                info["memory_mode"] = memory.mode_of(model)
                info["after_load"] = cuda_mem()
                images = []
                for _ in range(2):  # the second job: components already where the first left them
                    processed, seconds = job(**base)
                    info.setdefault("job_s", []).append(seconds)
                    images.append(generated(processed))
                info["peak"] = cuda_mem()
                info["max_allocated_mb"] = info["peak"]["max_allocated_mb"]
                info["image"] = image_stats(images[0][0])
                info["repeat"] = pixel_diff(images[1], images[0])
                if reference is None:
                    reference = images[0]
                else:
                    info["vs_normal"] = pixel_diff(images[0], reference)
                    if not close(info["vs_normal"]):
                        problems.append(f"{mode}: max pixel diff {info['vs_normal']['max']} to normal > {tol}")
                if info["memory_mode"] != mode:
                    problems.append(f"{flags}: memory mode {info['memory_mode']}")
                if not image_ok(info["image"]) or not close(info["repeat"]):
                    problems.append(f"{mode}: one-colour image or the repeat differs {info['repeat']}")
                samples.append((f"sdxl {mode}", images[0][0]))
            except Exception:  # noqa: BLE001 - the other modes still run
                info["error"] = traceback.format_exc()
                print(info["error"], flush=True)
                problems.append(f"{mode}: {info['error'].strip().splitlines()[-1]}")
        peaks = {m: i.get("max_allocated_mb") for m, i in modes.items()}

        tiled: dict = {}
        entry["tiled_vae"] = tiled
        before = saved_opts("vae_tiling")
        try:
            init([])
            model = shared.models.select("tiny-sdxl")
            vae = model.vae
            tiled["tile_px"] = memory.tile_size_for(vae)
            calls = {"decode": 0, "encode": 0}
            for attr, kind in (("tiled_decode", "decode"), ("_tiled_encode", "encode"), ("tiled_encode", "encode")):
                real = getattr(vae, attr, None)
                if real is not None:
                    def counting(*a, _real=real, _kind=kind, **k):
                        calls[_kind] += 1
                        return _real(*a, **k)
                    setattr(vae, attr, counting)
            side = tiled["tile_px"] + 64  # larger than one tile: "Always" must tile
            tiled["size"] = side
            big = dict(width=side, height=side, steps=2, sampler_name="Euler", seed=7100, batch_size=1)
            from PIL import Image
            init_image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8))
            shared.opts.set("vae_tiling", "Never")
            reset_peak()
            untiled, tiled["untiled_txt2img_s"] = job(**big)
            untiled_i2i, _ = job(**big, init_images=[init_image], denoising_strength=0.6)
            tiled["untiled_peak"] = cuda_mem()
            tiled["calls_never"] = dict(calls)
            shared.opts.set("vae_tiling", "Always")
            reset_peak()
            tiled_txt, tiled["txt2img_s"] = job(**big)
            tiled_i2i, tiled["img2img_s"] = job(**big, init_images=[init_image], denoising_strength=0.6)
            tiled["peak"] = cuda_mem()
            tiled["calls_always"] = {k: v - tiled["calls_never"][k] for k, v in calls.items()}
            tiled["txt2img_vs_untiled"] = pixel_diff(generated(tiled_txt), generated(untiled))
            tiled["img2img_vs_untiled"] = pixel_diff(generated(tiled_i2i), generated(untiled_i2i))
            tiled["images"] = [image_stats(im) for im in generated(tiled_txt) + generated(tiled_i2i)]
            if tiled["calls_never"] != {"decode": 0, "encode": 0}:
                problems.append(f"tiling 'Never' still tiled: {tiled['calls_never']}")
            if not tiled["calls_always"]["decode"] or not tiled["calls_always"]["encode"]:
                problems.append(f"tiling 'Always' did not tile: {tiled['calls_always']}")
            if not all(image_ok(s) for s in tiled["images"]):
                problems.append("a tiled image is one colour")
            samples.append(("sdxl tiled vae", generated(tiled_txt)[0]))
        except Exception:  # noqa: BLE001
            tiled["error"] = traceback.format_exc()
            print(tiled["error"], flush=True)
            problems.append(f"tiled VAE: {tiled['error'].strip().splitlines()[-1]}")
        finally:
            restore_opts(before)
        shared.models.unload()
        entry["problems"] = problems
        entry["ok"] = not problems
        entry["summary"] = (f"max_allocated MB {peaks}; vs normal: "
                            + ", ".join(f"{m}={i.get('vs_normal')}" for m, i in modes.items() if m != "normal")
                            + f"; tiled {tiled.get('size')}² calls {tiled.get('calls_always')} tiled-vs-untiled "
                            f"{tiled.get('txt2img_vs_untiled')} peak MB tiled "
                            f"{tiled.get('peak', {}).get('max_allocated_mb')} untiled "
                            f"{tiled.get('untiled_peak', {}).get('max_allocated_mb')}")

    # 7. RAM cache: A -> B -> A
    @section("7-ram-cache")
    def _(entry):
        from modules.models import loader

        init([])
        before = saved_opts("sd_checkpoint_cache")
        reads: list[str] = []
        real = loader.load_state_dict
        loader.load_state_dict = lambda path, *a, **k: (reads.append(Path(path).name), real(path, *a, **k))[1]
        problems = []
        try:
            shared.opts.set("sd_checkpoint_cache", 1)
            base = dict(width=64, height=64, steps=6, sampler_name="Euler", seed=7500, batch_size=1)
            a, entry["load_a_s"] = timed_select("tiny-sd1")
            entry["mem_a"] = cuda_mem()
            image_a, _ = job(**base)
            b, entry["load_b_s"] = timed_select("tiny-sd1-b")
            entry["mem_b"] = cuda_mem()
            a2, entry["switch_back_a_s"] = timed_select("tiny-sd1")
            entry["mem_a_again"] = cuda_mem()
            entry["same_object"] = a2 is a
            entry["a_device"] = str(a2.unet.device)
            entry["a_fused_again"] = bool(getattr(a2.unet, "_webui_fused_qkv", False))
            image_a2, _ = job(**base)
            b2, entry["switch_back_b_s"] = timed_select("tiny-sd1-b")
            entry["b_same_object"] = b2 is b
            entry["reads"] = list(reads)
            entry["image_after_switch_back"] = pixel_diff(generated(image_a2), generated(image_a))
            if not entry["same_object"] or not entry["b_same_object"]:
                problems.append("a checkpoint switched back to is not the cached object")
            if reads != ["tiny-sd1.safetensors", "tiny-sd1-b.safetensors"]:
                problems.append(f"files read: {reads} (a cached model was read again)")
            if entry["a_device"].split(":")[0] != expect_device:
                problems.append(f"A came back on {entry['a_device']}")
            if cuda and not entry["a_fused_again"]:
                problems.append("A came back without fused QKV")
            if not close(entry["image_after_switch_back"]):
                problems.append(f"image after switching back differs: {entry['image_after_switch_back']}")
            if cuda and entry["mem_a_again"]["allocated_mb"] > 1.2 * entry["mem_a"]["allocated_mb"] + 1:
                problems.append("VRAM after switching back holds more than one model")
        finally:
            loader.load_state_dict = real
            restore_opts(before)
            shared.models.unload()
        entry["problems"] = problems
        entry["ok"] = not problems
        entry["summary"] = (f"cold A {entry.get('load_a_s')}s, cold B {entry.get('load_b_s')}s, switch back to A "
                            f"{entry.get('switch_back_a_s')}s (same object {entry.get('same_object')}), to B "
                            f"{entry.get('switch_back_b_s')}s; reads {entry.get('reads')}; image "
                            f"{entry.get('image_after_switch_back')}; VRAM MB A {entry['mem_a']['allocated_mb']} "
                            f"B {entry['mem_b']['allocated_mb']} A again {entry['mem_a_again']['allocated_mb']}")

    def poll_current_image(run):
        """Run `run()` while a thread records each new shared.state.current_image; (result, sightings)."""
        seen: list[dict] = []
        stop = threading.Event()
        t0 = time.perf_counter()

        def poll() -> None:
            last = None
            while not stop.is_set():
                state = shared.state
                image = state.current_image
                if image is not None and image is not last:
                    seen.append({"t": round(time.perf_counter() - t0, 4), "preview_step": state.current_image_step,
                                 "sampling_step": state.sampling_step, "size": list(image.size)})
                    last = image
                time.sleep(0.0005)

        thread = threading.Thread(target=poll, name="gpu-check-poll", daemon=True)
        thread.start()
        try:
            return run(), seen
        finally:
            stop.set()
            thread.join()

    class PreviewSpy:
        """Wraps shared._make_preview: which thread made each preview, for which step."""

        def __enter__(self):
            self.calls: list[dict] = []
            self.real = shared._make_preview

            def make(model, latent, method, taesd_dir, step):
                self.calls.append({"thread": threading.current_thread().name, "step": step, "method": method})
                return self.real(model, latent, method, taesd_dir, step)

            shared._make_preview = make
            return self

        def __exit__(self, *exc) -> None:
            shared._make_preview = self.real

    def preview_ok(calls: list[dict], seen: list[dict], problems: list[str], label: str) -> None:
        if not seen:
            problems.append(f"{label}: shared.state.current_image never set during the job")
        if cuda and any(not c["thread"].startswith("preview") for c in calls):
            problems.append(f"{label}: a preview was made on thread {[c['thread'] for c in calls]}, not the side "
                            "thread")

    # 8. live previews on the side thread
    @section("8-live-previews")
    def _(entry):
        init([])
        before = saved_opts("live_previews_enable", "show_progress_every_n_steps", "show_progress_type")
        problems = []
        try:
            model = shared.models.select("tiny-sd1")
            from modules.previews import preview_method
            base = dict(width=64, height=64, steps=20, sampler_name="Euler a", seed=8000, batch_size=2)
            shared.opts.set("live_previews_enable", False)
            off, entry["off_job_s"] = job(**base)
            shared.opts.set("live_previews_enable", True)
            shared.opts.set("show_progress_every_n_steps", 5)
            runs = {}
            for method in ("Auto", "Full"):
                shared.opts.set("show_progress_type", method)
                with PreviewSpy() as spy:
                    (processed, seconds), seen = poll_current_image(lambda: job(**base))
                info = {"resolved_method": preview_method(model, method), "job_s": seconds, "made": spy.calls,
                        "seen": seen, "vs_previews_off": pixel_diff(generated(processed), generated(off))}
                runs[method] = info
                preview_ok(spy.calls, seen, problems, method)
                if not close(info["vs_previews_off"]):
                    problems.append(f"{method}: images differ from the job without previews {info['vs_previews_off']}")
            entry["runs"] = runs
        finally:
            restore_opts(before)
            shared.models.unload()
        entry["problems"] = problems
        entry["ok"] = not problems
        entry["summary"] = "; ".join(
            f"{m} ({r['resolved_method']}): made at steps {[c['step'] for c in r['made']]} on "
            f"{sorted({c['thread'] for c in r['made']})}, seen {len(r['seen'])}x at sampling steps "
            f"{[s['sampling_step'] for s in r['seen']]}, job {r['job_s']}s (off {entry['off_job_s']}s), "
            f"vs off {r['vs_previews_off']}" for m, r in entry.get("runs", {}).items())

    # 9. --compile: compiled == eager, never stale, no recompiles for a known size (last: compile state stays)
    @section("9-compile")
    def _(entry):
        import torch._dynamo

        torch._dynamo.reset()
        stats = torch._dynamo.utils.counters["stats"]
        init([])
        before = saved_opts("live_previews_enable", "show_progress_every_n_steps", "show_progress_type")
        problems = []
        try:
            shared.opts.set("live_previews_enable", False)
            model = shared.models.select("tiny-sd1")
            networks_for(model)
            write_controlnet(model.unet, Path(shared.cmd_opts.controlnet_dir) / "check-controlnet.safetensors")
            base = dict(width=64, height=64, steps=6, sampler_name="Euler", seed=9000, batch_size=1)
            variants = {"plain": PROMPT, "lora": lora_prompt, "hypernet": hypernet_prompt}
            eager, eager_s = {}, {}
            for name, prompt in variants.items():
                processed, eager_s[name] = job(**base, prompt=prompt)
                eager[name] = generated(processed)
            processed, eager_s["plain96"] = job(**{**base, "width": 96})
            eager["plain96"] = generated(processed)
            processed, eager_s["controlnet"] = job(**base, controlnet=True)
            eager["controlnet"] = generated(processed)
            entry["eager_job_s"] = eager_s
            for name in ("lora", "hypernet", "controlnet"):
                effect = pixel_diff(eager[name], eager["plain"])
                entry[f"eager_{name}_effect"] = effect
                if effect["max"] <= 3 * tol:
                    problems.append(f"the {name} barely changes the eager image ({effect}): the check is void")

            if cuda:
                init(["--compile"])
                shared.opts.set("live_previews_enable", False)
                model = shared.models.select("tiny-sd1")
                entry["backend"] = f"inductor, mode {acceleration.COMPILE_MODE} (CUDA graphs), through --compile"
            else:
                acceleration.compile_modules(model, backend="eager")
                entry["backend"] = ("eager (CPU: dynamo's tracing and guards only, no inductor kernels or CUDA "
                                    "graphs; inductor takes minutes here)")
            entry["compiled"] = acceleration.is_compiled(model)
            entry["unet_compiled_call"] = getattr(model.unet, "_compiled_call_impl", None) is not None
            if not entry["compiled"] or not entry["unet_compiled_call"]:
                problems.append("the model is not compiled")

            runs = []
            entry["runs"] = runs

            def compiled_job(label: str, reference: list | None, **kwargs) -> dict:
                graphs = stats["unique_graphs"]
                processed, seconds = job(**{**base, **kwargs})
                run = {"run": label, "job_s": seconds, "new_graphs": stats["unique_graphs"] - graphs}
                if reference is not None:
                    run["vs_eager"] = pixel_diff(generated(processed), reference)
                    if not close(run["vs_eager"]):
                        problems.append(f"{label}: compiled image differs from eager {run['vs_eager']}")
                run["images"] = generated(processed)
                runs.append(run)
                print(f"  compiled {label}: {seconds}s, {run['new_graphs']} new graph(s), "
                      f"vs eager {run.get('vs_eager')}", flush=True)
                return run

            first = compiled_job("plain 64² (first: compiles)", eager["plain"])
            entry["compile_s_first"] = round(first["job_s"] - eager_s["plain"], 2)
            for name in ("lora", "plain", "hypernet", "plain"):
                compiled_job(name, eager[name], prompt=variants[name])
            # ControlNet residuals are extra UNet inputs: the compiled UNet must take them, and drop them again
            compiled_job("controlnet", eager["controlnet"], controlnet=True)
            compiled_job("plain after controlnet", eager["plain"])
            size96 = compiled_job("plain 96x64 (new size: compiles)", eager["plain96"], width=96)
            entry["compile_s_new_size"] = round(size96["job_s"] - eager_s["plain96"], 2)
            again = compiled_job("plain 64² again (seen size)", eager["plain"])
            if again["new_graphs"]:
                problems.append(f"a size seen before compiled {again['new_graphs']} new graph(s)")
            warm = [compiled_job("plain 64² warm", eager["plain"])["job_s"] for _ in range(2)]
            entry["warm_compiled_job_s"] = min(warm)
            entry["total_unique_graphs"] = stats["unique_graphs"]
            entry["graph_breaks"] = sum(torch._dynamo.utils.counters["graph_break"].values())

            # previews while compiled: the side thread decodes with the eager decoder while graphs replay
            previews: dict = {}
            entry["previews_compiled"] = previews
            long = dict(steps=20, seed=9100)
            off = compiled_job("plain 20 steps, previews off", None, **long)
            shared.opts.set("live_previews_enable", True)
            shared.opts.set("show_progress_every_n_steps", 5)
            shared.opts.set("show_progress_type", "Full")
            with PreviewSpy() as spy:
                on, seen = poll_current_image(lambda: compiled_job("plain 20 steps, Full previews every 5", None,
                                                                   **long))
            previews.update(made=spy.calls, seen=seen, vs_previews_off=pixel_diff(on["images"], off["images"]),
                            new_graphs=on["new_graphs"])
            preview_ok(spy.calls, seen, problems, "compiled")
            if not close(previews["vs_previews_off"]):
                problems.append(f"compiled: previews change the images {previews['vs_previews_off']}")
            samples.append(("sd1 compiled", runs[0]["images"][0]))
            for run in runs:
                run.pop("images", None)
            try:
                entry["dynamo_compile_times"] = torch._dynamo.utils.compile_times(repr="str")[:3000]
            except Exception as e:  # noqa: BLE001 - informative only
                entry["dynamo_compile_times"] = repr(e)
        finally:
            for run in entry.get("runs", []):
                run.pop("images", None)
            restore_opts(before)
            shared.models.unload()
            torch._dynamo.reset()
        entry["problems"] = problems
        entry["ok"] = not problems
        entry["summary"] = (f"backend {entry.get('backend')}; compile {entry.get('compile_s_first')}s first, "
                            f"{entry.get('compile_s_new_size')}s new size; runs "
                            + ", ".join(f"{r['run'].split(' (')[0]}: {r['vs_eager']['max']}px +{r['new_graphs']}g"
                                        for r in entry.get("runs", []) if "vs_eager" in r)
                            + f"; warm {entry.get('warm_compiled_job_s')}s vs eager "
                            f"{entry.get('eager_job_s', {}).get('plain')}s; previews made "
                            f"{[c['step'] for c in entry.get('previews_compiled', {}).get('made', [])]} seen "
                            f"{len(entry.get('previews_compiled', {}).get('seen', []))}x, vs off "
                            f"{entry.get('previews_compiled', {}).get('vs_previews_off')}")

    if shared.models is not None:
        shared.models.unload()
    record["gradio_imported"] = "gradio" in sys.modules
    record["warnings_logged"] = [m for m in capture.messages() if m.startswith(("WARNING", "ERROR"))]
    write_record()
    print_summary(record)
    print(f"written {json_path}")
    if sheet and samples:
        from PIL import Image
        canvas = Image.new("RGB", (64 * len(samples), 64))
        for i, (_label, image) in enumerate(samples):
            canvas.paste(image.convert("RGB").resize((64, 64)), (64 * i, 0))
        canvas.save(sheet)
        print(f"written {sheet}: " + ", ".join(label for label, _ in samples))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if record["all_ok"] else 1


def print_summary(record: dict) -> None:
    print("\n" + "=" * 100)
    print(f"GPU check: {record['gpu'] or 'CPU'} | torch {record['torch']} (CUDA {record['cuda']}) | "
          + " ".join(f"{k} {v}" for k, v in record["versions"].items()))
    print(f"default policy: {record.get('default_policy')}")
    print(f"{'section':<22} {'ok':<5} details")
    for key, s in record["sections"].items():
        if key.startswith("1-"):
            d = s.get("dtypes", {})
            detail = (f"family={s.get('family')} pred={s.get('prediction_type')} unet={d.get('unet')}@"
                      f"{d.get('unet_device')} vae={d.get('vae')} load={s.get('load_s')}s "
                      f"dpm2m_b2={s.get('dpmpp2m_batch2_s')}s eulerA_b4={s.get('euler_a_batch4_s')}s "
                      f"b4-vs-singles={s.get('euler_a_batch4_vs_singles')} repeat={s.get('euler_a_batch4_repeat')}")
        elif key.startswith("2-"):
            detail = (f"factor={s.get('factor')} warning_logged={s.get('warning_logged')} "
                      f"images={s.get('images')} vae_after={s.get('vae_dtype_after')}")
        elif key.startswith("3-"):
            first, last = s.get("first_sdxl", {}), s.get("last_sdxl", {})
            detail = (f"allocated first={first.get('allocated')} last={last.get('allocated')} "
                      f"ratio={s.get('allocated_ratio')} reserved last={last.get('reserved')} "
                      f"max_alloc={s.get('max_allocated')} rss first={first.get('rss', 0) / 2**20:.0f}MB "
                      f"last={last.get('rss', 0) / 2**20:.0f}MB growth={s.get('rss_growth_mb')}MB")
        elif key.startswith("4-"):
            d = s.get("dtypes", {})
            detail = f"unet={d.get('unet')} vae={d.get('vae')} job={s.get('job_s')}s images={s.get('images')}"
        else:
            detail = f"{s.get('seconds')}s: {s.get('summary', '')}"
        print(f"{key:<22} {str(s.get('ok')):<5} {detail}")
        for problem in s.get("problems", []):
            print(f"{'':<28}PROBLEM: {problem}")
        if s.get("error"):
            print(f"{'':<28}ERROR: {s['error'].strip().splitlines()[-1]}")
    print(f"gradio imported: {record['gradio_imported']} | total {record['total_s']} s | "
          f"ALL OK: {record['all_ok']}")
    print("=" * 100)


if __name__ == "__main__":
    sys.exit(main())
