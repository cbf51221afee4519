"""The Gradio app: quick-settings bar and one module per tab."""

from __future__ import annotations

import gradio as gr

from modules.ui import common, img2img, png_info, settings, txt2img

CSS = ".infotext { font-family: monospace; white-space: pre-wrap; font-size: 0.85em; }"
CTRL_ENTER_JS = """
() => {
  document.addEventListener('keydown', (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') {
      const tab = document.querySelector('#tab_txt2img');
      const button = document.querySelector('#txt2img_generate');
      if (button && tab && tab.offsetParent !== null) { e.preventDefault(); button.click(); }
    }
  });
}
"""


def create_ui() -> gr.Blocks:
    with gr.Blocks(title="Stable Diffusion") as demo:
        common.create_quicksettings()
        with gr.Tabs(elem_id="tabs") as tabs:
            txt2img_fields = txt2img.create_tab(common.model_default_size())
            img2img.create_tab()
            png_info.create_tab(txt2img_fields, tabs)
            settings.create_tab()
    return demo
