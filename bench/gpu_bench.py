"""GPU benchmark of issue 9: full-size SD1.5 and SDXL (random weights) through the app's real path, eager and
compiled, against diffusers' plain pipelines, with peak VRAM of the memory modes. Not part of the test suite.

On the GPU machine, ONE command (default time budget 480 s in all, checkpoints included; ~9 GB written to --work):

    BENCH_COMMIT=<short sha> PYTHONUNBUFFERED=1 python bench/gpu_bench.py

It prints progress lines, then a table, and writes bench/results/gpu-<time>.json plus $OUT/gpu_bench.json (and
each case's log under $OUT/gpu_bench_logs/) when OUT is set; the JSON is rewritten after every case, so a run
that is cut short still leaves what it measured.

What it does:
  1. builds full-size SD1.5 / SDXL models from configs/sd1, configs/sdxl with random weights (on the GPU, fp16) and
     saves them as original-layout single-file .safetensors under --work (reused when already there);
  2. runs every case in a fresh subprocess of this script (`--case NAME`), set up like bench/bench_cpu.py:
     `shared.initialize(cmd_args.parse_args([...]))` + `shared.run_job(Job(...))`; data dir
     <work>/data-<family>-<mode>, so the compiled cases share one inductor cache (wiped at the start of a run that
     includes the cold compile case, so the first compiled job is really cold; `compile-warm` is the same case
     again in a new process with that cache);
  3. per case: one warm-up job, then --repeats timed jobs: s/image (median / batch), it/s (sampling steps x images
     / sampling seconds, measured between the first and last progress event of each pass), warm-up seconds,
     model load seconds, peak VRAM of the timed jobs (max_memory_allocated), the fp16 VAE NaN fallback.
     Memory modes (medvram/lowvram) run one job at 10 steps: their figure is the peak VRAM.
     `sd15-switch:ram-cache`: the SD1.5 checkpoint under two names (hard links), sd_checkpoint_cache 1, A -> B -> A;
     its figure is the switch-back seconds (issue 9: ≤ 2 s), with the same switch without the cache for comparison.
Cases run in priority order (the issue's targets first) and a case that no longer fits in --budget is skipped.

Options: --cases (names or fnmatch patterns, e.g. 'sd15-*' or '*:compile'), --repeats, --work, --quick (1/4 of the
steps), --budget SECONDS (0: none), --list. `--cpu`: the CPU figure (embedded demo model, 64x64, 20 steps, and the
diffusers baseline); `--cpu --tiny`: every GPU case with the tiny sd1/sdxl models at 1/4 of the size, to exercise
the script itself on a CPU machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
NEGATIVE = "blurry, low quality"
FALLBACK_MESSAGE = "decoding again in float32"
CFG = 7.0
GB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Case:
    workload: str            # e.g. "sd15-txt2img"; the diffusers baseline of a family has the same workload
    mode: str                # eager | compile | compile-warm | medvram | lowvram | diffusers
    family: str              # sd15 | sdxl | demo
    width: int
    height: int
    steps: int
    sampler: str
    scheduler: str = "Automatic"
    batch: int = 1
    hires: bool = False
    img2img: bool = False
    single_job: bool = False  # memory modes: one job, no warm-up; the figure is the peak VRAM
    switch: bool = False     # checkpoint switch-back with the RAM cache (mode ram-cache); the figure is seconds
    controlnet: bool = False  # one ControlNet unit (canny, a full-size random SD1.5 ControlNet): issue 16's overhead
    cfg: float = CFG         # 1.0: a few-step model's setting (no negative-prompt pass, in both programs)
    min_s: float = 20.0      # do not start with less time than this left in the budget

    @property
    def name(self) -> str:
        return f"{self.workload}:{self.mode}"

    @property
    def like_diffusers(self) -> bool:
        """Same work per image as the family's diffusers baseline (txt2img at its size and steps)."""
        return self.workload.endswith(("-txt2img", "-txt2img-b4")) and not self.single_job

    def describe(self) -> str:
        size = f"{self.width}x{self.height}"
        if self.hires:
            size += f"->{self.width * 2}x{self.height * 2}"
        if self.switch:
            return f"A->B->A, sd_checkpoint_cache 1, {self.width}² job"
        what = "img2img 0.6" if self.img2img else "hires" if self.hires else "txt2img"
        what += " +ControlNet" if self.controlnet else ""
        what += f" CFG {self.cfg:g}" if self.cfg != CFG else ""
        return f"{what} {size} b{self.batch} {self.steps}st"


MODE_FLAGS = {"eager": [], "diffusers": [], "compile": ["--compile"], "compile-warm": ["--compile"],
              "medvram": ["--medvram"], "lowvram": ["--lowvram"], "ram-cache": []}
MEMORY_STEPS = 10


def gpu_cases(tiny: bool, quick: bool) -> list[Case]:
    """The GPU cases in run (priority) order; --tiny shrinks sizes by 4 for CPU runs of the script itself."""
    div = 4 if tiny else 1
    sd, xl = 512 // div, 1024 // div

    def steps(n: int) -> int:
        return max(2, n // 4) if quick else n

    def sd15(workload: str, mode: str, **kw) -> Case:
        base = dict(family="sd15", width=sd, height=sd, steps=steps(20), sampler="Euler a")
        return Case(workload, mode, **{**base, **kw})

    def sdxl(mode: str, **kw) -> Case:
        base = dict(family="sdxl", width=xl, height=xl, steps=steps(30), sampler="DPM++ 2M", scheduler="Karras",
                    min_s=35.0)
        return Case("sdxl-txt2img", mode, **{**base, **kw})

    def lightning(mode: str, **kw) -> Case:  # issue 17: an SDXL-Lightning-style 4-step model (same architecture)
        base = dict(family="sdxl", width=xl, height=xl, steps=4, sampler="Euler", scheduler="SGM Uniform", cfg=1.0,
                    min_s=35.0)
        return Case("sdxl-lightning4-txt2img", mode, **{**base, **kw})

    memory = dict(steps=steps(MEMORY_STEPS), single_job=True)
    return [
        lightning("diffusers"),
        lightning("eager"),
        lightning("compile", min_s=90.0),
        sd15("sd15-txt2img", "diffusers"),
        sd15("sd15-txt2img", "eager"),
        sd15("sd15-switch", "ram-cache", switch=True, steps=steps(20), min_s=30.0),  # cheap: ~20 s
        sd15("sd15-txt2img", "compile", min_s=60.0),
        sd15("sd15-txt2img", "compile-warm"),
        sdxl("diffusers"),
        sdxl("eager"),
        sdxl("lowvram", **memory),
        sdxl("medvram", **memory),
        sdxl("compile", min_s=90.0),
        sd15("sd15-txt2img-b4", "eager", batch=4),
        sd15("sd15-hires", "eager", hires=True),
        sd15("sd15-img2img", "eager", img2img=True),
        sd15("sd15-txt2img-b4", "compile", batch=4, min_s=40.0),
        sd15("sd15-img2img", "compile", img2img=True, min_s=40.0),
        sd15("sd15-hires", "compile", hires=True, min_s=60.0),
        sd15("sd15-controlnet", "eager", controlnet=True, min_s=30.0),
        sd15("sd15-controlnet", "compile", controlnet=True, min_s=60.0),
        sd15("sd15-controlnet", "medvram", controlnet=True, **memory),
        sd15("sd15-controlnet", "lowvram", controlnet=True, **memory),
    ]


def cpu_cases(quick: bool) -> list[Case]:
    steps = 5 if quick else 20
    return [Case("demo-txt2img", "eager", "demo", 64, 64, steps, "Euler a", min_s=0.0),
            Case("demo-txt2img", "diffusers", "demo", 64, 64, steps, "Euler a", min_s=0.0)]


def all_cases(args: argparse.Namespace) -> list[Case]:
    if args.cpu and not args.tiny:
        return cpu_cases(args.quick)
    return gpu_cases(args.tiny, args.quick)


def select_cases(cases: list[Case], patterns: list[str] | None) -> list[Case]:
    if not patterns:
        return cases
    chosen = [c for c in cases if any(fnmatch.fnmatchcase(c.name, p) or c.workload == p or c.mode == p
                                      for p in patterns)]
    if not chosen:
        raise SystemExit(f"no case matches {patterns}; cases: {', '.join(c.name for c in cases)}")
    return chosen


# --- paths ---------------------------------------------------------------------------------------------------

def family_tag(family: str, tiny: bool) -> str:
    return f"tiny-{family}" if tiny and family != "demo" else family


def checkpoint_dir(work: Path, family: str, tiny: bool) -> Path:
    return work / f"ckpt-{family_tag(family, tiny)}"


def checkpoint_path(work: Path, family: str, tiny: bool) -> Path:
    return checkpoint_dir(work, family, tiny) / f"bench-{family_tag(family, tiny)}.safetensors"


def switch_checkpoints(work: Path, case: Case, tiny: bool) -> tuple[Path, list[str]]:
    """The switch case's own checkpoint folder: the family's checkpoint under two names (hard links, else copies),
    so the loader sees two checkpoints. Same bytes: the figure is the switch back, which must not read the file."""
    folder = work / f"ckpt-{family_tag(case.family, tiny)}-switch"
    folder.mkdir(parents=True, exist_ok=True)
    source = checkpoint_path(work, case.family, tiny)
    names = []
    for tag in ("a", "b"):
        target = folder / f"switch-{tag}-{source.name}"
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            target.unlink(missing_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        names.append(target.name)
    return folder, names


def data_dir(work: Path, case: Case, tiny: bool) -> Path:
    mode = "compile" if case.mode == "compile-warm" else case.mode
    return work / f"data-{family_tag(case.family, tiny)}-{mode}"


# --- checkpoint building (runs in its own subprocess: `--build FAMILY`) ----------------------------------------------

LDM_FAMILY = {"sd15": "sd1", "sdxl": "sdxl"}


def build_checkpoint(family: str, path: Path, tiny: bool) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from modules.models.architecture import family_config
    from modules.models.ldm_layout import save_single_file, to_single_file
    from modules.models.tiny import MODEL_COMPONENTS, write_tiny_checkpoint

    ldm_family = LDM_FAMILY[family]
    tmp = path.with_name("." + path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if tiny:
        write_tiny_checkpoint(ldm_family, tmp, dtype=torch.float16)
    else:
        cuda = torch.cuda.is_available()
        device = torch.device("cuda" if cuda else "cpu")
        components: dict[str, torch.nn.Module] = {}
        torch.manual_seed(0)
        for component in MODEL_COMPONENTS:
            if not (ROOT / "configs" / ldm_family / component / "config.json").is_file():
                continue
            config = family_config(ldm_family, component)
            # Default init (kaiming-uniform convs/linears, CLIP's normal(0.02)) shrinks activations from layer to
            # layer, so fp16 stays finite; built on the GPU it takes seconds. Cast to fp16 right away to bound
            # memory (SDXL's UNet alone is 10 GB in fp32).
            with device:
                if component == "unet":
                    model = UNet2DConditionModel.from_config(config)
                elif component == "vae":
                    model = AutoencoderKL.from_config(config)
                else:
                    projection = config.get("architectures", [""])[0] == "CLIPTextModelWithProjection"
                    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
                    model = cls(CLIPTextConfig.from_dict(config))
            components[component] = torch.nn.Module.to(model, dtype=torch.float16).eval()
            params = sum(p.numel() for p in model.parameters())
            print(f"  built {component}: {params / 1e6:.0f}M parameters ({time.perf_counter() - start:.1f} s)",
                  flush=True)
        with torch.no_grad():
            state_dict = {k: v.detach().to("cpu") for k, v in to_single_file(components, ldm_family).items()}
        del components
        save_single_file(state_dict, tmp, dtype=torch.float16)
    tmp.replace(path)
    print(f"  wrote {path} ({path.stat().st_size / GB:.2f} GB) in {time.perf_counter() - start:.1f} s", flush=True)


# --- one case (runs in its own subprocess: `--case NAME`) -------------------------------------------------------------

class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.fallbacks = 0
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not break the benchmark
            return
        if FALLBACK_MESSAGE in message:
            self.fallbacks += 1
        if record.levelno >= logging.WARNING and len(self.warnings) < 20:
            self.warnings.append(f"{record.levelname}: {message[:300]}")


class StepTimer:
    """Sampling seconds from progress events: per pass (a new pass starts when the step count goes back or the
    total changes), the time between its first and last event, extrapolated to all its steps. It synchronises the
    device only at step 1 and at the last step of a pass, so the loop keeps running ahead of the GPU otherwise."""

    def __init__(self, sync) -> None:
        self.sync = sync
        self.passes: list[dict] = []

    def reset(self) -> None:
        self.passes = []

    def event(self, step: int, total: int) -> None:
        current = self.passes[-1] if self.passes else None
        if current is None or step <= current["last"] or total != current["total"]:
            current = {"total": total, "first": step, "last": step, "t_first": None, "t_last": None}
            self.passes.append(current)
        if step in (1, total):
            self.sync()
        now = time.perf_counter()
        if current["t_first"] is None:
            current["t_first"] = now
        current["last"], current["t_last"] = step, now

    def summary(self) -> tuple[int, float | None]:
        """(sampling steps of the job, sampling seconds or None when the events do not allow an estimate)."""
        steps = sum(p["total"] for p in self.passes)
        seconds = 0.0
        for p in self.passes:
            if p["last"] <= p["first"]:
                return steps, None
            seconds += (p["t_last"] - p["t_first"]) * p["total"] / (p["last"] - p["first"])
        return steps, (seconds if self.passes else None)


def init_image(width: int, height: int):
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(0).integers(0, 64, (height, width, 3))
    array = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    return Image.fromarray(((array * 3 + noise) // 4).astype("uint8"), "RGB")


def plain_components(model) -> list[str]:
    """Undo what the app may have done to its modules that plain diffusers would not (fused QKV, non-default
    attention processors, channels_last), so the baseline is diffusers' own eager speed. Returns what changed."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    changes = []
    for name in ("unet", "vae"):
        module = getattr(model, name)
        module = getattr(module, "_orig_mod", module)
        try:
            if getattr(module, "original_attn_processors", None) is not None:
                module.unfuse_qkv_projections()
                changes.append(f"{name}: unfused QKV")
            kinds = {type(p).__name__ for p in module.attn_processors.values()}
            if kinds - {"AttnProcessor2_0"}:
                module.set_attn_processor(AttnProcessor2_0())
                changes.append(f"{name}: attention processors {sorted(kinds)} -> AttnProcessor2_0")
            weight = next((p for p in module.parameters() if p.ndim == 4), None)
            if weight is not None and not weight.is_contiguous():
                module.to(memory_format=torch.contiguous_format)
                changes.append(f"{name}: channels_last -> contiguous")
        except Exception as e:  # noqa: BLE001 - report, keep the app's module as it is
            changes.append(f"{name}: could not make plain ({type(e).__name__}: {e})")
    return changes


def diffusers_pipeline(model, case: Case):
    import torch
    from diffusers import (
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    unet = getattr(model.unet, "_orig_mod", model.unet)
    if case.family == "sdxl":
        scheduler = DPMSolverMultistepScheduler.from_config(model.scheduler_config, use_karras_sigmas=True)
        if case.sampler == "Euler":  # SDXL-Lightning's own recipe: Euler, "trailing" timesteps
            scheduler = EulerDiscreteScheduler.from_config(model.scheduler_config, timestep_spacing="trailing")
        pipe = StableDiffusionXLPipeline(vae=model.vae, text_encoder=model.text_encoders[0],
                                         text_encoder_2=model.text_encoders[1], tokenizer=model.tokenizers[0],
                                         tokenizer_2=model.tokenizers[1], unet=unet, scheduler=scheduler,
                                         add_watermarker=False)
    else:
        scheduler = EulerAncestralDiscreteScheduler.from_config(model.scheduler_config)
        pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoders[0],
                                       tokenizer=model.tokenizers[0], unet=unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    device = model.policy.device

    def run(seed: int, timer: StepTimer) -> int:
        def on_step(pipeline, i, t, callback_kwargs):
            timer.event(i + 1, int(getattr(pipeline, "num_timesteps", case.steps) or case.steps))
            return callback_kwargs

        generator = torch.Generator(device).manual_seed(seed)
        out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=case.steps, guidance_scale=case.cfg,
                   width=case.width, height=case.height, num_images_per_prompt=case.batch, generator=generator,
                   output_type="pil", callback_on_step_end=on_step)
        return len(out.images)

    return run


CONTROLNET_NAME = "bench-controlnet-sd15"


def ensure_controlnet(model, folder: Path) -> None:
    """A full-size SD1.5 ControlNet with random weights (the UNet's encoder copy, as ControlNet training starts),
    in diffusers layout, made once per work dir."""
    path = folder / f"{CONTROLNET_NAME}.safetensors"
    if path.is_file():
        return
    import torch
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    controlnet = ControlNetModel.from_unet(model.unet)
    for block in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
        torch.nn.init.normal_(block.weight, std=0.01)  # zero convs would make the residuals vanish
    save_file({k: v.to(torch.float16).contiguous() for k, v in controlnet.state_dict().items()}, str(path))


def attach_controlnet(job, case: Case) -> None:
    """One canny unit on the job, as the API's alwayson_scripts would give it."""
    from modules import scripts

    scripts.ensure_loaded()
    runner = scripts.scripts_txt2img
    args = runner.default_args()
    script = next(s for s in runner.alwayson_scripts if s.title() == "ControlNet")
    args[script.args_from] = {"enabled": True, "module": "canny", "model": CONTROLNET_NAME,
                              "image": init_image(case.width, case.height), "pixel_perfect": True}
    runner.attach(job, args)


def app_runner(case: Case):
    from modules import shared
    from modules.processing import Job

    extra: dict = {}
    if case.hires:
        extra = dict(enable_hr=True, hr_scale=2.0, hr_upscaler="Latent", hr_second_pass_steps=0,
                     denoising_strength=0.7)
    if case.img2img:
        extra = dict(init_images=[init_image(case.width, case.height)], denoising_strength=0.6)

    def run(seed: int, timer: StepTimer) -> int:
        job = Job(prompt=PROMPT, negative_prompt=NEGATIVE, seed=seed, sampler_name=case.sampler,
                  scheduler=case.scheduler, batch_size=case.batch, steps=case.steps, cfg_scale=case.cfg,
                  width=case.width, height=case.height, do_not_save_samples=True, do_not_save_grid=True, **extra)
        if case.controlnet:
            attach_controlnet(job, case)
        return len(shared.run_job(job).images)

    return run


def switch_case(case: Case, names: list[str], sync, run, cpu: bool) -> dict:
    """Checkpoint switching with the RAM cache (issue 9: switching back to an SD1.5 model takes ≤ 2 s).

    A is loaded (and used for a job); with sd_checkpoint_cache 1: select(B) (read from disk, A goes to RAM),
    select(A) (the figure: from RAM, must be the same object and read no file), a job on A, select(B) (from RAM).
    Then with the cache at 0 for comparison: B and A read from disk again."""
    import torch

    from modules import shared
    from modules.models import loader

    cuda = torch.cuda.is_available() and not cpu
    reads: list[str] = []
    real = loader.load_state_dict
    loader.load_state_dict = lambda path, *a, **k: (reads.append(Path(path).name), real(path, *a, **k))[1]

    def vram_gb() -> float | None:
        return round(torch.cuda.memory_allocated() / GB, 3) if cuda else None

    def select(name: str) -> tuple[object, float]:
        sync()
        t0 = time.perf_counter()
        model = shared.models.select(name)
        sync()
        return model, round(time.perf_counter() - t0, 3)

    def job(seed: int) -> float:
        t0 = time.perf_counter()
        run(seed, StepTimer(sync))
        sync()
        return round(time.perf_counter() - t0, 3)

    a_name, b_name = names
    out: dict = {"checkpoints": names}
    try:
        shared.opts.set("sd_checkpoint_cache", 1)
        a = shared.models.get()
        out["vram_a_gb"] = vram_gb()
        out["job_a_s"] = job(0)  # warm-up (kernels, prompt cache) on A
        out["job_a_again_s"] = job(1)
        _, out["load_b_disk_s"] = select(b_name)
        out["vram_b_gb"] = vram_gb()
        a2, out["switch_back_s"] = select(a_name)
        out["vram_a_back_gb"] = vram_gb()
        out["same_object"] = a2 is a
        out["job_after_switch_back_s"] = job(1)
        _, out["switch_to_b_cached_s"] = select(b_name)
        reads_cached = list(reads)
        shared.opts.set("sd_checkpoint_cache", 0)  # for comparison: switching without the cache
        select(a_name)  # still in RAM from the last switch; B is dropped now
        _, out["load_b_nocache_s"] = select(b_name)
        _, out["switch_back_nocache_s"] = select(a_name)
        out["reads"] = list(reads)
        out["reads_with_cache"] = reads_cached
        problems = []
        if not out["same_object"]:
            problems.append("A came back as a new object (not from the RAM cache)")
        if reads_cached.count(a_name) > 1:
            problems.append("A was read from disk again although cached")
        out["problems"] = problems
    finally:
        loader.load_state_dict = real
    out.update(status="ok", seconds_per_image=out["job_after_switch_back_s"] / case.batch,
               job_seconds=[out["job_a_again_s"], out["job_after_switch_back_s"]],
               peak_vram_gb=round(torch.cuda.max_memory_allocated() / GB, 3) if cuda else None,
               warmup_s=out["job_a_s"])
    print(f"switch back A (RAM cache): {out['switch_back_s']} s (same object {out['same_object']}); "
          f"B from disk {out['load_b_disk_s']} s; without cache: back to A {out['switch_back_nocache_s']} s; "
          f"job after switching back {out['job_after_switch_back_s']} s; reads {out['reads']}", flush=True)
    return out


def run_case(args: argparse.Namespace) -> int:
    cases = {c.name: c for c in all_cases(args)}
    case = cases[args.case]
    work = Path(args.work)
    result: dict = {"case": case.name, "status": "running", "pid": os.getpid()}
    result_path = Path(args.result)

    def save() -> None:
        result_path.write_text(json.dumps(result, indent=1, default=str))

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    capture = LogCapture()
    logging.getLogger("webui").addHandler(capture)
    import torch

    cuda = torch.cuda.is_available() and not args.cpu

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def reset_peak() -> None:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_gb() -> float | None:
        return round(torch.cuda.max_memory_allocated() / GB, 3) if cuda else None

    if args.threads:
        torch.set_num_threads(args.threads)
    result["device"] = torch.cuda.get_device_name(0) if cuda else (platform.processor() or platform.machine())
    result["torch_cuda"] = torch.version.cuda
    result["torch_threads"] = torch.get_num_threads()
    ckpt_dir = checkpoint_dir(work, case.family, args.tiny)
    switch_names: list[str] = []
    if case.switch:
        ckpt_dir, switch_names = switch_checkpoints(work, case, args.tiny)
    flags = ["--data-dir", str(data_dir(work, case, args.tiny)), "--ckpt-dir", str(ckpt_dir), "--no-hashing",
             *MODE_FLAGS[case.mode]]
    if args.cpu:
        flags += ["--use-cpu", "all"]
    if case.controlnet:
        flags += ["--controlnet-dir", str(work / "controlnet")]
    result["app_flags"] = flags
    timer = StepTimer(sync)
    try:
        from modules import cmd_args, shared

        start = time.perf_counter()
        shared.initialize(cmd_args.parse_args(flags, environ={}))
        if case.switch:
            shared.opts.set("sd_model_checkpoint", switch_names[0])
        model = shared.models.get()
        sync()
        result["load_s"] = round(time.perf_counter() - start, 3)
        result["model"] = {"title": model.checkpoint.title, "family": model.family,
                           "dtype": str(model.policy.dtype).removeprefix("torch."),
                           "vae_dtype": str(model.policy.vae_dtype).removeprefix("torch."),
                           "device": str(model.policy.device)}
        result["options"] = {k: getattr(shared.opts, k, None) for k in
                             ("live_previews_enable", "show_progress_every_n_steps", "show_progress_type")}
        if cuda:
            result["vram_after_load_gb"] = round(torch.cuda.memory_allocated() / GB, 3)
        if case.controlnet:
            ensure_controlnet(model, work / "controlnet")
        if case.switch:
            result.update(switch_case(case, switch_names, sync, app_runner(case), args.tiny and args.cpu))
            save()
            return 0
        if case.mode == "diffusers":
            result["baseline_changes"] = plain_components(model)
            run = diffusers_pipeline(model, case)
        else:
            shared.state.listeners.append(lambda event: timer.event(event.step, event.total_steps))
            run = app_runner(case)
        save()

        def one_job(seed: int) -> tuple[float, int]:
            timer.reset()
            t0 = time.perf_counter()
            n_images = run(seed, timer)
            sync()
            return time.perf_counter() - t0, n_images

        repeats = 1 if case.single_job else args.repeats
        if not case.single_job:
            reset_peak()
            warm, _ = one_job(0)
            result["warmup_s"] = round(warm, 3)
            result["warmup_peak_vram_gb"] = peak_gb()
            print(f"warm-up job {warm:.3f} s", flush=True)
            save()
        reset_peak()
        times, sampling, steps_run = [], [], 0
        for repeat in range(repeats):
            seconds, n_images = one_job(repeat + 1)
            steps_run, sampled = timer.summary()
            times.append(seconds)
            if sampled:
                sampling.append(sampled)
            result["images_returned"] = n_images
            print(f"job {repeat + 1}/{repeats}: {seconds:.3f} s, sampling {sampled or float('nan'):.3f} s "
                  f"({steps_run} steps)", flush=True)
        if case.single_job:
            result["warmup_s"] = round(times[0], 3)
        median = statistics.median(times)
        result.update(
            status="ok",
            seconds_per_image=round(median / case.batch, 4),
            job_seconds=[round(t, 4) for t in times],
            sampling_steps=steps_run,
            sampling_seconds=round(statistics.median(sampling), 4) if sampling else None,
            peak_vram_gb=peak_gb(),
            peak_vram_reserved_gb=round(torch.cuda.max_memory_reserved() / GB, 3) if cuda else None,
        )
        if sampling:
            result["it_per_s"] = round(steps_run * case.batch / statistics.median(sampling), 2)
            result["it_per_s_from"] = "sampling"
        else:
            result["it_per_s"] = round(steps_run * case.batch / median, 2) if steps_run else None
            result["it_per_s_from"] = "end-to-end"
        code = 0
    except BaseException as e:  # noqa: BLE001 - every failure (OOM included) is a result
        oom = type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()
        result.update(status="failed", error=f"{'OOM: ' if oom else ''}{type(e).__name__}: {str(e)[:400]}",
                      traceback=traceback.format_exc()[-3000:])
        if cuda:
            result["peak_vram_gb"] = peak_gb()
        traceback.print_exc()
        code = 1
    result["vae_fp32_fallbacks"] = capture.fallbacks
    result["log_warnings"] = capture.warnings
    save()
    return code


# --- the driver ------------------------------------------------------------------------------------------------

def commit_id() -> str:
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def versions() -> dict:
    """Package versions without importing them (the driver never touches torch; the cases report CUDA's)."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("torch", "diffusers", "transformers", "accelerate", "safetensors"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def fmt(value, spec: str) -> str:
    """`format(value, spec)`, or "-" padded to the spec's width."""
    if value is None:
        width = spec.split(".")[0].rstrip("fdx") if spec[:1].isdigit() else ""
        return "-".rjust(int(width)) if width.isdigit() else "-"
    return format(value, spec)


def ratio(result: dict, case: Case, results: dict[str, dict]) -> float | None:
    base = results.get(f"{case.family}-txt2img:diffusers", {})
    if case.mode == "diffusers" or not case.like_diffusers or result.get("status") != "ok" \
            or base.get("status") != "ok":
        return None
    return round(base["seconds_per_image"] / result["seconds_per_image"], 2)


def table(cases: list[Case], results: dict[str, dict]) -> str:
    header = (f"{'case':<16} {'mode':<12} {'work':<30} {'s/image':>8} {'it/s':>7} {'warm-up':>8} {'load':>6} "
              f"{'peak GB':>8} {'vs diff':>7}  note")
    lines = [header, "-" * len(header)]
    for case in cases:
        r = results.get(case.name, {"status": "not run"})
        x = ratio(r, case, results)
        note = "" if r.get("status") == "ok" else r.get("status", "")
        if r.get("error"):
            note += f": {r['error'][:90]}"
        if r.get("vae_fp32_fallbacks"):
            note += f" VAE fp32 fallback x{r['vae_fp32_fallbacks']}"
        plain = results.get(f"{case.family}-txt2img:{case.mode}", {})
        if case.controlnet and r.get("status") == "ok" and plain.get("status") == "ok":
            note += f" {r['seconds_per_image'] / plain['seconds_per_image']:.2f}x the time without ControlNet"
        if case.single_job and r.get("status") == "ok":
            note += " (one job: peak VRAM figure)"
        if case.switch and r.get("status") == "ok":
            note += (f" switch back {r.get('switch_back_s')} s from RAM (same object {r.get('same_object')}), "
                     f"{r.get('switch_back_nocache_s')} s without cache; s/image = a job after it")
            note += "".join(f" PROBLEM: {p}" for p in r.get("problems", []))
        lines.append(f"{case.workload:<16} {case.mode:<12} {case.describe():<30} "
                     f"{fmt(r.get('seconds_per_image'), '8.3f')} {fmt(r.get('it_per_s'), '7.1f')} "
                     f"{fmt(r.get('warmup_s'), '8.2f')} {fmt(r.get('load_s'), '6.1f')} "
                     f"{fmt(r.get('peak_vram_gb'), '8.2f')} {(fmt(x, '6.2f') + 'x') if x else '      -'}  "
                     f"{note.strip()}")
    return "\n".join(lines)


TARGETS = [  # (label, case names (best of), field, limit, lower is better)
    ("SD1.5 512² 20 st b1 ≤ 0.20 s/image", ["sd15-txt2img:eager", "sd15-txt2img:compile"], "seconds_per_image",
     0.20, True),
    ("SD1.5 ≥ 4x diffusers", ["sd15-txt2img:eager", "sd15-txt2img:compile"], "ratio", 4.0, False),
    ("SDXL 1024² 30 st ≤ 1.2 s/image", ["sdxl-txt2img:eager", "sdxl-txt2img:compile"], "seconds_per_image", 1.2,
     True),
    ("SD1.5 switch back ≤ 2 s (RAM cache)", ["sd15-switch:ram-cache"], "switch_back_s", 2.0, True),
    ("compile warm-up ≤ 60 s (SD1.5 cold cache)", ["sd15-txt2img:compile"], "warmup_s", 60.0, True),
    ("compile warm-up ≤ 5 s (warm cache)", ["sd15-txt2img:compile-warm"], "warmup_s", 5.0, True),
    ("SDXL --lowvram ≤ 4 GB peak", ["sdxl-txt2img:lowvram"], "peak_vram_gb", 4.0, True),
    ("SDXL --medvram ≤ 8 GB peak", ["sdxl-txt2img:medvram"], "peak_vram_gb", 8.0, True),
]


def check_targets(cases: list[Case], results: dict[str, dict]) -> list[dict]:
    by_name = {c.name: c for c in cases}
    checks = []
    for label, names, field, limit, lower in TARGETS:
        values = []
        for name in names:
            r = results.get(name, {})
            if name in by_name and r.get("status") == "ok":
                value = ratio(r, by_name[name], results) if field == "ratio" else r.get(field)
                if value is not None:
                    values.append((value, name))
        if not values:
            continue
        value, name = (min if lower else max)(values)
        checks.append({"target": label, "case": name, "value": value,
                       "met": value <= limit if lower else value >= limit})
    return checks


def run_subprocess(cmd: list[str], log_path: Path, timeout: float | None,
                   threads: int | None = None) -> tuple[int | None, bool]:
    """(exit code, timed out). The child gets its own process group, killed whole on timeout."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return proc.returncode, True
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


def log_tail(path: Path, lines: int = 6) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def drive(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    deadline = started + args.budget if args.budget > 0 else None
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out_env = os.environ.get("OUT")
    log_dir = Path(out_env) / "gpu_bench_logs" if out_env else work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    defined = all_cases(args)
    cases = select_cases(defined, args.cases)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    prefix = "cpu" if args.cpu and not args.tiny else "gpu-tiny-cpu" if args.cpu else "gpu"
    json_paths = [results_dir / f"{prefix}-{stamp}.json"] + ([Path(out_env) / "gpu_bench.json"] if out_env else [])
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "commit": commit_id(), "versions": versions(),
              "host": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
              "device": None, "options": {k: v for k, v in vars(args).items() if k not in ("case", "result", "build")},
              "prompt": PROMPT, "negative_prompt": NEGATIVE, "cfg_scale": CFG, "builds": {}, "cases": [],
              "targets": []}
    results: dict[str, dict] = {}

    def elapsed() -> str:
        return f"[{time.perf_counter() - started:6.1f}s]"

    def write_json() -> None:
        record["cases"] = [{"name": c.name, "workload": c.workload, "mode": c.mode, "family": c.family,
                            "work": c.describe(), **dataclasses.asdict(c), **results.get(c.name, {})}
                           for c in cases]
        record["targets"] = check_targets(cases, results)
        record["wall_s"] = round(time.perf_counter() - started, 1)
        for path in json_paths:
            path.write_text(json.dumps(record, indent=2, default=str) + "\n")

    print(f"{elapsed()} gpu_bench: {len(cases)} case(s), work dir {work}, budget "
          f"{args.budget or 'none'} s, repeats {args.repeats}{', quick' if args.quick else ''}"
          f"{', cpu' if args.cpu else ''}{', tiny' if args.tiny else ''}; logs in {log_dir}", flush=True)
    for cold_case in [c for c in cases if c.mode == "compile" and c.workload == f"{c.family}-txt2img"]:
        cold = data_dir(work, cold_case, args.tiny)  # the cold compile case must not find an earlier run's cache
        if cold.exists():
            shutil.rmtree(cold)
            print(f"{elapsed()} removed {cold} so the first compiled job starts with a cold cache", flush=True)
    builds: dict[str, str | None] = {}  # family -> error (None: checkpoint ready)

    def ensure_checkpoint(family: str) -> str | None:
        if family == "demo" or family in builds:
            return builds.get(family)
        path = checkpoint_path(work, family, args.tiny)
        if path.is_file():
            builds[family] = None
            record["builds"][family] = {"path": str(path), "reused": True,
                                        "size_gb": round(path.stat().st_size / GB, 2)}
            print(f"{elapsed()} reusing {path}", flush=True)
            return None
        print(f"{elapsed()} building {family_tag(family, args.tiny)} checkpoint ...", flush=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--build", family, "--work", str(work)]
        cmd += ["--tiny"] if args.tiny else []
        cmd += ["--cpu"] if args.cpu else []
        remaining = deadline - time.perf_counter() if deadline else None
        code, timed_out = run_subprocess(cmd, log_dir / f"build-{family}.log", remaining, args.threads)
        ok = code == 0 and path.is_file()
        builds[family] = None if ok else ("timed out" if timed_out else f"build failed (exit {code}): "
                                          + log_tail(log_dir / f"build-{family}.log", 3))
        record["builds"][family] = {"path": str(path), "reused": False, "seconds": round(time.perf_counter() - t0, 1),
                                    "error": builds[family],
                                    "size_gb": round(path.stat().st_size / GB, 2) if ok else None}
        print(f"{elapsed()} {'built' if ok else 'FAILED to build'} {path.name} in {time.perf_counter() - t0:.1f} s"
              + ("" if ok else f": {builds[family]}"), flush=True)
        return builds[family]

    for case in cases:
        remaining = deadline - time.perf_counter() if deadline else None
        if remaining is not None and remaining < case.min_s:
            results[case.name] = {"status": "skipped", "error": f"time budget ({remaining:.0f} s left)"}
            print(f"{elapsed()} {case.name}: skipped, {remaining:.0f} s of the budget left", flush=True)
            write_json()
            continue
        error = ensure_checkpoint(case.family)
        if error:
            results[case.name] = {"status": "failed", "error": f"no checkpoint: {error}"}
            write_json()
            continue
        print(f"{elapsed()} {case.name} ({case.describe()}) ...", flush=True)
        result_file = work / f"result-{case.name.replace(':', '-')}.json"
        result_file.unlink(missing_ok=True)
        log_path = log_dir / f"{case.name.replace(':', '-')}.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case.name, "--result", str(result_file),
               "--work", str(work), "--repeats", str(args.repeats)]
        cmd += [flag for flag, on in (("--quick", args.quick), ("--cpu", args.cpu), ("--tiny", args.tiny)) if on]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        t0 = time.perf_counter()
        remaining = deadline - time.perf_counter() if deadline else None
        code, timed_out = run_subprocess(cmd, log_path, remaining, args.threads)
        try:
            result = json.loads(result_file.read_text())
        except (OSError, ValueError):
            result = {}
        result["case_wall_s"] = round(time.perf_counter() - t0, 1)
        if timed_out:
            result.update(status="timeout", error=f"killed at the time budget after {result['case_wall_s']} s")
        elif result.get("status") != "ok":
            result["status"] = "failed"
            result.setdefault("error", f"exit code {code}: {log_tail(log_path, 3)}")
        results[case.name] = result
        if record["device"] is None and result.get("device"):
            record["device"] = result["device"]
            record["versions"]["cuda"] = result.get("torch_cuda")
            record["torch_threads"] = result.get("torch_threads")
        write_json()
        if result["status"] == "ok":
            print(f"{elapsed()} {case.name}: {result['seconds_per_image']:.3f} s/image, "
                  f"{fmt(result.get('it_per_s'), '.1f')} it/s, warm-up {fmt(result.get('warmup_s'), '.2f')} s, "
                  f"load {fmt(result.get('load_s'), '.1f')} s, peak {fmt(result.get('peak_vram_gb'), '.2f')} GB, "
                  f"case {result['case_wall_s']:.0f} s"
                  + (f", switch back {result['switch_back_s']} s (same object {result['same_object']}), "
                     f"{result['switch_back_nocache_s']} s without cache" if case.switch else "")
                  + (f", VAE fp32 fallback x{result['vae_fp32_fallbacks']}"
                     if result.get("vae_fp32_fallbacks") else ""), flush=True)
        else:
            print(f"{elapsed()} {case.name}: {result['status'].upper()} {result.get('error', '')[:300]}"
                  f" (log {log_path})", flush=True)

    write_json()
    threads = f", {record.get('torch_threads')} threads" if args.cpu else ""
    print(f"\n{elapsed()} device {record['device']}, torch {record['versions']['torch']}, diffusers "
          f"{record['versions']['diffusers']}, transformers {record['versions']['transformers']}, commit "
          f"{record['commit']}{threads}"
          f"; CFG {CFG}; s/image = median of {args.repeats} after one warm-up job / batch; "
          "'vs diff' = diffusers s/image / this s/image (same txt2img work)")
    print(table(cases, results))
    for check in record["targets"] if not args.cpu else []:  # the issue's targets are H100 figures
        print(f"  target {check['target']}: {check['value']} ({check['case']}) "
              f"{'MET' if check['met'] else 'MISSED'}")
    for path in json_paths:
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"written {shown}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", help="case names or patterns (fnmatch), e.g. 'sd15-*' '*:compile'")
    parser.add_argument("--repeats", type=int, default=3, help="timed jobs after the warm-up job (default 3)")
    parser.add_argument("--work", default="/tmp/bench-work", help="checkpoints, data dirs and logs")
    parser.add_argument("--quick", action="store_true", help="1/4 of the sampling steps")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole run, builds included; cases that no longer fit are skipped "
                             "(default 480 on the GPU, no limit with --cpu; 0: no limit)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of each case (default: torch's; 1 with --tiny, where oversubscribed "
                             "OpenMP threads on a busy machine cost more than they give)")
    parser.add_argument("--cpu", action="store_true", help="CPU figure with the demo model (64x64, 20 steps)")
    parser.add_argument("--tiny", action="store_true", help="with --cpu: the GPU cases with tiny models, 1/4 size")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--build", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tiny and not args.cpu:
        parser.error("--tiny needs --cpu (tiny models are for exercising the script on a CPU machine)")
    if args.budget is None:
        args.budget = 0.0 if args.cpu else 480.0
    if args.threads is None and args.tiny:
        args.threads = 1
    if args.case:
        sys.exit(run_case(args))
    if args.build:
        build_checkpoint(args.build, checkpoint_path(Path(args.work), args.build, args.tiny), args.tiny)
        return
    if args.list:
        for case in all_cases(args):
            print(f"{case.name:<28} {case.describe()}")
        return
    drive(args)


if __name__ == "__main__":
    main()
