"""The embedded demo model: used when no checkpoint is installed, so a fresh install can generate offline.

It is a tiny SD1.x-architecture checkpoint written in the same single-file layout as real ones and loaded by the
same code. Today its weights are random (deterministic, seed 0), so it draws noise-like pictures; its creation is
kept in this one place so trained weights can replace it.
"""

from __future__ import annotations

from pathlib import Path

DEMO_FILENAME = "demo-tiny-sd1.safetensors"
DEMO_SEED = 0


def ensure_demo_checkpoint(checkpoint_dir: str) -> Path:
    """Write the demo checkpoint into `checkpoint_dir` unless it is there already; return its path."""
    from modules.models.tiny import write_tiny_checkpoint  # builds models: import only when needed

    path = Path(checkpoint_dir) / DEMO_FILENAME
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name("." + path.name + ".tmp")
        # One metadata key only: safetensors writes metadata in hash-map order, and the file (so its hash,
        # shown in titles and infotexts) must be byte-identical on every machine.
        write_tiny_checkpoint("sd1", temp, seed=DEMO_SEED,
                              metadata={"modelspec.title": "Demo model (tiny SD1.x, random weights)"})
        temp.replace(path)
    return path
