"""T5-XXL, the third text encoder of SD 3.x and the second of FLUX.1: its tokenizer (shipped, offline) and the encoder
built from the weights users have.

The files come in transformers' `T5EncoderModel` layout (`encoder.block.N.layer...`, `shared.weight`): on their own
in `models/text_encoder/` (`t5xxl_fp16.safetensors`, ComfyUI's and Forge's folder) or inside an SD 3.x single file
under `text_encoders.t5xxl.transformer.`. Sizes are read from the shapes, so full-size and tiny test encoders load
through the same code; what shapes cannot say (activation, norm epsilon, relative-attention buckets) comes from the
shipped T5 v1.1 XXL config.
"""

from __future__ import annotations

import gzip
import re
from functools import cache

import torch
from tokenizers import Tokenizer
from transformers import T5Config, T5EncoderModel, T5TokenizerFast

from modules.models.architecture import CONFIGS_DIR, family_config

TOKENIZER_DIR = CONFIGS_DIR / "t5-tokenizer"
SD3_T5_PREFIX = "text_encoders.t5xxl.transformer."


@cache
def load_tokenizer() -> T5TokenizerFast:
    """T5 v1.1's SentencePiece tokenizer (32,100 pieces) from configs/t5-tokenizer, never from a hub."""
    raw = gzip.decompress((TOKENIZER_DIR / "tokenizer.json.gz").read_bytes()).decode("utf-8")
    return T5TokenizerFast(tokenizer_object=Tokenizer.from_str(raw), eos_token="</s>", unk_token="<unk>",
                           pad_token="<pad>", extra_ids=100, model_max_length=512)


def config_from_weights(weights: dict[str, torch.Tensor]) -> T5Config:
    """A T5 encoder config whose sizes are those of `weights` (transformers layout, prefix removed)."""
    base = family_config("sd3", "text_encoder_3")
    layers = {int(m.group(1)) for k in weights if (m := re.match(r"encoder\.block\.(\d+)\.", k))}
    if not layers or "shared.weight" not in weights:
        raise ValueError("not a T5 encoder: no encoder.block.* or shared.weight")
    vocab, d_model = weights["shared.weight"].shape
    inner = weights["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
    heads = weights["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape[1]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in weights
    d_ff = weights["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"].shape[0]
    base.update(vocab_size=vocab, d_model=d_model, d_kv=inner // heads, num_heads=heads, d_ff=d_ff,
                num_layers=max(layers) + 1, feed_forward_proj="gated-gelu" if gated else "relu",
                is_gated_act=gated)
    for key in ("architectures", "torch_dtype", "transformers_version", "_name_or_path"):
        base.pop(key, None)
    return T5Config(**base)


def build_encoder(checkpoint: dict[str, torch.Tensor], prefix: str = "") -> T5EncoderModel:
    """The T5 encoder stored under `prefix` in `checkpoint` (weights kept in their stored dtype)."""
    weights = {k[len(prefix):]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    weights.pop("encoder.embed_tokens.weight", None)  # tied to shared.weight in the module
    config = config_from_weights(weights)
    with torch.device("meta"):
        model = T5EncoderModel(config)
    expected = set(model.state_dict()) - {"encoder.embed_tokens.weight"}
    missing = expected - set(weights)
    if missing:
        raise ValueError(f"T5 encoder: {len(missing)} weights missing (e.g. {', '.join(sorted(missing)[:3])})")
    model.load_state_dict({k: v for k, v in weights.items() if k in expected}, strict=False, assign=True)
    model.encoder.embed_tokens = model.shared
    return model.eval()
