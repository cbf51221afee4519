"""PromptEncoder: A1111's chunking, comma backtrack, emphasis modes, CLIP skip, SDXL towers, token counter.

Reference numbers come from running the transformers text models directly on token ids (their own forward), so
the embedding-level forward of modules/prompts/encoder.py is checked against an independent path.
"""

from __future__ import annotations

import time

import pytest
import torch

from modules.devices import choose_policy
from modules.models.loader import load_model
from modules.models.registry import CheckpointInfo
from modules.models.tiny import write_tiny_checkpoint
from modules.prompts.encoder import CHUNK_LENGTH, PromptEncoder

BOS, EOS = 49406, 49407
CAT, DOG, A, COMMA = 2368, 1929, 320, 267   # single-token words in CLIP's vocabulary
ROW = CHUNK_LENGTH + 2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoder-models")
    loaded = {}
    for family in ("sd1", "sd2", "sdxl", "sdxl-refiner"):
        path = write_tiny_checkpoint(family, folder / f"tiny-{family}.safetensors", seed=1)
        loaded[family] = load_model(CheckpointInfo(str(path), path.name), choose_policy(use_cpu=["all"]))
    return loaded


def words(word: str, count: int) -> str:
    return " ".join([word] * count)


def row_ids(tokens: list[int], pad: int = EOS) -> torch.Tensor:
    """One 77-id row: BOS, tokens, EOS, then padding."""
    ids = [BOS, *tokens, EOS]
    return torch.tensor([ids + [pad] * (ROW - len(ids))])


# --- tokenisation ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "chunks", "count"), [
    ("", 1, (0, 75)),
    ("a cat", 1, (2, 75)),
    (words("cat", 75), 1, (75, 75)),
    (words("cat", 76), 2, (76, 150)),
    (words("cat", 150), 2, (150, 150)),
    (words("cat", 151), 3, (151, 225)),
    ("a BREAK cat", 2, (76, 150)),
    ("a BREAK", 1, (75, 75)),               # nothing after BREAK: no empty last chunk (A1111)
    (words("cat", 10) + " BREAK " + words("dog", 70), 2, (145, 150)),
])
def test_chunk_boundaries_and_token_counts_match_a1111(models, text, chunks, count):
    encoder = PromptEncoder(models["sd1"])
    tokenized = encoder.tokenize([text])[0]
    assert len(tokenized) == chunks
    assert all(len(chunk.tokens) == ROW and len(chunk.multipliers) == ROW for chunk in tokenized)
    assert all(chunk.tokens[0] == BOS and chunk.tokens[-1] == EOS for chunk in tokenized)
    assert encoder.count_tokens(text) == count
    assert encoder.count_chunks(text) == chunks


def test_break_starts_a_new_chunk(models):
    first, second = PromptEncoder(models["sd1"]).tokenize(["a BREAK cat"])[0]
    assert first.tokens == [BOS, A] + [EOS] * 75
    assert second.tokens == [BOS, CAT] + [EOS] * 75


def test_emphasis_none_keeps_brackets_and_break_literal(models):
    encoder = PromptEncoder(models["sd1"], emphasis="None")
    tokenizer = models["sd1"].tokenizers[0]
    text = "a (cat:1.5) BREAK dog"
    (chunk,) = encoder.tokenize([text])[0]
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert chunk.tokens[1:1 + len(plain)] == plain
    assert set(chunk.multipliers) == {1.0}


def test_comma_backtrack_moves_the_tail_to_the_next_chunk(models):
    text = words("cat", 70) + ", " + words("dog", 10)   # 81 tokens: the comma is token 71
    first, second = PromptEncoder(models["sd1"]).tokenize([text])[0]
    assert first.tokens == [BOS] + [CAT] * 70 + [COMMA] + [EOS] * 5
    assert second.tokens == [BOS] + [DOG] * 10 + [EOS] * 66
    assert PromptEncoder(models["sd1"]).count_tokens(text) == (85, 150)  # a full first chunk counts 75

    no_backtrack = PromptEncoder(models["sd1"], comma_padding_backtrack=0).tokenize([text])[0]
    assert no_backtrack[0].tokens == [BOS] + [CAT] * 70 + [COMMA] + [DOG] * 4 + [EOS]
    assert no_backtrack[1].tokens == [BOS] + [DOG] * 6 + [EOS] * 70
    too_far = PromptEncoder(models["sd1"], comma_padding_backtrack=3).tokenize([text])[0]  # comma 5 tokens back
    assert too_far[0].tokens == no_backtrack[0].tokens


def test_multipliers_follow_the_attention_syntax(models):
    (chunk,) = PromptEncoder(models["sd1"]).tokenize(["a (cat:1.5) [dog] ((a))"])[0]
    assert chunk.tokens[:6] == [BOS, A, CAT, DOG, A, EOS]
    assert chunk.multipliers[:6] == pytest.approx([1.0, 1.0, 1.5, 1 / 1.1, 1.1 * 1.1, 1.0])
    assert chunk.multipliers[6:] == [1.0] * 71


def test_word_cache_tokenises_exactly_like_the_whole_text(models):
    encoder = PromptEncoder(models["sd1"])
    tokenizer = models["sd1"].tokenizers[0]
    texts = ["A  photo\tof dog's toys, 12.5 (score) <|endoftext|>x", "naïve café 你好 don't", "cat,dog:1.2", "   ",
             "cat\x1cdog\u00a0bird\u3000fish\r\n"]
    for text in texts:
        assert encoder._token_ids([text])[0] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_count_tokens_is_fast(models):
    encoder = PromptEncoder(models["sd1"])
    prompt = ", ".join(f"(masterpiece {i}:1.1), a beautiful detailed painting of a cat" for i in range(30))
    used, limit = encoder.count_tokens(prompt)
    assert used >= 300 and limit == 75 * -(-used // 75)
    start = time.perf_counter()
    encoder.count_tokens(prompt + " zebra")   # a keystroke: one new word
    elapsed_ms = (time.perf_counter() - start) * 1000
    print(f"count_tokens for a {used}-token prompt: {elapsed_ms:.2f} ms")
    assert elapsed_ms < 50


# --- encoding: SD1 ---------------------------------------------------------------------------------------------

def _sd1_reference(model, ids: torch.Tensor, clip_skip: int = 1) -> torch.Tensor:
    text = model.text_encoders[0]
    out = text(ids, output_hidden_states=True)
    if clip_skip == 1:
        return out.last_hidden_state
    return text.final_layer_norm(out.hidden_states[-clip_skip])


def test_plain_prompt_equals_the_text_model_output(models):
    model = models["sd1"]
    encoded = PromptEncoder(model).encode(["a cat dog"])
    assert encoded.embeds.shape == (1, ROW, 64) and encoded.pooled is None
    expected = _sd1_reference(model, row_ids([A, CAT, DOG]))
    torch.testing.assert_close(encoded.embeds, expected, atol=1e-6, rtol=0)


def test_original_emphasis_multiplies_covered_tokens_and_restores_the_mean(models):
    model = models["sd1"]
    plain = _sd1_reference(model, row_ids([A, CAT, DOG]))
    multipliers = torch.ones(ROW)
    multipliers[2] = 1.5        # cat
    multipliers[3] = 1 / 1.1    # dog
    weighted = plain * multipliers[None, :, None]
    expected = weighted * (plain.mean() / weighted.mean())

    original = PromptEncoder(model).encode(["a (cat:1.5) [dog]"]).embeds
    torch.testing.assert_close(original, expected, atol=1e-6, rtol=0)
    assert original.mean().item() == pytest.approx(plain.mean().item(), abs=1e-6)

    no_norm = PromptEncoder(model, emphasis="No norm").encode(["a (cat:1.5) [dog]"]).embeds
    torch.testing.assert_close(no_norm, weighted, atol=1e-6, rtol=0)

    ignore = PromptEncoder(model, emphasis="Ignore").encode(["a (cat:1.5) [dog]"]).embeds
    torch.testing.assert_close(ignore, plain, atol=1e-6, rtol=0)


def test_emphasis_none_encodes_the_brackets_as_text(models):
    model = models["sd1"]
    text = "a (cat:1.5) dog"
    encoder = PromptEncoder(model, emphasis="None")
    literal = model.tokenizers[0](text, add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(encoder.encode([text]).embeds, _sd1_reference(model, row_ids(literal)), atol=1e-6,
                               rtol=0)
    assert encoder.infotext_params() == {"Emphasis": "None"}
    assert PromptEncoder(model).infotext_params() == {}


def test_clip_skip_takes_an_earlier_layer_then_the_final_norm(models):
    model = models["sd1"]
    ids = row_ids([A, CAT])
    for skip in (2, 3):
        encoded = PromptEncoder(model, clip_skip=skip).encode(["a cat"]).embeds
        torch.testing.assert_close(encoded, _sd1_reference(model, ids, skip), atol=1e-6, rtol=0)
    assert not torch.allclose(PromptEncoder(model, clip_skip=2).encode(["a cat"]).embeds,
                              _sd1_reference(model, ids), atol=1e-3)


def test_each_chunk_is_encoded_on_its_own_and_the_batch_is_padded(models):
    model = models["sd1"]
    long_text = words("cat", 76)
    encoded = PromptEncoder(model).encode(["a dog", long_text], min_chunks=3)
    assert encoded.embeds.shape == (2, 3 * ROW, 64)
    empty = _sd1_reference(model, row_ids([]))
    torch.testing.assert_close(encoded.embeds[0, :ROW], _sd1_reference(model, row_ids([A, DOG]))[0], atol=1e-6,
                               rtol=0)
    torch.testing.assert_close(encoded.embeds[0, ROW:2 * ROW], empty[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(encoded.embeds[1, :ROW], _sd1_reference(model, row_ids([CAT] * 75))[0], atol=1e-6,
                               rtol=0)
    torch.testing.assert_close(encoded.embeds[1, ROW:2 * ROW], _sd1_reference(model, row_ids([CAT]))[0],
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(encoded.embeds[1, 2 * ROW:], empty[0], atol=1e-6, rtol=0)


def test_unknown_emphasis_falls_back_to_original(models):
    assert PromptEncoder(models["sd1"], emphasis="Bogus").emphasis == "Original"


# --- SD2, SDXL, refiner ----------------------------------------------------------------------------------------

def test_sd2_pads_with_zero_after_eos_and_ignores_clip_skip(models):
    model = models["sd2"]
    expected = model.text_encoders[0](row_ids([A, CAT], pad=0)).last_hidden_state
    for skip in (1, 2):  # A1111's OpenCLIP path does not apply CLIP skip
        encoded = PromptEncoder(model, clip_skip=skip).encode(["a cat"]).embeds
        torch.testing.assert_close(encoded, expected, atol=1e-6, rtol=0)


def test_sdxl_concatenates_both_penultimate_layers_and_pools_the_first_chunk(models):
    model = models["sdxl"]
    clip_l, clip_g = model.text_encoders
    long_text = "a cat " + words("dog", 80)
    encoded = PromptEncoder(model, clip_skip=2).encode(["a cat", long_text])
    assert encoded.embeds.shape == (2, 2 * ROW, 128)
    assert encoded.pooled.shape == (2, 64)

    first = [A, CAT]
    l_out = clip_l(row_ids(first), output_hidden_states=True)
    g_out = clip_g(row_ids(first, pad=0), output_hidden_states=True)
    expected = torch.cat([l_out.hidden_states[-2], g_out.hidden_states[-2]], dim=-1)  # no final norm
    torch.testing.assert_close(encoded.embeds[:1, :ROW], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(encoded.pooled[:1], g_out.text_embeds, atol=1e-5, rtol=0)

    chunk0 = [A, CAT] + [DOG] * 73
    pooled_first_chunk = clip_g(row_ids(chunk0, pad=0)).text_embeds
    torch.testing.assert_close(encoded.pooled[1:], pooled_first_chunk, atol=1e-5, rtol=0)


def test_sdxl_clip_l_skip_applies_only_with_the_option(models):
    model = models["sdxl"]
    clip_l = model.text_encoders[0]
    hidden = clip_l(row_ids([A, CAT]), output_hidden_states=True).hidden_states
    default = PromptEncoder(model, clip_skip=3).encode(["a cat"]).embeds[..., :64]
    torch.testing.assert_close(default, hidden[-2], atol=1e-6, rtol=0)
    for skip in (1, 3):
        skipped = PromptEncoder(model, clip_skip=skip, sdxl_clip_l_skip=True).encode(["a cat"]).embeds[..., :64]
        torch.testing.assert_close(skipped, hidden[-skip], atol=1e-6, rtol=0)


def test_refiner_uses_bigg_only(models):
    model = models["sdxl-refiner"]
    encoded = PromptEncoder(model).encode(["a cat"])
    out = model.text_encoders[0](row_ids([A, CAT], pad=0), output_hidden_states=True)
    assert encoded.embeds.shape == (1, ROW, 64) and encoded.pooled.shape == (1, 64)
    torch.testing.assert_close(encoded.embeds, out.hidden_states[-2], atol=1e-6, rtol=0)
    torch.testing.assert_close(encoded.pooled, out.text_embeds, atol=1e-5, rtol=0)
