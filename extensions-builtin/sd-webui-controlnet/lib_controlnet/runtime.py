"""The extension's state and the steps shared by the script, the preview button and the API routes: settings,
model folders and cache, preprocessing a unit for a generation size, the detected maps, the demo ControlNet.

Reads the application only through the public surface (`modules.shared`: settings, flags, the job runner).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lib_controlnet import annotators, models, preprocessors
from lib_controlnet.control import PreparedUnit, fit_to_size, pixel_perfect_resolution
from lib_controlnet.units import ControlNetUnit, UnitError
from modules.models.safe_load import CheckpointLoadError

log = logging.getLogger("webui.controlnet")

EXTENSION_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONTROLNET = EXTENSION_ROOT.parents[1] / "assets" / "demo" / "demo-canny-controlnet.safetensors"
API_VERSION = 2  # what /controlnet/version answers (the extension's API version)

# settings (section "ControlNet"), with the extension's keys and defaults
SETTINGS: dict[str, tuple[Any, str]] = {
    "control_net_unit_count": (3, "Multi-ControlNet: ControlNet unit number (requires restart)"),
    "control_net_model_cache_size": (2, "Model cache size (requires restart)"),
    "control_net_no_detectmap": (False, "Do not append detectmap to output"),
    "control_net_models_path": ("", "Extra path to scan for ControlNet models (e.g. training output directory)"),
    "control_net_skip_unfit_units": (False, "Run a job without a ControlNet unit whose model does not fit the "
                                            "checkpoint (shown in the job's warnings) instead of refusing it"),
}


class ControlNetError(ValueError):
    """A unit that cannot run as given; the message is for the user."""


def setting(name: str) -> Any:
    from modules import shared

    opts = getattr(shared, "opts", None)
    value = getattr(opts, name, None) if opts is not None else None
    return SETTINGS[name][0] if value is None else value


def model_folders() -> list[str]:
    from modules import shared

    folders = [getattr(shared.cmd_opts, "controlnet_dir", None) or os.path.join("models", "ControlNet")]
    extra = str(setting("control_net_models_path") or "").strip()
    if extra:
        folders.append(extra)
    return folders


def annotators_dir() -> str:
    from modules import shared

    return getattr(shared.cmd_opts, "controlnet_annotator_models_path", None) or \
        os.path.join(model_folders()[0], "annotators")


def ensure_demo_controlnet(folder_name: str | None = None) -> None:
    """First start: the demo ControlNet joins an empty ControlNet folder (default: the first model folder), as the
    demo checkpoint does."""
    folder = Path(folder_name or model_folders()[0])
    if not DEMO_CONTROLNET.is_file() or (folder.is_dir() and models.list_models([str(folder)])):
        return
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / DEMO_CONTROLNET.name
    temp = target.with_name("." + target.name + ".tmp")
    try:
        os.link(DEMO_CONTROLNET, temp)
    except OSError:
        shutil.copyfile(DEMO_CONTROLNET, temp)
    temp.replace(target)


_cache: models.ModelCache | None = None


def cache() -> models.ModelCache:
    global _cache
    size = int(setting("control_net_model_cache_size"))
    if _cache is None:
        _cache = models.ModelCache(size)
    elif _cache.size != size:
        _cache.resize(size)
    return _cache


def model_titles() -> list[str]:
    return ["None", *(info.title for info in models.list_models(model_folders()))]



def _type_words(control_type: str, modules: list[str]) -> set[str]:
    """What a model's name may contain to belong to a control type: the type's name (no spaces), and the first word
    of each of its preprocessors ("softedge" of softedge_hed)."""
    words = {control_type.lower().replace(" ", "")}
    for module in modules:
        first = module.lower().replace(" ", "_").split("_")[0]
        if first not in ("none", "invert"):
            words.add(first)
    return words


def models_for_type(control_type: str, titles: list[str]) -> list[str]:
    """The model titles the Control Type shows: all for "All", else "None" and those whose name names the type."""
    types = preprocessors.control_types()
    if control_type not in types or control_type == "All":
        return list(titles)
    words = _type_words(control_type, types[control_type]["module_list"])
    return ["None", *(title for title in titles if title != "None" and any(w in title.lower() for w in words))]


# --- preprocessing --------------------------------------------------------------------------------------------

def slider_value(value: float, slider: Any) -> float | None:
    """The extension's rule: -1 (or anything outside the slider's range) means the slider's default."""
    if slider is None or value is None or value == -1 or not slider.minimum <= value <= slider.maximum:
        return None
    return value


def _preprocessor(unit: ControlNetUnit) -> Any:
    try:
        preprocessor = preprocessors.get(unit.module)
    except ValueError as e:
        raise ControlNetError(f"module: {e}") from None
    if preprocessor.is_reference:
        raise ControlNetError(f'Preprocessor "{unit.module}" (reference) is not supported yet: it needs attention '
                              "injection, which this program has no hook for. Use another preprocessor.")
    return preprocessor


def resolve(unit: ControlNetUnit, image: np.ndarray, width: int, height: int) -> ControlNetUnit:
    """The unit with the values the preprocessor will use (defaults for -1, the pixel-perfect resolution): what
    the infotext records, as the extension writes it."""
    preprocessor = _preprocessor(unit)

    def value(given: float, slider: Any) -> float:
        chosen = slider_value(given, slider)
        return chosen if chosen is not None else (slider.default if slider is not None else given)

    resolution = pixel_perfect_resolution(image, width, height, unit.resize_mode) if unit.pixel_perfect \
        else value(unit.processor_res, preprocessor.resolution or preprocessors.RESOLUTION)
    return dataclasses.replace(unit, processor_res=int(resolution),
                               threshold_a=value(unit.threshold_a, preprocessor.threshold_a),
                               threshold_b=value(unit.threshold_b, preprocessor.threshold_b))


def detect(unit: ControlNetUnit, image: np.ndarray, width: int, height: int, mask: np.ndarray | None = None
           ) -> np.ndarray:
    """The control map of a `resolve`d unit for a width x height generation (preprocessed, then fitted by its
    resize mode)."""
    return fit_to_size(preprocess(unit, image, mask), width, height, unit.resize_mode)


def preprocess(unit: ControlNetUnit, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The preprocessor's map of a `resolve`d unit, at the preprocessor's resolution (what /controlnet/detect
    returns, as the extension does)."""
    preprocessor = _preprocessor(unit)
    try:
        detected = preprocessor.run(image, unit.processor_res, slider_value(unit.threshold_a, preprocessor.threshold_a),
                                    slider_value(unit.threshold_b, preprocessor.threshold_b), annotators_dir(),
                                    mask=mask)
    except (FileNotFoundError, annotators.AnnotatorUnavailableError, CheckpointLoadError) as e:
        # a missing annotator file (the message names it and where to put it), no controlnet_aux, a refused pickle
        raise ControlNetError(f'Preprocessor "{unit.module}": {e}') from None
    return detected


def visible_map(detected: np.ndarray) -> Image.Image:
    """A control map as a picture (inpaint maps: masked pixels shown black)."""
    if detected.dtype != np.uint8:
        detected = (np.clip(detected, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(detected)


@dataclass
class JobUnits:
    """What the script prepared for one job (kept on p for postprocess)."""

    prepared: list[PreparedUnit]
    skipped: list[str]


def unit_image(unit: ControlNetUnit, p: Any, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The unit's image and mask; without an image of its own an img2img unit uses the img2img input (and the
    inpaint mask), as the extension does."""
    try:
        image, mask = unit.images()
    except UnitError as e:
        raise ControlNetError(f"ControlNet unit {index}: {e}") from None
    if unit.use_preview_as_input and unit.generated_image is not None:
        from lib_controlnet.units import to_array

        image = to_array(unit.generated_image, "generated_image")
        return image, None
    if image is None and getattr(p, "init_images", None):
        image = np.asarray(p.init_images[0].convert("RGB"))
        if mask is None and getattr(p, "image_mask", None) is not None:
            mask = np.asarray(p.image_mask.convert("L").resize((image.shape[1], image.shape[0])))
    if image is None:
        raise ControlNetError(f"ControlNet unit {index} is enabled but has no image: upload a control image"
                              + (" (or leave it empty to use the img2img input)" if hasattr(p, "init_images")
                                 else ""))
    return image, mask


def prepare(p: Any, units: list[ControlNetUnit]) -> JobUnits:
    """Load the models and make the control maps of a job's enabled units. A unit that cannot run raises
    ControlNetError -- or, with the setting control_net_skip_unfit_units, is left out with a warning."""
    model = p.sd_model
    family = getattr(model, "family", "sd1")
    unet = getattr(model, "unet", None)
    unet_config = dict(unet.config) if unet is not None else None
    # the control model runs in the UNet's dtype (fp16 on a GPU); the cache keeps one copy per dtype
    dtype = next(unet.parameters()).dtype if unet is not None else None
    prepared, skipped = [], []
    for index, unit in enumerate(units):
        if not unit.enabled:
            continue
        try:
            if unit.model == "None":
                raise ControlNetError(f"ControlNet unit {index} is enabled but has no model: choose one")
            try:
                info = models.find_model(unit.model, model_folders())
                control_model = cache().get(info, None, dtype=dtype or torch.float32, base_unet=unet)
                models.check_compatible(control_model, family)  # the family first: its message says what to pick
                if unet_config is not None:
                    models.check_base_unet(control_model, unet_config)
            except models.ControlModelError as e:
                raise ControlNetError(f"ControlNet unit {index}: {e}") from None
            image, mask = unit_image(unit, p, index)
            try:
                unit = resolve(unit, image, p.width, p.height)
                detected = detect(unit, image, p.width, p.height, mask)
            except ControlNetError as e:
                raise ControlNetError(f"ControlNet unit {index}: {e}") from None
        except ControlNetError as e:
            if not setting("control_net_skip_unfit_units"):
                raise
            skipped.append(str(e))
            continue
        # the infotext records the model's full title ("name [hash]"), whatever form the client named it in
        prepared.append(PreparedUnit(index, dataclasses.replace(unit, model=info.title), control_model, detected))
    return JobUnits(prepared, skipped)
