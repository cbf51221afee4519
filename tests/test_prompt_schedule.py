"""Scheduled prompts switch conditioning at the right step and re-encode only when the text changes."""

from __future__ import annotations

import torch

from modules.prompts.encoder import Conditioning
from modules.prompts.guidance import PromptGuidance, prompt_token_count


class _CountingEncoder:
    """A stand-in text encoder that records which texts it was asked for (one row per text)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def encode(self, texts: list[str], chunks: int) -> Conditioning:
        self.calls += texts
        value = float(sum(map(ord, texts[0])) % 97)
        return Conditioning(torch.full((1, 77 * chunks, 4), value), None)


def test_schedules_switch_at_their_step_and_encode_each_text_once():
    encoder = _CountingEncoder()
    guidance = PromptGuidance(["a [red:blue:0.5] cat", "[x|y]"], ["neg [n1:n2:3]", ""], steps=10,
                              encode=encoder.encode, count_chunks=lambda text: 1)
    seen = []
    for step in range(10):
        conditioning = guidance.at_step(step)
        assert conditioning.embeds.shape == (4, 77, 4)  # 2 prompts + 2 negatives
        seen.append(tuple(guidance._texts(step)[0]) + tuple(guidance._texts(step)[3]))
    # A1111 compares its 0-based step counter with the 1-based schedule ends (`step <= end`), so the first
    # alternative holds for steps 0 and 1, then they alternate
    assert [s[1] for s in seen] == ["x", "x", "y", "x", "y", "x", "y", "x", "y", "x"]
    assert seen[0] == ("a red cat", "x", "neg n1", "")
    assert seen[4][2] == "neg n2" and seen[3][2] == "neg n1"
    assert seen[5][0] == "a red cat" and seen[6][0] == "a blue cat"
    assert sorted(set(encoder.calls)) == sorted(encoder.calls)  # every text encoded exactly once
    assert set(encoder.calls) == {"a red cat", "a blue cat", "x", "y", "neg n1", "neg n2", ""}


def test_and_weights_and_combine():
    encoder = _CountingEncoder()
    guidance = PromptGuidance(["cat AND dog :0.5"], [""], steps=4, encode=encoder.encode,
                              count_chunks=lambda text: 1)
    step = guidance.at_step(0)
    assert step.owners == [0, 0] and step.weights == [1.0, 0.5]
    out = torch.tensor([[2.0], [4.0], [1.0]])  # cond(cat), cond(dog), uncond
    guided = PromptGuidance.combine(out, step, cfg_scale=3.0)
    assert torch.equal(guided, torch.tensor([[1.0 + 3.0 * (2 - 1) + 1.5 * (4 - 1)]]))


def test_token_counter_takes_the_longest_variant_without_network_tags():
    def count(text: str) -> tuple[int, int]:
        n = len(text.split())
        return n, 75 * max(1, -(-n // 75))

    assert prompt_token_count("a b [c d e:f:0.5] <lora:x:1>", 20, count) == (5, 75)
    assert prompt_token_count("a AND b c d", 20, count) == (3, 75)


def test_hires_pass_schedules_follow_a1111_hires_rules():
    encoder = _CountingEncoder()
    # first pass 10 steps, hires 5 (A1111): whole numbers count on from the first pass (12 = hires step 2);
    # a fraction below 1 lies in the first pass, so the hires pass already uses the "to" text
    guidance = PromptGuidance(["[a:b:0.4]", "[c:d:12]"], ["", ""], steps=10, encode=encoder.encode,
                              count_chunks=lambda text: 1, hires_steps=5)
    texts = [tuple(guidance._texts(step)[0]) for step in range(5)]
    assert texts == [("b", "c"), ("b", "c"), ("b", "c"), ("b", "d"), ("b", "d")]
