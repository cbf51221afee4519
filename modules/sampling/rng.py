"""A1111-compatible seeds and noise: one generator per image, so a batch gives the same images as single runs.

Mirrors A1111's `modules/rng.py` (ImageRNG) and the seed rules of `processing.py`: image i of a job uses seed+i, its
start noise is the first draw of `torch.Generator(device).manual_seed(seed)`, variation seeds are slerped in, and the
same generator then feeds the ancestral/SDE noise of each scheduler step
(`scheduler.step(..., generator=rng.generators)`
draws one tensor per image from each generator in turn, as A1111's `ImageRNG.next()` does).
"""

from __future__ import annotations

import random
from typing import Any

import torch

RNG_SOURCES = ("GPU", "CPU")  # A1111's third source, "NV" (its Philox port of CUDA's generator), is not provided
MAX_RANDOM_SEED = 4294967294  # A1111 draws random seeds with random.randrange(4294967294)


def randn(
    seed: int,
    shape: tuple[int, ...],
    generator_device: str | torch.device = "cpu",
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The first float32 normal tensor of a generator on `generator_device` seeded with `seed`, moved to `device`."""
    generator = torch.Generator(generator_device).manual_seed(int(seed))
    return torch.randn(shape, generator=generator, device=generator_device).to(device)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from `low` (val=0) to `high` (val=1), as A1111 mixes variation noise.

    Like A1111 it normalises along dim 1 (for a (C, H, W) noise tensor: each column of each channel) and falls back to
    a linear mix when the two are nearly parallel (mean cosine > 0.9995). A1111's fallback weights the ends the
    other way round; that differs only when low != high, which that branch practically never sees.
    """
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)

    if dot.mean() > 0.9995:
        return low * (1 - val) + high * val

    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    low_weight = (torch.sin((1.0 - val) * omega) / sin_omega).unsqueeze(1)
    high_weight = (torch.sin(val * omega) / sin_omega).unsqueeze(1)
    return low_weight * low + high_weight * high


def fixed_seed(seed: int | str | None) -> int:
    """A1111's get_fixed_seed: -1, None, "" or a non-number become a random seed; anything else is kept."""
    if isinstance(seed, str):
        try:
            seed = int(seed)
        except ValueError:
            seed = -1
    if seed is None or seed == -1:
        return int(random.randrange(MAX_RANDOM_SEED))
    return int(seed)


def resolve_seeds(
    seed: int | str | None, n: int, subseed: int | str | None = -1, subseed_strength: float = 0.0
) -> tuple[list[int], list[int]]:
    """Seeds and variation seeds of a job's `n` images (n_iter * batch_size), by A1111's rules.

    Image i gets seed+i, except that with a variation strength other than 0 all images share the seed (only the
    variation seed then changes); variation seeds are subseed+i. -1 picks a random seed.
    """
    base_seed = fixed_seed(seed)
    base_subseed = fixed_seed(subseed)
    seeds = [base_seed + (i if subseed_strength == 0 else 0) for i in range(n)]
    subseeds = [base_subseed + i for i in range(n)]
    return seeds, subseeds


def generator_device_for(source: str, device: torch.device | str) -> torch.device:
    """Where generators live for an A1111 RNG source ("GPU": the target device; "CPU": the CPU)."""
    normalized = source.strip().upper()
    if normalized == "CPU":
        return torch.device("cpu")
    if normalized == "GPU":
        target = torch.device(device)
        # As in A1111: MPS has no seedable per-device generator worth matching, so it uses the CPU's.
        return torch.device("cpu") if target.type == "mps" else target
    if normalized == "NV":
        raise ValueError(
            "Random number source 'NV' (A1111's reimplementation of the CUDA generator) is not supported; "
            "use 'GPU' or 'CPU'."
        )
    raise ValueError(f"Unknown random number source '{source}'. Valid sources: {', '.join(RNG_SOURCES)}")


class ImageRNG:
    """Per-image noise of one batch, drawn as A1111's ImageRNG draws it.

    `shape` is one image's latent shape (C, H, W); `seed_resize_from_h/w` are in latent units (pixels // 8),
    <= 0 meaning off. After `first()`, `generators` continue each image's stream for the scheduler's noise.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        seeds: list[int],
        subseeds: list[int] | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from_h: int = 0,
        seed_resize_from_w: int = 0,
        source: str = "CPU",
        device: str | torch.device = "cpu",
        ensd: int = 0,
    ) -> None:
        if not seeds:
            raise ValueError("ImageRNG needs at least one seed")
        self.shape = tuple(int(size) for size in shape)
        self.seeds = [int(seed) for seed in seeds]
        self.subseeds = None if subseeds is None else [int(subseed) for subseed in subseeds]
        self.subseed_strength = float(subseed_strength)
        self.seed_resize_from_h = int(seed_resize_from_h or 0)
        self.seed_resize_from_w = int(seed_resize_from_w or 0)
        self.source = source
        self.device = torch.device(device)
        self.generator_device = generator_device_for(source, self.device)
        self.ensd = int(ensd or 0)
        if self._noise_shape() != self.shape and len(self.shape) != 3:
            raise ValueError(f"Seed resize needs a (C, H, W) shape, got {self.shape}")
        self.generators = self._new_generators(self.seeds)
        self._first_drawn = False

    def _new_generators(self, seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator(self.generator_device).manual_seed(seed) for seed in seeds]

    def _noise_shape(self) -> tuple[int, ...]:
        if self.seed_resize_from_h <= 0 or self.seed_resize_from_w <= 0:
            return self.shape
        return (self.shape[0], self.seed_resize_from_h, self.seed_resize_from_w)

    def _randn(self, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
        return randn(seed, shape, self.generator_device, self.generator_device)

    def _draw(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(self.shape, generator=generator, device=self.generator_device)

    def _paste_centered(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Put `source` (noise of the seed-resize size) in the middle of `target`, cropping what does not fit."""
        dx = (self.shape[2] - source.shape[2]) // 2
        dy = (self.shape[1] - source.shape[1]) // 2
        width = source.shape[2] if dx >= 0 else source.shape[2] + 2 * dx
        height = source.shape[1] if dy >= 0 else source.shape[1] + 2 * dy
        target_x, target_y = max(dx, 0), max(dy, 0)
        source_x, source_y = max(-dx, 0), max(-dy, 0)
        target[:, target_y:target_y + height, target_x:target_x + width] = (
            source[:, source_y:source_y + height, source_x:source_x + width]
        )
        return target

    def first(self) -> torch.Tensor:
        """The start noise, shape (B, *shape), on `device`. Repeatable: each call restarts the generators."""
        self.generators = self._new_generators(self.seeds)
        noise_shape = self._noise_shape()
        resized = noise_shape != self.shape
        images = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators, strict=True)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = self.subseeds[i] if i < len(self.subseeds) else 0
                subnoise = self._randn(subseed, noise_shape)

            # Like A1111: with seed resize the seed's noise comes from a fresh generator; the image's own generator
            # then draws the full-size noise around it, which is what later steps continue from.
            noise = self._randn(seed, noise_shape) if resized else self._draw(generator)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if resized:
                noise = self._paste_centered(self._draw(generator), noise)
            images.append(noise)

        if self.ensd:
            # Eta noise seed delta: A1111 reseeds the step noise with seed + ENSD once the start noise is drawn.
            self.generators = self._new_generators([seed + self.ensd for seed in self.seeds])
        self._first_drawn = True
        return torch.stack(images).to(self.device)

    def next(self) -> torch.Tensor:
        """The first call returns `first()`; later calls draw one more noise tensor per image from its generator."""
        if not self._first_drawn:
            return self.first()
        return torch.stack([self._draw(generator) for generator in self.generators]).to(self.device)


def for_job(job: Any, opts: Any, model: Any, shape: tuple[int, ...], seeds: list[int], subseeds: list[int]
            ) -> ImageRNG:
    """A batch's noise as A1111 makes it for job `job` (its variation seed and seed resize), the settings'
    RNG source (GPU means the CPU generator on a machine without CUDA) and eta noise seed delta."""
    f = model.vae_scale_factor
    source = opts.randn_source
    return ImageRNG(
        shape, seeds, subseeds=subseeds, subseed_strength=job.subseed_strength,
        seed_resize_from_h=job.seed_resize_from_h // f if job.seed_resize_from_h > 0 else 0,
        seed_resize_from_w=job.seed_resize_from_w // f if job.seed_resize_from_w > 0 else 0,
        source="CPU" if source == "GPU" and not model.policy.is_cuda else source, device=model.policy.device,
        ensd=int(opts.eta_noise_seed_delta or 0))
