"""Pasting generation parameters into a tab: which infotext key fills which field (A1111's paste semantics).

A1111 (`infotext_utils.connect_paste`) goes through a list of (component, infotext key or function) pairs: a key
that is missing from the parsed infotext leaves its component unchanged, a value is converted to the type of the
component's value (ints go through float, so "20" and "20.0" both work), and a value that does not convert leaves
the component unchanged too. `txt2img_values` is that list for the txt2img tab, as a pure function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from modules import script_callbacks
from modules.infotext import parse_generation_parameters, sampler_from_infotext, scheduler_from_infotext


def _int(value: object) -> int:
    return int(float(str(value)))


def _float(value: object) -> float:
    number = float(str(value))
    return int(number) if number.is_integer() else number


def _text(value: object) -> str:
    return str(value)


# (field name, infotext key, converter), in A1111's txt2img paste order.
TXT2IMG_FIELDS: tuple[tuple[str, str, Callable[[object], object]], ...] = (
    ("prompt", "Prompt", _text),
    ("negative_prompt", "Negative prompt", _text),
    ("steps", "Steps", _int),
    ("cfg_scale", "CFG scale", _float),
    ("seed", "Seed", _int),
    ("width", "Size-1", _int),
    ("height", "Size-2", _int),
    ("batch_size", "Batch size", _int),
    ("denoising_strength", "Denoising strength", _float),
    ("enable_hr", "Hires upscale", lambda v: True),
    ("hr_scale", "Hires upscale", _float),
    ("hr_upscaler", "Hires upscaler", _text),
    ("hr_second_pass_steps", "Hires steps", _int),
    ("hr_resize_x", "Hires resize-1", _int),
    ("hr_resize_y", "Hires resize-2", _int),
    ("hr_sampler_name", "Hires sampler", _text),
    ("hr_scheduler", "Hires schedule type", _text),
    ("hr_prompt", "Hires prompt", _text),
    ("hr_negative_prompt", "Hires negative prompt", _text),
    ("subseed", "Variation seed", _int),
    ("subseed_strength", "Variation seed strength", _float),
    ("seed_resize_from_w", "Seed resize from-1", _int),
    ("seed_resize_from_h", "Seed resize from-2", _int),
)


def txt2img_values(params: Mapping[str, object]) -> dict[str, object]:
    """Field name -> value for the txt2img tab from a parsed infotext (`parse_generation_parameters`' result).

    Only fields whose key is present (and whose value converts) are returned. The sampler and schedule type come
    from "Sampler"/"Schedule type" together, the way A1111 splits a legacy name: "DPM++ 2M Karras" gives
    sampler "DPM++ 2M" with schedule type "Automatic" (Karras being its default). "Styles array" (styles found in
    the prompt) fills the styles field.
    """
    values: dict[str, object] = {}
    for field, key, convert in TXT2IMG_FIELDS:
        if key not in params or params[key] is None:
            continue
        try:
            values[field] = convert(params[key])
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
            continue
    if "Sampler" in params or "Schedule type" in params:
        values["sampler_name"] = sampler_from_infotext(params)
        values["scheduler"] = scheduler_from_infotext(params)
    if "Styles array" in params and params["Styles array"] is not None:
        values["styles"] = list(params["Styles array"])  # type: ignore[call-overload]
    return values


def script_values(fields: Sequence[tuple[object, object]], params: Mapping[str, object]) -> list[object]:
    """The value each script paste field (Script.infotext_fields: (component, infotext key or function of the
    params)) gets from parsed params, or None where it stays unchanged (key missing, value that does not convert).
    As A1111's `connect_paste`: converted to the type of the component's current value ("False" is False)."""
    values: list[object] = []
    for component, target in fields:
        value = target(params) if callable(target) else params.get(str(target))
        current = getattr(component, "value", None)
        try:
            if value is None or current is None or isinstance(value, type(current)):
                values.append(value)
            elif isinstance(current, bool):
                values.append(value if isinstance(value, bool) else str(value) not in ("False", "false", "0", ""))
            elif isinstance(current, int | float):
                values.append(float(str(value)))  # A1111 too: an int field takes the float (no truncation)
            else:
                values.append(type(current)(value))
        except (TypeError, ValueError, OverflowError):
            values.append(None)
    return values


def parse_pasted(text: str, styles=None) -> dict[str, object]:
    """`parse_generation_parameters`, then the extensions' `on_infotext_pasted(infotext, params)` callbacks, which may
    edit the parsed params in place (A1111 runs them at the end of parsing)."""
    params = parse_generation_parameters(text, styles=styles)
    script_callbacks.infotext_pasted_callback(text, params)
    return params


def infotext_values(text: str, styles=None) -> dict[str, object]:
    """Parse an infotext (extensions' infotext_pasted callbacks included) and map it onto the txt2img fields; empty
    text gives no values."""
    if not text or not text.strip():
        return {}
    return txt2img_values(parse_pasted(text, styles=styles))


def seed_from_infotext(text: str | None) -> int | None:
    """The seed an infotext names (the ♻️ button), or None."""
    if not text or not text.strip():
        return None
    value = parse_generation_parameters(text).get("Seed")
    try:
        return _int(value) if value is not None else None
    except (ValueError, OverflowError):
        return None
