"""ControlNet units as sd-webui-controlnet's API, scripts and infotext know them.

A unit is one control: image (+ mask), preprocessor ("module"), model, weight, guidance range, resize and control
modes. Clients send units as dicts with the extension's field names (and its older aliases: `input_image`,
`lowvram`, `guidance`, `mask_image`), as the extension's own `ControlNetUnit` objects, or in the legacy positional
form of the 1.1 API (one list per unit, or a flat list of several). Numbers may come as strings, modes by name or
number. A field that cannot be understood raises `UnitError` naming it, so the API answers 422 with the field.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from PIL import Image


class UnitError(ValueError):
    """A unit field that cannot be used; the message names the field."""


class ResizeMode(Enum):
    RESIZE = "Just Resize"
    INNER_FIT = "Crop and Resize"
    OUTER_FIT = "Resize and Fill"


class ControlMode(Enum):
    BALANCED = "Balanced"
    PROMPT = "My prompt is more important"
    CONTROL = "ControlNet is more important"


class HiResFixOption(Enum):
    BOTH = "Both"
    LOW_RES_ONLY = "Low res only"
    HIGH_RES_ONLY = "High res only"


RESIZE_MODE_ALIASES = {
    "Inner Fit (Scale to Fit)": ResizeMode.INNER_FIT, "Scale to Fit (Inner Fit)": ResizeMode.INNER_FIT,
    "Outer Fit (Shrink to Fit)": ResizeMode.OUTER_FIT, "Envelope (Outer Fit)": ResizeMode.OUTER_FIT,
}
FIELD_ALIASES = {"input_image": "image", "lowvram": "low_vram", "guidance": "guidance_end", "mask_image": "mask"}
# the 1.1 extension's positional order (its ControlNetUnit.__init__), still sent by old scripts and clients
LEGACY_FIELDS = ("enabled", "module", "model", "weight", "image", "resize_mode", "low_vram", "processor_res",
                 "threshold_a", "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode")
# the fields the infotext records, in the extension's order ("Module: canny, Model: ..., Control Mode: Balanced")
INFOTEXT_FIELDS = ("module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
                   "guidance_start", "guidance_end", "pixel_perfect", "control_mode")


def _enum(enum: type[Enum], value: Any, name: str, aliases: dict[str, Enum] | None = None) -> Enum:
    if isinstance(value, enum):
        return value
    if isinstance(value, Enum):  # another module's copy of the same enum (a reloaded extension)
        value = value.value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        members = list(enum)
        if 0 <= value < len(members):
            return members[value]
    elif isinstance(value, str):
        if aliases and value in aliases:
            return aliases[value]
        for member in enum:
            if value.lower() in (member.value.lower(), member.name.lower()):
                return member
    valid = ", ".join(f"{i} / {m.value!r}" for i, m in enumerate(enum))
    raise UnitError(f"{name}: {value!r} is not one of {valid}")


def _number(value: Any, name: str, kind: type = float) -> float | int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UnitError(f"{name}: {value!r} is not a number") from None
    if not np.isfinite(number):
        raise UnitError(f"{name}: {value!r} is not a finite number")
    return int(round(number)) if kind is int else number


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, str):
        if value.strip().lower() in ("true", "1", "yes", "on"):
            return True
        if value.strip().lower() in ("false", "0", "no", "off", ""):
            return False
        raise UnitError(f"{name}: {value!r} is not true or false")
    return bool(value)


@dataclass
class ControlNetUnit:
    """One ControlNet unit, with sd-webui-controlnet's field names and defaults."""

    enabled: bool = False
    module: str = "none"
    model: str = "None"
    weight: float = 1.0
    image: Any = None            # base64 text, PIL image, HxWx3 array, {"image", "mask"} or [image, mask]
    mask: Any = None
    resize_mode: ResizeMode = ResizeMode.INNER_FIT
    low_vram: bool = False
    processor_res: int = -1      # -1: the preprocessor's default
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    pixel_perfect: bool = False
    control_mode: ControlMode = ControlMode.BALANCED
    hr_option: HiResFixOption = HiResFixOption.BOTH
    save_detected_map: bool = True
    inpaint_crop_input_image: bool = True
    use_preview_as_input: bool = False
    generated_image: Any = None  # the UI's preprocessor preview, used as the control when use_preview_as_input
    extra: dict[str, Any] = field(default_factory=dict)  # fields of newer extension versions, kept for scripts

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "") -> None:
        """Normalise types and check ranges; errors name `where` + the field."""
        prefix = f"{where}." if where else ""
        self.enabled = _bool(self.enabled, prefix + "enabled")
        self.module = "none" if self.module in (None, "", "None") else str(self.module)
        self.model = "None" if self.model in (None, "", "none") else str(self.model)
        self.weight = _number(self.weight, prefix + "weight")
        if not 0.0 <= self.weight <= 2.0:
            raise UnitError(f"{prefix}weight: {self.weight} is outside 0..2")
        self.resize_mode = _enum(ResizeMode, self.resize_mode, prefix + "resize_mode", RESIZE_MODE_ALIASES)
        self.control_mode = _enum(ControlMode, self.control_mode, prefix + "control_mode")
        self.hr_option = _enum(HiResFixOption, self.hr_option, prefix + "hr_option")
        for name in ("low_vram", "pixel_perfect", "save_detected_map", "inpaint_crop_input_image",
                     "use_preview_as_input"):
            setattr(self, name, _bool(getattr(self, name), prefix + name))
        self.processor_res = _number(self.processor_res, prefix + "processor_res", int)
        self.threshold_a = _number(self.threshold_a, prefix + "threshold_a")
        self.threshold_b = _number(self.threshold_b, prefix + "threshold_b")
        for name in ("guidance_start", "guidance_end"):
            value = _number(getattr(self, name), prefix + name)
            if not 0.0 <= value <= 1.0:
                raise UnitError(f"{prefix}{name}: {value} is outside 0..1")
            setattr(self, name, value)
        if self.guidance_start > self.guidance_end:
            raise UnitError(f"{prefix}guidance_start ({self.guidance_start}) is after guidance_end "
                            f"({self.guidance_end})")

    # --- construction from what clients send -----------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "unit") -> ControlNetUnit:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        data: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in values.items():
            name = FIELD_ALIASES.get(key, key)
            if name in data:  # both an alias and its field
                alias = key if key != name else next(a for a, f in FIELD_ALIASES.items() if f == name and a in values)
                raise UnitError(f"{where}: both {alias!r} and {name!r} given")
            (data if name in known else extra)[name] = value
        unit = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            setattr(unit, f.name, data.get(f.name, default))
        unit.extra = extra
        unit.validate(where)
        return unit

    @classmethod
    def from_legacy(cls, values: list[Any] | tuple[Any, ...], where: str = "unit") -> ControlNetUnit:
        if len(values) > len(LEGACY_FIELDS):
            raise UnitError(f"{where}: {len(values)} positional values; the legacy form has at most "
                            f"{len(LEGACY_FIELDS)} ({', '.join(LEGACY_FIELDS)})")
        return cls.from_dict(dict(zip(LEGACY_FIELDS, values)), where)

    @classmethod
    def coerce(cls, value: Any, where: str = "unit") -> ControlNetUnit | None:
        """Whatever a script argument slot holds -> a unit (None: an empty slot)."""
        if value is None:
            return None
        if isinstance(value, cls):
            value.validate(where)
            return value
        if isinstance(value, dict):
            return cls.from_dict(value, where)
        if isinstance(value, list | tuple):
            return cls.from_legacy(value, where)
        if hasattr(value, "__dict__") and {"enabled", "module", "model"} <= set(vars(value)):
            return cls.from_dict(dict(vars(value)), where)  # another copy of the class (e.g. a script's own)
        raise UnitError(f"{where}: expected a ControlNet unit (a dict of its fields), got {type(value).__name__}")

    def to_dict(self, with_images: bool = False) -> dict[str, Any]:
        """The fields as plain JSON values (enums by name as the extension's API sends them); images only when
        asked (a UI default must be JSON: Gradio clients read the State's initial value)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (not with_images and f.name in ("image", "mask", "generated_image")):
                continue
            values[f.name] = value.value if isinstance(value, Enum) else value
        return values

    # --- infotext --------------------------------------------------------------------------------------------
    def serialize(self) -> str:
        """`Module: canny, Model: ..., Weight: 1.0, ...` as the extension writes it into the infotext."""
        def text(value: Any) -> str:
            return value.value if isinstance(value, Enum) else str(value)
        return ", ".join(f"{' '.join(w.capitalize() for w in name.split('_'))}: {text(getattr(self, name))}"
                         for name in INFOTEXT_FIELDS)

    @classmethod
    def parse(cls, text: str) -> ControlNetUnit:
        """The inverse of serialize (a pasted infotext): an enabled unit with those settings, no image."""
        values: dict[str, Any] = {"enabled": True}
        for item in text.split(","):
            key, _, value = item.partition(":")
            name = "_".join(word.lower() for word in key.strip().split(" "))
            value = value.strip()
            if name in INFOTEXT_FIELDS:
                values[name] = value == "True" if value in ("True", "False") else value
        return cls.from_dict(values, "infotext")

    # --- images ----------------------------------------------------------------------------------------------
    def images(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(image HxWx3 uint8, mask HxW uint8 or None) from whatever form they came in."""
        image, mask = self.image, self.mask
        if isinstance(image, dict):
            image, mask = image.get("image"), image.get("mask") if mask is None else mask
        elif isinstance(image, list | tuple):
            if len(image) == 2 and not isinstance(image[0], int | float):
                image, mask = image
            elif image:
                raise UnitError("image: expected an image or [image, mask]")
        image, mask = (None if _is_empty(value) else value for value in (image, mask))
        picture = to_array(image, "image") if image is not None else None
        mask_array = to_array(mask, "mask") if mask is not None else None
        if mask_array is not None:
            mask_array = mask_array.max(axis=2) if mask_array.ndim == 3 else mask_array
            if not mask_array.any():
                mask_array = None
        if picture is not None and mask_array is not None and mask_array.shape != picture.shape[:2]:
            raise UnitError(f"mask: its size {mask_array.shape[1]}x{mask_array.shape[0]} differs from the image's "
                            f"{picture.shape[1]}x{picture.shape[0]}")
        return picture, mask_array


def _is_empty(value: Any) -> bool:
    """No image: webuiapi sends "" for a unit without one, as the extension's own UI did."""
    return value is None or (isinstance(value, str) and not value.strip())


def to_array(value: Any, name: str) -> np.ndarray:
    """Base64 text (with or without a data: prefix), a PIL image or an array -> HxWx3 uint8 (masks: alpha kept in
    mind: an RGBA mask's alpha is its value where the colour is empty)."""
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, Image.Image):
        array = np.asarray(value.convert("RGBA" if value.mode in ("RGBA", "LA", "P") else "RGB"))
    elif isinstance(value, str | bytes):
        text = value.decode() if isinstance(value, bytes) else value
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            picture = Image.open(io.BytesIO(base64.b64decode(text, validate=False)))
            picture.load()
        except Exception as e:
            raise UnitError(f"{name}: not a base64-encoded image ({type(e).__name__})") from None
        if picture.width * picture.height > 8192 * 8192:
            raise UnitError(f"{name}: {picture.width}x{picture.height} is larger than 8192x8192")
        return to_array(picture, name)
    else:
        raise UnitError(f"{name}: expected a base64-encoded image, got {type(value).__name__}")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=2)
    if array.ndim != 3:
        raise UnitError(f"{name}: expected an image array of HxW or HxWxC, got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        rgb, alpha = array[:, :, :3], array[:, :, 3:]
        if name == "mask" and not rgb.any():
            return np.repeat(alpha, 3, axis=2)
        array = rgb
    return np.ascontiguousarray(array[:, :, :3])


def units_from_args(args: Any, where: str = "alwayson_scripts.controlnet.args") -> list[ControlNetUnit]:
    """The units in a script's argument slice: dicts, unit objects, legacy lists, or one flat legacy list."""
    values = list(args or ())
    if values and isinstance(values[0], bool):  # one flat positional list: units of LEGACY_FIELDS values each
        size = len(LEGACY_FIELDS)
        return [ControlNetUnit.from_legacy(values[i:i + size], f"{where}[{i}]")
                for i in range(0, len(values), size)]
    units = []
    for index, value in enumerate(values):
        unit = ControlNetUnit.coerce(value, f"{where}[{index}]")
        if unit is not None:
            units.append(unit)
    return units
