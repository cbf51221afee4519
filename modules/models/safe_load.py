"""Read checkpoint files into state dicts without ever running code from them.

`.safetensors` is plain data. `.ckpt`/`.pt`/`.pth`/`.bin` are pickles, which can run arbitrary code when loaded;
they go through torch's restricted unpickler (`weights_only=True`, an allow-list of tensor/container types), so a
crafted file is refused before anything in it executes.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # real headers are well under 10 MB


class CheckpointLoadError(RuntimeError):
    """A model file could not be read; the message names the file and the reason."""


def _validate_safetensors_header(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise CheckpointLoadError(f"{path.name}: file is too short to be a safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > MAX_SAFETENSORS_HEADER or header_len + 8 > size:
            raise CheckpointLoadError(f"{path.name}: safetensors header length {header_len} is invalid "
                                      f"for a {size}-byte file (truncated or not a safetensors file)")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as e:
            raise CheckpointLoadError(f"{path.name}: safetensors header is not valid JSON ({e})") from e
    data_len = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry.get("data_offsets", (0, -1))
        if not 0 <= begin <= end <= data_len:
            raise CheckpointLoadError(f"{path.name}: tensor {name!r} lies outside the file (truncated download?)")


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` record of a safetensors file ({} if none)."""
    path = Path(path)
    _validate_safetensors_header(path)
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    return dict(header.get("__metadata__") or {})


def load_pickle(path: str | os.PathLike, what: str = "file", device: str = "cpu") -> Any:
    """Unpickle with torch's restricted unpickler: tensors and plain containers only, so nothing in the file runs."""
    path = Path(path)
    try:
        return torch.load(str(path), map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointLoadError(
            f"{path.name}: refused to load: the pickle contains objects other than tensors and plain "
            f"containers, which could run code ({str(e).splitlines()[0]})") from e
    except Exception as e:
        raise CheckpointLoadError(f"{path.name}: cannot read {what} ({e})") from e


def load_state_dict(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Load a checkpoint's tensors. Pickles are read with the restricted unpickler only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointLoadError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        _validate_safetensors_header(path)
        try:
            return load_file(str(path), device=device)
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointLoadError(f"{path.name}: cannot read safetensors data ({e})") from e
    if suffix in PICKLE_SUFFIXES:
        loaded = load_pickle(path, "checkpoint", device)
        if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, dict):
            raise CheckpointLoadError(f"{path.name}: does not contain a state dict")
        return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    raise CheckpointLoadError(f"{path.name}: unsupported file type {suffix!r}")
