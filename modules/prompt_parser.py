"""A1111's `modules.prompt_parser` for extensions: prompt schedules, AND parts, attention, and learned conditioning,
over the core's parser and encoder (modules/prompts/).

The parsing is the core's own code (`modules.prompts.parser`, which follows A1111's grammar); what this module adds
is A1111's conditioning containers (`ScheduledPromptConditioning`, `MulticondLearnedConditioning`, ...) filled by
the loaded model's encoder. SDXL conditionings are dicts (`crossattn`, `vector`) as in A1111; encoding runs in the
job queue (at once when called from inside a job, as extensions do).
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import torch

from modules.prompts import parser as core_parser
from modules.prompts.parser import (  # noqa: F401 (A1111's names)
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_prompt_attention,
)

re_attention = core_parser._RE_ATTENTION
re_break = core_parser._RE_BREAK
re_AND = core_parser._RE_AND  # noqa: N816 (A1111's name)
re_weight = core_parser._RE_WEIGHT

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


class SdConditioning(list):
    """A list of prompts with what A1111 passes along for SDXL's size conditioning."""

    def __init__(self, prompts: Any, is_negative_prompt: bool = False, width: int | None = None,
                 height: int | None = None, copy_from: Any = None) -> None:
        super().__init__()
        self.extend(prompts)
        if copy_from is None:
            copy_from = prompts
        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, "is_negative_prompt", False)
        self.width = width or getattr(copy_from, "width", None)
        self.height = height or getattr(copy_from, "height", None)


class DictWithShape(dict):
    """SDXL's conditioning (crossattn, vector) with the shape of its cross-attention part."""

    def __init__(self, x: dict[str, Any], shape: Any = None) -> None:
        super().__init__()
        self.update(x)

    @property
    def shape(self) -> torch.Size:
        return self["crossattn"].shape


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules: list[ScheduledPromptConditioning], weight: float = 1.0) -> None:
        self.schedules = schedules
        self.weight = weight


class MulticondLearnedConditioning:
    def __init__(self, shape: tuple[int, ...], batch: list[list[ComposableScheduledPromptConditioning]]) -> None:
        self.shape = shape  # the shape field is needed to send this object to DDIM/PLMS
        self.batch = batch


def _encode(model: Any, texts: list[str]) -> list[Any]:
    """One conditioning per text with the model's encoder (in the job queue)."""
    from modules import engines, shared

    model = model if model is not None else shared.sd_model
    if model is None:
        raise RuntimeError("no model is loaded")

    def work() -> list[Any]:
        engine = engines.engine_for(model, shared.opts, shared.embeddings)
        with torch.no_grad():
            conditioning, _ = engine.encode(list(texts))
        if conditioning.pooled is None:
            return list(conditioning.embeds)
        return [DictWithShape({"crossattn": embeds, "vector": pooled})
                for embeds, pooled in zip(conditioning.embeds, conditioning.pooled, strict=True)]

    return shared.runner.run("encode-prompt", work, progress=False)


def get_learned_conditioning(model: Any, prompts: list[str], steps: int, hires_steps: int | None = None,
                             use_old_scheduling: bool = False) -> list[list[ScheduledPromptConditioning]]:
    """Per prompt, its schedule of encodings: [ScheduledPromptConditioning(end_at_step, cond), ...]
    (A1111: "a [b:c:5]" at 10 steps gives two entries, ending at steps 5 and 10). Equal prompts share one list."""
    schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
    texts = sorted({text for schedule in schedules for _, text in schedule})
    encoded = dict(zip(texts, _encode(model, texts), strict=True)) if texts else {}
    cache: dict[str, list[ScheduledPromptConditioning]] = {}
    result = []
    for prompt, schedule in zip(prompts, schedules, strict=True):
        if prompt not in cache:
            cache[prompt] = [ScheduledPromptConditioning(end, encoded[text]) for end, text in schedule]
        result.append(cache[prompt])
    return result


def get_multicond_learned_conditioning(model: Any, prompts: list[str], steps: int, hires_steps: int | None = None,
                                       use_old_scheduling: bool = False) -> MulticondLearnedConditioning:
    """AND-composable conditioning: per prompt, its parts' schedules with their weights."""
    res_indexes, prompt_flat_list, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, prompt_flat_list, steps, hires_steps, use_old_scheduling)
    batch = [[ComposableScheduledPromptConditioning(learned[index], weight) for index, weight in indexes]
             for indexes in res_indexes]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


def _at_step(schedule: list[ScheduledPromptConditioning], current_step: int) -> Any:
    for entry in schedule:
        if current_step <= entry.end_at_step:
            return entry.cond
    return schedule[-1].cond


def stack_conds(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack encodings of different lengths, padding the shorter ones with their last vector (as A1111)."""
    token_count = max(t.shape[0] for t in tensors)
    padded = [t if t.shape[0] == token_count else torch.vstack([t, t[-1:].repeat(token_count - t.shape[0], 1)])
              for t in tensors]
    return torch.stack(padded)


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step: int) -> Any:
    """The batch's conditioning at `current_step` (a tensor, or an SDXL dict of tensors)."""
    conds = [_at_step(schedule, current_step) for schedule in c]
    if isinstance(conds[0], dict):
        return DictWithShape({key: torch.stack([cond[key] for cond in conds]) for key in conds[0]})
    return torch.stack(conds)


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step: int
                                ) -> tuple[list[list[tuple[int, float]]], Any]:
    """(conds_list, tensor): every AND part's conditioning at `current_step` stacked, and per prompt the
    (row, weight) pairs of its parts — what CFGDenoiser.combine_denoised receives."""
    tensors: list[Any] = []
    conds_list: list[list[tuple[int, float]]] = []
    for composable_prompts in c.batch:
        conds_for_batch = []
        for composable in composable_prompts:
            conds_for_batch.append((len(tensors), composable.weight))
            tensors.append(_at_step(composable.schedules, current_step))
        conds_list.append(conds_for_batch)
    if isinstance(tensors[0], dict):
        stacked = {key: stack_conds([t[key] for t in tensors]) if key == "crossattn"
                   else torch.stack([t[key] for t in tensors]) for key in tensors[0]}
        return conds_list, DictWithShape(stacked)
    return conds_list, stack_conds(tensors)
