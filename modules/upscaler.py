"""A1111's `modules.upscaler`: `Upscaler` (the base class extensions subclass for their own upscalers),
`UpscalerData` (one entry of `shared.sd_upscalers`) and the built-in `UpscalerNone` / `UpscalerLanczos` /
`UpscalerNearest`.

The upscalers of `modules.upscaling` (the core registry: built-ins and model files) appear in
`shared.sd_upscalers` through `RegistryUpscaler`, so `upscaler.scaler.upscale(img, scale, upscaler.data_path)`
runs the real model; an extension's own `Upscaler` subclass is instantiated once, as A1111 does at start, and its
`scalers` are listed after them. An adapter: nothing in the core uses it."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from PIL import Image

from modules import devices, paths_internal, upscaling

log = logging.getLogger("webui")
LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST
MAX_PASSES = 3


def _shared() -> Any:
    return sys.modules.get("modules.shared")


class Upscaler:
    """Base class of an upscaler family: `scalers` lists its entries; `do_upscale(img, selected_model)` runs one
    pass; `upscale` repeats it (at most three times) until the target size, then resizes exactly."""

    name: str | None = None
    model_path: str | None = None
    model_name: str | None = None
    model_url: str | None = None
    enable = True
    filter = None
    model = None
    user_path: str | None = None
    scalers: list[UpscalerData]
    tile = True

    def __init__(self, create_dirs: bool = False) -> None:
        shared = _shared()
        opts, cmd_opts = getattr(shared, "opts", None), getattr(shared, "cmd_opts", None)
        self.mod_pad_h = None
        self.tile_size = getattr(opts, "ESRGAN_tile", upscaling.TILE_SIZE)
        self.tile_pad = getattr(opts, "ESRGAN_tile_overlap", upscaling.TILE_OVERLAP)
        self.device = devices.get_device_for("esrgan")
        self.img = None
        self.output = None
        self.scale: float = 1
        self.half = not getattr(cmd_opts, "no_half", False)
        self.pre_pad = 0
        self.mod_scale = None
        self.model_download_path = None
        self.can_tile = True
        if not hasattr(self, "scalers"):
            self.scalers = []
        if self.model_path is None and self.name:
            self.model_path = os.path.join(paths_internal.models_path, self.name)
        if self.model_path and create_dirs:
            os.makedirs(self.model_path, exist_ok=True)

    def do_upscale(self, img: Image.Image, selected_model: str | None) -> Image.Image:
        return img

    def upscale(self, img: Image.Image, scale: float, selected_model: str | None = None) -> Image.Image:
        """`img` enlarged by `scale` (the size rounded down to a multiple of 8, as A1111)."""
        self.scale = scale
        dest_w, dest_h = int((img.width * scale) // 8 * 8), int((img.height * scale) // 8 * 8)
        for _ in range(MAX_PASSES):
            before = img.size
            img = self.do_upscale(img, selected_model)
            if img.size == before or (img.width >= dest_w and img.height >= dest_h):
                break
        if img.size != (dest_w, dest_h):
            img = img.resize((dest_w, dest_h), resample=LANCZOS)
        return img

    def load_model(self, path: str) -> Any:
        return None

    def find_models(self, ext_filter: list[str] | None = None) -> list[str]:
        """The model files in this upscaler's folder (and `user_path`), filtered by extension."""
        found: list[str] = []
        for folder in (self.model_path, self.user_path):
            if folder and os.path.isdir(folder):
                for root, _dirs, files in os.walk(folder, followlinks=True):
                    found += [os.path.join(root, name) for name in sorted(files)
                              if ext_filter is None or os.path.splitext(name)[1].lower() in ext_filter]
        return found

    def update_status(self, prompt: str) -> None:
        print(f"\nextras: {prompt}", file=sys.stdout)


class UpscalerData:
    """One upscaler as `shared.sd_upscalers` lists it: `name`, `data_path` (its model file or None), `scale`,
    `scaler` (the `Upscaler` that runs it)."""

    name: str | None = None
    data_path: str | None = None
    scale: float = 4
    scaler: Upscaler | None = None
    model: Any = None

    def __init__(self, name: str, path: str | None, upscaler: Upscaler | None = None, scale: float = 4,
                 model: Any = None, sha256: str | None = None) -> None:
        self.name = name
        self.data_path = path
        self.local_data_path = path
        self.scaler = upscaler
        self.scale = scale
        self.model = model
        self.sha256 = sha256

    def __repr__(self) -> str:
        return f"<UpscalerData name={self.name} path={self.data_path} scale={self.scale}>"


class UpscalerNone(Upscaler):
    name = "None"

    def __init__(self, dirname: str | None = None) -> None:
        super().__init__(False)
        self.scalers = [UpscalerData("None", None, self)]

    def do_upscale(self, img: Image.Image, selected_model: str | None = None) -> Image.Image:
        return img


class _ResampleUpscaler(Upscaler):
    resample = LANCZOS

    def __init__(self, dirname: str | None = None) -> None:
        super().__init__(False)
        self.scalers = [UpscalerData(self.name, None, self)]

    def do_upscale(self, img: Image.Image, selected_model: str | None = None) -> Image.Image:
        return img.resize((int(img.width * self.scale), int(img.height * self.scale)), resample=self.resample)


class UpscalerLanczos(_ResampleUpscaler):
    name = "Lanczos"


class UpscalerNearest(_ResampleUpscaler):
    name = "Nearest"
    resample = NEAREST


class RegistryUpscaler(Upscaler):
    """One upscaler of the core registry (`modules.upscaling`: a built-in or a model file) behind A1111's
    interface; the registry runs its passes and tiles. `selected_model` (A1111 passes `data_path`) may name
    another registry entry by path or name; None means this one."""

    def __init__(self, info: upscaling.UpscalerInfo) -> None:
        self.name = info.name
        self.model_name = info.model_name
        super().__init__(False)
        self.scalers = [UpscalerData(info.name, info.model_path, self, info.scale)]

    def _name_for(self, selected_model: str | None) -> str:
        if selected_model in (None, self.name, self.scalers[0].data_path):
            return self.name
        for info in upscaling.list_upscalers():
            if selected_model in (info.model_path, info.name):
                return info.name
        return str(selected_model)  # the registry's error lists the valid names

    def upscale(self, img: Image.Image, scale: float, selected_model: str | None = None) -> Image.Image:
        self.scale = scale
        size = (int((img.width * scale) // 8 * 8), int((img.height * scale) // 8 * 8))
        return upscaling.upscale(img.convert("RGB"), self._name_for(selected_model), size=size)

    def do_upscale(self, img: Image.Image, selected_model: str | None) -> Image.Image:
        return upscaling.upscale(img.convert("RGB"), self._name_for(selected_model), scale=self.scale)


_OWN_CLASSES = (UpscalerNone, _ResampleUpscaler, UpscalerLanczos, UpscalerNearest, RegistryUpscaler)
_extension_upscalers: dict[type, Upscaler | None] = {}


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


def extension_upscalers() -> list[Upscaler]:
    """One instance of each `Upscaler` subclass an extension defined (made once; a failing one is logged and
    left out, as A1111 does)."""
    result = []
    for cls in _all_subclasses(Upscaler):
        if cls in _OWN_CLASSES:
            continue
        if cls not in _extension_upscalers:
            try:
                _extension_upscalers[cls] = cls(getattr(cls, "user_path", None))
            except Exception as e:
                log.error("Upscaler %s could not be created: %s", cls.__name__, e)
                _extension_upscalers[cls] = None
        if _extension_upscalers[cls] is not None:
            result.append(_extension_upscalers[cls])
    return result


def sd_upscalers() -> list[UpscalerData]:
    """`shared.sd_upscalers`: the core registry's upscalers, then those of extensions' `Upscaler` subclasses."""
    entries = [RegistryUpscaler(info).scalers[0] for info in upscaling.list_upscalers()]
    known = {data.name for data in entries}
    for upscaler in extension_upscalers():
        entries += [data for data in upscaler.scalers if data.name not in known]
    return entries
