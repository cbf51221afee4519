"""A1111's "Loopback" (img2img): run img2img several times, each loop's output becoming the next loop's init image.

The denoising strength goes from the job's value (first loop) to the final value (last loop) along a curve of the
loop's progress t = i / (loops - 1): Linear t, Aggressive sin(t·π/2) (changes early), Lazy 1 - cos(t·π/2) (changes
late). Seeds go up by one per loop. With a batch count above one, every batch starts again from the original init
image and only each batch's last image is kept. The result is [grid of the kept images (when there are several and
grids are shown)] + the kept images.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gradio as gr

from modules import images, processing, scripts, shared
from modules.processing import JobError
from modules.sampling import rng

CURVES = ("Aggressive", "Linear", "Lazy")
# A1111 can append a CLIP or DeepBooru interrogation to the prompt every loop; there is no interrogator here.
INTERROGATORS = ("None",)


def denoising_strength(loop: int, loops: int, initial: float, final: float, curve: str) -> float:
    """The strength of loop `loop` (0-based) of `loops` (A1111's calculate_denoising_strength)."""
    if loops == 1:
        return initial
    progress = loop / (loops - 1)
    if curve == "Aggressive":
        shape = math.sin(progress * math.pi * 0.5)
    elif curve == "Lazy":
        shape = 1 - math.cos(progress * math.pi * 0.5)
    else:
        shape = progress
    return initial + (final - initial) * shape


class Script(scripts.Script):
    def title(self) -> str:
        return "Loopback"

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list[gr.components.Component]:
        loops = gr.Slider(minimum=1, maximum=32, step=1, label="Loops", value=4, elem_id=self.elem_id("loops"))
        final_denoising_strength = gr.Slider(minimum=0, maximum=1, step=0.01, label="Final denoising strength",
                                             value=0.5, elem_id=self.elem_id("final_denoising_strength"))
        denoising_curve = gr.Dropdown(label="Denoising strength curve", choices=list(CURVES), value="Linear",
                                      elem_id=self.elem_id("denoising_curve"))
        append_interrogation = gr.Dropdown(label="Append interrogated prompt at each iteration",
                                           choices=list(INTERROGATORS), value="None",
                                           elem_id=self.elem_id("append_interrogation"))
        return [loops, final_denoising_strength, denoising_curve, append_interrogation]

    def run(self, p: processing.Job, loops: float = 4, final_denoising_strength: float = 0.5,
            denoising_curve: str = "Linear", append_interrogation: str = "None") -> processing.Processed:
        if not p.init_images:
            raise JobError("Loopback needs an init image")
        if denoising_curve not in CURVES:
            raise JobError(f"Loopback: unknown denoising curve {denoising_curve!r}. Valid curves: "
                           f"{', '.join(CURVES)}")
        if append_interrogation not in (None, "", *INTERROGATORS):
            raise JobError(f"Loopback: interrogation {append_interrogation!r} is not available here")
        loops = max(1, int(loops))
        final = float(final_denoising_strength)
        p.seed = rng.fixed_seed(p.seed)
        p.subseed = rng.fixed_seed(p.subseed)
        # processing's own default for img2img, needed here to start the curve
        initial = p.denoising_strength if p.denoising_strength is not None else 0.75
        batch_count = p.n_iter
        extra = {**p.extra_generation_params, "Final denoising strength": final, "Denoising curve": denoising_curve}
        p.extra_generation_params = extra
        state = shared.state

        results: list[processing.Processed] = []
        history: list[tuple[Any, str]] = []
        seed = p.seed
        for n in range(batch_count):
            init_images = p.init_images  # every batch starts again from the original image
            inpainting_fill = p.inpainting_fill
            last = None
            for i in range(loops):
                state.job = f"Iteration {i + 1}/{loops}, batch {n + 1}/{batch_count}"
                job = dataclasses.replace(p, init_images=init_images, n_iter=1, batch_size=1, seed=seed,
                                          denoising_strength=denoising_strength(i, loops, initial, final,
                                                                                denoising_curve),
                                          inpainting_fill=inpainting_fill, do_not_save_grid=True,
                                          extra_generation_params=dict(extra), comments=list(p.comments),
                                          override_settings=dict(p.override_settings))
                processed = processing.process_images(job)
                if state.interrupted or not processed.images:
                    break
                results.append(processed)
                seed = processed.seed + 1
                if state.skipped:
                    break
                first = processed.index_of_first_image
                last = (processed.images[first], processed.infotexts[first])
                init_images = [last[0]]
                inpainting_fill = 1  # "original": the next loop's masked area starts from this output
                if batch_count == 1:
                    history.append(last)
            if batch_count > 1 and last is not None and not state.skipped and not state.interrupted:
                history.append(last)
            if state.interrupted:
                break

        if not results:
            raise JobError("Loopback: interrupted before any image was made")
        merged = scripts.merge_processed(p, results)
        kept = [image for image, _ in history]
        texts = [text for _, text in history]
        grids, grid_texts = [], []
        ctx = p.context if p.context is not None else shared.context()
        if len(kept) > 1:
            grid = images.image_grid(kept, rows=1)
            info = results[0].infotexts[results[0].index_of_first_image]
            if ctx.opts.grid_save and not p.do_not_save_grid:
                merged.saved_files.append(processing.save_output_image(
                    grid, p, ctx, info, seed=results[0].seed, prompt=results[0].all_prompts[0], grid=True))
            if ctx.opts.return_grid:
                grids, grid_texts = [grid], [info]
        merged.images = [*grids, *kept]
        merged.infotexts = [*grid_texts, *texts]
        merged.index_of_first_image = len(grids)
        return merged
