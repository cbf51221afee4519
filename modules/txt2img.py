"""A1111's `modules.txt2img`: `txt2img(id_task, request, *args)` and `txt2img_create_processing`, in A1111 v1.10's
positional form (the txt2img tab's inputs, then the scripts' values), over this WebUI's job and queue. Extensions
such as task queues call them with the argument lists A1111's page sends. An adapter: nothing in the core uses it."""

from __future__ import annotations

import json
from typing import Any

from modules import infotext_utils, scripts, shared
from modules.processing import Job, Processed
from modules.ui.a1111_names import plaintext_to_html

# A1111 v1.10's txt2img inputs before the scripts' values (sampler and steps are always-on script values there)
TXT2IMG_ARGS = ("prompt", "negative_prompt", "prompt_styles", "n_iter", "batch_size", "cfg_scale", "height", "width",
                "enable_hr", "denoising_strength", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x",
                "hr_resize_y", "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt",
                "hr_negative_prompt", "override_settings_texts")


def named_args(names: tuple[str, ...], args: tuple[Any, ...]) -> tuple[dict[str, Any], list[Any]]:
    """({name: value} of the first len(names) positional args, the rest (the scripts' values))."""
    if len(args) < len(names):
        raise ValueError(f"expected at least {len(names)} arguments ({', '.join(names)}), got {len(args)}")
    return dict(zip(names, args[:len(names)], strict=True)), list(args[len(names):])


def _hires_choice(value: Any) -> str | None:
    return None if value in (None, "", "Use same sampler", "Use same scheduler", "Use same checkpoint") else value


def txt2img_create_processing(id_task: str, request: Any, *args: Any, force_enable_hr: bool = False) -> Job:
    """The job (A1111's `p`) the txt2img inputs describe, with the tab's scripts attached."""
    values, script_args = named_args(TXT2IMG_ARGS, args)
    enable_hr = bool(values["enable_hr"]) or force_enable_hr
    job = Job(prompt=values["prompt"] or "", negative_prompt=values["negative_prompt"] or "",
              styles=list(values["prompt_styles"] or []), n_iter=int(values["n_iter"]),
              batch_size=int(values["batch_size"]), cfg_scale=float(values["cfg_scale"]),
              width=int(values["width"]), height=int(values["height"]), enable_hr=enable_hr,
              denoising_strength=float(values["denoising_strength"]) if enable_hr else None,
              hr_scale=float(values["hr_scale"]), hr_upscaler=values["hr_upscaler"],
              hr_second_pass_steps=int(values["hr_second_pass_steps"]), hr_resize_x=int(values["hr_resize_x"]),
              hr_resize_y=int(values["hr_resize_y"]), hr_sampler_name=_hires_choice(values["hr_sampler_name"]),
              hr_scheduler=_hires_choice(values["hr_scheduler"]), hr_prompt=values["hr_prompt"] or "",
              hr_negative_prompt=values["hr_negative_prompt"] or "",
              override_settings=infotext_utils.create_override_settings_dict(values["override_settings_texts"]))
    attach_scripts(job, scripts.scripts_txt2img, script_args)
    return job


def attach_scripts(job: Job, runner: Any, script_args: list[Any]) -> None:
    """The tab's script runner with the given values (the rest: their defaults)."""
    scripts.ensure_loaded()
    if runner is not None:
        runner.attach(job, script_args)


def answer(processed: Processed) -> tuple[list[Any], str, str, str]:
    """A1111's outputs: (images, generation info JSON, info HTML, comments HTML)."""
    comments = "\n".join(processed.comments) if isinstance(processed.comments, list) else str(processed.comments or "")
    return (list(processed.images), json.dumps(processed.js()), plaintext_to_html(processed.info),
            plaintext_to_html(comments, classname="comments"))


def txt2img(id_task: str, request: Any, *args: Any) -> tuple[list[Any], str, str, str]:
    """Run the job the txt2img inputs describe in its turn of the queue, under `id_task`."""
    job = txt2img_create_processing(id_task, request, *args)
    processed = shared.run_job(job, "txt2img", task_id=_task_id(id_task))
    return answer(processed)


def _task_id(id_task: Any) -> str | None:
    if isinstance(id_task, str) and id_task and shared.tasks.get(id_task) is None:
        return id_task
    return None  # A1111 lets a reused id through; here a fresh id is made instead of refusing the job
