"""Textual-inversion embeddings: file formats, the database (skips, hashes, refresh, lookup), and encoding with them.

An embedding changes the encoding from its own position on (causal attention), so the checks are: the rows
before it are unchanged, its input rows are the file's vectors, and the whole output equals the text model run
with a spare vocabulary row set to the vector (an independent path).
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from modules.devices import choose_policy
from modules.models import demo
from modules.models.loader import load_model
from modules.models.registry import CheckpointInfo
from modules.models.tiny import write_tiny_checkpoint
from modules.prompts.encoder import CHUNK_LENGTH, PromptEncoder
from modules.prompts.textual_inversion import EmbeddingDatabase, EmbeddingLoadError, load_embedding_file

BOS, EOS = 49406, 49407
CAT, DOG, A, COMMA = 2368, 1929, 320, 267
ROW = CHUNK_LENGTH + 2
SPARE_TOKEN = 40000  # a vocabulary row borrowed to run the reference forward


class NotATensor:
    """Something a pickle may not contain."""


def vectors(count: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ti-models")
    loaded = {}
    for family in ("sd1", "sd2", "sdxl"):
        path = write_tiny_checkpoint(family, folder / f"tiny-{family}.safetensors", seed=2)
        loaded[family] = load_model(CheckpointInfo(str(path), path.name), choose_policy(use_cpu=["all"]))
    return loaded


@pytest.fixture
def embedding_dir(tmp_path):
    """One file per format, 64 wide (the tiny models' text width), plus misfits."""
    folder = tmp_path / "embeddings"
    (folder / "nested" / "deeper").mkdir(parents=True)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors(2, 64, 1)}, "name": "inner name",
                "step": 123, "sd_checkpoint": "abcd1234", "sd_checkpoint_name": "tiny"}, folder / "twovec.pt")
    save_file({"emb_params": vectors(1, 64, 2)}, str(folder / "nested" / "onevec.safetensors"))
    torch.save({"<concept>": vectors(1, 64, 3)[0]}, folder / "nested" / "deeper" / "concept.bin")
    save_file({"clip_l": vectors(2, 64, 4), "clip_g": vectors(2, 64, 5)}, str(folder / "xlvec.safetensors"))
    save_file({"emb_params": vectors(1, 32, 6)}, str(folder / "narrow.safetensors"))
    (folder / "empty.pt").write_bytes(b"")
    (folder / "notes.txt").write_text("not an embedding")
    return folder


# --- files -----------------------------------------------------------------------------------------------------

def test_each_file_format_loads(embedding_dir):
    a1111 = load_embedding_file(embedding_dir / "twovec.pt")
    assert a1111.name == "twovec"  # the file stem, not the stored name (A1111)
    assert a1111.vectors_count == 2 and a1111.step == 123
    assert a1111.sd_checkpoint == "abcd1234" and a1111.sd_checkpoint_name == "tiny"
    torch.testing.assert_close(a1111.vectors["default"], vectors(2, 64, 1))

    emb_params = load_embedding_file(embedding_dir / "nested" / "onevec.safetensors")
    assert emb_params.widths == {"default": 64} and emb_params.step is None
    concept = load_embedding_file(embedding_dir / "nested" / "deeper" / "concept.bin")
    assert concept.vectors["default"].shape == (1, 64)  # a 1-D diffusers vector gains the token axis
    xl = load_embedding_file(embedding_dir / "xlvec.safetensors")
    assert xl.widths == {"clip_l": 64, "clip_g": 64} and xl.vectors_count == 2


def test_pickles_with_other_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": vectors(1, 64, 1)}, "payload": NotATensor()}, path)
    with pytest.raises(EmbeddingLoadError, match="evil.pt: refused to load"):
        load_embedding_file(path)


def test_files_that_are_not_embeddings_are_refused(tmp_path):
    save_file({"a": torch.zeros(2, 64), "b": torch.zeros(2, 64)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(EmbeddingLoadError, match="not recognised"):
        load_embedding_file(tmp_path / "lora.safetensors")
    torch.save({"string_to_param": {"*": torch.zeros(2, 64), "+": torch.zeros(2, 64)}}, tmp_path / "two.pt")
    with pytest.raises(EmbeddingLoadError, match="exactly one term"):
        load_embedding_file(tmp_path / "two.pt")


# --- database --------------------------------------------------------------------------------------------------

def test_database_loads_what_fits_the_model_and_says_why_not(models, embedding_dir, tmp_path):
    cache = tmp_path / "cache.json"
    database = EmbeddingDatabase([str(embedding_dir), str(tmp_path / "missing")], hash_cache=str(cache))
    database.load(models["sd1"])
    assert list(database.loaded) == ["concept", "onevec", "twovec"]
    assert set(database.skipped) == {"narrow", "xlvec"}
    assert "32" in database.skipped["narrow"] and "64" in database.skipped["narrow"]
    assert "clip_l" in database.skipped["xlvec"]

    twovec = database.loaded["twovec"]
    digest = hashlib.sha256((embedding_dir / "twovec.pt").read_bytes()).hexdigest()
    assert twovec.sha256 == digest and twovec.shorthash == digest[:12]
    assert json.loads(cache.read_text())["hashes"][os.path.abspath(twovec.filename)]["sha256"] == digest

    database.load(models["sdxl"])
    assert list(database.loaded) == ["xlvec"]
    assert set(database.skipped) == {"concept", "narrow", "onevec", "twovec"}


def test_refresh_reloads_only_on_file_or_model_changes(models, embedding_dir):
    database = EmbeddingDatabase([str(embedding_dir)])
    assert database.refresh(models["sd1"]) is True
    assert database.refresh(models["sd1"]) is False
    save_file({"emb_params": vectors(1, 64, 7)}, str(embedding_dir / "nested" / "added.safetensors"))
    assert database.refresh(models["sd1"]) is True
    assert "added" in database.loaded
    assert database.refresh(models["sdxl"]) is True
    assert "added" in database.skipped
    (embedding_dir / "nested" / "added.safetensors").unlink()
    assert database.refresh(models["sdxl"]) is True
    assert "added" not in database.skipped


def test_lookup_matches_the_name_tokens_longest_first(models, tmp_path):
    save_file({"emb_params": vectors(1, 64, 1)}, str(tmp_path / "cat.safetensors"))
    save_file({"emb_params": vectors(3, 64, 2)}, str(tmp_path / "cat dog.safetensors"))
    database = EmbeddingDatabase([str(tmp_path)])
    database.load(models["sd1"])
    embedding, length = database.find_embedding_at_position([A, CAT, DOG], 1)
    assert (embedding.name, length) == ("cat dog", 2)
    embedding, length = database.find_embedding_at_position([A, CAT, A], 1)
    assert (embedding.name, length) == ("cat", 1)
    assert database.find_embedding_at_position([A, CAT], 0) == (None, 0)


# --- encoding --------------------------------------------------------------------------------------------------

def _encoder(model, folder, **options) -> PromptEncoder:
    database = EmbeddingDatabase([str(folder)])
    database.load(model)
    return PromptEncoder(model, embeddings=database, **options)


def _reference_with_spare_token(text_encoder, ids: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """The text model's own forward with SPARE_TOKEN's vocabulary row set to `vector`."""
    table = text_encoder.get_input_embeddings().weight
    original = table[SPARE_TOKEN].clone()
    with torch.no_grad():
        table[SPARE_TOKEN] = vector
        try:
            return text_encoder(ids).last_hidden_state
        finally:
            table[SPARE_TOKEN] = original


@pytest.mark.parametrize("filename", ["twovec.pt", "nested/onevec.safetensors", "nested/deeper/concept.bin"])
def test_embedding_changes_the_encoding_only_from_its_position(models, embedding_dir, filename):
    model = models["sd1"]
    encoder = _encoder(model, embedding_dir)
    embedding = load_embedding_file(embedding_dir / filename)
    name, count = embedding.name, embedding.vectors_count

    (chunk,) = encoder.tokenize([f"a cat {name} dog"])[0]
    assert chunk.tokens[:4 + count] == [BOS, A, CAT] + [0] * count + [DOG]
    assert [(fix.offset, fix.embedding.name) for fix in chunk.fixes] == [(2, name)]
    _, inputs = encoder.input_embeddings([chunk])
    torch.testing.assert_close(inputs[0, 3:3 + count], embedding.vectors["default"])
    assert encoder.used_embeddings == {name: encoder.embeddings.loaded[name]}
    assert encoder.infotext_params() == {"TI hashes": f"{name}: {encoder.embeddings.loaded[name].shorthash}"}

    with_embedding = encoder.encode([f"a cat {name} dog"]).embeds
    without = encoder.encode(["a cat dog"]).embeds
    torch.testing.assert_close(with_embedding[0, :3], without[0, :3], atol=1e-6, rtol=0)  # BOS, a, cat
    assert not torch.allclose(with_embedding[0, 3], without[0, 3], atol=1e-3)
    if count == 1:
        ids = torch.tensor([[BOS, A, CAT, SPARE_TOKEN, DOG] + [EOS] * 72])
        expected = _reference_with_spare_token(model.text_encoders[0], ids, embedding.vectors["default"][0])
        torch.testing.assert_close(with_embedding, expected, atol=1e-6, rtol=0)


def test_embedding_is_never_split_across_chunks(models, embedding_dir):
    encoder = _encoder(models["sd1"], embedding_dir)
    text = " ".join(["cat"] * 74) + " twovec dog"
    first, second = encoder.tokenize([text])[0]
    assert first.tokens == [BOS] + [CAT] * 74 + [EOS, EOS] and first.fixes == []
    assert second.tokens[:5] == [BOS, 0, 0, DOG, EOS]
    assert [fix.offset for fix in second.fixes] == [0]
    assert encoder.count_tokens(text) == (78, 150)


def test_comma_backtrack_moves_embeddings_with_the_tail(models, embedding_dir):
    encoder = _encoder(models["sd1"], embedding_dir)
    text = " ".join(["cat"] * 70) + ", twovec " + " ".join(["dog"] * 5)  # chunk fills at the third dog
    first, second = encoder.tokenize([text])[0]
    assert first.tokens == [BOS] + [CAT] * 70 + [COMMA] + [EOS] * 5 and first.fixes == []
    assert second.tokens[:9] == [BOS, 0, 0, DOG, DOG, DOG, DOG, DOG, EOS]
    assert [fix.offset for fix in second.fixes] == [0]
    _, inputs = encoder.input_embeddings([second])
    torch.testing.assert_close(inputs[0, 1:3], encoder.embeddings.loaded["twovec"].vectors["default"])


def test_weights_apply_to_embedding_vectors(models, embedding_dir):
    encoder = _encoder(models["sd1"], embedding_dir)
    (chunk,) = encoder.tokenize(["a (twovec:1.4) cat"])[0]
    assert chunk.multipliers[:5] == pytest.approx([1.0, 1.0, 1.4, 1.4, 1.0])


def test_sd2_embedding_uses_its_own_padding(models, embedding_dir):
    model = models["sd2"]
    encoder = _encoder(model, embedding_dir)
    embedding = encoder.embeddings.loaded["onevec"]
    encoded = encoder.encode(["a onevec"]).embeds
    ids = torch.tensor([[BOS, A, SPARE_TOKEN, EOS] + [0] * 73])
    expected = _reference_with_spare_token(model.text_encoders[0], ids, embedding.vectors["default"][0])
    torch.testing.assert_close(encoded, expected, atol=1e-6, rtol=0)


def test_sdxl_embedding_gives_each_tower_its_vectors(models, embedding_dir):
    model = models["sdxl"]
    encoder = _encoder(model, embedding_dir)
    (chunk,) = encoder.tokenize(["a xlvec cat"])[0]
    embedding = encoder.embeddings.loaded["xlvec"]
    for tower, key in enumerate(("clip_l", "clip_g")):
        ids, inputs = encoder.input_embeddings([chunk], tower)
        torch.testing.assert_close(inputs[0, 2:4], embedding.vectors[key])
    assert ids[0, :6].tolist() == [BOS, A, 0, 0, CAT, EOS] and ids[0, 6:].eq(0).all()  # bigG pads with 0

    with_embedding = encoder.encode(["a xlvec cat"])
    without = encoder.encode(["a cat"])
    assert with_embedding.embeds.shape == (1, ROW, 128)
    torch.testing.assert_close(with_embedding.embeds[0, :2], without.embeds[0, :2], atol=1e-6, rtol=0)
    assert not torch.allclose(with_embedding.pooled, without.pooled, atol=1e-3)  # pooled reads the EOS after it


def test_demo_model_and_shapey_embedding(tmp_path):
    model = load_model(CheckpointInfo(str(demo.ASSETS / demo.DEMO_FILENAME), demo.DEMO_FILENAME),
                       choose_policy(use_cpu=["all"]))
    folder = tmp_path / "embeddings"
    folder.mkdir()
    (folder / "shapey.safetensors").write_bytes(demo.DEMO_EMBEDDING.read_bytes())
    database = EmbeddingDatabase([str(folder)])
    database.load(model)
    assert list(database.loaded) == ["shapey"] and database.skipped == {}
    shapey = database.loaded["shapey"]
    assert shapey.widths == {"default": 96} and shapey.vectors_count == 1

    encoder = PromptEncoder(model, embeddings=database)
    prompt = "a small shapey at the top, white background"
    (chunk,) = encoder.tokenize([prompt])[0]
    position = chunk.fixes[0].offset + 1
    _, inputs = encoder.input_embeddings([chunk])
    torch.testing.assert_close(inputs[0, position], shapey.vectors["default"][0])
    encoded = encoder.encode([prompt]).embeds
    assert encoded.shape == (1, ROW, 96) and torch.isfinite(encoded).all()
