"""Every device and dtype decision in one place, and A1111's `modules.devices` names over it.

The application hands its choice over with `use_policy` (at `shared.initialize`); A1111's module-level names
(`device`, `dtype`, `dtype_vae`, `dtype_unet`, ...) are read from it on every access, so an extension that imports
this module before the application starts still sees the device the jobs run on once it has.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterable
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


# --- A1111's names ---------------------------------------------------------------------------------------------------

cpu: torch.device = torch.device("cpu")
fp8: bool = False              # A1111's fp8 weight mode; the engines here never store weights in fp8
unet_needs_upcast: bool = False
nv_rng = None

_policy: DevicePolicy | None = None
_use_cpu: tuple[str, ...] = ()
_device_id: int | None = None


class NansException(Exception):
    """A tensor made only of NaNs (A1111's name; raised by `test_for_nans`)."""


def use_policy(policy: DevicePolicy, use_cpu: Iterable[str] = (), device_id: int | str | None = None) -> None:
    """The application's device choice (`--use-cpu` tasks and `--device-id` too), read by A1111's names below."""
    global _policy, _use_cpu, _device_id
    _policy, _use_cpu = policy, tuple(use_cpu or ())
    _device_id = int(device_id) if device_id is not None and str(device_id).isdigit() else None


def current_policy() -> DevicePolicy:
    """The policy handed over with `use_policy`, else the one the default flags give."""
    return _policy if _policy is not None else choose_policy(device_id=_device_id)


def has_mps() -> bool:
    return sys.platform == "darwin" and torch.backends.mps.is_available()


def has_xpu() -> bool:
    return hasattr(torch, "xpu") and torch.xpu.is_available()


def get_cuda_device_id() -> int:
    return _device_id or 0


def get_cuda_device_string() -> str:
    return f"cuda:{_device_id}" if _device_id is not None else "cuda"


def get_optimal_device_name() -> str:
    """A1111: "cuda" (or "cuda:N" with --device-id) when CUDA is there, then "mps", else "cpu"."""
    if torch.cuda.is_available():
        return get_cuda_device_string()
    return "mps" if has_mps() else "cpu"


def get_optimal_device() -> torch.device:
    return torch.device(get_optimal_device_name())


def get_device_for(task: str) -> torch.device:
    """The CPU when `--use-cpu` names the task (or "all"), else the best device (A1111's rule)."""
    if task in _use_cpu or "all" in _use_cpu:
        return cpu
    return get_optimal_device()


def cuda_no_autocast(device_id: int | None = None) -> bool:
    """GTX 16xx cards, whose fp16 autocast gives black images (A1111 casts by hand there)."""
    if not torch.cuda.is_available():
        return False
    index = get_cuda_device_id() if device_id is None else device_id
    return torch.cuda.get_device_capability(index) == (7, 5) and \
        torch.cuda.get_device_name(index).startswith("NVIDIA GeForce GTX 16")


def autocast(disable: bool = False) -> contextlib.AbstractContextManager:
    """A1111's `with devices.autocast():` around an extension's own model calls: CUDA autocast when the jobs run in
    half precision on CUDA, a do-nothing context in full precision, on the CPU, or with `disable`."""
    policy = current_policy()
    if disable or policy.dtype == torch.float32 or not policy.is_cuda:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=policy.dtype)


def without_autocast(disable: bool = False) -> contextlib.AbstractContextManager:
    """Leave an autocast region for the `with` body (A1111's name)."""
    if torch.is_autocast_enabled() and not disable:
        return torch.autocast("cuda", enabled=False)
    return contextlib.nullcontext()


def cond_cast_unet(input: torch.Tensor) -> torch.Tensor:  # `input`: A1111's parameter name
    return input.to(current_policy().dtype) if unet_needs_upcast else input


def cond_cast_float(input: torch.Tensor) -> torch.Tensor:  # `input`: A1111's parameter name
    return input.float() if unet_needs_upcast else input


def test_for_nans(x: torch.Tensor, where: str) -> None:
    """Raise NansException when `x` is all NaNs (A1111's check, off with --disable-nan-check)."""
    if not current_policy().nan_check or not torch.all(torch.isnan(x)).item():
        return
    what = {"unet": "Unet", "vae": "VAE"}.get(where)
    message = f"A tensor with all NaNs was produced in {what}." if what else "A tensor with all NaNs was produced."
    if where == "vae" and current_policy().vae_dtype != torch.float32:
        message += " This could be because there's not enough precision to represent the picture. Try adding " \
                   "--no-half-vae commandline argument to fix this."
    raise NansException(message + " Use --disable-nan-check commandline argument to disable this check.")


def enable_tf32() -> None:
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def first_time_calculation() -> None:
    """A1111 warms the device up with one small layer; harmless here."""
    policy = current_policy()
    torch.nn.Linear(1, 1).to(policy.device, policy.dtype)(torch.zeros((1, 1), device=policy.device,
                                                                        dtype=policy.dtype))


def randn(seed: int, shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None) -> torch.Tensor:
    """A1111's deprecated noise helper: seeded standard-normal noise, drawn on the CPU (portable)."""
    if generator is None:
        generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, device="cpu").to(current_policy().device)


def randn_without_seed(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator, device="cpu").to(current_policy().device)


def manual_seed(seed: int) -> None:
    torch.manual_seed(int(seed))


def __getattr__(name: str) -> object:
    """A1111's module-level device and dtype names, from the application's policy at the time of reading."""
    policy = current_policy()
    if name in ("device", "device_interrogate", "device_gfpgan", "device_esrgan", "device_codeformer"):
        task = {"device": "sd", "device_interrogate": "interrogate", "device_gfpgan": "gfpgan",
                "device_esrgan": "esrgan", "device_codeformer": "codeformer"}[name]
        return cpu if task in _use_cpu else policy.device
    if name in ("dtype", "dtype_unet", "dtype_inference"):
        return policy.dtype
    if name == "dtype_vae":
        return policy.vae_dtype
    if name == "backend":  # A1111 1.10's name of the torch backend in use
        return policy.device.type if policy.device.type in ("cuda", "mps", "xpu") else "cpu"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
