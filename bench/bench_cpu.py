"""CPU benchmark of the embedded demo model through the same processing path the UI uses.

Prints seconds per image and sampling iterations per second at 64x64 and 512x512, and writes a JSON record to
bench/results/. Run: `python bench/bench_cpu.py [--steps 20] [--repeats 3]`. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--sampler", default="Euler a")
    args = parser.parse_args()

    import torch

    from modules import cmd_args, shared
    from modules.processing import Job

    data_dir = tempfile.mkdtemp(prefix="bench-")
    shared.initialize(cmd_args.parse_args(["--data-dir", data_dir, "--use-cpu", "all"], environ={}))
    model = shared.models.get()
    rows = []
    for size in args.sizes:
        job_args = dict(prompt="a large red circle on the left, blue background", negative_prompt="blurry",
                        steps=args.steps, width=size, height=size, cfg_scale=7.0, sampler_name=args.sampler,
                        do_not_save_samples=True, do_not_save_grid=True)
        shared.run_job(Job(seed=0, **job_args))  # warm-up
        times = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            shared.run_job(Job(seed=repeat + 1, **job_args))
            times.append(time.perf_counter() - start)
        best = min(times)
        rows.append({"size": f"{size}x{size}", "steps": args.steps, "seconds_per_image": round(best, 3),
                     "it_per_s": round(args.steps / best, 2), "all_seconds": [round(t, 3) for t in times]})
    print(f"\nDemo model ({model.checkpoint.title}), {args.sampler}, CFG 7, batch 1, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'size':>9} {'steps':>5} {'s/image':>8} {'it/s':>7}")
    for row in rows:
        print(f"{row['size']:>9} {row['steps']:>5} {row['seconds_per_image']:>8.3f} {row['it_per_s']:>7.2f}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    record = {"device": "cpu", "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "torch": torch.__version__, "commit": commit.strip(), "model": model.checkpoint.title,
              "sampler": args.sampler, "results": rows, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
