"""Image upscalers as A1111 lists them: "None", "Lanczos", "Nearest", then every super-resolution model file.

Model files (.pth/.pt/.ckpt/.safetensors) are found recursively in A1111's upscaler folders (models/ESRGAN,
RealESRGAN, SwinIR, DAT, ScuNET, HAT, or the --*-models-path flags) and named by their file stem. spandrel detects
the architecture from the state dict; pickles are read only through the restricted loader of
`modules.models.safe_load`, so a crafted file is refused before anything in it runs.

`upscale()` follows A1111's `Upscaler.upscale`: the model runs at its native scale, up to three times, until the
image reaches the target, and a final Lanczos resize gives the exact size. Large inputs are processed in
overlapping tiles so memory stays bounded. Used by the Extras tab/API (modules/postprocessing.py) and by hires fix.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modules import devices
from modules.models import safe_load
from modules.models.safe_load import CheckpointLoadError

log = logging.getLogger("webui")

BUILTIN_UPSCALERS: dict[str, Image.Resampling | None] = {
    "None": None,  # A1111's UpscalerNone: no model, so only the final Lanczos resize happens
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
MODEL_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")
# A1111's upscaler folders, in its order, with the flag that moves each (HAT has none in A1111).
MODEL_KINDS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "ScuNET", "HAT")
TILE_SIZE = 192        # A1111's ESRGAN_tile default: input tile side in pixels
TILE_OVERLAP = 16      # pixels shared by neighbouring tiles, blended to hide seams
MAX_PASSES = 3         # A1111 runs a model at most three times to reach the target
DEFAULT_SCALE = 4      # A1111's UpscalerData default, shown until a model is loaded and its real scale is known
_RE_SCALE_IN_NAME = re.compile(r"(?:^|[^a-z0-9])(\d+)x|x(\d+)(?:[^0-9]|$)", re.IGNORECASE)


@dataclass
class UpscalerInfo:
    """One entry of the list (the `/sdapi/v1/upscalers` record: name, model_name, model_path, model_url, scale)."""

    name: str
    model_name: str | None = None   # the kind of model (its folder: "ESRGAN", "SwinIR", ...); None for built-ins
    model_path: str | None = None   # the model file; None for built-ins
    model_url: str | None = None    # never downloads, so always None
    scale: float = DEFAULT_SCALE

    @property
    def is_model(self) -> bool:
        return self.model_path is not None

    def api_record(self) -> dict[str, object]:
        return {"name": self.name, "model_name": self.model_name, "model_path": self.model_path,
                "model_url": self.model_url, "scale": self.scale}


def model_folders(args: argparse.Namespace | None) -> dict[str, str]:
    """{kind: folder} for the upscaler model folders given by the parsed flags (empty without flags)."""
    if args is None:
        return {}
    models_dir = getattr(args, "models_dir", None) or os.path.join(getattr(args, "data_dir", "."), "models")
    return {kind: os.path.abspath(getattr(args, f"{kind.lower()}_models_path", None) or os.path.join(models_dir, kind))
            for kind in MODEL_KINDS}


def scale_from_name(stem: str) -> int:
    """The scale a file name announces ("4x-UltraSharp", "RealESRGAN_x2plus"), else A1111's default 4."""
    match = _RE_SCALE_IN_NAME.search(stem)
    if match:
        value = int(match.group(1) or match.group(2))
        if 1 <= value <= 16:
            return value
    return DEFAULT_SCALE


def _scan(folders: Mapping[str, str]) -> list[UpscalerInfo]:
    found: list[UpscalerInfo] = []
    names: set[str] = set(BUILTIN_UPSCALERS)
    for kind, folder in folders.items():
        if not os.path.isdir(folder):
            continue
        paths = []
        for root, dirs, files in os.walk(folder, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            paths += [os.path.join(root, f) for f in files
                      if not f.startswith(".") and f.lower().endswith(MODEL_SUFFIXES)]
        for path in sorted(paths):
            stem = Path(path).stem
            name = stem
            if name in names:  # the same stem in two folders: keep both selectable under distinct names
                name = f"{stem} ({kind})"
                number = 2
                while name in names:
                    name, number = f"{stem} ({kind} {number})", number + 1
            names.add(name)
            found.append(UpscalerInfo(name, kind, path, None, scale_from_name(stem)))
    # A1111 sorts the model upscalers by name after the built-ins.
    found.sort(key=lambda info: info.name.lower())
    return [UpscalerInfo(name) for name in BUILTIN_UPSCALERS] + found


# --- running a model --------------------------------------------------------------------------------------------

def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]  # the last tile ends at the border, overlapping its neighbour more


def _feather(length: int, ramp: int, before: bool, after: bool) -> torch.Tensor:
    """Blend weights along one axis: a linear ramp over `ramp` pixels at each side shared with another tile."""
    weights = torch.ones(length)
    if ramp <= 0:
        return weights
    position = torch.arange(length, dtype=torch.float32) + 0.5
    if before:
        weights = torch.minimum(weights, position / ramp)
    if after:
        weights = torch.minimum(weights, position.flip(0) / ramp)
    return weights


def run_tiled(model, pixels: torch.Tensor, tile: int = TILE_SIZE, overlap: int = TILE_OVERLAP) -> torch.Tensor:
    """One pass of `model` (a spandrel ImageModelDescriptor) over `pixels` (1×C×H×W, 0..1, float32 on the CPU).

    Inputs larger than `tile` run tile by tile; overlapping outputs are blended with linear ramps, and only one
    tile's activations are on the device at a time. Returns 1×C×(H·s)×(W·s) float32 on the CPU.
    """
    import spandrel

    param = next(model.model.parameters())
    _, _, height, width = pixels.shape
    scale = model.scale
    if (height <= tile and width <= tile) or model.tiling == spandrel.ModelTiling.INTERNAL:
        return model(pixels.to(param.device, param.dtype)).float().cpu()
    overlap = min(overlap, tile // 2)
    output: torch.Tensor | None = None
    weight = torch.zeros(1, 1, height * scale, width * scale)
    for y in _tile_starts(height, tile, overlap):
        for x in _tile_starts(width, tile, overlap):
            h, w = min(tile, height - y), min(tile, width - x)
            result = model(pixels[..., y:y + h, x:x + w].to(param.device, param.dtype)).float().cpu()
            if output is None:
                output = torch.zeros(1, result.shape[1], height * scale, width * scale)
            ramp = overlap * scale
            mask = (_feather(h * scale, ramp, y > 0, y + h < height)[:, None]
                    * _feather(w * scale, ramp, x > 0, x + w < width)[None, :])
            region = (..., slice(y * scale, (y + h) * scale), slice(x * scale, (x + w) * scale))
            output[region] += result * mask
            weight[region] += mask
    return output / weight


def _pil_to_pixels(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def _pixels_to_pil(pixels: torch.Tensor) -> Image.Image:
    array = (pixels[0].clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def upscale_with_model(model, image: Image.Image, tile: int = TILE_SIZE, overlap: int = TILE_OVERLAP) -> Image.Image:
    """One native-scale pass of a loaded model; an alpha channel is scaled with Lanczos and kept."""
    result = _pixels_to_pil(run_tiled(model, _pil_to_pixels(image), tile, overlap))
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A").resize(result.size, Image.Resampling.LANCZOS)
        result.putalpha(alpha)
    return result


# --- the registry -----------------------------------------------------------------------------------------------

class UpscalerRegistry:
    """The upscalers found in a set of folders; loads model files on demand and keeps the last one loaded."""

    def __init__(self, folders: Mapping[str, str] | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, tile: int = TILE_SIZE, overlap: int = TILE_OVERLAP) -> None:
        self.folders = dict(folders or {})
        self.device = torch.device(device)
        self.dtype = dtype if self.device.type != "cpu" else torch.float32  # CPU kernels: fp32 only
        self.tile = tile
        self.overlap = overlap
        self._upscalers: list[UpscalerInfo] | None = None
        self._loaded: tuple[tuple[str, float, int], object] | None = None  # ((path, mtime, size), descriptor)
        self._lock = threading.RLock()

    def refresh(self) -> list[UpscalerInfo]:
        """Scan the folders again (A1111's refresh button next to the upscaler lists)."""
        with self._lock:
            self._upscalers = _scan(self.folders)
            return list(self._upscalers)

    def list(self) -> list[UpscalerInfo]:
        with self._lock:
            return list(self._upscalers) if self._upscalers is not None else self.refresh()

    def names(self) -> list[str]:
        return [info.name for info in self.list()]

    def get(self, name: str) -> UpscalerInfo | None:
        """The upscaler called `name`, scanning the folders again once if it is not known (a newly added file)."""
        for rescan in (False, True):
            upscalers = self.refresh() if rescan else self.list()
            for info in upscalers:
                if info.name == name:
                    return info
        return None

    def find(self, name: str) -> UpscalerInfo:
        info = self.get(name)
        if info is None:
            raise ValueError(f"Unknown upscaler {name!r}. Valid upscalers: {', '.join(self.names())}")
        return info

    def load(self, info: UpscalerInfo):
        """The spandrel model descriptor of a model upscaler, from cache when the file is unchanged."""
        import spandrel

        path = Path(info.model_path)
        try:
            stat = path.stat()
        except OSError as e:
            raise CheckpointLoadError(f"{path.name}: cannot read upscaler model ({e})") from e
        key = (str(path), stat.st_mtime, stat.st_size)
        with self._lock:
            if self._loaded is not None and self._loaded[0] == key:
                return self._loaded[1]
            if self._loaded is not None:  # keep one model at a time: free the old one before reading the new one
                self._loaded = None
                devices.torch_gc()
            state_dict = read_model_state_dict(path)
            try:
                descriptor = spandrel.ModelLoader(self.device).load_from_state_dict(state_dict)
            except spandrel.UnsupportedModelError as e:
                raise CheckpointLoadError(f"{path.name}: not an upscaler model that spandrel recognises") from e
            except Exception as e:  # a recognised architecture with inconsistent tensors
                raise CheckpointLoadError(f"{path.name}: cannot build the upscaler model ({e})") from e
            if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.input_channels != 3:
                raise CheckpointLoadError(f"{path.name}: {descriptor.architecture.name} models are not "
                                          f"RGB image upscalers and cannot be used here")
            dtype = self.dtype
            if (dtype == torch.float16 and not descriptor.supports_half) or \
                    (dtype == torch.bfloat16 and not descriptor.supports_bfloat16):
                dtype = torch.float32
            descriptor.to(dtype).eval()
            info.scale = descriptor.scale
            log.info("Loaded upscaler %s (%s, %dx) on %s", info.name, descriptor.architecture.name,
                     descriptor.scale, self.device)
            self._loaded = (key, descriptor)
            return descriptor

    def unload(self) -> None:
        with self._lock:
            self._loaded = None
        devices.torch_gc()

    def upscale(self, image: Image.Image, upscaler_name: str, scale: float | None = None,
                size: tuple[int, int] | None = None) -> Image.Image:
        """`image` upscaled by `scale`, or to exactly `size` (width, height), with the named upscaler."""
        info = self.find(upscaler_name)
        target = target_size(image.size, scale, size)
        if not info.is_model:
            if target == image.size:
                return image.copy()
            resample = BUILTIN_UPSCALERS[info.name]
            return image.resize(target, Image.Resampling.LANCZOS if resample is None else resample)
        with self._lock:
            model = self.load(info)
            result = image
            for attempt in range(MAX_PASSES):
                # A1111: stop once the target is reached, but a same-size request still runs the model once
                # (1x restoration models).
                if result.width >= target[0] and result.height >= target[1] and (attempt or target != image.size):
                    break
                before = result.size
                result = upscale_with_model(model, result, self.tile, self.overlap)
                if result.size == before:
                    break
        if result.size != target:
            result = result.resize(target, Image.Resampling.LANCZOS)
        return result


def target_size(source: tuple[int, int], scale: float | None, size: tuple[int, int] | None) -> tuple[int, int]:
    """The output size for a scale factor (int(side × scale), as A1111) or an explicit (width, height)."""
    if size is not None:
        width, height = (int(v) for v in size)
    elif scale is not None:
        if not scale > 0:
            raise ValueError(f"Upscale factor must be positive, got {scale}")
        width, height = int(source[0] * scale), int(source[1] * scale)
    else:
        raise ValueError("Give a scale factor or a target size to upscale to")
    if width < 1 or height < 1:
        raise ValueError(f"Upscale target {width}x{height} is empty")
    return width, height


def read_model_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """An upscaler file's state dict: safetensors, or a pickle through the restricted loader (never torch.load
    with code execution), unwrapped from "params_ema"/"state_dict"/... as spandrel expects."""
    import spandrel

    path = Path(path)
    if path.suffix.lower() == safe_load.SAFETENSORS_SUFFIX:
        loaded = safe_load.load_state_dict(path)
    else:
        loaded = safe_load.load_pickle(path, "upscaler model")
    if not isinstance(loaded, dict):
        raise CheckpointLoadError(f"{path.name}: does not contain a state dict")
    state_dict = spandrel.canonicalize_state_dict(loaded)
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointLoadError(f"{path.name}: contains no tensors")
    return tensors


# --- the application's registry (folders and device from the command-line flags) ----------------------------------

_default: UpscalerRegistry | None = None
_default_lock = threading.Lock()
_app_args: argparse.Namespace | None = None  # the running application's flags, given by `configure` at start


def configure(args: argparse.Namespace | None) -> None:
    """The application's flags (model folders, --use-cpu, precision), set once at start by the application: the
    core reads no global settings module."""
    global _app_args
    _app_args = args


def _device_for(args: argparse.Namespace | None) -> tuple[torch.device, torch.dtype]:
    if args is None:
        return torch.device("cpu"), torch.float32
    use_cpu = list(getattr(args, "use_cpu", None) or [])
    on_cpu = any(x in ("all", "esrgan") for x in use_cpu)  # A1111's --use-cpu module name for upscalers
    policy = devices.choose_policy(use_cpu=["all"] if on_cpu else [], device_id=getattr(args, "device_id", None),
                                   no_half=getattr(args, "no_half", False),
                                   precision=getattr(args, "precision", "autocast"), bf16=getattr(args, "bf16", False))
    return policy.device, policy.dtype


def registry() -> UpscalerRegistry:
    """The registry for the running application's flags (see `configure`); built-ins only before that."""
    global _default
    args = _app_args
    folders = model_folders(args)
    device, dtype = _device_for(args)
    with _default_lock:
        if _default is None or _default.folders != folders or _default.device != device or _default.dtype != dtype:
            _default = UpscalerRegistry(folders, device, dtype)
        return _default


def list_upscalers() -> list[UpscalerInfo]:
    """Every upscaler: built-ins first, then model files by name (for the UI lists and /sdapi/v1/upscalers)."""
    return registry().list()


def upscaler_names() -> list[str]:
    return registry().names()


def refresh_upscalers() -> list[UpscalerInfo]:
    return registry().refresh()


def is_known(name: str) -> bool:
    return registry().get(name) is not None


def upscale(image: Image.Image, upscaler_name: str, scale: float | None = None,
            size: tuple[int, int] | None = None) -> Image.Image:
    """`image` upscaled by `scale` or to exactly `size` (width, height) with the named upscaler.

    Raises ValueError (listing the valid names) for an unknown upscaler, CheckpointLoadError naming the file when
    a model file cannot be loaded safely."""
    return registry().upscale(image, upscaler_name, scale=scale, size=size)
