"""Memory modes (--medvram, --medvram-sdxl, --lowvram), tiled VAE encode/decode and peak-VRAM reporting.

Modes, chosen once per loaded checkpoint by `mode_for` and applied by `place` right after the model is built
(all components on the CPU, already in their final dtypes):

- "normal": every component lives on the device.
- "medvram": model offload, like A1111's --medvram. Components live on the CPU; `on_device(model, "unet")` moves
  the named components to the device and first sends idle ones back to the CPU, so one component (plus any
  still in use by an enclosing `on_device`) is on the GPU at a time. Eviction is lazy: leaving `on_device` moves
  nothing, so back-to-back uses of the same component (every sampling step, a second prompt) cost no transfer;
  the last-used component stays on the device until another is needed or `offload_all` is called (A1111 behaves
  the same). SDXL: the fp16 UNet (~4.8 GB) plus activations stays under 8 GB.
- "lowvram": diffusers' group offloading on the UNet, the VAE (its encoder, decoder and quant convs separately,
  see `_lowvram_targets`) and every text encoder. On CUDA: leaf-level groups with a CUDA stream that prefetches
  the next layer while the current one runs (record_stream, pre-pinned CPU copies for fast transfers).
  Block level, as diffusers suggests for speed, does not meet the 4 GB target for SDXL: its UNet groups are whole
  down/up blocks and the ungrouped rest (mid block) stays resident for the whole forward, so
  down_blocks[2] (1.41 GB fp16) + prefetched up_blocks[0] (2.25 GB) + mid_block (0.77 GB) = 4.4 GB of weights
  alone. Leaf level keeps at most two layers' weights (the largest is a 26 MB Linear) on the GPU. On a CPU-only
  device the same hooks are applied with onload = offload = cpu and no stream (diffusers allows it; it is a
  functional no-op, which keeps the mode testable here). `on_device` is a no-op: the hooks move weights.

Where state lives: `place` stores a `MemoryState` on the model as the plain attribute `_memory`
(`SDModel` is an eq-dataclass, hence unhashable and unusable as a WeakKeyDictionary key). A model that was never
placed counts as "normal" (on_device does nothing), so code paths that skip `place` keep working.

Callers must move inputs to `model.policy.device` (or the device given to `place`), never to `module.device`:
under medvram a component reports "cpu" until `on_device` has moved it, and under lowvram diffusers' `.device`
reports the offload device (cpu) for good, since weights only visit the GPU inside each layer's forward.
Likewise read dtypes from `model.policy`, and never call `.to(device)` on a group-offloaded component.

LoRA merges weights in place (`weight.copy_`) between generations; that is safe in every mode: medvram moves
modules with `.to()`, and offloaded lowvram weights *are* the pinned CPU copies the hooks upload from.

VAE tiling (`vae_decode` / `vae_encode`, tiling "Always" / "Never" / "Auto"): diffusers' AutoencoderKL tiled
paths with 25 % overlap and blending. Tiles are `min(vae.config.sample_size, 512)` pixels by default: SDXL's
config says 1024, which would leave a 1024² image untiled even under "Always"; 512 (ComfyUI's default) bounds
decode memory for every model. "Auto" decodes untiled and retries tiled only after a CUDA out-of-memory error.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("webui")

MODES = ("normal", "medvram", "lowvram")
COMPONENTS = ("unet", "vae", "text_encoders")
TILING_MODES = ("Auto", "Always", "Never")
DEFAULT_TILE_SIZE = 512  # pixels; see the module docstring
_STATE_ATTR = "_memory"


@dataclass
class MemoryState:
    """Per-model bookkeeping, kept on the model as `model._memory`."""

    mode: str
    device: torch.device
    resident: set[str] = field(default_factory=set)      # medvram: components now on `device`
    in_use: Counter = field(default_factory=Counter)      # medvram: open on_device() uses per component
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)


def mode_for(medvram: bool, lowvram: bool, medvram_sdxl: bool, is_sdxl: bool) -> str:
    """A1111's rules: --lowvram wins over everything; then --medvram; --medvram-sdxl applies to SDXL models only."""
    if lowvram:
        return "lowvram"
    if medvram or (medvram_sdxl and is_sdxl):
        return "medvram"
    return "normal"


def state_of(model: Any) -> MemoryState | None:
    return getattr(model, _STATE_ATTR, None)


def mode_of(model: Any) -> str:
    """The mode `place` applied; "normal" for a model that was never placed."""
    state = state_of(model)
    return state.mode if state else "normal"


def _modules(model: Any, component: str) -> list[torch.nn.Module]:
    if component == "unet":
        return [model.unet]
    if component == "vae":
        return [model.vae]
    if component == "text_encoders":
        return list(model.text_encoders)
    raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")


def _move(module: torch.nn.Module, device: torch.device) -> None:
    # Plain nn.Module.to: device only (dtypes were final at build time), and diffusers' override would log its
    # misleading "kept in float32" warning (see devices.cast).
    torch.nn.Module.to(module, device=device)


def place(model: Any, mode: str, device: torch.device) -> None:
    """Put a freshly built model (all components on the CPU) where `mode` wants it. Call once per model."""
    if mode not in MODES:
        raise ValueError(f"unknown memory mode {mode!r}; expected one of {MODES}")
    if state_of(model) is not None:
        raise RuntimeError("memory.place() was already applied to this model")
    device = torch.device(device)
    state = MemoryState(mode, device)
    if mode == "normal":
        for module in model.components():
            _move(module, device)
        state.resident.update(COMPONENTS)
    elif mode == "lowvram":
        for component in COMPONENTS:
            for module in _modules(model, component):
                for target in _lowvram_targets(module):
                    _group_offload(target, device)
    # medvram: everything stays on the CPU until on_device asks for it.
    setattr(model, _STATE_ATTR, state)
    log.info("Memory mode %s on %s", mode, device)


def _lowvram_targets(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules whose forward is really called. AutoencoderKL.decode/encode never call the VAE's own forward,
    and diffusers' stream prefetching learns the layer order from the first forward of the module the hooks were
    applied to, so the VAE's parts (diffusers' own `_group_offload_block_modules` list) get hooks of their own."""
    names = getattr(module, "_group_offload_block_modules", None)
    if not names:
        return [module]
    parts = [getattr(module, name, None) for name in names]
    return [part for part in parts if isinstance(part, torch.nn.Module)]


def _group_offload(module: torch.nn.Module, device: torch.device) -> None:
    from diffusers.hooks import apply_group_offloading

    if device.type == "cuda":
        # Stream prefetch overlaps the next layer's upload with this layer's compute; record_stream lets the
        # allocator reuse offloaded weights' memory without a sync per layer; pre-pinned copies
        # (low_cpu_mem_usage=False) make the uploads asynchronous and full speed.
        apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                               offload_type="leaf_level", use_stream=True, record_stream=True,
                               low_cpu_mem_usage=False)
    else:
        # No streams off CUDA (diffusers refuses use_stream there): synchronous leaf-level hooks, which on a CPU
        # device move nothing but run the same code path as on a GPU.
        apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"),
                               offload_type="leaf_level")


def recast(model: Any, module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Change a component's precision in any memory mode. Under --lowvram, group offloading keeps pinned CPU copies
    of the weights it uploads from: they are made again, or the next upload would bring back the old dtype."""
    from modules.devices import cast

    cast(module, dtype)
    if mode_of(model) == "lowvram":
        from diffusers.hooks.group_offloading import _maybe_remove_and_reapply_group_offloading

        for part in _lowvram_targets(module):
            _maybe_remove_and_reapply_group_offloading(part)


@contextmanager
def on_device(model: Any, *components: str) -> Iterator[None]:
    """Have `components` ("unet", "vae", "text_encoders") on the device for the duration (medvram only).

    Idle components (not in use by an enclosing on_device) go back to the CPU first, then the requested ones move
    to the device. Leaving moves nothing (lazy eviction, see the module docstring), so nested and repeated use of
    the same component is safe and free."""
    for component in components:
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}; expected one of {COMPONENTS}")
    state = state_of(model)
    if state is None or state.mode != "medvram":
        yield
        return
    with state.lock:
        # Evict before loading so the device never holds the outgoing and the incoming component together.
        _evict_idle(model, state, keep=set(components))
        for component in components:
            if component not in state.resident:
                for module in _modules(model, component):
                    _move(module, state.device)
                state.resident.add(component)
            state.in_use[component] += 1
    try:
        yield
    finally:
        with state.lock:
            for component in components:
                state.in_use[component] -= 1


def offload_all(model: Any) -> None:
    """medvram: send every idle component back to the CPU (e.g. before unloading or to free VRAM between jobs)."""
    state = state_of(model)
    if state is None or state.mode != "medvram":
        return
    with state.lock:
        _evict_idle(model, state, keep=set())


def _evict_idle(model: Any, state: MemoryState, keep: set[str]) -> None:
    """medvram: move resident components not in `keep` and not in use back to the CPU (caller holds the lock)."""
    for component in sorted(state.resident - keep):
        if state.in_use[component] == 0:
            for module in _modules(model, component):
                _move(module, torch.device("cpu"))
            state.resident.discard(component)


# --- tiled VAE ------------------------------------------------------------------------------------------------

# One user of the (shared) VAE at a time: its tiling switches live on the object, live previews decode on a side
# thread, and the float32 fallback changes its weights.
VAE_LOCK = threading.RLock()


def _scale_factor(vae: torch.nn.Module) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def tile_size_for(vae: torch.nn.Module, tile_size: int | None = None) -> int:
    """Tile edge in pixels: `tile_size`, else min(config.sample_size, 512); a multiple of the latent scale."""
    sample = vae.config.sample_size
    sample = sample[0] if isinstance(sample, (list, tuple)) else sample
    size = tile_size or min(int(sample), DEFAULT_TILE_SIZE)
    scale = _scale_factor(vae)
    return max(scale, size // scale * scale)


@contextmanager
def _tiling(vae: torch.nn.Module, on: bool, tile_size: int | None) -> Iterator[None]:
    saved = (vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size)
    try:
        if on:
            size = tile_size_for(vae, tile_size)
            vae.enable_tiling()
            vae.tile_sample_min_size = size
            vae.tile_latent_min_size = size // _scale_factor(vae)
        else:
            vae.disable_tiling()
        yield
    finally:
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size = saved


def _run_tiled(vae: torch.nn.Module, run: Any, tiling: str, tile_size: int | None, what: str) -> torch.Tensor:
    if tiling not in TILING_MODES:
        raise ValueError(f"unknown VAE tiling mode {tiling!r}; expected one of {TILING_MODES}")
    with VAE_LOCK:
        if tiling != "Auto":
            with _tiling(vae, tiling == "Always", tile_size):
                return run()
        try:
            with _tiling(vae, False, tile_size):
                return run()
        except torch.OutOfMemoryError as e:
            error = str(e).splitlines()[0] if str(e) else "out of memory"
        # Outside the except block: the exception's traceback pins the failed attempt's activations, so the cache
        # can only be given back once it is gone.
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("VAE %s ran out of memory (%s); retrying tiled", what, error)
        with _tiling(vae, True, tile_size):
            return run()


def vae_decode(vae: torch.nn.Module, latents: torch.Tensor, tiling: str, tile_size: int | None = None
               ) -> torch.Tensor:
    """Decode already-scaled latents (latents / scaling_factor, on the right device and dtype) to pixels."""
    return _run_tiled(vae, lambda: vae.decode(latents).sample, tiling, tile_size, "decode")


def vae_encode(vae: torch.nn.Module, pixels: torch.Tensor, tiling: str, tile_size: int | None = None
               ) -> torch.Tensor:
    """Encode pixels in [-1, 1] (on the right device and dtype); returns the unscaled latent_dist.mean."""
    return _run_tiled(vae, lambda: vae.encode(pixels).latent_dist.mean, tiling, tile_size, "encode")


# --- reporting ------------------------------------------------------------------------------------------------

def peak_vram(device: torch.device | None = None) -> int | None:
    """Peak bytes allocated by PyTorch on a CUDA device since start or the last `reset_peak_vram`; None off CUDA."""
    if device is not None and torch.device(device).type != "cuda":
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated(device)


def reset_peak_vram(device: torch.device | None = None) -> None:
    if (device is None or torch.device(device).type == "cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)
