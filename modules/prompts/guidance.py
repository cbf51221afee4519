"""Classifier-free guidance over scheduled and composable prompts (A1111's CFGDenoiser semantics).

Each image's prompt may hold `AND` parts (each with a weight) and prompt-editing schedules (`[a:b:0.5]`,
`[a|b]`); its negative prompt may be scheduled too. At every step this picks the text each part has at that step,
encodes only texts not seen before (a cache by text), runs the UNet once over all parts and negatives, and combines:
    guided = uncond + sum_i w_i * cfg * (cond_i - uncond)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from modules.prompts import parser
from modules.prompts.encoder import Conditioning

Schedule = list[tuple[int, str]]  # (last step the text applies to, text)


@dataclass
class StepConditioning:
    embeds: torch.Tensor              # [parts + batch, tokens, dim]: every AND part, then each image's negative
    pooled: torch.Tensor | None       # SDXL
    owners: list[int]                 # image index of each part
    weights: list[float]              # AND weight of each part
    # owners as an index tensor on the embeds' device, made once: indexing with a Python list would copy it
    # host-to-device at every step
    owner_index: torch.Tensor | None = None

    @property
    def one_part_per_image(self) -> bool:
        """The common case (no AND): part i belongs to image i with weight 1, so CFG is one vectorised op."""
        return self.owners == list(range(len(self.owners))) and all(w == 1.0 for w in self.weights)


def text_at(schedule: Schedule, step: int) -> str:
    for end_at_step, text in schedule:
        if step <= end_at_step:
            return text
    return schedule[-1][1]


class PromptGuidance:
    def __init__(self, prompts: list[str], negatives: list[str], steps: int,
                 encode: Callable[[list[str], int], Conditioning], count_chunks: Callable[[str], int],
                 hires_steps: int | None = None) -> None:
        """`hires_steps`: schedules for a hires pass of that many steps after a first pass of `steps` (A1111:
        fractions then refer to the hires pass, whole numbers still count from the start of the first pass)."""
        self.encode = encode
        self.count_chunks = count_chunks
        self.parts: list[list[tuple[Schedule, float]]] = []
        for prompt in prompts:
            split = parser.split_and(prompt) or [(prompt, 1.0)]
            schedules = parser.get_learned_conditioning_prompt_schedules([text for text, _ in split], steps,
                                                                         hires_steps)
            self.parts.append([(schedule, weight) for schedule, (_, weight) in zip(schedules, split, strict=True)])
        self.negatives: list[Schedule] = parser.get_learned_conditioning_prompt_schedules(negatives, steps,
                                                                                          hires_steps)
        self._cache: dict[tuple[str, int], Conditioning] = {}
        self._last: tuple[tuple[str, ...], StepConditioning] | None = None

    @property
    def batch_size(self) -> int:
        return len(self.parts)

    def _texts(self, step: int) -> tuple[list[str], list[int], list[float], list[str]]:
        texts, owners, weights = [], [], []
        for image, parts in enumerate(self.parts):
            for schedule, weight in parts:
                texts.append(text_at(schedule, step))
                owners.append(image)
                weights.append(weight)
        return texts, owners, weights, [text_at(schedule, step) for schedule in self.negatives]

    def _encoded(self, text: str, chunks: int) -> Conditioning:
        key = (text, chunks)
        if key not in self._cache:
            self._cache[key] = self.encode([text], chunks)
        return self._cache[key]

    def at_step(self, step: int) -> StepConditioning:
        """Conditioning for the UNet at `step` (re-built only when some scheduled text changed)."""
        texts, owners, weights, negatives = self._texts(step)
        key = tuple(texts + negatives)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        chunks = max(self.count_chunks(t) for t in key)  # one token length for the whole UNet batch
        encoded = [self._encoded(t, chunks) for t in key]
        pooled = None if encoded[0].pooled is None else torch.cat([e.pooled for e in encoded])
        embeds = torch.cat([e.embeds for e in encoded])
        owner_index = torch.tensor(owners, dtype=torch.long).to(embeds.device)
        result = StepConditioning(embeds, pooled, owners, weights, owner_index)
        self._last = (key, result)
        return result

    def expand(self, x: torch.Tensor, conditioning: StepConditioning) -> torch.Tensor:
        """Latent rows matching the embeds: one per AND part (its image's latent), then the batch again."""
        if conditioning.one_part_per_image and len(conditioning.owners) == len(x):
            return torch.cat([x, x])
        index = conditioning.owner_index
        if index is None or index.device != x.device:
            index = torch.tensor(conditioning.owners, dtype=torch.long, device=x.device)
        return torch.cat([x[index], x])

    @staticmethod
    def cond_rows(x: torch.Tensor, conditioning: StepConditioning) -> tuple[torch.Tensor, StepConditioning]:
        """Only the prompt parts' rows of latents and conditioning, for a denoiser call without the negative
        prompt (CFG scale 1, A1111's skip_early_cond and s_min_uncond)."""
        n_parts = len(conditioning.owners)
        rows = conditioning.embeds[:n_parts]
        pooled = None if conditioning.pooled is None else conditioning.pooled[:n_parts]
        cond_only = StepConditioning(rows, pooled, conditioning.owners, conditioning.weights,
                                     conditioning.owner_index)
        if conditioning.one_part_per_image and n_parts == len(x):
            return x, cond_only
        index = conditioning.owner_index
        if index is None or index.device != x.device:
            index = torch.tensor(conditioning.owners, dtype=torch.long, device=x.device)
        return x[index], cond_only

    @staticmethod
    def with_fake_uncond(out: torch.Tensor, conditioning: StepConditioning) -> torch.Tensor:
        """A cond-only prediction with each image's first part standing in for its unconditional row (what A1111
        does when it skips the negative prompt): CFG then gives that part's prediction."""
        owners = conditioning.owners
        if conditioning.one_part_per_image:
            return torch.cat([out, out])
        first = [owners.index(image) for image in range(max(owners) + 1)]
        return torch.cat([out, out[first]])

    @staticmethod
    def combine(out: torch.Tensor, conditioning: StepConditioning, cfg_scale: float) -> torch.Tensor:
        n_parts = len(conditioning.owners)
        cond, uncond = out[:n_parts], out[n_parts:]
        if conditioning.one_part_per_image and n_parts == len(uncond):
            return uncond + (cond - uncond) * cfg_scale
        guided = uncond.clone()
        for row, (image, weight) in enumerate(zip(conditioning.owners, conditioning.weights, strict=True)):
            guided[image] += (cond[row] - uncond[image]) * (weight * cfg_scale)
        return guided


def prompt_token_count(prompt: str, steps: int, count_tokens: Callable[[str], tuple[int, int]]) -> tuple[int, int]:
    """A1111's token counter: network tags removed, the largest count over AND parts and scheduled variants."""
    text, _ = parser.parse_prompt(prompt)
    parts = [part for part, _ in parser.split_and(text)] or [text]
    variants = {t for schedule in parser.get_learned_conditioning_prompt_schedules(parts, steps) for _, t in schedule}
    return max((count_tokens(t) for t in variants), key=lambda counted: counted[0], default=(0, 75))
