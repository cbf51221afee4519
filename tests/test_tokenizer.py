"""The CLIP tokenizer files shipped in configs/tokenizer/ load offline and match CLIP's real ids."""

import json
import os

import pytest
from transformers import CLIPTokenizer

TOKENIZER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tokenizer")
BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    # from_pretrained with the folder: in transformers 5, CLIPTokenizer(vocab_file=...) silently ignores the file.
    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR, local_files_only=True)


def test_files_present_with_expected_sizes():
    with open(os.path.join(TOKENIZER_DIR, "vocab.json"), encoding="utf-8") as handle:
        vocab = json.load(handle)
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == BOS and vocab["<|endoftext|>"] == EOS
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    with open(os.path.join(TOKENIZER_DIR, "merges.txt"), encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert lines[0] == "#version: 0.2"
    assert len(lines) == 1 + 48894
    assert lines[1] == "i n"


def test_config_files():
    with open(os.path.join(TOKENIZER_DIR, "tokenizer_config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    assert config["model_max_length"] == 77
    assert config["bos_token"] == "<|startoftext|>"
    assert config["eos_token"] == config["unk_token"] == config["pad_token"] == "<|endoftext|>"
    assert config["do_lower_case"] is True
    with open(os.path.join(TOKENIZER_DIR, "special_tokens_map.json"), encoding="utf-8") as handle:
        assert json.load(handle)["pad_token"] == "<|endoftext|>"


def test_a_photo_of_a_cat(tokenizer):
    assert tokenizer("a photo of a cat").input_ids == [BOS, 320, 1125, 539, 320, 2368, EOS]


def test_sizes_and_special_tokens(tokenizer):
    assert len(tokenizer) == 49408
    assert tokenizer.vocab_size == 49408
    assert tokenizer.model_max_length == 77
    assert tokenizer.bos_token_id == BOS
    assert tokenizer.eos_token_id == EOS
    assert tokenizer.pad_token_id == EOS


def test_padding_to_max_length(tokenizer):
    ids = tokenizer("a cat", padding="max_length", max_length=tokenizer.model_max_length).input_ids
    assert len(ids) == 77
    assert ids[:4] == [BOS, 320, 2368, EOS]
    assert set(ids[4:]) == {EOS}


def test_truncation_keeps_eos(tokenizer):
    ids = tokenizer("cat " * 100, truncation=True, max_length=77).input_ids
    assert len(ids) == 77
    assert ids[0] == BOS and ids[-1] == EOS and ids[1:-1] == [2368] * 75


def test_comma_and_merged_words(tokenizer):
    assert tokenizer(",").input_ids == [BOS, 267, EOS]
    # 'photorealistic' is not one token: the BPE merges split it into two known pieces.
    ids = tokenizer("photorealistic masterpiece").input_ids
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == ["photo", "realistic</w>", "masterpiece</w>"]
    assert ids == [BOS, 1153, 16157, 12066, EOS]


def test_lowercase_and_whitespace_are_normalised(tokenizer):
    assert tokenizer("A   PHOTO of a Cat").input_ids == tokenizer("a photo of a cat").input_ids


def test_decode_round_trip(tokenizer):
    ids = tokenizer("a photo of a cat, masterpiece").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a photo of a cat , masterpiece"


def test_non_ascii_uses_byte_level_tokens(tokenizer):
    ids = tokenizer("café 東京").input_ids
    assert ids[0] == BOS and ids[-1] == EOS
    assert tokenizer.unk_token_id not in ids[1:-1]  # every byte has a token, nothing becomes unknown
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == "café東京"
