"""The embedded demo model: used when no checkpoint is installed, so a fresh install generates offline.

A tiny SD1.x-architecture checkpoint trained by tools/train_demo.py on procedurally drawn shapes ("a large red
circle on the left, blue background"), shipped in assets/demo/ in the same single-file layout as real checkpoints
and loaded by the same code. It is copied into the checkpoint folder when that folder has no checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "demo"
DEMO_FILENAME = "demo-shapes-sd1.safetensors"
DEMO_LORA = ASSETS / "lora-striped.safetensors"
DEMO_EMBEDDING = ASSETS / "shapey.safetensors"


def ensure_demo_checkpoint(checkpoint_dir: str) -> Path:
    """Put the demo checkpoint into `checkpoint_dir` unless it is there already; return its path."""
    path = Path(checkpoint_dir) / DEMO_FILENAME
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name("." + path.name + ".tmp")
        try:
            os.link(ASSETS / DEMO_FILENAME, temp)  # no copy of 27 MB when on the same file system
        except OSError:
            shutil.copyfile(ASSETS / DEMO_FILENAME, temp)
        temp.replace(path)
    return path
