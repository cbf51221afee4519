"""The txt2img tab: layout and one call into processing; no generation logic here."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gradio as gr

from modules import shared
from modules.infotext import as_ui_number
from modules.processing import Job
from modules.sampling import samplers
from modules.styles import PromptStyle
from modules.ui import paste
from modules.ui.common import run_safely, stream_job

# The txt2img inputs by field name, in the /txt2img endpoint's order (other tabs send values to these).
FIELD_NAMES = ("prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "cfg_scale", "seed", "width",
               "height", "batch_count", "batch_size", "styles")


@run_safely
def generate(prompt: str, negative_prompt: str, sampler_name: str, scheduler: str, steps: float,
             cfg_scale: float, seed: float, width: float, height: float, batch_count: float, batch_size: float,
             styles: list[str] | None = None, progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:
    job = Job(prompt=prompt, negative_prompt=negative_prompt, sampler_name=sampler_name, scheduler=scheduler,
              steps=int(steps), cfg_scale=as_ui_number(float(cfg_scale)), seed=int(seed), width=int(width),
              height=int(height), n_iter=int(batch_count), batch_size=int(batch_size), styles=list(styles or []))
    yield from stream_job(lambda: shared.run_job(job, "txt2img"), progress)


def token_counter(text: str, steps: float) -> str:
    used, limit = shared.token_count(text or "", int(steps))
    return f'<span class="token-counter">{used}/{limit}</span>'


def style_names() -> list[str]:
    return list(shared.prompt_styles.styles) if shared.prompt_styles else []


@run_safely
def save_style(name: str, prompt: str, negative_prompt: str) -> gr.Dropdown:
    shared.prompt_styles.save_style(PromptStyle(name.strip(), prompt, negative_prompt))
    return gr.Dropdown(choices=style_names())


def paste_updates(values: dict[str, object], field_names: list[str]) -> list:
    """One gr.update per field: the pasted value where `values` has one, unchanged otherwise."""
    return [gr.update(value=values[name]) if name in values else gr.update() for name in field_names]


def infotext_values(text: str) -> dict[str, object]:
    styles = shared.prompt_styles if shared.prompt_styles is not None else None
    return paste.infotext_values(text, styles=styles)


def paste_parameters(prompt: str, last_infotext: str) -> list:
    """The ↙ button: fill the fields from the infotext in the prompt box, or from the last result's when empty."""
    text = prompt if prompt and prompt.strip() else (last_infotext or "")
    return paste_updates(infotext_values(text), list(FIELD_NAMES))


def reuse_seed(last_infotext: str) -> gr.Number:
    """The ♻️ button: the seed of the last result (-1 when there is none)."""
    seed = paste.seed_from_infotext(last_infotext)
    return gr.update(value=-1 if seed is None else seed)


def create_tab(default_size: tuple[int, int] = (512, 512),
               below_prompt: Callable[[gr.Textbox], object] | None = None) -> dict[str, gr.components.Component]:
    """Build the tab; returns its input components by field name (`FIELD_NAMES`).

    `below_prompt(prompt)` builds extra UI right under the prompt row (the extra-networks browser)."""
    with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
        with gr.Row():
            with gr.Column(scale=6):
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="txt2img_prompt",
                                    placeholder="Prompt (press Ctrl+Enter to generate)")
                prompt_tokens = gr.HTML("0/75", elem_id="txt2img_token_counter")
                negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="txt2img_neg_prompt")
                negative_tokens = gr.HTML("0/75", elem_id="txt2img_negative_token_counter")
                with gr.Row():
                    styles = gr.Dropdown(label="Styles", multiselect=True, choices=style_names(),
                                         elem_id="txt2img_styles", scale=4)
                    style_name = gr.Textbox(label="New style name", elem_id="txt2img_style_name", scale=2)
                    save_style_button = gr.Button("💾", elem_id="txt2img_save_style", scale=0, min_width=40)
            with gr.Column(scale=1, min_width=160):
                generate_button = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
                interrupt = gr.Button("Interrupt", elem_id="txt2img_interrupt")
                skip = gr.Button("Skip", elem_id="txt2img_skip")
                with gr.Row(elem_id="txt2img_tools"):
                    paste_button = gr.Button("↙️", elem_id="txt2img_paste", scale=0, min_width=40,
                                             elem_classes=["tool"])
                    clear_prompt = gr.Button("🗑️", elem_id="txt2img_clear_prompt", scale=0, min_width=40,
                                             elem_classes=["tool"])
        if below_prompt is not None:
            below_prompt(prompt)
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    sampler = gr.Dropdown(label="Sampling method", choices=samplers.sampler_names(),
                                          value="DPM++ 2M", elem_id="txt2img_sampling")
                    scheduler = gr.Dropdown(label="Schedule type", choices=samplers.schedule_type_labels(),
                                            value="Automatic", elem_id="txt2img_scheduler")
                steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id="txt2img_steps")
                with gr.Row():
                    width = gr.Slider(64, 2048, value=default_size[0], step=8, label="Width", elem_id="txt2img_width")
                    res_switch = gr.Button("⇅", elem_id="txt2img_res_switch_btn", scale=0, min_width=40,
                                           elem_classes=["tool"])
                    height = gr.Slider(64, 2048, value=default_size[1], step=8, label="Height",
                                       elem_id="txt2img_height")
                with gr.Row():
                    batch_count = gr.Slider(1, 100, value=1, step=1, label="Batch count",
                                            elem_id="txt2img_batch_count")
                    batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id="txt2img_batch_size")
                cfg = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale", elem_id="txt2img_cfg_scale")
                with gr.Row(elem_id="txt2img_seed_row"):
                    seed = gr.Number(label="Seed", value=-1, precision=0, elem_id="txt2img_seed", scale=4)
                    random_seed = gr.Button("🎲️", elem_id="txt2img_random_seed", scale=0, min_width=40,
                                            elem_classes=["tool"])
                    reuse_seed_button = gr.Button("♻️", elem_id="txt2img_reuse_seed", scale=0, min_width=40,
                                                  elem_classes=["tool"])
            with gr.Column():
                gallery = gr.Gallery(label="Output", elem_id="txt2img_gallery", columns=4, format="png")
                infotext = gr.Textbox(label="Generation parameters", interactive=False, lines=3,
                                      elem_id="txt2img_infotext")
                html_info = gr.HTML(elem_id="html_info_txt2img")
        inputs = [prompt, negative, sampler, scheduler, steps, cfg, seed, width, height, batch_count, batch_size,
                  styles]
        outputs = [gallery, infotext, html_info]
        generate_button.click(generate, inputs=inputs, outputs=outputs, api_name="txt2img")
        prompt.submit(generate, inputs=inputs, outputs=outputs)
        for box, counter in ((prompt, prompt_tokens), (negative, negative_tokens)):
            box.change(token_counter, inputs=[box, steps], outputs=[counter], queue=False, show_progress="hidden")
        save_style_button.click(save_style, inputs=[style_name, prompt, negative], outputs=[styles])
        interrupt.click(lambda: shared.state.interrupt(), inputs=[], outputs=[], queue=False)
        skip.click(lambda: shared.state.skip(), inputs=[], outputs=[], queue=False)
        paste_button.click(paste_parameters, inputs=[prompt, infotext], outputs=inputs, show_progress="hidden")
        clear_prompt.click(lambda: ("", ""), inputs=[], outputs=[prompt, negative], queue=False,
                           show_progress="hidden")
        random_seed.click(lambda: -1, inputs=[], outputs=[seed], queue=False, show_progress="hidden")
        reuse_seed_button.click(reuse_seed, inputs=[infotext], outputs=[seed], queue=False, show_progress="hidden")
        res_switch.click(lambda w, h: (h, w), inputs=[width, height], outputs=[width, height], queue=False,
                         show_progress="hidden")
    return dict(zip(FIELD_NAMES, inputs))
