"""Read checkpoint files into state dicts without ever running code from them.

`.safetensors` is plain data. `.ckpt`/`.pt`/`.pth`/`.bin` are pickles, which can run arbitrary code when loaded;
they go through torch's restricted unpickler (`weights_only=True`, an allow-list of tensor/container types), so a
crafted file is refused before anything in it executes.
"""

from __future__ import annotations

import json
import math
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


# Bits per element of every dtype the safetensors format defines; anything else in a header is refused.
SAFETENSORS_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_tensor_entry(path: Path, name: str, entry: Any, data_len: int) -> tuple[int, int]:
    """(begin, end) of one header entry after checking dtype, shape and offsets agree with each other and the file."""
    if not isinstance(entry, dict):
        raise CheckpointLoadError(f"{path.name}: safetensors header entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPE_BITS:
        raise CheckpointLoadError(f"{path.name}: tensor {name!r} has an unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise CheckpointLoadError(f"{path.name}: tensor {name!r} has an invalid shape {str(shape)[:80]}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise CheckpointLoadError(f"{path.name}: tensor {name!r} has invalid data offsets {str(offsets)[:80]}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise CheckpointLoadError(f"{path.name}: tensor {name!r} lies outside the file (truncated download?)")
    bits = math.prod(shape) * SAFETENSORS_DTYPE_BITS[dtype]
    if bits % 8 or end - begin != bits // 8:
        raise CheckpointLoadError(f"{path.name}: tensor {name!r} of shape {shape} and dtype {dtype} needs "
                                  f"{bits / 8:g} bytes but its offsets span {end - begin}")
    return begin, end


def _validate_safetensors_header(path: Path) -> dict[str, Any]:
    """The parsed header, after checking everything the tensors' bytes will be read by: a file that passes can be
    handed to the safetensors library without surprises, one that fails gives a CheckpointLoadError naming it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise CheckpointLoadError(f"{path.name}: file is too short to be a safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > MAX_SAFETENSORS_HEADER or header_len + 8 > size:
            raise CheckpointLoadError(f"{path.name}: safetensors header length {header_len} is invalid "
                                      f"for a {size}-byte file (truncated or not a safetensors file)")
        raw_header = f.read(header_len)
    try:
        header = json.loads(raw_header.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # RecursionError: deeply nested JSON
        raise CheckpointLoadError(f"{path.name}: safetensors header is not valid JSON ({str(e)[:200]})") from e
    if not isinstance(header, dict):
        raise CheckpointLoadError(f"{path.name}: safetensors header is not a JSON object")
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointLoadError(f"{path.name}: safetensors __metadata__ is not a map of strings")
    data_len = size - 8 - header_len
    spans = sorted(_check_tensor_entry(path, name, entry, data_len)
                   for name, entry in header.items() if name != "__metadata__")
    # The format stores tensors back to back from the start of the data; overlaps or gaps mean a damaged file
    # (the safetensors library refuses it too, with a less helpful message).
    covered = 0
    for begin, end in spans:
        if begin != covered:
            raise CheckpointLoadError(f"{path.name}: safetensors tensors overlap or leave gaps in the data")
        covered = end
    if covered != data_len:
        raise CheckpointLoadError(f"{path.name}: safetensors data is {data_len} bytes but the tensors cover {covered}")
    return header


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` record of a safetensors file ({} if none). Raises CheckpointLoadError for a bad header."""
    path = Path(path)
    try:
        header = _validate_safetensors_header(path)
    except OSError as e:
        raise CheckpointLoadError(f"{path.name}: cannot read the file ({e})") from e
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
        try:
            _validate_safetensors_header(path)
        except OSError as e:
            raise CheckpointLoadError(f"{path.name}: cannot read the file ({e})") from e
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
