"""Textual-inversion embeddings: files that teach a new word to the text encoder(s) (A1111's
modules/textual_inversion/textual_inversion.py, loading and lookup only).

An embedding is one or more token vectors. Typing its file stem in a prompt puts those vectors in place of the
name's tokens, at the token-embedding level (modules/prompts/encoder.py does the insertion).

File formats read:
- A1111 `.pt`/`.bin`: {"string_to_param": {"*": [n, D]}, "name", "step", "sd_checkpoint", ...}; pickles are read
  only through torch's restricted unpickler (plain containers and tensors), so a crafted file never runs code;
- `.safetensors` (or a pickle) holding {"emb_params": [n, D]} or any other single tensor (diffusers concepts), or
  SDXL's {"clip_l": [n, 768], "clip_g": [n, 1280]}.
Images with embedded embeddings (A1111's .png "sd-ti-embedding") are not read.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modules import hashes
from modules.models.loader import SDModel
from modules.models.safe_load import CheckpointLoadError, load_pickle, load_state_dict

log = logging.getLogger("webui")

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
DEFAULT_KEY = "default"       # the vectors of a single-encoder embedding (SD1, SD2, refiner)
SDXL_KEYS = ("clip_l", "clip_g")
MAX_VECTORS = 75              # more than one chunk's worth cannot be placed without splitting it
SHORTHASH_LENGTH = 12         # A1111's TI hash in the infotext ("TI hashes: name: 0123456789ab")

# The loader shares one tokenizer object between models; a fast (Rust) tokenizer raises "Already borrowed" when
# two threads (say the UI's token counter and a generation) call it at once, so calls go through this lock.
tokenizer_lock = threading.Lock()


class EmbeddingLoadError(ValueError):
    """An embedding file could not be read or is not an embedding; the message names the file."""


@dataclass
class Embedding:
    name: str                              # the file stem: the word to type in a prompt
    vectors: dict[str, torch.Tensor]       # float32 [n, width] on CPU, by text encoder (DEFAULT_KEY or SDXL_KEYS)
    filename: str
    sha256: str | None = None
    step: int | None = None
    sd_checkpoint: str | None = None       # the checkpoint hash / name the file says it was trained on
    sd_checkpoint_name: str | None = None

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:SHORTHASH_LENGTH] if self.sha256 else None

    @property
    def vectors_count(self) -> int:
        return next(iter(self.vectors.values())).shape[0]

    @property
    def widths(self) -> dict[str, int]:
        return {key: vector.shape[-1] for key, vector in self.vectors.items()}


def _read_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:  # through safe_load: the header is validated first (sizes, offsets, dtypes), with a clear message
            return load_state_dict(path)
        except CheckpointLoadError as e:
            raise EmbeddingLoadError(str(e)) from e
    try:
        return load_pickle(path, "the file")
    except CheckpointLoadError as e:
        raise EmbeddingLoadError(str(e)) from e


def _as_vectors(tensor: Any, path: Path, what: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise EmbeddingLoadError(f"{path.name}: {what} is not a floating-point tensor")
    vectors = tensor.detach().to("cpu", torch.float32)
    if vectors.ndim == 1:  # diffusers concepts store one vector without the token axis
        vectors = vectors.unsqueeze(0)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise EmbeddingLoadError(f"{path.name}: {what} has shape {list(tensor.shape)}, expected [vectors, width]")
    return vectors


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def load_embedding_file(path: str | os.PathLike) -> Embedding:
    """Read one embedding file (without hashing it). Raises EmbeddingLoadError naming the file."""
    path = Path(path)
    data = _read_file(path)
    if not isinstance(data, dict) or not data:
        raise EmbeddingLoadError(f"{path.name}: not an embedding (expected a dict of tensors)")
    if "string_to_param" in data:  # A1111's own format
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise EmbeddingLoadError(f"{path.name}: string_to_param must hold exactly one term")
        vectors = {DEFAULT_KEY: _as_vectors(next(iter(params.values())), path, "string_to_param")}
    elif all(key in data for key in SDXL_KEYS):
        vectors = {key: _as_vectors(data[key], path, key) for key in SDXL_KEYS}
        if vectors["clip_l"].shape[0] != vectors["clip_g"].shape[0]:
            raise EmbeddingLoadError(f"{path.name}: clip_l and clip_g hold different numbers of vectors "
                                     f"({vectors['clip_l'].shape[0]} and {vectors['clip_g'].shape[0]})")
    elif len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):  # emb_params, diffusers concepts
        key, value = next(iter(data.items()))
        vectors = {DEFAULT_KEY: _as_vectors(value, path, repr(key))}
    else:
        raise EmbeddingLoadError(f"{path.name}: not recognised as a textual-inversion embedding "
                                 f"(keys: {', '.join(map(str, list(data)[:6]))})")
    return Embedding(
        name=path.stem,
        vectors=vectors,
        filename=str(path),
        step=_optional_int(data.get("step")),
        sd_checkpoint=_optional_str(data.get("sd_checkpoint")),
        sd_checkpoint_name=_optional_str(data.get("sd_checkpoint_name")),
    )


def expected_widths(model: SDModel) -> dict[str, int]:
    """The vector width each of the model's text encoders takes, keyed as Embedding.vectors are."""
    widths = [encoder.get_input_embeddings().weight.shape[1] for encoder in model.text_encoders]
    if len(widths) == 2:
        return dict(zip(SDXL_KEYS, widths, strict=True))
    return {DEFAULT_KEY: widths[0]}


def _mismatch(embedding: Embedding, expected: dict[str, int]) -> str | None:
    """Why the embedding cannot be used with encoders of these widths (None: it fits)."""
    got = embedding.widths
    if got != expected:
        def describe(widths: dict[str, int]) -> str:
            return " + ".join(f"{key} {width}" if key != DEFAULT_KEY else str(width) for key, width in widths.items())
        return f"vector width {describe(got)} does not fit this model's text encoder ({describe(expected)})"
    if embedding.vectors_count > MAX_VECTORS:
        return f"{embedding.vectors_count} vectors; at most {MAX_VECTORS} fit in a prompt chunk"
    return None


class EmbeddingDatabase:
    """The embeddings found (recursively) in `dirs`, for one loaded model.

    `loaded` holds the usable ones by name (sorted case-insensitively), `skipped` the others with the reason
    (wrong width for this model, unreadable file). Lookups match the tokens of an embedding's name anywhere in a
    tokenised prompt, longest name first (A1111's ids_lookup).
    """

    def __init__(self, dirs: list[str], hash_cache: str | None = None) -> None:
        self.dirs = list(dirs)
        self.hash_cache = hash_cache
        self.loaded: dict[str, Embedding] = {}
        self.skipped: dict[str, str] = {}
        self.ids_lookup: dict[int, list[tuple[list[int], Embedding]]] = {}
        self._signature: tuple | None = None
        self._generation = 0  # bumped at every (re)load

    @property
    def signature(self) -> tuple[int, int]:
        """Changes whenever the set of embeddings may have changed (a key for caches of prompt encodings)."""
        return self._generation, len(self.loaded)

    def _scan(self) -> list[tuple[str, float, int]]:
        found: list[tuple[str, float, int]] = []
        for folder in self.dirs:
            if not os.path.isdir(folder):
                continue
            for root, _, names in os.walk(folder, followlinks=True):
                for name in names:
                    if not name.lower().endswith(EMBEDDING_SUFFIXES):
                        continue
                    full = os.path.join(root, name)
                    try:
                        stat = os.stat(full)
                    except OSError:
                        continue
                    found.append((full, stat.st_mtime, stat.st_size))
        return sorted(found)

    @staticmethod
    def _model_key(model: SDModel) -> tuple:
        return model.checkpoint.filename, model.family, tuple(sorted(expected_widths(model).items()))

    def load(self, model: SDModel) -> None:
        """(Re)load every embedding file for `model`."""
        files = self._scan()
        self._load_files(model, files)
        self._signature = (self._model_key(model), tuple(files))

    def refresh(self, model: SDModel) -> bool:
        """Reload if a file was added, removed or changed, or the model changed. Returns whether it reloaded."""
        files = self._scan()
        if self._signature == (self._model_key(model), tuple(files)):
            return False
        self._load_files(model, files)
        self._signature = (self._model_key(model), tuple(files))
        return True

    def _load_files(self, model: SDModel, files: list[tuple[str, float, int]]) -> None:
        self._generation += 1
        expected = expected_widths(model)
        loaded: dict[str, Embedding] = {}
        skipped: dict[str, str] = {}
        for path, _, size in files:
            name = Path(path).stem
            if size == 0:  # A1111 ignores empty files (e.g. a download in progress)
                continue
            try:
                embedding = load_embedding_file(path)
            except EmbeddingLoadError as e:
                log.warning("Embedding not loaded: %s", e)
                skipped[name] = str(e)
                continue
            reason = _mismatch(embedding, expected)
            if reason is not None:
                skipped[name] = reason
                continue
            if name in loaded:
                log.warning("Embedding %s: %s replaces %s (same name)", name, path, loaded[name].filename)
            embedding.sha256 = hashes.file_sha256(path, self.hash_cache, title=f"textual_inversion/{name}")
            loaded[name] = embedding
            skipped.pop(name, None)
        ordered = {name: loaded[name] for name in sorted(loaded, key=str.lower)}
        tokenizer = model.tokenizers[0]
        lookup: dict[int, list[tuple[list[int], Embedding]]] = {}
        for name, embedding in ordered.items():
            with tokenizer_lock:
                ids = tokenizer(name, add_special_tokens=False, truncation=False)["input_ids"]
            if ids:
                lookup.setdefault(ids[0], []).append((ids, embedding))
        for candidates in lookup.values():
            candidates.sort(key=lambda item: len(item[0]), reverse=True)  # longest name wins
        # Swap in whole dicts so a prompt being encoded meanwhile sees either the old or the new set.
        self.loaded, self.skipped, self.ids_lookup = ordered, skipped, lookup
        if ordered or skipped:
            log.info("Textual inversion embeddings loaded(%d): %s", len(ordered), ", ".join(ordered))
            if skipped:
                log.info("Textual inversion embeddings skipped(%d): %s", len(skipped), ", ".join(skipped))

    def find_embedding_at_position(self, token_ids: list[int], offset: int) -> tuple[Embedding | None, int]:
        """The embedding whose name's tokens start at token_ids[offset], and how many tokens the name takes."""
        candidates = self.ids_lookup.get(token_ids[offset])
        if candidates:
            for ids, embedding in candidates:
                if token_ids[offset:offset + len(ids)] == ids:
                    return embedding, len(ids)
        return None, 0
