"""Every device and dtype decision in one place."""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DevicePolicy:
    device: torch.device
    dtype: torch.dtype       # UNet and text encoders
    vae_dtype: torch.dtype
    nan_check: bool = True   # retry VAE decode in fp32 when half precision yields NaN/inf

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def choose_policy(use_cpu: list[str] | None = None, device_id: int | None = None, no_half: bool = False,
                  no_half_vae: bool = False, precision: str = "autocast", bf16: bool = False,
                  disable_nan_check: bool = False) -> DevicePolicy:
    """CUDA in fp16 by default (bf16 with --bf16), fp32 with --no-half/--precision full; CPU always fp32."""
    cpu_only = bool(use_cpu) and any(x in ("all", "sd") for x in use_cpu)
    if torch.cuda.is_available() and not cpu_only:
        device = torch.device("cuda", device_id or 0)
        if no_half or precision == "full":
            dtype = torch.float32
        else:
            dtype = torch.bfloat16 if bf16 else torch.float16
        vae_dtype = torch.float32 if no_half_vae else dtype
    else:
        device, dtype, vae_dtype = torch.device("cpu"), torch.float32, torch.float32
    return DevicePolicy(device, dtype, vae_dtype, nan_check=not disable_nan_check)


def torch_gc() -> None:
    """Return freed memory to the system/driver after a model is dropped."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


def cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Change a model's precision. Plain nn.Module.to: diffusers' own `to(dtype)` logs a misleading
    "should be kept in float32: []" warning on every call (its empty module list is not None)."""
    if any(p.dtype != dtype for p in module.parameters()):
        torch.nn.Module.to(module, dtype=dtype)
    return module
