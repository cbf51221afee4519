"""One ControlNet unit's inputs and events, with sd-webui-controlnet's labels, element ids and behaviour.

The pure functions here (`unit_from_values`, `slider_updates`, `control_type_updates`,
`preview_map`) are what the events call; they never raise for what a user can put into the page: out-of-range
numbers are clamped, unknown choices fall back to the defaults, and errors of the preview are shown as a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import cv2
import gradio as gr
import numpy as np
from PIL import Image

from lib_controlnet import api, preprocessors, runtime
from lib_controlnet.units import ControlMode, ControlNetUnit, HiResFixOption, ResizeMode, UnitError

TRIGGER_SYMBOL = "\U0001f4a5"  # 💥 run the preprocessor (the extension's button)
REFRESH_SYMBOL = "\U0001f504"  # 🔄 rescan the model folders
DEFAULT_SLIDER = -1  # what a unit records for a slider its preprocessor lacks: the extension's "use the default"
RESOLUTION_LABEL = "Preprocessor Resolution"  # the extension's name for the resolution slider, whatever the module
ALL_TYPES = "All"
# the unit fields an infotext restores (the keys of the script's infotext-paste callback: "ControlNet 0 module")
PASTE_FIELDS = ("enabled", "module", "model", "weight", "resize_mode", "processor_res", "threshold_a",
                "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode")
# the inputs a unit's State is built from, in the order its rebuild event passes them (absent ones are skipped)
UNIT_INPUTS = ("image", "mask", "independent", "enabled", "low_vram", "pixel_perfect", "module", "model", "weight",
               "guidance_start", "guidance_end", "processor_res", "threshold_a", "threshold_b", "control_mode",
               "resize_mode", "hr_option")
# events that only move values from the page into the State: no queue, no progress, not part of the documented API
QUIET = {"queue": False, "show_progress": "hidden", "api_visibility": "undocumented"}


@dataclass
class UnitUi:
    """The components of one unit (`independent` on img2img only, `hr_option` on txt2img only)."""

    index: int
    is_img2img: bool
    image: Any
    mask: Any
    independent: Any
    enabled: Any
    low_vram: Any
    pixel_perfect: Any
    allow_preview: Any
    preview: Any
    trigger: Any
    control_type: Any
    module: Any
    model: Any
    refresh: Any
    weight: Any
    guidance_start: Any
    guidance_end: Any
    processor_res: Any
    threshold_a: Any
    threshold_b: Any
    control_mode: Any
    resize_mode: Any
    hr_option: Any
    state: Any

    def unit_inputs(self) -> list[tuple[str, Any]]:
        """(name, component) of the inputs the unit is built from, in `UNIT_INPUTS` order."""
        return [(name, getattr(self, name)) for name in UNIT_INPUTS if getattr(self, name) is not None]


# --- values -> unit -------------------------------------------------------------------------------------------


def _number(value: Any, default: float, low: float, high: float) -> float:
    """`value` as a number within [low, high]; `default` for what is no finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return default if not math.isfinite(number) else min(max(number, low), high)


def _member(enum: type[Enum], value: Any, default: Enum) -> Enum:
    return next((member for member in enum if value in (member, member.value)), default)


def _preprocessor(module: Any) -> preprocessors.Preprocessor:
    try:
        return preprocessors.get(str(module or "none"))
    except ValueError:
        return preprocessors.get("none")


def _slider_value(value: Any, slider: preprocessors.Slider | None) -> float:
    return DEFAULT_SLIDER if slider is None else _number(value, slider.default, slider.minimum, slider.maximum)


def _array(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, Image.Image):
        value = np.asarray(value)
    return value if isinstance(value, np.ndarray) and value.size else None


def _fitted_mask(mask: np.ndarray | None, image: np.ndarray | None) -> np.ndarray | None:
    """The mask as HxW uint8 at the image's size (a mask drawn for another size would fail the job), or None when
    nothing is masked."""
    if mask is None:
        return None
    mask = mask.max(axis=2) if mask.ndim == 3 else mask
    if image is not None and mask.shape != image.shape[:2]:
        mask = cv2.resize(mask.astype(np.uint8), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    return mask.astype(np.uint8) if mask.any() else None


def unit_from_values(values: dict[str, Any], is_img2img: bool = False) -> ControlNetUnit:
    """A ControlNetUnit from the unit's input values by `UNIT_INPUTS` name (missing ones: the defaults).

    On img2img the uploaded image counts only with "Upload independent control image" checked; without it the unit
    has no image and uses the img2img input, as in the extension. The preprocessor's sliders give the processor
    resolution and thresholds (-1 for a slider it lacks); numbers are clamped to their ranges."""
    preprocessor = _preprocessor(values.get("module"))
    image = _array(values.get("image"))
    if is_img2img and not values.get("independent"):
        image = None
    mask = _fitted_mask(_array(values.get("mask")), image)
    guidance_end = _number(values.get("guidance_end"), 1.0, 0.0, 1.0)
    resolution = preprocessor.resolution
    return ControlNetUnit(
        enabled=bool(values.get("enabled")), module=preprocessor.name,
        model=str(values.get("model") or "None"), weight=_number(values.get("weight"), 1.0, 0.0, 2.0),
        image=image, mask=mask,
        resize_mode=_member(ResizeMode, values.get("resize_mode"), ResizeMode.INNER_FIT),
        low_vram=bool(values.get("low_vram")),
        processor_res=int(_slider_value(values.get("processor_res"), resolution)),
        threshold_a=_slider_value(values.get("threshold_a"), preprocessor.threshold_a),
        threshold_b=_slider_value(values.get("threshold_b"), preprocessor.threshold_b),
        guidance_start=_number(values.get("guidance_start"), 0.0, 0.0, guidance_end), guidance_end=guidance_end,
        pixel_perfect=bool(values.get("pixel_perfect")),
        control_mode=_member(ControlMode, values.get("control_mode"), ControlMode.BALANCED),
        hr_option=_member(HiResFixOption, values.get("hr_option"), HiResFixOption.BOTH))


# --- the preprocessor's sliders, control types and models -----------------------------------------------------


def slider_updates(module: str, pixel_perfect: bool, reset: bool) -> list[dict[str, Any]]:
    """gr.updates for the resolution, threshold A and threshold B sliders of preprocessor `module`: its labels and
    ranges, hidden where it has no such slider (the resolution also with Pixel Perfect, which computes it).
    `reset` also sets each slider to its default (a preprocessor the user chose); without it the values stay (a
    pasted infotext's values)."""
    preprocessor = _preprocessor(module)
    updates = []
    for slot, slider in enumerate((preprocessor.resolution, preprocessor.threshold_a, preprocessor.threshold_b)):
        if slider is None:
            updates.append(gr.update(visible=False))
            continue
        settings = {"label": RESOLUTION_LABEL if slot == 0 else slider.label, "minimum": slider.minimum,
                    "maximum": slider.maximum, "step": slider.step, "visible": not (slot == 0 and pixel_perfect)}
        if reset:
            settings["value"] = slider.default
        updates.append(gr.update(**settings))
    return updates


def control_type_updates(control_type: str, pixel_perfect: bool, titles: list[str] | None = None
                         ) -> list[dict[str, Any]]:
    """Choosing a Control Type: the Preprocessor and Model dropdowns narrowed to it and set to its defaults (its
    first preprocessor after "none", its first model), then the sliders of that preprocessor at their defaults."""
    types = preprocessors.control_types()
    entry = types.get(control_type, types[ALL_TYPES])
    models = runtime.models_for_type(control_type, runtime.model_titles() if titles is None else titles)
    default_model = models[1] if control_type != ALL_TYPES and len(models) > 1 else "None"
    module = entry["default_option"]
    return [gr.update(choices=entry["module_list"], value=module), gr.update(choices=models, value=default_model),
            *slider_updates(module, pixel_perfect, reset=True)]


def refreshed_models(control_type: str, current: str) -> dict[str, Any]:
    """The 🔄 button: the model folders read again, the current choice kept if its file is still there."""
    models = runtime.models_for_type(control_type, runtime.model_titles())
    return gr.update(choices=models, value=current if current in models else "None")


# --- the preview ----------------------------------------------------------------------------------------------


def preview_map(index: int, image: np.ndarray | None, mask: np.ndarray | None, module: str, processor_res: float,
                threshold_a: float, threshold_b: float) -> Image.Image:
    """The control map the unit's preprocessor makes of `image` (a "controlnet-preprocess" job in the queue).
    Raises ValueError with a message for the user (no image, an annotator file missing, ...)."""
    if image is None:
        raise ValueError(f"ControlNet Unit {index}: upload a control image to preview its preprocessor")
    unit = unit_from_values({"module": module, "processor_res": processor_res, "threshold_a": threshold_a,
                             "threshold_b": threshold_b, "image": image, "mask": mask})
    try:
        maps = api.run_detect(unit.module, [unit.image], [unit.mask], unit.processor_res, unit.threshold_a,
                              unit.threshold_b)
    except (UnitError, runtime.ControlNetError) as e:
        raise ValueError(f"ControlNet Unit {index}: {e}") from None
    return maps[0]


# --- the layout -----------------------------------------------------------------------------------------------


def _raw_image(component: Any, payload: Any) -> np.ndarray | None:
    """An image input's value from the raw payload of an event without preprocessing (see `connect`)."""
    if payload is None or isinstance(payload, np.ndarray):
        return payload
    try:  # Gradio hands unprocessed file values over as plain dicts of its file model
        return component.preprocess(component.data_model.model_validate(payload))
    except Exception:  # a file gone from Gradio's cache, a broken upload: the unit simply has no image
        return None


def build_unit(index: int, is_img2img: bool) -> UnitUi:
    """The inputs of unit `index` with the extension's labels and element ids, their events connected."""
    prefix = f"{'img2img' if is_img2img else 'txt2img'}_controlnet_ControlNet-{index}"
    default = ControlNetUnit()
    # visibility is switched on the components themselves: a hidden gr.Column inside a Row still shows (Gradio 6)
    with gr.Row(elem_classes=["cnet-image-row"]):
        image = gr.Image(label="Control Image", type="numpy", sources=["upload", "clipboard"], height=260,
                         visible=not is_img2img, elem_id=f"{prefix}_input_image", elem_classes=["cnet-image"])
        # PNG: a lossy preview (Gradio's default WebP) would show a control map with noise it does not have
        preview = gr.Image(label="Preprocessor Preview", type="pil", format="png", interactive=False, height=260,
                           visible=False, elem_id=f"{prefix}_generated_image", elem_classes=["cnet-image"])
    mask = gr.Image(label="Mask (optional)", type="numpy", image_mode="L", sources=["upload", "clipboard"],
                    height=160, visible=not is_img2img, elem_id=f"{prefix}_mask_image",
                    elem_classes=["cnet-mask-image"])
    independent = None
    if is_img2img:
        independent = gr.Checkbox(label="Upload independent control image", value=False,
                                  elem_id=f"{prefix}_controlnet_same_img2img_checkbox",
                                  elem_classes=["cnet-unit-same_img2img"])
    with gr.Row(elem_classes=["controlnet_main_options"]):
        enabled = gr.Checkbox(label="Enable", value=default.enabled, elem_id=f"{prefix}_controlnet_enable_checkbox",
                              elem_classes=["cnet-unit-enabled"])
        low_vram = gr.Checkbox(label="Low VRAM", value=default.low_vram,
                               elem_id=f"{prefix}_controlnet_low_vram_checkbox")
        pixel_perfect = gr.Checkbox(label="Pixel Perfect", value=default.pixel_perfect,
                                    elem_id=f"{prefix}_controlnet_pixel_perfect_checkbox")
        allow_preview = gr.Checkbox(label="Allow Preview", value=False,
                                    elem_id=f"{prefix}_controlnet_preprocessor_preview_checkbox")
    control_type = gr.Radio(list(preprocessors.control_types()), label="Control Type", value=ALL_TYPES,
                            elem_id=f"{prefix}_controlnet_type_filter_radio",
                            elem_classes=["controlnet_control_type_filter_group"])
    with gr.Row(elem_classes=["controlnet_preprocessor_model"]):
        module = gr.Dropdown(preprocessors.module_list(True), label="Preprocessor", value=default.module,
                             elem_id=f"{prefix}_controlnet_preprocessor_dropdown")
        trigger = gr.Button(TRIGGER_SYMBOL, elem_id=f"{prefix}_controlnet_trigger_preprocessor",
                            elem_classes=["cnet-run-preprocessor", "tool"], scale=0, min_width=40)
        model = gr.Dropdown(runtime.model_titles(), label="Model", value=default.model,
                            elem_id=f"{prefix}_controlnet_model_dropdown")
        refresh = gr.Button(REFRESH_SYMBOL, elem_id=f"{prefix}_controlnet_refresh_models", elem_classes=["tool"],
                            scale=0, min_width=40)
    with gr.Row(elem_classes=["controlnet_weight_steps"]):
        weight = gr.Slider(label="Control Weight", minimum=0.0, maximum=2.0, step=0.05, value=default.weight,
                           elem_id=f"{prefix}_controlnet_control_weight_slider")
        guidance_start = gr.Slider(label="Starting Control Step", minimum=0.0, maximum=1.0, step=0.01,
                                   value=default.guidance_start,
                                   elem_id=f"{prefix}_controlnet_start_control_step_slider")
        guidance_end = gr.Slider(label="Ending Control Step", minimum=0.0, maximum=1.0, step=0.01,
                                 value=default.guidance_end, elem_id=f"{prefix}_controlnet_ending_control_step_slider")
    with gr.Row(elem_classes=["controlnet_preprocessor_sliders"]):
        resolution = preprocessors.RESOLUTION
        processor_res = gr.Slider(label=RESOLUTION_LABEL, minimum=resolution.minimum, maximum=resolution.maximum,
                                  step=resolution.step, value=resolution.default, visible=False,
                                  elem_id=f"{prefix}_controlnet_preprocessor_resolution_slider")
        threshold_a = gr.Slider(label="Threshold A", minimum=0, maximum=255, value=100, visible=False,
                                elem_id=f"{prefix}_controlnet_threshold_A_slider")
        threshold_b = gr.Slider(label="Threshold B", minimum=0, maximum=255, value=200, visible=False,
                                elem_id=f"{prefix}_controlnet_threshold_B_slider")
    control_mode = gr.Radio([m.value for m in ControlMode], label="Control Mode", value=default.control_mode.value,
                            elem_id=f"{prefix}_controlnet_control_mode_radio")
    resize_mode = gr.Radio([m.value for m in ResizeMode], label="Resize Mode", value=default.resize_mode.value,
                           elem_id=f"{prefix}_controlnet_resize_mode_radio")
    hr_option = None
    if not is_img2img:
        hr_option = gr.Radio([o.value for o in HiResFixOption], label="Hires-Fix Option",
                             value=default.hr_option.value, elem_id=f"{prefix}_controlnet_hr_option_radio")
    state = gr.State(default.to_dict())  # JSON: Gradio clients read a State's initial value
    unit = UnitUi(index, is_img2img, image, mask, independent, enabled, low_vram, pixel_perfect, allow_preview,
                  preview, trigger, control_type, module, model, refresh, weight, guidance_start,
                  guidance_end, processor_res, threshold_a, threshold_b, control_mode, resize_mode, hr_option, state)
    connect(unit)
    return unit


def connect(unit: UnitUi) -> None:
    """The unit's events: every input rebuilds the State; type, preprocessor and Pixel Perfect shape the sliders;
    the preview, refresh and independent-image switches."""
    names, components = zip(*unit.unit_inputs(), strict=True)

    def rebuild(*payloads: Any) -> ControlNetUnit:
        # preprocess=False (below): raw values, so a pasted number outside a slider's current range is clamped
        # here instead of refused by Gradio before this runs
        values = dict(zip(names, payloads, strict=True))
        values["image"] = _raw_image(unit.image, values.get("image"))
        values["mask"] = _raw_image(unit.mask, values.get("mask"))
        return unit_from_values(values, unit.is_img2img)

    for component in components:
        component.change(rebuild, inputs=list(components), outputs=[unit.state], preprocess=False,
                         trigger_mode="always_last", **QUIET)

    sliders = [unit.processor_res, unit.threshold_a, unit.threshold_b]
    unit.module.input(lambda module, pp: slider_updates(module, pp, reset=True),
                      inputs=[unit.module, unit.pixel_perfect], outputs=sliders, **QUIET)
    for source in (unit.module, unit.pixel_perfect):  # a pasted module or a Pixel Perfect switch: values kept
        source.change(lambda module, pp: slider_updates(module, pp, reset=False),
                      inputs=[unit.module, unit.pixel_perfect], outputs=sliders, **QUIET)
    unit.control_type.input(control_type_updates, inputs=[unit.control_type, unit.pixel_perfect],
                            outputs=[unit.module, unit.model, *sliders], **QUIET)
    unit.refresh.click(refreshed_models, inputs=[unit.control_type, unit.model], outputs=[unit.model], **QUIET)
    unit.allow_preview.change(lambda show: gr.update(visible=bool(show)), inputs=[unit.allow_preview],
                              outputs=[unit.preview], **QUIET)
    if unit.independent is not None:
        unit.independent.change(lambda show: (gr.update(visible=bool(show)),) * 2, inputs=[unit.independent],
                                outputs=[unit.image, unit.mask], **QUIET)

    def run_preview(image: Any, mask: Any, module: str, res: Any, a: Any, b: Any) -> tuple[Any, Any]:
        try:
            picture = preview_map(unit.index, _raw_image(unit.image, image), _raw_image(unit.mask, mask), module,
                                  res, a, b)
        except ValueError as e:
            gr.Warning(str(e))
            return gr.update(), gr.update()
        return picture, True  # the map, and "Allow Preview" on so that it shows

    unit.trigger.click(run_preview, inputs=[unit.image, unit.mask, unit.module, *sliders],
                       outputs=[unit.preview, unit.allow_preview], preprocess=False, show_progress="minimal",
                       api_visibility="undocumented")
