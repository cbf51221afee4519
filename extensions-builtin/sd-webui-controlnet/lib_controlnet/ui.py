"""The ControlNet accordion (txt2img and img2img): one group of inputs per unit, each unit's values collected in a
gr.State holding a ControlNetUnit (the script's argument for that unit, as in the extension)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from lib_controlnet.units import ControlNetUnit


def build_units(script: Any, is_img2img: bool, count: int) -> list[Any]:
    with gr.Accordion("ControlNet", open=False, elem_id=script.elem_id("controlnet")):
        return [gr.State(ControlNetUnit()) for _ in range(count)]
