"""A1111's `modules.textual_inversion.textual_inversion` for extensions: `Embedding`, `EmbeddingDatabase`, the
training templates list.

The embeddings are the core's (modules/prompts/textual_inversion.py: loaded per model, safe loading only).
`EmbeddingDatabase()` here is a view of `shared.embeddings` with A1111's names: `word_embeddings` (name ->
Embedding), `skipped_embeddings`, `ids_lookup`, `embedding_dirs`, `load_textual_inversion_embeddings`, ...
Training (A1111's Train tab) is not part of this WebUI.
"""

from __future__ import annotations

import os
from collections import namedtuple
from typing import Any

import torch

from modules.prompts import textual_inversion as core_ti

TextualInversionTemplate = namedtuple("TextualInversionTemplate", ["name", "path"])
textual_inversion_templates: dict[str, TextualInversionTemplate] = {}


def list_textual_inversion_templates() -> dict[str, TextualInversionTemplate]:
    """The training prompt templates (`textual_inversion_templates/*.txt` in the data dir); refreshed in place."""
    from modules import shared

    textual_inversion_templates.clear()
    folder = os.path.join(shared.cmd_opts.data_dir, "textual_inversion_templates") if shared.cmd_opts else ""
    if os.path.isdir(folder):
        for root, _, names in os.walk(folder):
            for name in sorted(names):
                if name.endswith(".txt"):
                    textual_inversion_templates[name] = TextualInversionTemplate(name, os.path.join(root, name))
    return textual_inversion_templates


class Embedding:
    """One embedding with A1111's attributes; `vec` is the vectors tensor (SDXL: a dict by text encoder)."""

    def __init__(self, vec: Any, name: str, step: int | None = None) -> None:
        self.vec = vec
        self.name = name
        self.step = step
        self.shape: int | None = None
        self.vectors = 0
        self.sd_checkpoint: str | None = None
        self.sd_checkpoint_name: str | None = None
        self.optimizer_state_dict = None
        self.filename: str | None = None
        self.hash: str | None = None
        self.shorthash: str | None = None
        self.core: core_ti.Embedding | None = None

    @classmethod
    def of(cls, core: core_ti.Embedding) -> Embedding:
        vectors = core.vectors
        vec = vectors[core_ti.DEFAULT_KEY] if set(vectors) == {core_ti.DEFAULT_KEY} else dict(vectors)
        embedding = cls(vec, core.name, core.step)
        embedding.core = core
        embedding.vectors = core.vectors_count
        embedding.shape = sum(core.widths.values())  # SDXL: clip_l + clip_g, 768 + 1280 = 2048, as A1111 has it
        embedding.sd_checkpoint, embedding.sd_checkpoint_name = core.sd_checkpoint, core.sd_checkpoint_name
        embedding.filename, embedding.hash, embedding.shorthash = core.filename, core.sha256, core.shorthash
        return embedding

    def checksum(self) -> str:
        """A1111's short checksum of the vectors (for the "TI hashes" of old infotexts)."""
        tensor = self.vec if isinstance(self.vec, torch.Tensor) else torch.cat(list(self.vec.values()), dim=-1)
        total = int((tensor.float().reshape(-1) * 100).to(torch.int64).sum()) & 0xFFFF
        return f"{total:04x}"

    def save(self, filename: str) -> None:
        """Write A1111's .pt layout (string_to_param) or, for a .safetensors name, the plain tensors."""
        vectors = {"*": self.vec} if isinstance(self.vec, torch.Tensor) else dict(self.vec)
        if filename.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file({("emb_params" if k == "*" else k): v.contiguous() for k, v in vectors.items()}, filename)
            return
        torch.save({"string_to_token": {"*": 265}, "string_to_param": vectors, "name": self.name,
                    "step": self.step, "sd_checkpoint": self.sd_checkpoint,
                    "sd_checkpoint_name": self.sd_checkpoint_name}, filename)


def create_embedding_from_data(data: dict[str, Any], name: str, filename: str = "unknown embedding file",
                                filepath: str | None = None) -> Embedding:
    """An Embedding from an embedding file's contents already in memory (LoRA files carry "bundled" embeddings).

    The data goes through the same reader as embedding files (written to a temporary file: one parser, and the
    restricted unpickler reads it back), so every format the folder accepts is accepted here."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"{name}.pt")
        torch.save(dict(data), path)
        try:
            core = core_ti.load_embedding_file(path)
        except core_ti.EmbeddingLoadError as e:
            raise ValueError(str(e).replace(path, filename).replace(f"{name}.pt", filename)) from e
    core.name, core.filename = name, filepath or filename
    return Embedding.of(core)


class EmbeddingDatabase:
    """The loaded embeddings (the core's database of this WebUI, `shared.embeddings`) by A1111's names."""

    def __init__(self, core: core_ti.EmbeddingDatabase | None = None) -> None:
        self._core = core
        self.previously_displayed_embeddings: tuple = ()

    @property
    def core(self) -> core_ti.EmbeddingDatabase:
        from modules import shared

        core = self._core if self._core is not None else shared.embeddings
        if core is None:
            raise RuntimeError("the WebUI is not initialised (shared.initialize) yet")
        return core

    @property
    def word_embeddings(self) -> dict[str, Embedding]:
        return {name: Embedding.of(embedding) for name, embedding in self.core.loaded.items()}

    @property
    def skipped_embeddings(self) -> dict[str, Embedding]:
        """The embeddings not usable with the loaded model (another width, say), read again for their shape; an
        unreadable file gives an Embedding without vectors. `skip_reasons` says why each was skipped."""
        files = {}
        for folder in self.core.dirs:
            for root, _, names in os.walk(folder, followlinks=True):
                for name in names:
                    if name.lower().endswith(core_ti.EMBEDDING_SUFFIXES):
                        files.setdefault(os.path.splitext(name)[0], os.path.join(root, name))
        skipped = {}
        for name in self.core.skipped:
            try:
                skipped[name] = Embedding.of(core_ti.load_embedding_file(files[name]))
            except (KeyError, core_ti.EmbeddingLoadError):
                skipped[name] = Embedding(None, name)
                skipped[name].filename = files.get(name)
        return skipped

    @property
    def skip_reasons(self) -> dict[str, str]:
        return dict(self.core.skipped)

    @property
    def ids_lookup(self) -> dict[int, list[tuple[list[int], core_ti.Embedding]]]:
        return self.core.ids_lookup

    @property
    def embedding_dirs(self) -> dict[str, Any]:
        return {folder: os.path.abspath(folder) for folder in self.core.dirs}

    def add_embedding_dir(self, path: str) -> None:
        if path not in self.core.dirs:
            self.core.dirs.append(path)

    def clear_embedding_dirs(self) -> None:
        self.core.dirs.clear()

    def get_expected_shape(self) -> int:
        from modules import shared

        model = shared.sd_model
        return next(iter(core_ti.expected_widths(model).values())) if model is not None else -1

    def load_textual_inversion_embeddings(self, force_reload: bool = False, sync_with_sd_model: bool = True) -> None:
        """Read the embedding folders again for the loaded model (only what changed, unless `force_reload`)."""
        from modules import shared

        model = shared.sd_model
        if model is None:
            return
        if force_reload:
            self.core.load(model)
        else:
            self.core.refresh(model)

    def find_embedding_at_position(self, tokens: list[int], offset: int) -> tuple[Embedding | None, int | None]:
        embedding, length = self.core.find_embedding_at_position(list(tokens), offset)
        return (Embedding.of(embedding), length) if embedding is not None else (None, None)
