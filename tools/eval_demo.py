"""Measure how well the demo model follows prompts, through the app's own processing path (outside pytest).

    python tools/eval_demo.py [--n 200] [--checkpoint assets/demo/demo-shapes-sd1.safetensors]

For random captions (fixed seed) it generates at CFG 7 / 20 steps, reads each picture back with
tools.shapes.analyse, and reports per-attribute accuracy, the analyser's own accuracy on ground-truth renders
(its ceiling), adherence at CFG 1 vs 7, and how a negative prompt naming the shape's colour changes that colour's
share of the picture. Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from tools import shapes  # noqa: E402

ATTRIBUTES = ("colour", "shape", "position", "background", "size")


def generate(ctx, prompts: list[str], seeds: list[int], cfg: float, negatives: list[str] | None = None,
             steps: int = 20, batch: int = 50) -> list[np.ndarray]:
    from modules.processing import Job, process_images

    out: list[np.ndarray] = []
    for lo in range(0, len(prompts), batch):
        chunk = prompts[lo:lo + batch]
        job = Job(prompt=chunk, negative_prompt=(negatives or [""] * len(prompts))[lo:lo + batch],
                  seed=seeds[lo], batch_size=len(chunk), n_iter=1, steps=steps, cfg_scale=cfg, width=64, height=64,
                  sampler_name="DPM++ 2M", do_not_save_samples=True, do_not_save_grid=True)
        processed = process_images(job, ctx)
        out += [np.asarray(im.convert("RGB")) for im in processed.images[processed.index_of_first_image:]]
    return out


def accuracy(specs: list[shapes.Spec], images: list[np.ndarray]) -> dict[str, float]:
    hits = dict.fromkeys(ATTRIBUTES, 0)
    for spec, image in zip(specs, images, strict=True):
        reading = shapes.analyse(image)
        for attribute in ATTRIBUTES:
            hits[attribute] += getattr(reading, attribute) == getattr(spec, attribute)
    return {a: hits[a] / len(specs) for a in ATTRIBUTES}


def colour_share(image: np.ndarray, colour: str) -> float:
    names = list(shapes.COLOURS)
    table = np.array([shapes.COLOURS[n] for n in names], dtype=np.float32)
    nearest = ((image.reshape(-1, 1, 3).astype(np.float32) - table[None]) ** 2).sum(-1).argmin(1)
    return float((nearest == names.index(colour)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--checkpoint", default=str(ROOT / "assets" / "demo" / "demo-shapes-sd1.safetensors"))
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()

    from modules import cmd_args, shared
    from modules.models.loader import load_model
    from modules.models.registry import CheckpointInfo
    from modules.processing import Context
    from modules.state import State

    shared.initialize(cmd_args.parse_args(["--data-dir", tempfile.mkdtemp(prefix="eval-")], environ={}))
    path = Path(args.checkpoint)
    model = load_model(CheckpointInfo(str(path), path.name), shared.models.policy)
    ctx = Context(model=model, opts=shared.opts, state=State(), data_dir=shared.cmd_opts.data_dir)
    rng = random.Random(args.seed)
    specs = [shapes.random_spec(rng) for _ in range(args.n)]
    prompts = [shapes.caption(s) for s in specs]
    seeds = [args.seed + i for i in range(args.n)]

    start = time.time()
    truth = shapes.to_uint8(shapes.render(specs, generator=torch.Generator().manual_seed(args.seed)))
    ceiling = accuracy(specs, list(truth))
    at7 = accuracy(specs, generate(ctx, prompts, seeds, cfg=7.0))
    at1 = accuracy(specs, generate(ctx, prompts, seeds, cfg=1.0))
    subset = min(args.n, 100)
    plain = generate(ctx, prompts[:subset], seeds[:subset], cfg=7.0)
    negated = generate(ctx, prompts[:subset], seeds[:subset], cfg=7.0,
                       negatives=[s.colour for s in specs[:subset]])
    share_plain = float(np.mean([colour_share(im, s.colour) for im, s in zip(plain, specs, strict=False)]))
    share_negated = float(np.mean([colour_share(im, s.colour) for im, s in zip(negated, specs, strict=False)]))
    seconds = time.time() - start

    print(f"\nDemo model {path.name}: {args.n} captions, DPM++ 2M, 20 steps, 64x64 on {model.policy.device}")
    print(f"{'attribute':>11} {'CFG 7':>7} {'CFG 1':>7} {'ceiling':>8}")
    for a in ATTRIBUTES:
        print(f"{a:>11} {at7[a]:>7.1%} {at1[a]:>7.1%} {ceiling[a]:>8.1%}")
    print(f"mean adherence (colour, shape, position, background): CFG 7 "
          f"{np.mean([at7[a] for a in ATTRIBUTES[:4]]):.1%}, CFG 1 {np.mean([at1[a] for a in ATTRIBUTES[:4]]):.1%}")
    print(f"share of the shape's colour: no negative {share_plain:.1%}, negative prompt = that colour "
          f"{share_negated:.1%}  ({subset} captions)")
    record = {"checkpoint": path.name, "n": args.n, "device": str(model.policy.device), "cfg7": at7, "cfg1": at1,
              "analyser_ceiling": ceiling, "colour_share_plain": share_plain,
              "colour_share_negative": share_negated, "seconds": round(seconds, 1),
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"eval-demo-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
