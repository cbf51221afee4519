"""The Gradio app: quick-settings bar and one module per tab."""

from __future__ import annotations

import gradio as gr

from modules.ui import common, extra_networks, img2img, png_info, settings, txt2img

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
    with gr.Blocks(title="Stable Diffusion") as demo:
        common.create_quicksettings()
        with gr.Tabs(elem_id="tabs") as tabs:
            txt2img_fields = txt2img.create_tab(common.model_default_size(), below_prompt=extra_networks.create_ui)
            img2img.create_tab()
            png_info.create_tab(txt2img_fields, tabs)
            settings.create_tab()
    return demo
