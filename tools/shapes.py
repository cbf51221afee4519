"""The demo model's world: procedurally drawn shapes, their captions, and an analyser that reads them back.

Used by tools/train_demo.py (training data, drawn on the GPU on the fly), tools/eval_demo.py (prompt-adherence
figures) and the semantic tests. Pure torch/numpy, no downloads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 220, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "orange": (245, 135, 20),
    "purple": (140, 40, 180),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS: dict[str, tuple[float, float]] = {  # centre (x, y) as fractions of the image
    "left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73), "center": (0.5, 0.5),
}
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
                    "center": "in the center"}
SIZES = {"small": 0.12, "large": 0.22}  # half extent as a fraction of the image


@dataclass(frozen=True)
class Spec:
    shape: str
    colour: str
    background: str
    position: str
    size: str
    striped: bool = False


def random_spec(rng: random.Random, **fixed: str) -> Spec:
    colour = fixed.get("colour") or rng.choice(list(COLOURS))
    background = fixed.get("background") or rng.choice([c for c in COLOURS if c != colour])
    return Spec(shape=fixed.get("shape") or rng.choice(SHAPES), colour=colour, background=background,
                position=fixed.get("position") or rng.choice(list(POSITIONS)),
                size=fixed.get("size") or rng.choice(list(SIZES)))


def caption(spec: Spec, drop: set[str] | frozenset[str] = frozenset(), shape_word: str | None = None) -> str:
    """ "a large red circle on the left, blue background"; attributes in `drop` are left out."""
    words = ["a"]
    if "size" not in drop:
        words.append(spec.size)
    if shape_word:
        words.append(shape_word)
    else:
        if "colour" not in drop:
            words.append(spec.colour)
        words.append(spec.shape)
    text = " ".join(words)
    if "position" not in drop:
        text += " " + POSITION_PHRASES[spec.position]
    if "background" not in drop:
        text += f", {spec.background} background"
    return text


def training_caption(spec: Spec, rng: random.Random) -> str:
    """Captions with attributes sometimes left out, so short prompts ("a red circle") work too."""
    drop = {name for name in ("size", "position", "background") if rng.random() < 0.15}
    return caption(spec, frozenset(drop))


def render(specs: list[Spec], size: int = 64, device: str | torch.device = "cpu",
           generator: torch.Generator | None = None, jitter: float = 0.03) -> torch.Tensor:
    """Draw the specs; returns [B, 3, size, size] in [-1, 1]. 4x supersampled edges, small random jitter."""
    n = len(specs)
    ss = size * 4
    coords = (torch.arange(ss, device=device, dtype=torch.float32) + 0.5) / ss
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    centre = torch.tensor([POSITIONS[s.position] for s in specs], device=device)
    half = torch.tensor([SIZES[s.size] for s in specs], device=device)
    if jitter:
        rand = torch.rand(n, 3, generator=generator, device="cpu").to(device)
        centre = centre + (rand[:, :2] - 0.5) * 2 * jitter
        half = half * (1 + (rand[:, 2] - 0.5) * 0.2)
    dx = xs[None] - centre[:, 0, None, None]
    dy = ys[None] - centre[:, 1, None, None]
    h = half[:, None, None]
    circle = dx**2 + dy**2 <= h**2
    square = (dx.abs() <= h * 0.9) & (dy.abs() <= h * 0.9)
    top = -h
    frac = (dy - top) / (2 * h)  # 0 at the apex, 1 at the base
    triangle = (dy >= top) & (dy <= h) & (dx.abs() <= frac * h * 1.1)
    kinds = torch.tensor([SHAPES.index(s.shape) for s in specs], device=device)[:, None, None]
    mask = torch.where(kinds == 0, circle, torch.where(kinds == 1, square, triangle)).float()
    fg = torch.tensor([COLOURS[s.colour] for s in specs], device=device, dtype=torch.float32) / 127.5 - 1
    bg = torch.tensor([COLOURS[s.background] for s in specs], device=device, dtype=torch.float32) / 127.5 - 1
    striped = torch.tensor([s.striped for s in specs], device=device)[:, None, None]
    stripes = (((xs + ys)[None] * 10).floor() % 2 == 0) & striped  # diagonal white stripes: the LoRA's style
    colour = fg[:, :, None, None].expand(n, 3, ss, ss)
    colour = torch.where(stripes[:, None], torch.ones_like(colour), colour)
    image = bg[:, :, None, None] * (1 - mask[:, None]) + colour * mask[:, None]
    return F.avg_pool2d(image, 4)


def nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOURS)
    table = np.array([COLOURS[n] for n in names], dtype=np.float32)
    return names[int(np.argmin(((table - rgb[None].astype(np.float32)) ** 2).sum(1)))]


@dataclass
class Reading:
    shape: str
    colour: str
    background: str
    position: str
    size: str
    foreground_fraction: float


def analyse(image: np.ndarray) -> Reading:
    """Read back what a picture shows. `image`: uint8 [H, W, 3].

    Background = the border's median colour; foreground = pixels far from it; then colour (median), position
    (centroid), size (bounding box extent) and shape (how much of its bounding box the shape fills).
    """
    img = image.astype(np.float32)
    h, w, _ = img.shape
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg_rgb = np.median(border, axis=0)
    distance = np.sqrt(((img - bg_rgb) ** 2).sum(-1))
    mask = distance > 80
    fraction = float(mask.mean())
    background = nearest_colour(bg_rgb)
    if mask.sum() < 4:
        return Reading("none", "none", background, "none", "none", fraction)
    ys, xs = np.nonzero(mask)
    colour = nearest_colour(np.median(img[mask], axis=0))
    cx, cy = (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h
    if abs(cx - 0.5) < 0.12 and abs(cy - 0.5) < 0.12:
        position = "center"
    elif abs(cx - 0.5) >= abs(cy - 0.5):
        position = "left" if cx < 0.5 else "right"
    else:
        position = "top" if cy < 0.5 else "bottom"
    box_w, box_h = (xs.max() - xs.min() + 1) / w, (ys.max() - ys.min() + 1) / h
    size = "large" if max(box_w, box_h) > 0.33 else "small"
    fill = mask.sum() / ((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    shape = "square" if fill > 0.88 else "circle" if fill > 0.64 else "triangle"
    return Reading(shape, colour, background, position, size, fraction)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def with_striped(spec: Spec) -> Spec:
    return replace(spec, striped=True)
