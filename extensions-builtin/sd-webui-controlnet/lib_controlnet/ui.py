"""The ControlNet accordion (txt2img and img2img): one tab of inputs per unit, as sd-webui-controlnet lays it out.

Each unit's script argument is a `gr.State` holding a `ControlNetUnit` (the extension's layout; the API fills the same
slots with dicts). Every change of one of the unit's inputs (a click, an upload, a value a paste or another event
sets) rebuilds that State from all of the unit's inputs at once, so the State never depends on the order events
arrive in. Those events read the raw values (`preprocess=False`) and clamp what is out of range: a value Gradio
would refuse (a pasted threshold outside the range the slider shows right now) must not leave the unit stale or put
an error on the page.

The per-unit layout and the pure functions behind its events (unit from values, slider and control-type updates,
the model filter, the preview) are in `ui_unit.py`; this module builds the accordion and registers the paste fields.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from lib_controlnet import ui_unit
from lib_controlnet.ui_unit import PASTE_FIELDS, UnitUi


def build_units(script: Any, is_img2img: bool, count: int) -> list[Any]:
    """The accordion with `count` unit tabs; returns one gr.State (a ControlNetUnit) per unit, the script's args.

    Also sets `script.infotext_fields` ((component, "ControlNet N field") pairs, A1111's Script attribute) and
    `script.paste_field_names`, so pasting an infotext restores each unit's settings (not its image)."""
    tab = "img2img" if is_img2img else "txt2img"
    units: list[UnitUi] = []
    with gr.Accordion("ControlNet", open=False, elem_id=script.elem_id("controlnet"),
                      elem_classes=["controlnet"]):
        with gr.Tabs(elem_id=f"{tab}_controlnet_tabs"):
            for index in range(max(int(count), 0)):
                with gr.Tab(f"ControlNet Unit {index}", elem_id=f"{tab}_controlnet_ControlNet-{index}_tab"):
                    units.append(ui_unit.build_unit(index, is_img2img))
    script.infotext_fields = paste_fields(units)
    script.paste_field_names = [key for _, key in script.infotext_fields]
    return [unit.state for unit in units]


def paste_fields(units: list[UnitUi]) -> list[tuple[Any, str]]:
    """(component, infotext key) for every unit field an infotext restores: the keys the script's
    `on_infotext_pasted` callback makes from `ControlNet N: "Module: ..., ..."`."""
    return [(getattr(unit, field), f"ControlNet {unit.index} {field}") for unit in units for field in PASTE_FIELDS]
