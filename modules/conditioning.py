"""Turn prompt text into the text-encoder embeddings the UNet is conditioned on.

Prompts are tokenised without truncation and encoded in chunks of 75 tokens (BOS + 75 + EOS, padded to 77),
as A1111 does, so long prompts are never cut. The full A1111 prompt syntax builds on this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modules.models.loader import SDModel

CHUNK_TOKENS = 75


@dataclass
class Conditioning:
    embeds: torch.Tensor               # [batch, 77 * chunks, dim]
    pooled: torch.Tensor | None = None  # SDXL: [batch, pooled_dim]


def _chunks(tokenizer, text: str) -> list[list[int]]:
    ids = tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
    chunks = [ids[i:i + CHUNK_TOKENS] for i in range(0, len(ids), CHUNK_TOKENS)] or [[]]
    return chunks


def _chunk_ids(tokenizer, chunk: list[int]) -> list[int]:
    ids = [tokenizer.bos_token_id, *chunk, tokenizer.eos_token_id]
    return ids + [tokenizer.pad_token_id] * (CHUNK_TOKENS + 2 - len(ids))


def _encode_chunk(encoder: torch.nn.Module, ids: torch.Tensor, skip: int, final_norm: bool
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    out = encoder(ids, output_hidden_states=True)
    if final_norm:
        hidden = out.last_hidden_state if skip <= 1 else out.hidden_states[-skip]
        if skip > 1:
            hidden = encoder.text_model.final_layer_norm(hidden) if hasattr(encoder, "text_model") \
                else encoder.final_layer_norm(hidden)
    else:  # SDXL conditions on the penultimate layer without the final norm
        hidden = out.hidden_states[-2]
    pooled = getattr(out, "text_embeds", None)
    return hidden, pooled


@torch.no_grad()
def encode_prompts(model: SDModel, prompts: list[str], clip_skip: int = 1, min_chunks: int = 1) -> Conditioning:
    """Encode each prompt; all results in the batch get the same number of chunks (short ones padded)."""
    device = model.policy.device
    token_chunks = [_chunks(model.tokenizers[0], p) for p in prompts]
    n_chunks = max(min_chunks, *(len(c) for c in token_chunks))
    per_encoder: list[torch.Tensor] = []
    pooled: torch.Tensor | None = None
    for encoder, tokenizer in zip(model.text_encoders, model.tokenizers):
        batch_hidden = []
        for index, prompt in enumerate(prompts):
            chunks = token_chunks[index] if tokenizer is model.tokenizers[0] else _chunks(tokenizer, prompt)
            chunks = chunks + [[]] * (n_chunks - len(chunks))
            ids = torch.tensor([_chunk_ids(tokenizer, c) for c in chunks], device=device)
            hidden, chunk_pooled = _encode_chunk(encoder, ids, clip_skip, final_norm=not model.is_sdxl)
            batch_hidden.append(hidden.reshape(1, -1, hidden.shape[-1]))
            if chunk_pooled is not None:
                first = chunk_pooled[:1]
                pooled = first if index == 0 else torch.cat([pooled, first])
        per_encoder.append(torch.cat(batch_hidden))
    embeds = torch.cat(per_encoder, dim=-1)
    return Conditioning(embeds.to(model.policy.dtype), pooled.to(model.policy.dtype) if pooled is not None else None)


def count_chunks(model: SDModel, prompt: str) -> int:
    return len(_chunks(model.tokenizers[0], prompt))
