"""The Gradio app: quick-settings bar and one module per tab."""

from __future__ import annotations

import gradio as gr

from modules import gradio_extensions, script_callbacks, scripts
from modules.ui import (
    a1111_names,
    common,
    extensions,
    extra_networks,
    extras,
    img2img,
    merger,
    png_info,
    send_to,
    settings,
    txt2img,
)
from modules.ui import presets as presets_ui
from modules.ui.a1111_names import *  # noqa: F403 (A1111's `modules.ui` names that extensions import)
from modules.ui.components import create

gradio_extensions.install()  # A1111's Gradio 3 forms, and every block announced, before extension scripts load

CSS = ".infotext { font-family: monospace; white-space: pre-wrap; font-size: 0.85em; }"
CTRL_ENTER_JS = """
() => {
  document.addEventListener('keydown', (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') {
      for (const name of ['txt2img', 'img2img']) {
        const tab = document.querySelector('#tab_' + name);
        const button = document.querySelector('#' + name + '_generate');
        if (button && tab && tab.offsetParent !== null) { e.preventDefault(); button.click(); return; }
      }
    }
  });
}
"""


def create_ui() -> gr.Blocks:
    scripts.ensure_loaded()  # a UI built without webui.py still has the scripts, and they see every component
    script_callbacks.ensure_ui_settings()  # A1111 1.10: extensions' settings options first, then the tabs
    with gr.Blocks(title="Stable Diffusion") as demo:
        checkpoint = common.create_quicksettings()
        with create(gr.Tabs, elem_id="tabs") as tabs:
            txt2img_fields = txt2img.create_tab(common.model_default_size(), below_prompt=extra_networks.create_ui)
            img2img_fields = img2img.create_tab()
            # as in A1111, the two tabs (and their scripts' UIs) exist before the extensions' on_ui_tabs run: they
            # read `modules.ui.txt2img_paste_fields` and what their scripts' ui() recorded
            a1111_names.record_paste_fields("txt2img", txt2img_fields)
            a1111_names.record_paste_fields("img2img", img2img_fields)
            extras_fields = extras.create_tab()
            png_info.create_tab(txt2img_fields, tabs, img2img_fields)
            merger.create_tab(checkpoint)
            # extensions build their tabs' Blocks as top-level Blocks (outside ours, as in A1111); rendered here
            extension_tabs = gradio_extensions.outside_blocks(script_callbacks.ui_tabs_callback)
            for blocks, title, elem_id in extension_tabs:
                with create(gr.Tab, title, id=elem_id, elem_id=f"tab_{elem_id}"):
                    blocks.render()
            settings.create_tab()
            extensions.create_tab()
        for fields in (txt2img_fields, img2img_fields):
            send_to.connect(fields["output_panel"], img2img_fields, extras_fields["image"], tabs)
        presets_ui.wire_checkpoint(checkpoint)  # the model card follows the checkpoint chosen at the top
        # a closed or reloaded tab ends its Gradio session: its jobs would only keep the queue busy for nobody
        demo.unload(common.cancel_session_jobs)
    return demo
