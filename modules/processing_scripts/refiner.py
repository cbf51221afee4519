"""A1111's built-in "Refiner" script (modules/processing_scripts/refiner.py in A1111 1.6+): the accordion in
txt2img and img2img that sets `p.refiner_checkpoint` and `p.refiner_switch_at`; processing runs the switch
(modules/processing.py `_handover`, modules/sampling/loop.py `Handover`).

Unlike A1111's `setup`, a disabled accordion leaves the job's fields alone, so that the API's `refiner_checkpoint` /
`refiner_switch_at` (which A1111 clients send as plain request fields) still apply when no script arguments come.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from modules import scripts, sd_models
from modules.infotext_utils import PasteField
from modules.ui.a1111_names import create_refresh_button
from modules.ui_components import InputAccordion


def _checkpoint_title(name: str | None) -> str | None:
    """The dropdown value for an infotext's "Refiner: name [hash]" (None when no such checkpoint is here)."""
    info = sd_models.get_closet_checkpoint_match(name) if name else None
    return None if info is None else info.title


class ScriptRefiner(scripts.Script):
    section = "accordions"
    create_group = False

    def title(self) -> str:
        return "Refiner"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        with InputAccordion(False, label="Refiner", elem_id=self.elem_id("enable")) as enable_refiner:
            with gr.Row():
                refiner_checkpoint = gr.Dropdown(
                    label="Checkpoint", info="(use model of same architecture)", elem_id=self.elem_id("checkpoint"),
                    choices=["", *sd_models.checkpoint_tiles()], value="",
                    tooltip="switch to another model in the middle of generation")
                create_refresh_button(refiner_checkpoint, sd_models.list_models,
                                      lambda: {"choices": ["", *sd_models.checkpoint_tiles()]},
                                      self.elem_id("checkpoint_refresh"))
                refiner_switch_at = gr.Slider(
                    value=0.8, label="Switch at", minimum=0.01, maximum=1.0, step=0.01,
                    elem_id=self.elem_id("switch_at"),
                    tooltip="fraction of sampling steps when the switch to refiner model should happen; 1=never, "
                            "0.5=switch in the middle of generation")
        self.infotext_fields = [
            PasteField(enable_refiner, lambda d: "Refiner" in d),
            PasteField(refiner_checkpoint, lambda d: _checkpoint_title(d.get("Refiner")), api="refiner_checkpoint"),
            PasteField(refiner_switch_at, "Refiner switch at", api="refiner_switch_at"),
        ]
        return [enable_refiner, refiner_checkpoint, refiner_switch_at]

    def setup(self, p: Any, enable_refiner: bool = False, refiner_checkpoint: str | None = None,
              refiner_switch_at: float | None = None, *args: Any) -> None:
        if enable_refiner and refiner_checkpoint not in (None, "", "None"):
            p.refiner_checkpoint = refiner_checkpoint
            p.refiner_switch_at = refiner_switch_at
