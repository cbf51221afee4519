"""FreeU (Si et al., 2023) as a built-in always-on script, as Forge ships it.

The popular sd-webui-freeu extension patches A1111's ldm UNet and cannot run here; diffusers' UNet has FreeU itself
(`enable_freeu(s1, s2, b1, b2)`: backbone features of the first two up-blocks scaled by b1/b2, their skip
features' low frequencies by s1/s2), so this script only switches it per job. Infotext keys are Forge's
(`freeu_enabled`, `freeu_b1`, …) so images made with Forge paste their FreeU settings here and back.
"""

from __future__ import annotations

import gradio as gr

from modules import scripts
from modules.ui_components import InputAccordion

# Forge's defaults: close to identity, so switching it on changes an image gently until the user tunes it
DEFAULTS = {"b1": 1.01, "b2": 1.02, "s1": 0.99, "s2": 0.95}


def _set_freeu(model, enabled: bool, b1: float = 1.0, b2: float = 1.0, s1: float = 1.0, s2: float = 1.0) -> None:
    unet = getattr(model, "unet", None)
    if unet is None or not hasattr(unet, "enable_freeu"):
        return
    if enabled:
        unet.enable_freeu(s1=s1, s2=s2, b1=b1, b2=b2)
    else:
        unet.disable_freeu()


class FreeUScript(scripts.Script):
    sorting_priority = 12

    def title(self) -> str:
        return "FreeU Integrated"

    def show(self, is_img2img: bool):
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool):
        with InputAccordion(False, label=self.title(), elem_id=self.elem_id("freeu_enabled")) as enabled:
            b1 = gr.Slider(label="B1", minimum=0, maximum=2, step=0.01, value=DEFAULTS["b1"],
                           elem_id=self.elem_id("freeu_b1"))
            b2 = gr.Slider(label="B2", minimum=0, maximum=2, step=0.01, value=DEFAULTS["b2"],
                           elem_id=self.elem_id("freeu_b2"))
            s1 = gr.Slider(label="S1", minimum=0, maximum=4, step=0.01, value=DEFAULTS["s1"],
                           elem_id=self.elem_id("freeu_s1"))
            s2 = gr.Slider(label="S2", minimum=0, maximum=4, step=0.01, value=DEFAULTS["s2"],
                           elem_id=self.elem_id("freeu_s2"))
        self.infotext_fields = [(enabled, lambda d: d.get("freeu_enabled", False)), (b1, "freeu_b1"),
                                (b2, "freeu_b2"), (s1, "freeu_s1"), (s2, "freeu_s2")]
        return [enabled, b1, b2, s1, s2]

    def process(self, p, enabled=False, b1=DEFAULTS["b1"], b2=DEFAULTS["b2"], s1=DEFAULTS["s1"],
                s2=DEFAULTS["s2"], *args):
        # every job sets the state, so one that failed after switching it on cannot leave it on for the next
        enabled = bool(enabled)
        _set_freeu(p.sd_model, enabled, float(b1), float(b2), float(s1), float(s2))
        if enabled:
            p.extra_generation_params.update({"freeu_enabled": True, "freeu_b1": float(b1), "freeu_b2": float(b2),
                                              "freeu_s1": float(s1), "freeu_s2": float(s2)})

    def postprocess(self, p, processed, *args):
        _set_freeu(p.sd_model, False)
