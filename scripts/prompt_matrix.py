"""A1111's "Prompt matrix": every combination of the `|`-separated parts of a prompt, and a grid with legends.

"a|red|blue" gives "a", "a, red", "a, blue", "a, red, blue". The first part is always used; image i includes part
k+1 when bit k of i is set. The grid has one column per combination of the first half of the variable parts and one
row per combination of the rest; the legends above and left of it show which parts each cell has.
"""

from __future__ import annotations

import dataclasses
import math

import gradio as gr
from PIL import Image, ImageDraw, ImageFont

from modules import processing, scripts, shared
from modules.sampling.rng import fixed_seed

ACTIVE = (0, 0, 0)
INACTIVE = (153, 153, 153)


def matrix_prompts(prompt: str, put_at_start: bool = False, delimiter: str = ", ") -> list[str]:
    """Every combination of the variable parts, in A1111's order (image i has part k+1 when bit k of i is set)."""
    parts = prompt.split("|")
    prompts = []
    for combination in range(2 ** (len(parts) - 1)):
        selected = [text.strip().strip(",") for n, text in enumerate(parts[1:]) if combination & (1 << n)]
        selected = [*selected, parts[0]] if put_at_start else [parts[0], *selected]
        prompts.append(delimiter.join(selected))
    return prompts


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: a fixed-size bitmap font
        return ImageFont.load_default()


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, active: bool, font: object) -> None:
    """One legend line; a part the cell does not use is grey and struck through, as in A1111."""
    draw.text(xy, text, fill=ACTIVE if active else INACTIVE, font=font)
    if not active:
        left, top, right, bottom = draw.textbbox(xy, text, font=font)
        middle = (top + bottom) / 2
        draw.line((left, middle, right, middle), fill=INACTIVE, width=1)


def draw_prompt_matrix(pictures: list[Image.Image], parts: list[str], margin: int = 0) -> Image.Image:
    """The matrix grid: cells in image order, column labels from the first half of the variable parts, row labels
    from the second half."""
    variable = [p.strip().strip(",") for p in parts[1:]]
    boundary = math.ceil(len(variable) / 2)
    horizontal, vertical = variable[:boundary], variable[boundary:]
    cols, rows = 1 << len(horizontal), 1 << len(vertical)
    width, height = pictures[0].size
    font = _font(max(10, (width + height) // 25))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = measure.textbbox((0, 0), "Ay", font=font)[3] + 4
    pad = line_h // 2
    top = line_h * len(horizontal) + 2 * pad if horizontal else 0
    left = max((measure.textbbox((0, 0), t, font=font)[2] for t in vertical), default=0)
    left = left + 2 * pad if vertical else 0

    canvas = Image.new("RGB", (left + cols * width + (cols - 1) * margin, top + rows * height + (rows - 1) * margin),
                       "white")
    for index, picture in enumerate(pictures[:cols * rows]):
        col, row = index % cols, index // cols
        canvas.paste(picture, (left + col * (width + margin), top + row * (height + margin)))
    draw = ImageDraw.Draw(canvas)
    for col in range(cols):
        for n, text in enumerate(horizontal):
            text_w = draw.textbbox((0, 0), text, font=font)[2]
            x = left + col * (width + margin) + (width - text_w) / 2
            _label(draw, (x, pad + n * line_h), text, bool(col & (1 << n)), font)
    for row in range(rows):
        y0 = top + row * (height + margin) + (height - line_h * len(vertical)) / 2
        for n, text in enumerate(vertical):
            _label(draw, (pad, y0 + n * line_h), text, bool(row & (1 << n)), font)
    return canvas


class Script(scripts.Script):
    def title(self) -> str:
        return "Prompt matrix"

    def ui(self, is_img2img: bool) -> list[gr.components.Component]:
        gr.HTML("<br />")
        with gr.Row():
            with gr.Column():
                put_at_start = gr.Checkbox(label="Put variable parts at start of prompt", value=False,
                                           elem_id=self.elem_id("put_at_start"))
                different_seeds = gr.Checkbox(label="Use different seed for each picture", value=False,
                                              elem_id=self.elem_id("different_seeds"))
            with gr.Column():
                prompt_type = gr.Radio(["positive", "negative"], label="Select prompt", value="positive",
                                       elem_id=self.elem_id("prompt_type"))
                variations_delimiter = gr.Radio(["comma", "space"], label="Select joining char", value="comma",
                                                elem_id=self.elem_id("variations_delimiter"))
            with gr.Column():
                margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                        elem_id=self.elem_id("margin_size"))
        return [put_at_start, different_seeds, prompt_type, variations_delimiter, margin_size]

    def run(self, p: processing.Job, put_at_start: bool = False, different_seeds: bool = False,
            prompt_type: str = "positive", variations_delimiter: str = "comma", margin_size: float = 0
            ) -> processing.Processed:
        if prompt_type not in ("positive", "negative"):
            raise ValueError(f"Unknown prompt type {prompt_type}")
        if variations_delimiter not in ("comma", "space"):
            raise ValueError(f"Unknown variations delimiter {variations_delimiter}")
        source = p.prompt if prompt_type == "positive" else p.negative_prompt
        original = source[0] if isinstance(source, list) else source
        parts = original.split("|")
        all_prompts = matrix_prompts(original, bool(put_at_start), ", " if variations_delimiter == "comma" else " ")
        seed = fixed_seed(p.seed)
        # A job gives image i the seed seed+i; "same seed for every picture" therefore needs one image per job
        batch = max(1, p.batch_size) if different_seeds else 1
        field = "prompt" if prompt_type == "positive" else "negative_prompt"
        results = []
        for start in range(0, len(all_prompts), batch):
            chunk = all_prompts[start:start + batch]
            job = dataclasses.replace(p, **{field: chunk}, n_iter=1, batch_size=len(chunk),
                                      seed=seed + (start if different_seeds else 0), do_not_save_grid=True,
                                      extra_generation_params=dict(p.extra_generation_params),
                                      comments=list(p.comments))
            results.append(processing.process_images(job))
            if shared.state.interrupted:
                break
        processed = scripts.merge_processed(p, results)
        if len(processed.images) == len(all_prompts) and processed.images:
            grid = draw_prompt_matrix(processed.images, parts, int(margin_size or 0))
            processed.images.insert(0, grid)
            processed.infotexts.insert(0, processed.infotexts[0])
            processed.index_of_first_image = 1
            ctx = p.context
            if ctx is not None and ctx.opts.grid_save and not p.do_not_save_grid:
                # processing's saver: the grid folder, numbering and save callbacks of every other grid
                processed.saved_files.append(processing.save_output_image(
                    grid, p, ctx, processed.infotexts[0], seed=seed, prompt=original, grid=True))
        return processed
