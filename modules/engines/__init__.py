"""Model-family engines: the one interface between a loaded checkpoint and the sampling loop (see base.py).

`engine_for(model, opts)` picks the family's engine; a new family (SD 3.5, FLUX, ...) is a new module with an
`Engine` subclass, added with `register_engine`.
"""

from __future__ import annotations

from typing import Any

from modules.engines.base import DenoiserCall, DenoiserExtras, DenoiserHook, Engine, merge_hook_kwargs
from modules.engines.stable_diffusion import ENGINES as _SD_ENGINES
from modules.models.loader import SDModel
from modules.prompts.textual_inversion import EmbeddingDatabase

__all__ = ["DenoiserCall", "DenoiserExtras", "DenoiserHook", "Engine", "engine_for", "merge_hook_kwargs",
           "register_engine"]

_ENGINES: dict[str, type[Engine]] = dict(_SD_ENGINES)


def register_engine(family: str, engine_class: type[Engine]) -> None:
    """Make `engine_for` build `engine_class(model, opts, embeddings)` for models of `family`."""
    _ENGINES[family] = engine_class


def engine_for(model: SDModel, opts: Any, embeddings: EmbeddingDatabase | None = None) -> Engine:
    """The engine for a loaded model's family, reading `opts` (the settings) as it runs."""
    try:
        engine_class = _ENGINES[model.family]
    except KeyError:
        raise ValueError(f"no engine for model family {model.family!r}; known: {', '.join(_ENGINES)}") from None
    return engine_class(model, opts, embeddings)
