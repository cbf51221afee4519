"""Train the demo ControlNet: canny edges -> the demo model's shapes (one H100, a few minutes).

    python tools/train_controlnet_demo.py --model assets/demo/demo-shapes-sd1.safetensors --out-dir assets/demo

The demo checkpoint stays frozen; a diffusers ControlNetModel copied from its UNet (`ControlNetModel.from_unet`, the
ControlNet paper's initialisation: encoder copy + zero convolutions) learns to draw the shape whose edge map it is
given. Conditions are cv2.Canny maps of the rendered ground truth, as the `canny` preprocessor makes them: at the
image's own size, or at 4x and shrunk back (what a preprocessor resolution above the image size gives), with jittered
thresholds. Captions: the true one, none (so the control alone draws), or one whose shape and position contradict
the edges (so the edges win over the prompt for geometry while colours still follow the prompt, as with real
ControlNets). The result is written in diffusers layout (`demo-canny-controlnet.diffusers.safetensors`); the shipped
file is converted to the original lllyasviel layout on the CPU with `--to-original` (the loader reads both).
A quick check at the end samples "a red circle on the left" against the edges of a square on the right.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import ControlNetModel, DDIMScheduler  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTokenizer  # noqa: E402

from modules.models.architecture import family_config  # noqa: E402
from tools import shapes  # noqa: E402
from tools.train_demo import (  # noqa: E402
    IMAGE_SIZE,
    SCALING_FACTOR,
    Data,
    cosine_lr,
    encode_text,
    git_commit,
    log,
    noisy_latents,
    sd1_alphas_cumprod,
)

DIFFUSERS_NAME = "demo-canny-controlnet.diffusers.safetensors"
SHIPPED_NAME = "demo-canny-controlnet.safetensors"
CONDITIONING_CHANNELS = (16, 32, 96, 256)  # the original ControlNet hint block's widths


def canny_edges(images: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> uint8 edge maps [B, H, W], as the canny preprocessor makes them."""
    pictures = shapes.to_uint8(images)
    maps = []
    for picture in pictures:
        low = rng.randint(60, 140)
        high = low + rng.randint(60, 120)
        if rng.random() < 0.6:
            edges = cv2.Canny(picture, low, high)
        else:  # detected at a higher resolution and shrunk: thinner, grey lines
            size = picture.shape[0]
            big = cv2.resize(picture, (size * 4, size * 4), interpolation=cv2.INTER_CUBIC)
            edges = cv2.resize(cv2.Canny(big, low, high), (size, size), interpolation=cv2.INTER_AREA)
        maps.append(edges)
    return torch.from_numpy(np.stack(maps))


def as_hint(edges: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W] -> the ControlNet's input [B, 3, H, W] in [0, 1]."""
    return edges.float().div(255.0)[:, None].expand(-1, 3, -1, -1).contiguous()


def canny_maps(images: torch.Tensor, rng: random.Random) -> torch.Tensor:
    return as_hint(canny_edges(images, rng))


def training_captions(specs: list[shapes.Spec], rng: random.Random, conflicting: float = 0.3) -> list[str]:
    captions = []
    for spec in specs:
        roll = rng.random()
        if roll < 0.3 * (1 - conflicting) / 0.7:
            captions.append("")
        elif roll < 0.3 * (1 - conflicting) / 0.7 + conflicting:  # geometry contradicting the edges: control wins
            other = shapes.random_spec(rng, colour=spec.colour, background=spec.background, size=spec.size)
            captions.append(shapes.training_caption(other, rng))
        else:
            captions.append(shapes.training_caption(spec, rng))
    return captions


def load_demo(path: Path):
    from modules.devices import choose_policy
    from modules.models.loader import load_model
    from modules.models.registry import CheckpointInfo

    return load_model(CheckpointInfo(str(path), path.name), choose_policy(use_cpu=["all"]))


@torch.no_grad()
def build_dataset(data: Data, vae, rng: random.Random, size: int, device: torch.device
                  ) -> tuple[list[shapes.Spec], torch.Tensor, torch.Tensor]:
    """Rendered once: specs, their latents and their edge maps (uint8), so a training step is only the networks."""
    specs, latents, edges = [], [], []
    for _ in range(0, size, 1024):
        batch_specs, images = data.batch(1024)
        specs += batch_specs
        edges.append(canny_edges(images, rng).to(device))
        latents.append(vae.encode(images).latent_dist.sample() * SCALING_FACTOR)
    return specs, torch.cat(latents).float(), torch.cat(edges)


def train(model, tokenizer, device: torch.device, steps: int, seconds: float, batch: int, lr: float, seed: int,
          start: float, dataset_size: int = 32768, resume: str = "", conflicting: float = 0.3
          ) -> tuple[ControlNetModel, int]:
    """`resume`: continue from a trained diffusers-layout file (a second phase)."""
    unet = model.unet.to(device).float().eval().requires_grad_(False)
    vae = model.vae.to(device).float().eval().requires_grad_(False)
    text = model.text_encoders[0].to(device).float().eval().requires_grad_(False)
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS)
    if resume:
        controlnet.load_state_dict(load_file(resume))
    controlnet = controlnet.to(device).train()
    params = list(controlnet.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=device.type == "cuda")
    alphas = sd1_alphas_cumprod(device)
    rng = random.Random(seed + 11)
    specs, latents, edges = build_dataset(Data(seed + 7, device), vae, rng, dataset_size, device)
    log(f"dataset: {len(specs)} pictures", start)
    generator = torch.Generator().manual_seed(seed + 13)
    warmup, step, stage_start = 100, 0, time.time()
    while step < (steps or warmup + 1):
        if not steps and step == warmup:
            steps = max(warmup + 1, int(seconds / ((time.time() - stage_start) / warmup)) // 50 * 50)
            log(f"controlnet: {steps} steps fit in {seconds:.0f}s", start)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps or 10**9, lr, warmup)
        index = torch.randint(0, len(specs), (batch,), generator=generator)
        hint = as_hint(edges[index.to(device)])
        with torch.no_grad():
            captions = training_captions([specs[i] for i in index.tolist()], rng, conflicting)
            context = encode_text(tokenizer, text, captions, device)
        noisy, noise, t = noisy_latents(latents[index.to(device)], alphas, generator)
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            down, mid = controlnet(noisy, t, encoder_hidden_states=context, controlnet_cond=hint, return_dict=False)
            prediction = unet(noisy, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                              mid_block_additional_residual=mid).sample
        loss = F.mse_loss(prediction.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 250 == 0 or step == steps - 1:
            log(f"controlnet {step}/{steps} loss {loss.item():.4f}", start)
        step += 1
    return controlnet.eval(), steps


@torch.no_grad()
def quick_check(model, controlnet: ControlNetModel, tokenizer, device: torch.device, n: int = 50) -> dict:
    """Share of n seeds that draw a square on the right for "a red circle on the left" + edges of a right square."""
    unet, vae, text = model.unet, model.vae, model.text_encoders[0]
    spec = shapes.Spec(shape="square", colour="blue", background="white", position="right", size="large")
    hint = canny_maps(shapes.render([spec], IMAGE_SIZE, device, jitter=0.0), random.Random(0))[:1]
    scheduler = DDIMScheduler.from_config(family_config("sd1", "scheduler"))
    results = {}
    for weight in (1.0, 0.0):
        scheduler.set_timesteps(20)
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(n, 4, IMAGE_SIZE // 8, IMAGE_SIZE // 8, generator=generator).to(device)
        cond = encode_text(tokenizer, text, ["a red circle on the left"] * n + [""] * n, device)
        hints = hint.to(device).expand(2 * n, -1, -1, -1)
        for t in scheduler.timesteps:
            both = torch.cat([x, x])
            down, mid = controlnet(both, t, encoder_hidden_states=cond, controlnet_cond=hints,
                                   conditioning_scale=weight, return_dict=False)
            eps = unet(both, t, encoder_hidden_states=cond, down_block_additional_residuals=down,
                       mid_block_additional_residual=mid).sample
            e_cond, e_uncond = eps.chunk(2)
            x = scheduler.step(e_uncond + 7.0 * (e_cond - e_uncond), t, x).prev_sample
        pictures = shapes.to_uint8(vae.decode(x / SCALING_FACTOR).sample)
        readings = [shapes.analyse(p) for p in pictures]
        results[f"weight {weight}"] = {
            "square on the right": sum(r.shape == "square" and r.position == "right" for r in readings) / n,
            "circle on the left": sum(r.shape == "circle" and r.position == "left" for r in readings) / n,
            "red": sum(r.colour == "red" for r in readings) / n}
    return results


def to_original(out_dir: Path) -> Path:
    """Convert the trained diffusers-layout file to the original layout the shipped demo uses."""
    sys.path.insert(0, str(ROOT / "extensions-builtin" / "sd-webui-controlnet"))
    from lib_controlnet import models as control_models

    source = out_dir / DIFFUSERS_NAME
    from safetensors import safe_open

    with safe_open(str(source), "pt") as f:
        metadata = f.metadata() or {}
    weights = load_file(str(source))
    config = json.loads(metadata["config"])
    original = control_models.to_original_layout(weights, config)
    target = out_dir / SHIPPED_NAME
    save_file({k: v.to(torch.float16).contiguous() for k, v in original.items()}, str(target),
              metadata={k: v for k, v in metadata.items() if k != "config"})
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "assets" / "demo" / "demo-shapes-sd1.safetensors"))
    parser.add_argument("--out-dir", default=str(ROOT / "assets" / "demo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=0, help="0: as many as --seconds allows")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--resume", default="", help="continue from this diffusers-layout file (second phase)")
    parser.add_argument("--conflicting", type=float, default=0.3,
                        help="share of captions whose shape and position contradict the edges")
    parser.add_argument("--dataset", type=int, default=32768, help="pictures rendered once for training")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--to-original", action="store_true", help="only convert the trained file (CPU)")
    args = parser.parse_args()
    out = Path(args.out_dir)
    if args.to_original:
        print(f"written {to_original(out)}")
        return
    start = time.time()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = CLIPTokenizer.from_pretrained(str(ROOT / "configs" / "tokenizer"), local_files_only=True)
    model = load_demo(Path(args.model))
    controlnet, steps = train(model, tokenizer, device, args.steps, args.seconds, args.batch, args.lr, args.seed,
                              start, args.dataset, args.resume, args.conflicting)
    check = quick_check(model, controlnet, tokenizer, device)
    log(f"quick check: {check}", start)
    record = {
        "script": "tools/train_controlnet_demo.py", "commit": git_commit(), "seed": str(args.seed),
        "steps": str(steps), "batch": str(args.batch), "dataset": str(args.dataset), "lr": str(args.lr),
        "conflicting_captions": str(args.conflicting), "resumed_from": Path(args.resume).name if args.resume else "",
        "image_size": str(IMAGE_SIZE),
        "base_model": Path(args.model).name, "condition": "canny edges (cv2.Canny) of the rendered shape",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "train_seconds": f"{time.time() - start:.0f}", "quick_check": json.dumps(check),
        "description": "Demo ControlNet (canny) for the demo shapes model: draws the shape whose edges it is given",
        "config": json.dumps(dict(controlnet.config)),
    }
    weights = {k: v.detach().float().cpu().contiguous() for k, v in controlnet.state_dict().items()}
    save_file(weights, str(out / DIFFUSERS_NAME), metadata=record)
    (out / "controlnet_train_log.json").write_text(
        json.dumps({k: v for k, v in record.items() if k != "config"}, indent=2) + "\n")
    log(f"written {out / DIFFUSERS_NAME}", start)


if __name__ == "__main__":
    main()
