"""A1111's "Prompts from file or textbox": one job per line; a line may set job fields with command-line options.

A line is a prompt, or options as A1111 parses them (shlex): `--prompt "a cat" --negative_prompt "blurry" --steps 20
--seed 5 --cfg_scale 7.5 --width 512 --height 512 --sampler_name "Euler a" ...`. `--prompt`/`--negative_prompt`
take every word up to the next option. A line that cannot be parsed is used as a plain prompt (and reported).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shlex
from collections.abc import Callable
from typing import Any

import gradio as gr

from modules import processing, scripts, shared
from modules.sampling import samplers

log = logging.getLogger("webui")


def _string(tag: str) -> str:
    return tag


def _boolean(tag: str) -> bool:
    return tag == "true"


def _styles(tag: str) -> list[str]:
    return [name.strip() for name in tag.split(",") if name.strip()]


PROMPT_TAGS: dict[str, Callable[[str], Any]] = {
    "outpath_samples": _string,
    "outpath_grids": _string,
    "prompt_for_display": _string,
    "prompt": _string,
    "negative_prompt": _string,
    "styles": _styles,
    "seed": int,
    "subseed_strength": float,
    "subseed": int,
    "seed_resize_from_h": int,
    "seed_resize_from_w": int,
    "sampler_index": int,
    "sampler_name": _string,
    "batch_size": int,
    "n_iter": int,
    "steps": int,
    "cfg_scale": float,
    "width": int,
    "height": int,
    "restore_faces": _boolean,
    "tiling": _boolean,
    "do_not_save_samples": _boolean,
    "do_not_save_grid": _boolean,
}


def cmdargs(line: str) -> dict[str, Any]:
    """A line's options as job fields (A1111's parser); raises ValueError for an unknown or incomplete option."""
    args = shlex.split(line)
    pos = 0
    res: dict[str, Any] = {}
    while pos < len(args):
        arg = args[pos]
        if not arg.startswith("--"):
            raise ValueError(f'must start with "--": {arg}')
        if pos + 1 >= len(args):
            raise ValueError(f"missing argument for command line option {arg}")
        tag = arg[2:]
        if tag in ("prompt", "negative_prompt"):
            pos += 1
            words = [args[pos]]
            pos += 1
            while pos < len(args) and not args[pos].startswith("--"):
                words.append(args[pos])
                pos += 1
            res[tag] = " ".join(words)
            continue
        func = PROMPT_TAGS.get(tag)
        if func is None:
            raise ValueError(f"unknown commandline option: {arg}")
        value = args[pos + 1]
        if tag == "sampler_name":
            info, schedule = samplers.resolve(value)  # A1111 accepts aliases; "DPM++ 2M Karras" sets the schedule
            value = info.name
            if schedule.label != "Automatic":
                res["scheduler"] = schedule.label
        elif tag == "sampler_index":
            tag, value = "sampler_name", samplers.sampler_names()[int(value)]
        res[tag] = func(value)
        pos += 2
    return res


def load_prompt_file(file: bytes | None) -> tuple[None, Any, Any]:
    if file is None:
        return None, gr.update(), gr.update(lines=7)
    lines = [x.strip() for x in file.decode("utf8", errors="ignore").split("\n")]
    return None, "\n".join(lines), gr.update(lines=7)


_JOB_FIELDS = {f.name for f in dataclasses.fields(processing.Job)}


class Script(scripts.Script):
    def title(self) -> str:
        return "Prompts from file or textbox"

    def ui(self, is_img2img: bool) -> list[gr.components.Component]:
        checkbox_iterate = gr.Checkbox(label="Iterate seed every line", value=False,
                                       elem_id=self.elem_id("checkbox_iterate"))
        checkbox_iterate_batch = gr.Checkbox(label="Use same random seed for all lines", value=False,
                                             elem_id=self.elem_id("checkbox_iterate_batch"))
        prompt_position = gr.Radio(["start", "end"], label="Insert prompts at the", value="start",
                                   elem_id=self.elem_id("prompt_position"))
        prompt_txt = gr.Textbox(label="List of prompt inputs", lines=1, elem_id=self.elem_id("prompt_txt"))
        file = gr.File(label="Upload prompt inputs", type="binary", elem_id=self.elem_id("file"))
        file.change(fn=load_prompt_file, inputs=[file], outputs=[file, prompt_txt, prompt_txt],
                    show_progress="hidden", queue=False, api_visibility="undocumented")
        prompt_txt.change(lambda tb: gr.update(lines=7) if "\n" in (tb or "") else gr.update(lines=2),
                          inputs=[prompt_txt], outputs=[prompt_txt], show_progress="hidden", queue=False,
                          api_visibility="undocumented")
        return [checkbox_iterate, checkbox_iterate_batch, prompt_position, prompt_txt]

    def run(self, p: processing.Job, checkbox_iterate: bool = False, checkbox_iterate_batch: bool = False,
            prompt_position: str = "start", prompt_txt: str = "") -> processing.Processed:
        lines = [x for x in (x.strip() for x in (prompt_txt or "").splitlines()) if x]
        problems = []
        jobs = []
        for line in lines:
            args = {"prompt": line}
            if "--" in line:
                try:
                    args = cmdargs(line)
                except ValueError as e:
                    log.exception("Error parsing line %s as commandline", line)
                    problems.append(f"Prompts from file: line {line!r} was used as a prompt ({e})")
            jobs.append(args)
        log.info("Will process %d lines in %d jobs.", len(lines), sum(a.get("n_iter", p.n_iter) for a in jobs))
        if (checkbox_iterate or checkbox_iterate_batch) and p.seed == -1:
            p.seed = int(random.randrange(4294967294))

        results = []
        for args in jobs:
            job = dataclasses.replace(p, do_not_save_grid=True, extra_generation_params=dict(p.extra_generation_params),
                                      comments=list(p.comments), override_settings=dict(p.override_settings))
            for key, value in args.items():
                if key in _JOB_FIELDS:  # restore_faces, tiling, prompt_for_display: no such feature here
                    setattr(job, key, value)
            base_prompt, base_negative = p.prompt, p.negative_prompt
            if args.get("prompt") and base_prompt:
                job.prompt = f"{args['prompt']} {base_prompt}" if prompt_position == "start" \
                    else f"{base_prompt} {args['prompt']}"
            if args.get("negative_prompt") and base_negative:
                job.negative_prompt = f"{args['negative_prompt']} {base_negative}" if prompt_position == "start" \
                    else f"{base_negative} {args['negative_prompt']}"
            results.append(processing.process_images(job))
            if checkbox_iterate:
                p.seed = p.seed + p.batch_size * p.n_iter
            if shared.state.interrupted:
                break
        processed = scripts.merge_processed(p, results, keep_grids=True)
        processed.comments = problems + processed.comments
        return processed
