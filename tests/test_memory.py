"""Memory modes (normal / medvram / lowvram), tiled VAE encode/decode with OOM fallback, peak-VRAM reporting.

Runs on CPU with tiny models: lowvram really applies diffusers' group-offloading hooks (onload = offload = cpu),
medvram's moves are checked through its bookkeeping and a recording `_move`, and the tiled VAE paths are checked
through forward-hook counts and exact per-tile equality (random tiny weights make a tiled decode differ a lot from
an untiled one: GroupNorm and attention see a tile instead of the whole image, so "close" is not testable here).
"""

from __future__ import annotations

import logging

import pytest
import torch

from modules import memory
from modules.devices import choose_policy
from modules.models.loader import load_model
from modules.models.registry import CheckpointInfo

CPU = choose_policy(use_cpu=["all"])
TILE = 64  # pixels: a 128x128 image (16x16 latent) splits into 3x3 overlapping 8x8-latent tiles


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    from modules.models.tiny import write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("memory-ckpt")
    return {family: write_tiny_checkpoint(family, folder / f"tiny-{family}.safetensors", seed=1)
            for family in ("sd1", "sdxl")}


def _load(checkpoints, family: str = "sd1"):
    path = checkpoints[family]
    return load_model(CheckpointInfo(str(path), path.name), CPU)


@pytest.fixture(scope="module")
def vae():
    """A narrow random AutoencoderKL for the tiling tests: same layout as SD's (4 levels, 8x downscale, sample_size
    512) at 8 channels, so 128x128 decodes stay fast on a busy CPU. The tiling logic does not depend on width."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                          up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=4,
                          latent_channels=4, sample_size=512)
    return model.eval().requires_grad_(False)


# --- mode rules ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("medvram", "lowvram", "medvram_sdxl", "is_sdxl", "expected"), [
    (False, False, False, False, "normal"),
    (False, False, False, True, "normal"),
    (True, False, False, False, "medvram"),
    (True, False, False, True, "medvram"),
    (False, True, False, False, "lowvram"),
    (True, True, True, True, "lowvram"),         # --lowvram wins
    (False, False, True, True, "medvram"),       # --medvram-sdxl on an SDXL model
    (False, False, True, False, "normal"),       # --medvram-sdxl leaves SD1/SD2 alone
    (False, True, True, False, "lowvram"),
])
def test_mode_for_follows_a1111_rules(medvram, lowvram, medvram_sdxl, is_sdxl, expected):
    assert memory.mode_for(medvram, lowvram, medvram_sdxl, is_sdxl) == expected
    assert expected in memory.MODES


# --- outputs do not depend on the mode ----------------------------------------------------------------------

def _run_everything(model) -> dict[str, torch.Tensor]:
    """Text encoders, UNet, VAE decode and encode on fixed inputs, each inside on_device as processing will."""
    g = torch.Generator().manual_seed(7)
    out: dict[str, torch.Tensor] = {}
    tokens = model.tokenizers[0]("a red circle", padding="max_length", max_length=77, return_tensors="pt")
    ids = tokens.input_ids.to(model.policy.device)  # the policy's device, never module.device
    with torch.no_grad():
        with memory.on_device(model, "text_encoders"):
            for i, encoder in enumerate(model.text_encoders):
                out[f"te{i}"] = encoder(ids, output_hidden_states=True).hidden_states[-2]
        cross = model.unet.config.cross_attention_dim
        sample = torch.randn(1, 4, 8, 8, generator=g)
        context = torch.randn(1, 77, cross, generator=g)
        extra = {}
        if model.is_sdxl:
            extra["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 64, generator=g),
                                          "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
        with memory.on_device(model, "unet"):
            out["unet"] = model.unet(sample, 10, encoder_hidden_states=context, **extra).sample
        latents = torch.randn(1, 4, 4, 4, generator=g)  # small: the VAE is the slowest part on CPU
        pixels = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
        with memory.on_device(model, "vae"):
            out["decode"] = memory.vae_decode(model.vae, latents, "Never")
            out["encode"] = memory.vae_encode(model.vae, pixels, "Never")
    return out


@pytest.mark.parametrize("family", ["sdxl"])  # SDXL: two text encoders and added conditioning; SD1 adds only time
def test_every_mode_gives_the_same_tensors(checkpoints, family):
    results = {}
    for mode in memory.MODES:
        model = _load(checkpoints, family)
        memory.place(model, mode, CPU.device)
        assert memory.mode_of(model) == mode
        results[mode] = _run_everything(model)
    reference = results["normal"]
    assert set(reference) >= {"te0", "unet", "decode", "encode"}
    assert ("te1" in reference) == (family == "sdxl")
    for mode in ("medvram", "lowvram"):
        for name, tensor in reference.items():
            assert torch.equal(results[mode][name], tensor), f"{mode}: {name} differs from normal mode"


def test_lowvram_applies_group_offloading_to_every_component(checkpoints):
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    model = _load(checkpoints, "sdxl")
    memory.place(model, "lowvram", CPU.device)
    assert _is_group_offload_enabled(model.unet)
    # The VAE's parts carry their own hooks: decode()/encode() never call the VAE's forward.
    assert _is_group_offload_enabled(model.vae.decoder) and _is_group_offload_enabled(model.vae.encoder)
    assert len(model.text_encoders) == 2
    assert all(_is_group_offload_enabled(te) for te in model.text_encoders)
    # on_device is a no-op under lowvram: the hooks do the moving.
    with memory.on_device(model, "unet", "vae", "text_encoders"):
        assert memory.state_of(model).resident == set()


def test_place_rejects_bad_input_and_second_placement(checkpoints):
    model = _load(checkpoints)
    with pytest.raises(ValueError, match="memory mode"):
        memory.place(model, "highvram", CPU.device)
    memory.place(model, "normal", CPU.device)
    assert memory.state_of(model).resident == set(memory.COMPONENTS)
    with pytest.raises(RuntimeError, match="already"):
        memory.place(model, "medvram", CPU.device)
    with pytest.raises(ValueError, match="component"):
        with memory.on_device(model, "clip"):
            pass


def test_unplaced_model_counts_as_normal(checkpoints):
    model = _load(checkpoints)
    assert memory.mode_of(model) == "normal"
    with memory.on_device(model, "unet"):
        pass
    assert memory.state_of(model) is None


# --- medvram bookkeeping ------------------------------------------------------------------------------------

@pytest.fixture
def medvram_model(checkpoints, monkeypatch):
    """A medvram model "placed" on a GPU that does not exist here: `_move` only records, so the move sequence is
    checked exactly without CUDA (on a CPU device every move would be cpu -> cpu and show nothing)."""
    model = _load(checkpoints, "sdxl")
    moves: list[tuple[str, str]] = []
    names = {id(model.unet): "unet", id(model.vae): "vae", id(model.text_encoders[0]): "te0",
             id(model.text_encoders[1]): "te1"}
    monkeypatch.setattr(memory, "_move", lambda module, device: moves.append((names[id(module)], device.type)))
    memory.place(model, "medvram", torch.device("cuda", 0))
    assert moves == []  # medvram leaves every component on the CPU until it is used
    return model, moves


def test_medvram_moves_only_the_active_component(medvram_model):
    model, moves = medvram_model
    state = memory.state_of(model)
    with memory.on_device(model, "text_encoders"):
        assert moves == [("te0", "cuda"), ("te1", "cuda")]
        assert state.resident == {"text_encoders"}
    moves.clear()
    with memory.on_device(model, "unet"):
        # the idle text encoders leave first, then the UNet arrives: never both on the device
        assert moves == [("te0", "cpu"), ("te1", "cpu"), ("unet", "cuda")]
        assert state.resident == {"unet"}
    moves.clear()
    with memory.on_device(model, "unet"):  # already there: free
        assert moves == []
    with memory.on_device(model, "vae"):
        assert moves == [("unet", "cpu"), ("vae", "cuda")]
    assert state.resident == {"vae"}  # lazy eviction: leaving moves nothing
    moves.clear()
    memory.offload_all(model)
    assert moves == [("vae", "cpu")] and state.resident == set()


def test_medvram_nested_use_is_reentrant(medvram_model):
    model, moves = medvram_model
    state = memory.state_of(model)
    with memory.on_device(model, "unet"):
        with memory.on_device(model, "unet"):
            assert state.in_use["unet"] == 2
        # the inner exit did not take the UNet away from the outer user
        assert state.resident == {"unet"} and state.in_use["unet"] == 1
        with memory.on_device(model, "vae"):
            # the UNet is still in use by the outer block, so it stays; the VAE joins it
            assert state.resident == {"unet", "vae"}
        with memory.on_device(model, "text_encoders"):
            # the VAE is idle again and goes; the UNet stays
            assert state.resident == {"unet", "text_encoders"}
        memory.offload_all(model)  # only idle components go
        assert state.resident == {"unet"}
    assert state.in_use["unet"] == 0
    assert moves.count(("unet", "cuda")) == 1 and ("unet", "cpu") not in moves


def test_medvram_exception_inside_releases_the_use(medvram_model):
    model, _ = medvram_model
    with pytest.raises(KeyError):
        with memory.on_device(model, "unet"):
            raise KeyError("boom")
    assert memory.state_of(model).in_use["unet"] == 0


# --- tiled VAE ----------------------------------------------------------------------------------------------

def _count_calls(module: torch.nn.Module) -> tuple[list[tuple[int, ...]], object]:
    shapes: list[tuple[int, ...]] = []
    handle = module.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    return shapes, handle


def _tiling_is_off(vae) -> bool:
    return not vae.use_tiling and vae.tile_sample_min_size == 512 and vae.tile_latent_min_size == 64


def _latents() -> torch.Tensor:
    return torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))


def _pixels() -> torch.Tensor:
    return torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(4)) * 2 - 1


def test_default_tile_size_suits_the_model(vae):
    assert memory.tile_size_for(vae) == 512  # SD1's sample_size
    assert memory.tile_size_for(vae, 70) == 64  # rounded down to the latent scale
    original = vae.config.sample_size
    vae.register_to_config(sample_size=1024)  # SDXL's: capped so that 1024² images are tiled too
    try:
        assert memory.tile_size_for(vae) == 512
    finally:
        vae.register_to_config(sample_size=original)


@pytest.fixture(scope="module")
def decoded(vae) -> dict:
    """Untiled and tiled decodes of one 16x16 latent, made once (VAE calls are the slow part on CPU)."""
    z = _latents()
    with torch.no_grad():
        whole = memory.vae_decode(vae, z, "Never")
        shapes, handle = _count_calls(vae.decoder)
        tiled = memory.vae_decode(vae, z, "Always", tile_size=TILE)
        handle.remove()
        corner = memory.vae_decode(vae, z[:, :, :8, :8], "Never")
    return {"latents": z, "whole": whole, "tiled": tiled, "tile_shapes": shapes, "corner": corner}


def test_always_decodes_tile_by_tile(vae, decoded):
    whole, tiled, shapes = decoded["whole"], decoded["tiled"], decoded["tile_shapes"]
    assert tiled.shape == whole.shape == (1, 3, 128, 128)
    assert len(shapes) == 9 and all(s[-2:] <= (8, 8) for s in shapes)  # 3x3 tiles, none bigger than a tile
    assert not torch.equal(tiled, whole)
    # The top-left output block (tile minus blend margin: 64 - 16 px) is exactly the first tile decoded alone.
    assert torch.allclose(tiled[:, :, :48, :48], decoded["corner"][:, :, :48, :48], atol=1e-6)
    assert _tiling_is_off(vae)


@pytest.fixture(scope="module")
def encoded(vae) -> dict:
    """A tiled encode of one 128x128 image and its top-left tile encoded alone, made once."""
    x = _pixels()
    with torch.no_grad():
        shapes, handle = _count_calls(vae.encoder)
        tiled = memory.vae_encode(vae, x, "Always", tile_size=TILE)
        handle.remove()
        corner = memory.vae_encode(vae, x[:, :, :64, :64], "Never")
    return {"pixels": x, "tiled": tiled, "tile_shapes": shapes, "corner": corner}


def test_always_encodes_tile_by_tile(vae, encoded):
    tiled, shapes = encoded["tiled"], encoded["tile_shapes"]
    assert tiled.shape == (1, 4, 16, 16)
    assert len(shapes) == 9 and all(s[-2:] <= (64, 64) for s in shapes)
    # top-left latent block (8-latent tile minus its 2-latent blend margin) is the first tile encoded alone
    assert torch.allclose(tiled[:, :, :6, :6], encoded["corner"][:, :, :6, :6], atol=1e-6)
    assert _tiling_is_off(vae)


def test_small_image_is_not_split_even_when_always(vae):
    with torch.no_grad():
        shapes, handle = _count_calls(vae.decoder)
        memory.vae_decode(vae, _latents(), "Always")  # 128 px < the 512 px default tile
        handle.remove()
    assert len(shapes) == 1


def _inject_oom(module: torch.nn.Module, larger_than: int | None):
    """Fault injection: the module 'runs out of memory' on inputs wider than `larger_than` (None: always)."""
    def hook(_module, args):
        if larger_than is None or max(args[0].shape[-2:]) > larger_than:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
    return module.register_forward_pre_hook(hook)


def test_auto_decode_without_pressure_is_untiled(vae, decoded):
    with torch.no_grad():
        assert torch.equal(memory.vae_decode(vae, decoded["latents"], "Auto", tile_size=TILE), decoded["whole"])


def test_auto_decode_retries_tiled_after_oom(vae, decoded, caplog):
    z, expected = decoded["latents"], decoded["tiled"]
    with torch.no_grad():
        shapes, count = _count_calls(vae.decoder)  # registered first: sees the failing attempt too
        handle = _inject_oom(vae.decoder, larger_than=8)
        try:
            with caplog.at_level(logging.WARNING, logger="webui"):
                result = memory.vae_decode(vae, z, "Auto", tile_size=TILE)
        finally:
            handle.remove()
            count.remove()
    assert torch.equal(result, expected)
    assert shapes[0][-2:] == (16, 16) and len(shapes) == 1 + 9  # one failed whole attempt, then 9 tiles
    assert "out of memory" in caplog.text and "retrying tiled" in caplog.text
    assert _tiling_is_off(vae)


def test_auto_encode_retries_tiled_after_oom(vae, encoded):
    x, expected = encoded["pixels"], encoded["tiled"]
    with torch.no_grad():
        handle = _inject_oom(vae.encoder, larger_than=64)
        try:
            result = memory.vae_encode(vae, x, "Auto", tile_size=TILE)
        finally:
            handle.remove()
    assert torch.equal(result, expected)
    assert _tiling_is_off(vae)


def test_second_oom_propagates_and_tiling_is_switched_off(vae):
    handle = _inject_oom(vae.decoder, larger_than=None)
    try:
        with torch.no_grad(), pytest.raises(torch.OutOfMemoryError):
            memory.vae_decode(vae, _latents(), "Auto", tile_size=TILE)
        assert _tiling_is_off(vae)
        # "Never" and "Always" do not retry
        with torch.no_grad(), pytest.raises(torch.OutOfMemoryError):
            memory.vae_decode(vae, _latents(), "Never")
        with torch.no_grad(), pytest.raises(torch.OutOfMemoryError):
            memory.vae_decode(vae, _latents(), "Always", tile_size=TILE)
    finally:
        handle.remove()
    assert _tiling_is_off(vae)


def test_unknown_tiling_mode_is_refused(vae):
    with pytest.raises(ValueError, match="tiling"):
        memory.vae_decode(vae, _latents(), "Sometimes")


# --- reporting ----------------------------------------------------------------------------------------------

def test_peak_vram_is_none_off_cuda():
    assert memory.peak_vram(torch.device("cpu")) is None
    if not torch.cuda.is_available():
        assert memory.peak_vram() is None
    memory.reset_peak_vram(torch.device("cpu"))  # harmless off CUDA
