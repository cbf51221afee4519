"""T5-XXL groundwork for SD 3.x / FLUX.1: the shipped tokenizer works offline and an encoder is rebuilt from its
weights alone (sizes from shapes), giving the same outputs as the module it was saved from."""

from __future__ import annotations

import pytest
import torch
from transformers import T5Config, T5EncoderModel

from modules.models import t5

pytestmark = pytest.mark.unit


def test_the_shipped_tokenizer_is_t5s():
    tokenizer = t5.load_tokenizer()
    assert len(tokenizer) == 32100
    ids = tokenizer("a photo of a cat").input_ids
    assert ids[-1] == tokenizer.eos_token_id == 1 and tokenizer.pad_token_id == 0
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a photo of a cat"


@pytest.mark.parametrize("prefix", ["", t5.SD3_T5_PREFIX])
def test_an_encoder_is_rebuilt_from_its_weights(prefix):
    torch.manual_seed(0)
    config = T5Config(vocab_size=320, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
                      feed_forward_proj="gated-gelu", is_gated_act=True, relative_attention_num_buckets=32,
                      relative_attention_max_distance=128, layer_norm_epsilon=1e-6, dropout_rate=0.0)
    source = T5EncoderModel(config).eval()
    stored = {prefix + k: v.clone() for k, v in source.state_dict().items()}
    built = t5.build_encoder(stored, prefix)
    assert (built.config.num_layers, built.config.num_heads, built.config.d_kv, built.config.d_ff) == (2, 4, 8, 48)
    ids = torch.tensor([[5, 17, 200, 1, 0, 0]])
    with torch.no_grad():
        assert torch.allclose(built(ids).last_hidden_state, source(ids).last_hidden_state, atol=1e-6)


def test_a_file_that_is_not_t5_is_refused():
    with pytest.raises(ValueError, match="not a T5 encoder"):
        t5.build_encoder({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 4)})
