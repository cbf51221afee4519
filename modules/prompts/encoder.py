"""Prompt text -> text-encoder conditioning, with A1111's semantics (modules/sd_hijack_clip.py, sd_emphasis.py).

- A prompt is parsed for emphasis (`(x)`, `[x]`, `(x:1.3)`, `BREAK`), tokenised without truncation and cut into
  chunks of 75 tokens; each chunk becomes BOS + 75 + EOS = 77 ids, padded with the tokenizer's pad id (EOS for
  CLIP-L, 0 for OpenCLIP). BREAK starts a new chunk; when a chunk fills up and a comma lies within the last
  `comma_padding_backtrack` tokens, the text after the comma moves to the next chunk.
- Textual-inversion names are recognised at token level and replaced by the embedding's vectors (never split
  across chunks).
- Each chunk is encoded on its own and the results are concatenated ([B, 77 * chunks, D]).
- Emphasis multiplies the encoder output of the weighted tokens; "Original" then restores the chunk's mean.

The text models are run from token embeddings (so embedding vectors can be put in), mirroring transformers 5's
CLIPTextModel.forward: embeddings(inputs_embeds=...) -> causal mask -> encoder layers -> final_layer_norm.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from transformers.masking_utils import create_causal_mask

from modules.models.loader import SDModel
from modules.prompts import parser
from modules.prompts.textual_inversion import DEFAULT_KEY, SDXL_KEYS, Embedding, EmbeddingDatabase, tokenizer_lock

log = logging.getLogger("webui")

CHUNK_LENGTH = 75                     # prompt tokens per chunk; BOS and EOS make 77
EMPHASIS_MODES = ("None", "Ignore", "Original", "No norm")
_TOKEN_CACHE_LIMIT = 20000            # words; cleared when full (a UI session types far fewer)
# The tokenizer's whitespace (Unicode White_Space); Python's \s also takes \x1c-\x1f, which CLIP keeps as tokens.
_RE_WHITESPACE = re.compile(r"[^\S\x1c-\x1f]+")


@dataclass
class Conditioning:
    embeds: torch.Tensor                 # [batch, 77 * chunks, dim]
    pooled: torch.Tensor | None = None   # SDXL: [batch, pooled_dim]


@dataclass(frozen=True)
class EncodingNotes:
    """What encoding some texts noted for the infotext: the embeddings met and whether emphasis mattered. Kept beside
    a cached encoding, so that a job served from the cache writes the same infotext as one that encoded."""
    embeddings: dict[str, Embedding]
    emphasis_used: bool


class PromptChunkFix(NamedTuple):
    """An embedding's vectors go at `offset` of the chunk's prompt tokens (row offset + 1, after BOS)."""

    offset: int
    embedding: Embedding


@dataclass
class PromptChunk:
    """77 token ids (BOS, 75 prompt tokens or EOS padding, EOS), a multiplier per id, and where embeddings go.
    Embedding positions hold id 0 as a placeholder. Padding here is EOS; OpenCLIP towers re-pad at encode time."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[PromptChunkFix] = field(default_factory=list)


@dataclass(frozen=True)
class _Tower:
    """One text encoder and how its output is taken."""

    text_model: torch.nn.Module          # has embeddings, encoder, final_layer_norm
    projection: torch.nn.Module | None   # bigG's text_projection (pooled output for SDXL), else None
    pad_id: int
    vector_key: str                      # which Embedding.vectors entry this encoder takes
    hidden_index: int                    # negative index into hidden states (embeddings output, layer 1, ...)
    final_norm: bool


def _comma_token(tokenizer: Any) -> int | None:
    """The id of "," as a word end; a lookup of one token, not `get_vocab()` (which copies the 49408-entry vocabulary:
    25 ms, at every job)."""
    token_id = tokenizer.convert_tokens_to_ids(",</w>")
    return None if token_id is None or token_id == tokenizer.unk_token_id else int(token_id)


class PromptEncoder:
    """Encode prompts for one loaded model with A1111's chunking, emphasis, CLIP skip and textual inversion."""

    def __init__(self, model: SDModel, *, comma_padding_backtrack: int = 20, emphasis: str = "Original",
                 clip_skip: int = 1, sdxl_clip_l_skip: bool = False,
                 embeddings: EmbeddingDatabase | None = None) -> None:
        if emphasis not in EMPHASIS_MODES:  # A1111 falls back to Original for an unknown name
            log.warning("Unknown emphasis mode %r; using Original", emphasis)
            emphasis = "Original"
        self.model = model
        self.comma_padding_backtrack = comma_padding_backtrack
        self.emphasis = emphasis
        self.clip_skip = max(1, int(clip_skip))
        self.sdxl_clip_l_skip = sdxl_clip_l_skip
        self.embeddings = embeddings
        self.used_embeddings: dict[str, Embedding] = {}
        self.emphasis_used = False   # a prompt had brackets while emphasis is not "Original" (infotext)

        tokenizer = model.tokenizers[0]  # every tower shares CLIP's BPE vocabulary; only the pad id differs
        self.tokenizer = tokenizer
        self.id_start: int = tokenizer.bos_token_id
        self.id_end: int = tokenizer.eos_token_id
        self.comma_token: int | None = _comma_token(tokenizer)
        self._word_ids: dict[str, list[int]] = {}
        self.towers = self._towers(model)

    def _towers(self, model: SDModel) -> list[_Tower]:
        towers = []
        for index, (encoder, tokenizer) in enumerate(zip(model.text_encoders, model.tokenizers, strict=True)):
            text_model = encoder.text_model if hasattr(encoder, "text_model") else encoder
            projection = getattr(encoder, "text_projection", None)
            if model.is_sdxl:
                key = SDXL_KEYS[index] if len(model.text_encoders) == 2 else DEFAULT_KEY
                is_clip_l = projection is None
                # SDXL conditions on the penultimate layer, without the final norm, for both towers; CLIP skip
                # applies only to CLIP-L and only with sdxl_clip_l_skip (A1111: hidden_states[-N], still no norm).
                hidden_index = -self.clip_skip if is_clip_l and self.sdxl_clip_l_skip else -2
                towers.append(_Tower(text_model, projection, tokenizer.pad_token_id, key, hidden_index, False))
            elif model.family.startswith("sd2"):
                # SD2's tower was built without its last block (the penultimate layer SD2 was trained on). A1111's
                # OpenCLIP path ignores the CLIP skip setting, so this does too.
                towers.append(_Tower(text_model, None, tokenizer.pad_token_id, DEFAULT_KEY, -1, True))
            else:
                towers.append(_Tower(text_model, None, tokenizer.pad_token_id, DEFAULT_KEY, -self.clip_skip, True))
        return towers

    # --- tokenisation --------------------------------------------------------------------------------------

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without BOS/EOS. CLIP's tokenizer never merges across whitespace, so ids are
        cached per whitespace-separated word: retyping a long prompt only tokenises the new words."""
        words_of = [_RE_WHITESPACE.split(text) for text in texts]
        found = {word: self._word_ids.get(word) for words in words_of for word in words}
        missing = [word for word, ids in found.items() if ids is None]
        if missing:
            with tokenizer_lock:
                ids = self.tokenizer(missing, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
            new = dict(zip(missing, ids, strict=True))
            found.update(new)
            if len(self._word_ids) + len(new) > _TOKEN_CACHE_LIMIT:
                self._word_ids = {}  # a new dict: a concurrent caller keeps reading its own copy
            self._word_ids.update(new)
        return [[token for word in words for token in found[word]] for words in words_of]

    def _empty_chunk(self) -> PromptChunk:
        return PromptChunk([self.id_start] + [self.id_end] * (CHUNK_LENGTH + 1), [1.0] * (CHUNK_LENGTH + 2))

    def _tokenize_line(self, line: str) -> tuple[list[PromptChunk], int]:
        """A1111's tokenize_line: the prompt's chunks and its token count (full chunks count 75)."""
        if self.emphasis != "None":
            parsed = parser.parse_prompt_attention(line)
        else:  # emphasis disabled entirely: brackets (and BREAK) are literal text
            parsed = [[line, 1.0]]
        tokenized = self._token_ids([text for text, _ in parsed])

        chunks: list[PromptChunk] = []
        chunk = PromptChunk()
        token_count = 0
        last_comma = -1

        def next_chunk(is_last: bool = False) -> None:
            nonlocal chunk, token_count, last_comma
            token_count += len(chunk.tokens) if is_last else CHUNK_LENGTH
            to_add = CHUNK_LENGTH - len(chunk.tokens)
            if to_add > 0:
                chunk.tokens += [self.id_end] * to_add
                chunk.multipliers += [1.0] * to_add
            chunk.tokens = [self.id_start] + chunk.tokens + [self.id_end]
            chunk.multipliers = [1.0] + chunk.multipliers + [1.0]
            last_comma = -1
            chunks.append(chunk)
            chunk = PromptChunk()

        for tokens, (text, weight) in zip(tokenized, parsed, strict=True):
            if text == "BREAK" and weight == -1:
                next_chunk()
                continue
            position = 0
            while position < len(tokens):
                token = tokens[position]
                if token == self.comma_token:
                    last_comma = len(chunk.tokens)
                elif (self.comma_padding_backtrack != 0 and len(chunk.tokens) == CHUNK_LENGTH and last_comma != -1
                      and len(chunk.tokens) - last_comma <= self.comma_padding_backtrack):
                    # The chunk is full and a comma is near its end: move what follows the comma to the next chunk.
                    break_location = last_comma + 1
                    moved_tokens = chunk.tokens[break_location:]
                    moved_multipliers = chunk.multipliers[break_location:]
                    # Embeddings in the moved tail move with it (A1111 leaves their fixes behind, a bug).
                    moved_fixes = [PromptChunkFix(fix.offset - break_location, fix.embedding)
                                   for fix in chunk.fixes if fix.offset >= break_location]
                    chunk.tokens = chunk.tokens[:break_location]
                    chunk.multipliers = chunk.multipliers[:break_location]
                    chunk.fixes = [fix for fix in chunk.fixes if fix.offset < break_location]
                    next_chunk()
                    chunk.tokens, chunk.multipliers, chunk.fixes = moved_tokens, moved_multipliers, moved_fixes

                if len(chunk.tokens) == CHUNK_LENGTH:
                    next_chunk()

                embedding, name_length = (self.embeddings.find_embedding_at_position(tokens, position)
                                          if self.embeddings is not None else (None, 0))
                if embedding is None:
                    chunk.tokens.append(token)
                    chunk.multipliers.append(weight)
                    position += 1
                    continue

                vector_count = embedding.vectors_count
                if len(chunk.tokens) + vector_count > CHUNK_LENGTH:  # never split an embedding across chunks
                    next_chunk()
                chunk.fixes.append(PromptChunkFix(len(chunk.tokens), embedding))
                chunk.tokens += [0] * vector_count
                chunk.multipliers += [weight] * vector_count
                position += name_length

        if chunk.tokens or not chunks:
            next_chunk(is_last=True)
        return chunks, token_count

    def tokenize(self, texts: list[str]) -> list[list[PromptChunk]]:
        """Each text's chunks (77 ids each). Embeddings found are recorded in used_embeddings."""
        cache: dict[str, list[PromptChunk]] = {}
        result = []
        for text in texts:
            if text not in cache:
                cache[text] = self._tokenize_line(text)[0]
            result.append(cache[text])
            for chunk in cache[text]:
                for fix in chunk.fixes:
                    self.used_embeddings[fix.embedding.name] = fix.embedding
        return result

    def count_tokens(self, text: str) -> tuple[int, int]:
        """A1111's token counter: (tokens used, current limit = 75 x chunks)."""
        _, token_count = self._tokenize_line(text)
        return token_count, math.ceil(max(token_count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH

    def count_chunks(self, text: str) -> int:
        return len(self._tokenize_line(text)[0])

    # --- encoding ------------------------------------------------------------------------------------------

    def input_embeddings(self, rows: list[PromptChunk], tower_index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The ids [rows, 77] one text encoder gets (its own padding) and its token embeddings [rows, 77, D], with
        the textual-inversion vectors put in at their positions."""
        tower = self.towers[tower_index]
        token_embedding = tower.text_model.embeddings.token_embedding
        device, dtype = token_embedding.weight.device, token_embedding.weight.dtype
        ids = torch.tensor([row.tokens for row in rows], device=device)
        if tower.pad_id != self.id_end:  # OpenCLIP: everything after the first EOS is its pad id
            for index, row in enumerate(rows):
                ids[index, row.tokens.index(self.id_end) + 1:] = tower.pad_id
        inputs = token_embedding(ids)
        for index, row in enumerate(rows):
            for fix in row.fixes:
                vectors = fix.embedding.vectors[tower.vector_key].to(device, dtype)
                start = fix.offset + 1  # after BOS
                count = min(inputs.shape[1] - start - 1, vectors.shape[0])  # never over the final EOS
                inputs[index, start:start + count] = vectors[:count]
        return ids, inputs

    def _run_tower(self, tower_index: int, rows: list[PromptChunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states [rows, 77, D] taken as the tower says, and the pooled projection when it has one."""
        tower = self.towers[tower_index]
        text_model = tower.text_model
        ids, inputs = self.input_embeddings(rows, tower_index)
        hidden = text_model.embeddings(inputs_embeds=inputs)
        mask = create_causal_mask(config=text_model.config, inputs_embeds=hidden, attention_mask=None,
                                  past_key_values=None)
        layers = text_model.encoder.layers
        # hidden states as transformers numbers them: 0 = embeddings output, i = output of layer i
        selected_index = len(layers) + 1 - min(-tower.hidden_index, len(layers) + 1)
        run = len(layers) if tower.projection is not None else selected_index  # CLIP skip: stop early
        states = [hidden]
        for layer in layers[:run]:
            hidden = layer(hidden, mask, is_causal=True)
            states.append(hidden)
        selected = states[selected_index]
        if tower.final_norm:
            selected = text_model.final_layer_norm(selected)

        pooled = None
        if tower.projection is not None:
            # bigG's pooled output: the final-normed last layer at the (first) EOS, projected.
            last = text_model.final_layer_norm(states[-1])
            eos = (ids == self.id_end).int().argmax(dim=-1)
            pooled = tower.projection(last[torch.arange(len(rows), device=ids.device), eos])
        return selected, pooled

    def _apply_emphasis(self, z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
        """z [rows, 77, D] (float32), multipliers [rows, 77]."""
        if self.emphasis in ("None", "Ignore"):
            return z
        weighted = z * multipliers[..., None]
        if self.emphasis == "No norm":
            return weighted
        # "Original": restore the mean. A1111 takes it over the chunk tensor of its whole batch (one prompt's
        # schedule variants); per row keeps each prompt's encoding independent of what it is batched with and is
        # identical for a single prompt.
        original_mean = z.mean(dim=(1, 2), keepdim=True)
        new_mean = weighted.mean(dim=(1, 2), keepdim=True)
        # Rows without weights stay as they are (the ratio is 1); a zero mean (e.g. a LayerNorm without bias)
        # would make it 0/0, so such rows keep the plain multiplication.
        unweighted = (multipliers == 1).all(dim=1)[:, None, None]
        ratio = torch.where(unweighted | (new_mean == 0), torch.ones_like(new_mean), original_mean / new_mean)
        return weighted * ratio

    @torch.no_grad()
    def encode(self, texts: list[str], min_chunks: int = 1) -> Conditioning:
        """Embeddings [len(texts), 77 * chunks, D] (chunks: the most any text needs, at least min_chunks) and,
        for SDXL, pooled [len(texts), P]."""
        if not texts:
            raise ValueError("encode needs at least one prompt")
        batch_chunks = self.tokenize(texts)
        if self.emphasis != "Original" and any("(" in text or "[" in text for text in texts):
            self.emphasis_used = True
        chunk_count = max([min_chunks, *(len(chunks) for chunks in batch_chunks)])
        rows = [chunk for chunks in batch_chunks
                for chunk in chunks + [self._empty_chunk() for _ in range(chunk_count - len(chunks))]]
        multipliers = torch.tensor([row.multipliers for row in rows], dtype=torch.float32)

        outputs: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for tower_index in range(len(self.towers)):
            hidden, tower_pooled = self._run_tower(tower_index, rows)
            hidden = self._apply_emphasis(hidden.float(), multipliers.to(hidden.device))
            outputs.append(hidden)
            if tower_pooled is not None:
                # A1111 pools the FIRST chunk (its EOS); diffusers truncates the prompt to 77 tokens and pools
                # that EOS, which differs only when BREAK or the comma backtrack shortens the first chunk.
                # A1111 is followed so that its infotexts reproduce its images.
                pooled = tower_pooled.reshape(len(texts), chunk_count, -1)[:, 0]
        embeds = torch.cat(outputs, dim=-1).reshape(len(texts), chunk_count * (CHUNK_LENGTH + 2), -1)
        policy = self.model.policy
        return Conditioning(embeds.to(policy.device, policy.dtype),
                            pooled.to(policy.device, policy.dtype) if pooled is not None else None)

    def encode_noted(self, texts: list[str], min_chunks: int = 1) -> tuple[Conditioning, EncodingNotes]:
        """`encode`, also returning what it noted (it is noted on this encoder too, as by `encode`)."""
        outer = self.used_embeddings, self.emphasis_used
        self.used_embeddings, self.emphasis_used = {}, False
        try:
            conditioning = self.encode(texts, min_chunks)
            notes = EncodingNotes(self.used_embeddings, self.emphasis_used)
        finally:
            self.used_embeddings, self.emphasis_used = outer
        self.note(notes)
        return conditioning, notes

    def note(self, notes: EncodingNotes) -> None:
        """Record an earlier encoding's notes for this encoder's infotext (a cache hit)."""
        self.used_embeddings.update(notes.embeddings)
        self.emphasis_used = self.emphasis_used or notes.emphasis_used

    def infotext_params(self) -> dict[str, str]:
        """A1111's extra generation parameters from what was encoded: "TI hashes" and "Emphasis"."""
        params: dict[str, str] = {}
        hashes = [f"{name.replace(':', '').replace(',', '')}: {embedding.shorthash}"
                  for name, embedding in self.used_embeddings.items() if embedding.shorthash]
        if hashes:
            params["TI hashes"] = ", ".join(hashes)
        if self.emphasis_used:
            params["Emphasis"] = self.emphasis
        return params
