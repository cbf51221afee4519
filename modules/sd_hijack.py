"""A1111's `modules.sd_hijack` for extensions: `model_hijack` with the loaded embeddings (`embedding_db`), the token
counter (`clip.get_prompt_lengths`), `comments` and `extra_generation_params`.

A1111's hijack patches its ldm model (the CLIP wrapper, attention optimisations, circular padding). A diffusers model
has none of those internals, so `hijack`, `undo_hijack`, `apply_optimizations` and `undo_optimizations` raise
`IncompatibleExtensionError` naming the caller, rather than pretend to patch something. Attention here is always
PyTorch's scaled-dot-product attention (`current_optimizer`).
"""

from __future__ import annotations

import math
from typing import Any

from modules import extension_guard
from modules.textual_inversion.textual_inversion import EmbeddingDatabase


class IncompatibleExtensionError(extension_guard.IncompatibleExtensionError, RuntimeError):
    """A call that would patch A1111's ldm model, which a diffusers model does not have."""


def _refuse(what: str) -> IncompatibleExtensionError:
    extension = extension_guard.calling_extension()
    who = f"Extension {extension!r}" if extension else "This code"
    return IncompatibleExtensionError(
        f"{who} calls sd_hijack {what}, which patches A1111's ldm model (its CLIP wrapper and attention layers); "
        "this WebUI runs diffusers models, which have no such internals to patch")


class SdOptimization:
    """A cross-attention optimisation as A1111 lists them; here the only one is PyTorch's SDPA."""

    name = "sdp"
    label = "scaled dot product"
    cmd_opt = "opt_sdp_attention"
    priority = 80

    def title(self) -> str:
        return f"{self.name} - {self.label}"

    def is_available(self) -> bool:
        return True

    def apply(self) -> None:
        """Nothing to do: diffusers' attention processors use SDPA already."""

    def undo(self) -> None:
        pass


current_optimizer = SdOptimization()
optimizers = [current_optimizer]


def list_optimizers() -> list[SdOptimization]:
    return list(optimizers)


def apply_optimizations(option: str | None = None) -> str:
    raise _refuse("apply_optimizations()")


def undo_optimizations() -> None:
    raise _refuse("undo_optimizations()")


class PromptLengths:
    """A1111's CLIP wrapper as far as extensions read it: token counting for the loaded model."""

    chunk_length = 75

    def _encoder(self) -> Any:
        from modules import shared
        from modules.prompts.encoder import PromptEncoder

        model = shared.sd_model
        if model is None:
            raise RuntimeError("no model is loaded")
        return PromptEncoder(model, comma_padding_backtrack=int(shared.opts.comma_padding_backtrack),
                             emphasis=shared.opts.emphasis, embeddings=shared.embeddings)

    def get_target_prompt_token_count(self, token_count: int) -> int:
        return math.ceil(max(token_count, 1) / self.chunk_length) * self.chunk_length

    def get_token_count(self, text: str) -> int:
        return self._encoder().count_tokens(text)[0]

    def get_prompt_lengths(self, text: str) -> tuple[int, int]:
        """(tokens the prompt uses, the limit: 75 per chunk), as the UI's counter shows them."""
        return self._encoder().count_tokens(text)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without start/end tokens."""
        return [self._encoder().tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


class StableDiffusionModelHijack:
    fixes = None
    layers = None
    circular_enabled = False
    clip: PromptLengths | None = None
    optimization_method: str | None = None

    def __init__(self) -> None:
        self.clip = PromptLengths()
        self.optimization_method = current_optimizer.name
        self.embedding_db = EmbeddingDatabase()
        self.comments: list[str] = []
        self.extra_generation_params: dict[str, Any] = {}

    def apply_optimizations(self, option: str | None = None) -> None:
        raise _refuse("model_hijack.apply_optimizations()")

    def hijack(self, m: Any) -> None:
        raise _refuse("model_hijack.hijack()")

    def undo_hijack(self, m: Any) -> None:
        raise _refuse("model_hijack.undo_hijack()")

    def apply_circular(self, enable: bool) -> None:
        """Accepted: tiling is the job's `tiling` field here."""
        self.circular_enabled = enable

    def clear_comments(self) -> None:
        self.comments = []
        self.extra_generation_params = {}

    def get_prompt_lengths(self, text: str) -> tuple[int, int]:
        return self.clip.get_prompt_lengths(text)

    def redo_hijack(self, m: Any) -> None:
        raise _refuse("model_hijack.redo_hijack()")


model_hijack = StableDiffusionModelHijack()
