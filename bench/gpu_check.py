"""CUDA check of the generation path with tiny random checkpoints (sd1, sd2-v, sdxl). Not part of the test suite.

Run on a machine with a CUDA GPU:  PYTHONUNBUFFERED=1 python bench/gpu_check.py
It checks, through `modules.shared` exactly as the UI drives it (no Gradio import):
  1. default flags (CUDA, float16): each family loads on cuda in float16 and generates (DPM++ 2M, batch 2) images
     that are not one colour, with infotext; "Euler a" batch 4 vs the same 4 seeds one at a time (max pixel diff);
  2. the fp16 VAE NaN fallback: the decoder's conv_in is scaled so fp16 overflows while fp32 stays finite (both
     verified directly first), then a job must log "decoding again in float32" and still give a real image;
  3. checkpoint switching memory: torch.cuda.memory_allocated() after loading sdxl, then sd2 <-> sdxl five times;
  4. --no-half (float32) and --bf16 (bfloat16): sd1 loads in that dtype and generates.
Prints a summary and writes JSON to $OUT/gpu_check.json when OUT is set, else bench/results/gpu-check-<time>.json.
`--allow-cpu` runs the same steps on the CPU (float32) to test the script itself.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU too (to test this script)")
    parser.add_argument("--switches", type=int, default=5)
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
    for name, family, kwargs, _ in CHECKPOINTS:
        write_tiny_checkpoint(family, src / f"{name}.safetensors", **kwargs)
    record["checkpoint_write_s"] = round(time.perf_counter() - t0, 2)

    def init(flags: list[str]) -> None:
        if shared.models is not None:
            shared.models.unload()
        args = cmd_args.parse_args(["--data-dir", str(data_dir), *flags], environ={})
        os.makedirs(args.ckpt_dir, exist_ok=True)
        for name, *_ in CHECKPOINTS:  # in place before initialize(), so no demo model is written
            target = Path(args.ckpt_dir) / f"{name}.safetensors"
            if not target.exists():
                shutil.copy(src / f"{name}.safetensors", target)
        shared.initialize(args)
        shared.models.refresh()

    def job(**kwargs):
        fields = dict(prompt=PROMPT, negative_prompt=NEGATIVE, width=64, height=64, steps=6, batch_size=1,
                      sampler_name="DPM++ 2M", cfg_scale=7.0)
        fields.update(kwargs)
        sync()
        t = time.perf_counter()
        processed = shared.run_job(Job(**fields))
        sync()
        return processed, round(time.perf_counter() - t, 3)

    def section(key: str):
        def wrap(fn):
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
        if vae.dtype != model.policy.vae_dtype:
            problems.append(f"VAE left in {vae.dtype} after the fallback")
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

    if shared.models is not None:
        shared.models.unload()
    record["gradio_imported"] = "gradio" in sys.modules
    record["warnings_logged"] = [m for m in capture.messages() if m.startswith(("WARNING", "ERROR"))]
    record["total_s"] = round(time.perf_counter() - started, 1)
    record["all_ok"] = all(s.get("ok") for s in record["sections"].values())

    print_summary(record)
    out_dir = os.environ.get("OUT")
    if out_dir:
        path = Path(out_dir) / "gpu_check.json"
        sheet = Path(out_dir) / "gpu_check_samples.png"
    else:
        results = ROOT / "bench" / "results"
        results.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = results / f"gpu-check-{stamp}.json"
        sheet = None
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"written {path}")
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
        else:
            d = s.get("dtypes", {})
            detail = f"unet={d.get('unet')} vae={d.get('vae')} job={s.get('job_s')}s images={s.get('images')}"
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
