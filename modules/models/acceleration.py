"""The CUDA fast path of a loaded model: memory layout, fused attention projections and torch.compile.

Applied once a checkpoint sits on its device (and again when a cached model comes back to the GPU):
- channels_last for the UNet and VAE convolutions (cuDNN's fast NHWC kernels in half precision);
- fused QKV projections (diffusers' `fuse_qkv_projections`): one GEMM instead of three per attention layer. The
  separate `to_q/to_k/to_v` weights are then re-bound as *views* into the fused weight, so they cost no memory and
  everything that edits them in place (LoRA patching, merging) edits the fused weight too — nothing can go stale;
- `--compile` (or the `compile_models` setting): `Module.compile` of the UNet and the VAE decoder with
  mode="reduce-overhead" (inductor kernels replayed as CUDA graphs), dynamic=False so each (batch, height, width)
  gets its own specialised graph, kept for the life of the process (a size seen before never recompiles, up to
  `COMPILED_SHAPES_LIMIT` shapes). The inductor/Triton cache lives in the data dir, so a restart reuses kernels.

Why graphs never go stale: weights are graph inputs read from their storage at every replay, and LoRA/merging
change them in place (same storage); swapping attention processors (hypernetworks) changes the traced Python,
which dynamo's guards detect, so it recompiles for the new processors.
"""

from __future__ import annotations

import logging
import os

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0

log = logging.getLogger("webui")

COMPILED_SHAPES_LIMIT = 64  # dynamo's recompile limit per function (default 8): sizes/batches kept compiled
COMPILE_MODE = "reduce-overhead"


def set_compile_cache_dir(data_dir: str) -> str:
    """Keep inductor's and Triton's compiled kernels under the data dir (read when the first compile starts)."""
    cache_dir = os.path.join(data_dir, "cache", "torch-inductor")
    os.makedirs(cache_dir, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", cache_dir)
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _fusable(unet: torch.nn.Module) -> bool:
    processors = {type(p) for p in unet.attn_processors.values()}
    return bool(processors) and processors <= {AttnProcessor2_0, FusedAttnProcessor2_0}


def _bind_views(attention: Attention) -> None:
    """Make to_q/to_k/to_v share the fused projection's storage (row slices of its weight and bias)."""
    if attention.is_cross_attention:
        fused, names = attention.to_kv, ("to_k", "to_v")
    else:
        fused, names = attention.to_qkv, ("to_q", "to_k", "to_v")
    start = 0
    for name in names:
        linear = getattr(attention, name)
        rows = linear.weight.shape[0]
        linear.weight = torch.nn.Parameter(fused.weight.data[start:start + rows], requires_grad=False)
        if linear.bias is not None:
            linear.bias = torch.nn.Parameter(fused.bias.data[start:start + rows], requires_grad=False)
        start += rows


def fuse_qkv(unet: torch.nn.Module) -> bool:
    """Fuse the attention projections of a UNet that uses the stock SDPA processors; True when fused."""
    if getattr(unet, "_webui_fused_qkv", False):
        return True
    if not hasattr(unet, "fuse_qkv_projections") or not _fusable(unet):
        return False
    unet.fuse_qkv_projections()
    for module in unet.modules():
        if isinstance(module, Attention) and module.fused_projections:
            _bind_views(module)
    unet._webui_fused_qkv = True
    return True


def unfuse_qkv(unet: torch.nn.Module) -> None:
    """Back to separate projections (before the model leaves its device: a move copies views apart)."""
    if not getattr(unet, "_webui_fused_qkv", False):
        return
    unet.unfuse_qkv_projections()
    for module in unet.modules():
        if isinstance(module, Attention) and module.fused_projections:
            for name in ("to_q", "to_k", "to_v"):
                linear = getattr(module, name)
                linear.weight = torch.nn.Parameter(linear.weight.data.clone(), requires_grad=False)
                if linear.bias is not None:
                    linear.bias = torch.nn.Parameter(linear.bias.data.clone(), requires_grad=False)
            for fused in ("to_qkv", "to_kv"):
                if hasattr(module, fused):
                    delattr(module, fused)
            module.fused_projections = False
    unet._webui_fused_qkv = False


def compile_modules(model, backend: str = "inductor") -> None:
    """torch.compile (in place) the UNet and the VAE decoder; the eager modules stay the same objects.

    `backend` other than inductor (e.g. "eager": dynamo's tracing and guards only) is for tests on machines where
    inductor's kernels would take minutes to build."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, COMPILED_SHAPES_LIMIT)
    if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):
        torch._dynamo.config.accumulated_cache_size_limit = max(
            torch._dynamo.config.accumulated_cache_size_limit, 4 * COMPILED_SHAPES_LIMIT)
    options = {"mode": COMPILE_MODE} if backend == "inductor" else {"backend": backend}
    model.unet.compile(dynamic=False, **options)
    model.vae.decoder.compile(dynamic=False, **options)
    model.compiled = True


def is_compiled(model) -> bool:
    return bool(getattr(model, "compiled", False))


def step_begin(model) -> None:
    """Tell CUDA-graph trees that outputs of the previous UNet call are consumed (inference loop, no autograd)."""
    if is_compiled(model) and model.policy.is_cuda:
        torch.compiler.cudagraph_mark_step_begin()


def apply_fast_path(model, compile_models: bool = False, fused_qkv: bool = True) -> list[str]:
    """Speed settings for a model placed whole on a CUDA device; returns what was applied (for the log)."""
    applied: list[str] = []
    if not model.policy.is_cuda:
        return applied
    for module in (model.unet, model.vae):  # plain Module.to: diffusers' override logs a misleading warning
        torch.nn.Module.to(module, memory_format=torch.channels_last)
    applied.append("channels_last")
    if fused_qkv and fuse_qkv(model.unet):
        applied.append("fused QKV")
    if compile_models and not is_compiled(model):
        compile_modules(model)
        applied.append(f"torch.compile ({COMPILE_MODE})")
    log.info("Fast path for %s: %s", model.checkpoint.title, ", ".join(applied) or "none")
    return applied
