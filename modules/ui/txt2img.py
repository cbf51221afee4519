"""The txt2img tab: layout and one call into processing; no generation logic here."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gradio as gr

from modules import scripts, shared
from modules.infotext import as_ui_number
from modules.processing import IMAGE_UPSCALERS, LATENT_UPSCALE_MODES, Job
from modules.sampling import samplers
from modules.styles import PromptStyle
from modules.ui import paste
from modules.ui import presets as presets_ui
from modules.ui.common import run_safely, session_of, stream_job
from modules.ui.components import create
from modules.ui.output_panel import create_output_panel

# The txt2img inputs by field name, in the /txt2img endpoint's order (other tabs send values to these).
FIELD_NAMES = ("prompt", "negative_prompt", "sampler_name", "scheduler", "steps", "cfg_scale", "seed", "width",
               "height", "batch_count", "batch_size", "styles",
               "enable_hr", "hr_upscaler", "hr_second_pass_steps", "denoising_strength", "hr_scale", "hr_resize_x",
               "hr_resize_y", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt",
               "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")
SAME_SAMPLER = "Use same sampler"
SAME_SCHEDULER = "Use same scheduler"


def hires_upscaler_names() -> list[str]:
    """Latent modes, then image upscalers (with the model files in the upscaler folders when available)."""
    names = list(LATENT_UPSCALE_MODES)
    try:
        from modules import upscaling

        names += [u.name for u in upscaling.list_upscalers() if u.name != "None"]
    except ImportError:
        names += [n for n in IMAGE_UPSCALERS if n != "None"]
    return names


def build_job(prompt: str, negative_prompt: str, sampler_name: str, scheduler: str, steps: float,
              cfg_scale: float, seed: float, width: float, height: float, batch_count: float, batch_size: float,
              styles: list[str] | None = None, enable_hr: bool = False, hr_upscaler: str = "Latent",
              hr_second_pass_steps: float = 0, denoising_strength: float = 0.7, hr_scale: float = 2.0,
              hr_resize_x: float = 0, hr_resize_y: float = 0, hr_sampler_name: str = SAME_SAMPLER,
              hr_scheduler: str = SAME_SCHEDULER, hr_prompt: str = "", hr_negative_prompt: str = "",
              subseed: float = -1, subseed_strength: float = 0.0, seed_resize_from_w: float = 0,
              seed_resize_from_h: float = 0) -> Job:
    """The txt2img tab's fields as a Job (A1111's field meanings and defaults)."""
    return Job(prompt=prompt, negative_prompt=negative_prompt, sampler_name=sampler_name, scheduler=scheduler,
               steps=int(steps), cfg_scale=as_ui_number(float(cfg_scale)), seed=int(seed), width=int(width),
               height=int(height), n_iter=int(batch_count), batch_size=int(batch_size), styles=list(styles or []),
               enable_hr=bool(enable_hr), hr_upscaler=hr_upscaler, hr_second_pass_steps=int(hr_second_pass_steps),
               denoising_strength=as_ui_number(float(denoising_strength)), hr_scale=as_ui_number(float(hr_scale)),
               hr_resize_x=int(hr_resize_x), hr_resize_y=int(hr_resize_y),
               hr_sampler_name=None if hr_sampler_name in (SAME_SAMPLER, "", None) else hr_sampler_name,
               hr_scheduler=None if hr_scheduler in (SAME_SCHEDULER, "", None) else hr_scheduler,
               hr_prompt=hr_prompt or "", hr_negative_prompt=hr_negative_prompt or "", subseed=int(subseed),
               subseed_strength=float(subseed_strength), seed_resize_from_w=int(seed_resize_from_w) or -1,
               seed_resize_from_h=int(seed_resize_from_h) or -1)


@run_safely
def generate(prompt: str, negative_prompt: str, sampler_name: str, scheduler: str, steps: float,
             cfg_scale: float, seed: float, width: float, height: float, batch_count: float, batch_size: float,
             styles: list[str] | None, enable_hr: bool, hr_upscaler: str, hr_second_pass_steps: float,
             denoising_strength: float, hr_scale: float, hr_resize_x: float, hr_resize_y: float,
             hr_sampler_name: str, hr_scheduler: str, hr_prompt: str, hr_negative_prompt: str, subseed: float,
             subseed_strength: float, seed_resize_from_w: float, seed_resize_from_h: float,
             request: gr.Request, progress: gr.Progress = gr.Progress(), *script_args: object) -> Iterator[tuple]:
    """`script_args`: the Script dropdown and every script's inputs (modules.scripts); missing ones get defaults.

    `request`/`progress` stay before them: Gradio injects those by position among the named parameters."""
    job = build_job(prompt, negative_prompt, sampler_name, scheduler, steps, cfg_scale, seed, width, height,
                    batch_count, batch_size, styles, enable_hr, hr_upscaler, hr_second_pass_steps,
                    denoising_strength, hr_scale, hr_resize_x, hr_resize_y, hr_sampler_name, hr_scheduler, hr_prompt,
                    hr_negative_prompt, subseed, subseed_strength, seed_resize_from_w, seed_resize_from_h)
    scripts.scripts_txt2img.attach(job, script_args)
    owner = session_of(request)
    yield from stream_job(lambda: shared.run_job(job, "txt2img", owner=owner), progress, owner)


def token_counter(text: str, steps: float, styles: list[str] | None = None, is_positive: bool = True) -> str:
    """The "used/limit" badge under a prompt box (A1111's `update_token_counter`; extensions' before_token_counter
    callbacks may rewrite the prompt first). `styles` defaults to None so API clients may leave it out."""
    used, limit = shared.token_count(text or "", int(steps), styles=styles, is_positive=is_positive)
    return f'<span class="token-counter">{used}/{limit}</span>'


def negative_token_counter(text: str, steps: float, styles: list[str] | None = None) -> str:
    return token_counter(text, steps, styles, is_positive=False)


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
    return paste.txt2img_values(pasted_params(text))


def pasted_params(text: str) -> dict[str, object]:
    """The infotext parsed once, the extensions' infotext_pasted callbacks included ({} for empty text)."""
    if not text or not text.strip():
        return {}
    return paste.parse_pasted(text, styles=shared.prompt_styles if shared.prompt_styles is not None else None)


def paste_all(text: str, field_names: list[str]) -> list:
    """gr.updates for the named txt2img fields, then the txt2img scripts' paste fields (Script.infotext_fields),
    from one parse of the infotext."""
    params = pasted_params(text)
    fields = scripts.scripts_txt2img.infotext_fields
    return [*paste_updates(paste.txt2img_values(params) if params else {}, field_names),
            *(gr.update() if value is None else gr.update(value=value)
              for value in paste.script_values(fields, params))]


def paste_parameters(prompt: str, last_infotext: str) -> list:
    """The ↙ button: fill the fields from the infotext in the prompt box, or from the last result's when empty;
    the scripts' paste fields too."""
    text = prompt if prompt and prompt.strip() else (last_infotext or "")
    return paste_all(text, list(FIELD_NAMES))


def reuse_seed(last_infotext: str) -> gr.Number:
    """The ♻️ button: the seed of the last result (-1 when there is none)."""
    seed = paste.seed_from_infotext(last_infotext)
    return gr.update(value=-1 if seed is None else seed)


def create_tab(default_size: tuple[int, int] = (512, 512),
               below_prompt: Callable[[gr.Textbox], object] | None = None) -> dict[str, object]:
    """Build the tab; returns its input components by field name (`FIELD_NAMES`) and its "output_panel".

    `below_prompt(prompt)` builds extra UI right under the prompt row (the extra-networks browser)."""
    scripts.ensure_loaded()
    # the tab's scripts see each of its components being made (Script.before_component / after_component)
    with scripts.current_runner(scripts.scripts_txt2img), \
            create(gr.Tab, "txt2img", id="txt2img", elem_id="tab_txt2img"):
        with create(gr.Row):
            with create(gr.Column, scale=6):
                prompt = create(gr.Textbox, label="Prompt", lines=3, elem_id="txt2img_prompt",
                                            placeholder="Prompt (press Ctrl+Enter to generate)")
                prompt_tokens = create(gr.HTML, "0/75", elem_id="txt2img_token_counter")
                negative = create(gr.Textbox, label="Negative prompt", lines=2, elem_id="txt2img_neg_prompt")
                negative_tokens = create(gr.HTML, "0/75", elem_id="txt2img_negative_token_counter")
                with create(gr.Row):
                    styles = create(gr.Dropdown, label="Styles", multiselect=True, choices=style_names(),
                                                 elem_id="txt2img_styles", scale=4)
                    style_name = create(gr.Textbox, label="New style name", elem_id="txt2img_style_name", scale=2)
                    save_style_button = create(gr.Button, "💾", elem_id="txt2img_save_style", scale=0, min_width=40)
            with create(gr.Column, scale=1, min_width=160):
                generate_button = create(gr.Button, "Generate", variant="primary", elem_id="txt2img_generate")
                interrupt = create(gr.Button, "Interrupt", elem_id="txt2img_interrupt")
                skip = create(gr.Button, "Skip", elem_id="txt2img_skip")
                with create(gr.Row, elem_id="txt2img_tools"):
                    paste_button = create(gr.Button, "↙️", elem_id="txt2img_paste", scale=0, min_width=40,
                                                     elem_classes=["tool"])
                    clear_prompt = create(gr.Button, "🗑️", elem_id="txt2img_clear_prompt", scale=0, min_width=40,
                                                     elem_classes=["tool"])
        if below_prompt is not None:
            below_prompt(prompt)
        with create(gr.Row):
            with create(gr.Column):
                with create(gr.Row):
                    sampler = create(gr.Dropdown, label="Sampling method", choices=samplers.sampler_names(),
                                                  value="DPM++ 2M", elem_id="txt2img_sampling")
                    scheduler = create(gr.Dropdown, label="Schedule type", choices=samplers.schedule_type_labels(),
                                                    value="Automatic", elem_id="txt2img_scheduler")
                steps = create(gr.Slider, 1, 150, value=20, step=1, label="Sampling steps", elem_id="txt2img_steps")
                preset_hint, preset_apply = presets_ui.create_row("txt2img")
                with create(gr.Row):
                    width = create(gr.Slider, 64, 2048, value=default_size[0], step=8, label="Width",
                                              elem_id="txt2img_width")
                    res_switch = create(gr.Button, "⇅", elem_id="txt2img_res_switch_btn", scale=0, min_width=40,
                                                   elem_classes=["tool"])
                    height = create(gr.Slider, 64, 2048, value=default_size[1], step=8, label="Height",
                                               elem_id="txt2img_height")
                with create(gr.Row):
                    batch_count = create(gr.Slider, 1, 100, value=1, step=1, label="Batch count",
                                                    elem_id="txt2img_batch_count")
                    batch_size = create(gr.Slider, 1, 8, value=1, step=1, label="Batch size",
                                                   elem_id="txt2img_batch_size")
                cfg = create(gr.Slider, 1, 30, value=7, step=0.5, label="CFG Scale", elem_id="txt2img_cfg_scale")
                with create(gr.Row, elem_id="txt2img_seed_row"):
                    seed = create(gr.Number, label="Seed", value=-1, precision=0, elem_id="txt2img_seed", scale=4)
                    random_seed = create(gr.Button, "🎲️", elem_id="txt2img_random_seed", scale=0, min_width=40,
                                                    elem_classes=["tool"])
                    reuse_seed_button = create(gr.Button, "♻️", elem_id="txt2img_reuse_seed", scale=0, min_width=40,
                                                          elem_classes=["tool"])
                    seed_extras = create(gr.Checkbox, label="Extra", value=False, elem_id="txt2img_subseed_show",
                                                      scale=1)
                with create(gr.Group, visible=False, elem_id="txt2img_seed_extras") as seed_extras_group:
                    with create(gr.Row):
                        subseed = create(gr.Number, label="Variation seed", value=-1, precision=0,
                                                    elem_id="txt2img_subseed")
                        random_subseed = create(gr.Button, "🎲️", elem_id="txt2img_random_subseed", scale=0,
                                                           min_width=40,
                                                           elem_classes=["tool"])
                        subseed_strength = create(gr.Slider, 0, 1, value=0, step=0.01, label="Variation strength",
                                                             elem_id="txt2img_subseed_strength")
                    with create(gr.Row):
                        seed_resize_from_w = create(gr.Slider, 0, 2048, value=0, step=8, label="Resize seed from width",
                                                               elem_id="txt2img_seed_resize_from_w")
                        seed_resize_from_h = create(gr.Slider, 0, 2048, value=0, step=8,
                                                               label="Resize seed from height",
                                                               elem_id="txt2img_seed_resize_from_h")
                with create(gr.Accordion, "Hires. fix", open=False, elem_id="txt2img_hr"):
                    enable_hr = create(gr.Checkbox, label="Enable", value=False, elem_id="txt2img_enable_hr")
                    with create(gr.Row):
                        hr_upscaler = create(gr.Dropdown, label="Upscaler", choices=hires_upscaler_names(),
                                                          value="Latent",
                                                          elem_id="txt2img_hr_upscaler")
                        hr_second_pass_steps = create(gr.Slider, 0, 150, value=0, step=1, label="Hires steps",
                                                                 elem_id="txt2img_hires_steps")
                        denoising_strength = create(gr.Slider, 0, 1, value=0.7, step=0.01, label="Denoising strength",
                                                               elem_id="txt2img_denoising_strength")
                    with create(gr.Row):
                        hr_scale = create(gr.Slider, 1, 4, value=2, step=0.05, label="Upscale by",
                                                     elem_id="txt2img_hr_scale")
                        hr_resize_x = create(gr.Slider, 0, 2048, value=0, step=8, label="Resize width to",
                                                        elem_id="txt2img_hr_resize_x")
                        hr_resize_y = create(gr.Slider, 0, 2048, value=0, step=8, label="Resize height to",
                                                        elem_id="txt2img_hr_resize_y")
                    with create(gr.Row):
                        hr_sampler = create(gr.Dropdown, label="Hires sampling method", value=SAME_SAMPLER,
                                                         choices=[SAME_SAMPLER, *samplers.sampler_names()],
                                                         elem_id="hr_sampler")
                        hr_scheduler = create(gr.Dropdown, label="Hires schedule type", value=SAME_SCHEDULER,
                                                           choices=[SAME_SCHEDULER, *samplers.schedule_type_labels()],
                                                           elem_id="hr_scheduler")
                    with create(gr.Row):
                        hr_prompt = create(gr.Textbox, label="Hires prompt", value="", lines=2, elem_id="hires_prompt",
                                           placeholder="Prompt for hires fix pass.\nLeave empty to use the same "
                                                       "prompt as in first pass.")
                        hr_negative = create(gr.Textbox, label="Hires negative prompt", value="", lines=2,
                                             elem_id="hires_neg_prompt",
                                             placeholder="Negative prompt for hires fix pass.\nLeave empty to use "
                                                         "the same negative prompt as in first pass.")
                with create(gr.Group, elem_id="txt2img_script_container"):
                    script_inputs = scripts.scripts_txt2img.setup_ui()
            with create(gr.Column):
                panel = create_output_panel("txt2img")
        inputs = [prompt, negative, sampler, scheduler, steps, cfg, seed, width, height, batch_count, batch_size,
                  styles, enable_hr, hr_upscaler, hr_second_pass_steps, denoising_strength, hr_scale, hr_resize_x,
                  hr_resize_y, hr_sampler, hr_scheduler, hr_prompt, hr_negative, subseed, subseed_strength,
                  seed_resize_from_w, seed_resize_from_h]
        outputs = panel.result_outputs
        infotext = panel.infotext
        handler = scripts.with_script_parameters(generate, len(script_inputs))
        generate_button.click(handler, inputs=inputs + script_inputs, outputs=outputs, api_name="txt2img")
        prompt.submit(handler, inputs=inputs + script_inputs, outputs=outputs, api_visibility="undocumented")
        for box, counter, count in ((prompt, prompt_tokens, token_counter),
                                    (negative, negative_tokens, negative_token_counter)):
            box.change(count, inputs=[box, steps, styles], outputs=[counter], queue=False, show_progress="hidden")
        presets_ui.wire(preset_hint, preset_apply, prompt, steps, cfg, sampler, scheduler)
        save_style_button.click(save_style, inputs=[style_name, prompt, negative], outputs=[styles])
        interrupt.click(interrupt_own_job, inputs=[], outputs=[], queue=False)
        skip.click(skip_own_job, inputs=[], outputs=[], queue=False)
        script_paste = [component for component, _ in scripts.scripts_txt2img.infotext_fields]
        paste_button.click(paste_parameters, inputs=[prompt, infotext], outputs=inputs + script_paste,
                           show_progress="hidden")
        clear_prompt.click(lambda: ("", ""), inputs=[], outputs=[prompt, negative], queue=False,
                           show_progress="hidden")
        random_seed.click(lambda: -1, inputs=[], outputs=[seed], queue=False, show_progress="hidden")
        random_subseed.click(lambda: -1, inputs=[], outputs=[subseed], queue=False, show_progress="hidden")
        seed_extras.change(lambda show: gr.Group(visible=show), inputs=[seed_extras], outputs=[seed_extras_group],
                           queue=False, show_progress="hidden")
        reuse_seed_button.click(reuse_seed, inputs=[infotext], outputs=[seed], queue=False, show_progress="hidden")
        res_switch.click(lambda w, h: (h, w), inputs=[width, height], outputs=[width, height], queue=False,
                         show_progress="hidden")
    fields = dict(zip(FIELD_NAMES, inputs, strict=True))
    fields["output_panel"] = panel
    return fields


def interrupt_own_job(request: gr.Request) -> None:
    """Interrupt only this browser session's job (running or queued); another user's job runs on."""
    shared.state.interrupt(owner=session_of(request) or "")


def skip_own_job(request: gr.Request) -> None:
    shared.state.skip(owner=session_of(request) or "")
