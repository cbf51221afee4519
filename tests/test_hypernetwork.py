"""A1111 hypernetworks: file layout, MLP, attention processors on a tiny SD1 UNet, exact restore, safe loading."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from modules.models.safe_load import CheckpointLoadError
from modules.models.tiny import build_tiny_components
from modules.networks import hypernetwork as hn

ATTN2 = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"     # cross-attention, context width 64
ATTN1 = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"     # self-attention, width 32


def randn(*shape: int, seed: int = 0, std: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * std


def mlp_state(dim: int, seed: int, hidden: int = 2) -> dict[str, torch.Tensor]:
    """State dict of A1111's [1, hidden, 1] relu module without layer norm: linear.0, (ReLU at 1), linear.2."""
    return {"linear.0.weight": randn(dim * hidden, dim, seed=seed, std=0.2),
            "linear.0.bias": randn(dim * hidden, seed=seed + 1, std=0.1),
            "linear.2.weight": randn(dim, dim * hidden, seed=seed + 2, std=0.2),
            "linear.2.bias": randn(dim, seed=seed + 3, std=0.1)}


def write_hypernetwork(path: Path, sizes: tuple[int, ...] = (64,), **settings) -> Path:
    """A file as A1111's Hypernetwork.save writes it."""
    data: dict = {size: [mlp_state(size, seed=10 * size), mlp_state(size, seed=10 * size + 5)] for size in sizes}
    data.update({"step": 120, "name": path.stem, "layer_structure": [1, 2, 1], "activation_func": "relu",
                 "is_layer_norm": False, "weight_initialization": "Normal", "sd_checkpoint": "6ce0161689",
                 "sd_checkpoint_name": "demo", "activate_output": False, "use_dropout": False,
                 "dropout_structure": [0, 0, 0], "last_layer_dropout": False, "optional_info": None})
    data.update(settings)
    torch.save(data, path)
    return path


@pytest.fixture
def unet():
    return build_tiny_components("sd1")["unet"]


def run_unet(unet) -> torch.Tensor:
    with torch.no_grad():
        return unet(randn(1, 4, 8, 8, seed=1), torch.tensor([700]), randn(1, 77, 64, seed=2)).sample


def test_file_loads_with_a1111_settings(tmp_path):
    path = write_hypernetwork(tmp_path / "ink.pt", sizes=(64, 32))
    network = hn.load_hypernetwork(path)
    assert network.name == "ink" and network.sizes == [32, 64] and network.step == 120
    assert (network.layer_structure, network.activation_func, network.add_layer_norm) == ([1, 2, 1], "relu", False)
    assert [type(m).__name__ for m in network.layers[64][0].linear] == ["Linear", "ReLU", "Linear"]


def test_module_is_the_residual_mlp(tmp_path):
    network = hn.load_hypernetwork(write_hypernetwork(tmp_path / "mlp.pt"))
    state = mlp_state(64, seed=640)
    x = randn(3, 64, seed=7)
    hidden = torch.relu(x @ state["linear.0.weight"].T + state["linear.0.bias"])
    expected = x + (hidden @ state["linear.2.weight"].T + state["linear.2.bias"]) * 0.4
    with torch.no_grad():
        assert torch.allclose(network.layers[64][0](x, 0.4), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("settings", "expected"), [
    # A1111 HypernetworkModule order: Linear, activation (not after the last unless activate_output), LayerNorm,
    # Dropout where dropout_structure says; the Sequential indices must match the file's keys.
    ({"activation_func": "relu"}, ["Linear", "ReLU", "Linear"]),
    ({"activation_func": "relu", "activate_output": True}, ["Linear", "ReLU", "Linear", "ReLU"]),
    ({"activation_func": "linear", "is_layer_norm": True}, ["Linear", "LayerNorm", "Linear", "LayerNorm"]),
    ({"activation_func": "swish", "is_layer_norm": True, "dropout_structure": [0, 0.3, 0]},
     ["Linear", "Hardswish", "LayerNorm", "Dropout", "Linear", "LayerNorm"]),
    ({"activation_func": "gelu", "dropout_structure": None, "use_dropout": True, "last_layer_dropout": True},
     ["Linear", "GELU", "Dropout", "Linear"]),
])
def test_module_layout_follows_a1111(settings, expected):
    module = hn.HypernetworkModule(8, [1, 2, 1], settings.get("activation_func"), settings.get("is_layer_norm", False),
                                   settings.get("activate_output", False),
                                   settings.get("dropout_structure") or hn.dropout_structure_for(
                                       [1, 2, 1], settings.get("use_dropout", False),
                                       settings.get("last_layer_dropout", False)))
    assert [type(m).__name__ for m in module.linear] == expected


def test_old_linear1_linear2_keys_load(tmp_path):
    old = {"linear1.weight": randn(64, 64, seed=1), "linear1.bias": randn(64, seed=2),
           "linear2.weight": randn(64, 64, seed=3), "linear2.bias": randn(64, seed=4)}
    path = tmp_path / "old.pt"
    torch.save({64: [old, old], "layer_structure": [1, 1, 1], "activation_func": None}, path)
    network = hn.load_hypernetwork(path)
    assert torch.equal(network.layers[64][1].linear[1].bias, old["linear2.bias"])


def test_attn2_output_uses_transformed_key_and_value_contexts(tmp_path, unet):
    network = hn.load_hypernetwork(write_hypernetwork(tmp_path / "hn.pt"))
    attention = unet.get_submodule(ATTN2)
    hidden, context = randn(2, 16, 32, seed=3), randn(2, 77, 64, seed=4)
    with torch.no_grad():
        plain = attention(hidden, encoder_hidden_states=context)
        patcher = hn.HypernetworkPatcher(SimpleNamespace(unet=unet))
        patcher.apply([(network, 0.8)])
        patched = attention(hidden, encoder_hidden_states=context)

        k_module, v_module = network.layers[64]
        heads = attention.heads
        head_dim = 32 // heads
        q = attention.to_q(hidden).view(2, -1, heads, head_dim).transpose(1, 2)
        k = attention.to_k(k_module(context, 0.8)).view(2, -1, heads, head_dim).transpose(1, 2)
        v = attention.to_v(v_module(context, 0.8)).view(2, -1, heads, head_dim).transpose(1, 2)
        mixed = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, -1, 32)
        expected = attention.to_out[0](mixed)
    assert not torch.allclose(plain, patched, atol=1e-4)
    assert torch.allclose(patched, expected, rtol=0, atol=1e-6)


def test_multiplier_zero_equals_no_hypernetwork_and_restore_is_exact(tmp_path, unet):
    network = hn.load_hypernetwork(write_hypernetwork(tmp_path / "hn.pt"))
    originals = dict(unet.attn_processors)
    reference = run_unet(unet)
    patcher = hn.HypernetworkPatcher(SimpleNamespace(unet=unet))

    patcher.apply([(network, 0.0)])
    assert isinstance(unet.attn_processors[ATTN2 + ".processor"], hn.HypernetworkAttnProcessor)
    assert torch.equal(run_unet(unet), reference)

    patcher.apply([(network, 1.0)])
    assert not torch.allclose(run_unet(unet), reference, atol=1e-4)

    patcher.restore()
    assert all(unet.attn_processors[name] is processor for name, processor in originals.items())
    assert torch.equal(run_unet(unet), reference)
    assert patcher.active == []


def test_layers_are_chosen_by_context_width_as_a1111(tmp_path, unet):
    """A1111 transforms `default(context, x)`: a size-32 module also hits the width-32 self-attention layers."""
    network = hn.load_hypernetwork(write_hypernetwork(tmp_path / "hn32.pt", sizes=(32,)))
    patcher = hn.HypernetworkPatcher(SimpleNamespace(unet=unet))
    patcher.apply([(network, 1.0)])
    wrapped = sorted(name.removesuffix(".processor") for name, p in unet.attn_processors.items()
                     if isinstance(p, hn.HypernetworkAttnProcessor))
    assert wrapped == [ATTN1, "up_blocks.1.attentions.0.transformer_blocks.0.attn1",
                       "up_blocks.1.attentions.1.transformer_blocks.0.attn1"]


def test_same_set_is_a_no_op_and_two_networks_chain(tmp_path, unet):
    first = hn.load_hypernetwork(write_hypernetwork(tmp_path / "a.pt"))
    second = hn.load_hypernetwork(write_hypernetwork(tmp_path / "b.pt"))
    patcher = hn.HypernetworkPatcher(SimpleNamespace(unet=unet))
    patcher.apply([(first, 1.0), (second, 0.5)])
    installed = unet.attn_processors[ATTN2 + ".processor"]
    patcher.apply([(first, 1.0), (second, 0.5)])
    assert unet.attn_processors[ATTN2 + ".processor"] is installed

    context = randn(1, 5, 64, seed=8)
    k, v = context, context
    for network, multiplier in ((first, 1.0), (second, 0.5)):
        k, v = network.transform(k, v, multiplier)
    with torch.no_grad():
        expected_k = second.layers[64][0](first.layers[64][0](context, 1.0), 0.5)
    assert torch.allclose(k, expected_k, rtol=0, atol=1e-6)


def test_files_are_cached_until_they_change(tmp_path):
    path = write_hypernetwork(tmp_path / "cached.pt")
    reads = hn.read_count
    assert hn.load_hypernetwork(path) is hn.load_hypernetwork(path)
    assert hn.read_count == reads + 1


def test_crafted_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return open, (str(marker), "w")

    path = tmp_path / "evil.pt"
    torch.save({64: [{}, {}], "layer_structure": [1, 2, 1], "name": Evil()}, path)
    with pytest.raises(CheckpointLoadError, match="refused"):
        hn.load_hypernetwork(path)
    assert not marker.exists()


def test_a_file_that_is_not_a_hypernetwork_is_a_load_error(tmp_path):
    path = tmp_path / "broken.pt"
    torch.save({64: [{"linear.0.weight": torch.zeros(3, 3)}, {}], "layer_structure": [1, 2, 1]}, path)
    with pytest.raises(CheckpointLoadError, match="not a usable hypernetwork"):
        hn.load_hypernetwork(path)


def test_shorthash_and_tag_arguments(tmp_path):
    import hashlib

    path = write_hypernetwork(tmp_path / "hashme.pt")
    assert hn.load_hypernetwork(path).shorthash == hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert hn.parse_hypernet_args(["ink"]) == ("ink", 1.0)
    assert hn.parse_hypernet_args(["ink", "0.65"]) == ("ink", 0.65)
