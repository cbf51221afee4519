"""A1111's "X/Y/Z plot": one job per combination of up to three axes' values, drawn as a labelled grid.

Each axis has a type (Seed, Steps, CFG Scale, Sampler, Checkpoint name, Prompt S/R, Size, ...) and values typed as
A1111 reads them: comma-separated (csv, so `"a, b", c` is two values), integer ranges `1-5`, `1-10 (+2)`, `10-1 (-3)`,
`1-10 [5]` (five values evenly spaced, truncated to integers), and float ranges in the same forms. Everything is
parsed and checked before the first image is made, so a typo in a sampler or checkpoint name costs nothing.

Every cell is a copy of the tab's job with the axes applied, run through `processing.process_images`. Seeds are
fixed once (unless "Keep -1 for seeds"), so cells differ only by their axes. Settings go through the cell's
`override_settings`, which processing restores; the checkpoint and VAE, which processing cannot switch (a job runs on
its context's model), are loaded here before a cell that asks for them and the original is loaded again afterwards.

The result is A1111's: [grid, (one sub grid per Z value, when there are several and "Include Sub Grids" is on), (the
cells' images, with "Include Sub Images")], with infotexts; the grids are saved with the job's other grids. A cell of
several images (batch) shows its own grid, as in A1111. Extensions may add axes by appending `AxisOption`s to
`axis_options` (A1111's API); the axis type input takes the dropdown's index or an axis label.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from io import StringIO
from itertools import chain, permutations
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from modules import images, processing, scripts, shared, upscaling
from modules.grid_annotations import (  # noqa: F401 (A1111's names, also in modules.images)
    COLOR_ACTIVE,
    COLOR_BACKGROUND,
    COLOR_INACTIVE,
    GridAnnotation,
    annotation_padding,
    draw_grid_annotations,
    get_font,
)
from modules.processing import JobError
from modules.sampling import rng, samplers

log = logging.getLogger("webui")

FILL_VALUES_SYMBOL = "\U0001f4d2"  # 📒
RNG_SOURCES = ["GPU", "CPU", "NV"]


# --- value parsing ---------------------------------------------------------------------------------------------

# A1111's patterns, with the decimal point escaped (A1111's `.` also matched "1x5") and spaces allowed after a sign.
_INT = r"([+-]?\s*\d+)"
_FLOAT = r"([+-]?\s*\d+(?:\.\d*)?)"
RE_RANGE = re.compile(rf"\s*{_INT}\s*-\s*{_INT}(?:\s*\(([+-]\d+)\s*\))?\s*")
RE_RANGE_FLOAT = re.compile(rf"\s*{_FLOAT}\s*-\s*{_FLOAT}(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
RE_RANGE_COUNT = re.compile(rf"\s*{_INT}\s*-\s*{_INT}\s*\[(\d+)\s*]\s*")
RE_RANGE_COUNT_FLOAT = re.compile(rf"\s*{_FLOAT}\s*-\s*{_FLOAT}\s*\[(\d+(?:\.\d*)?)\s*]\s*")
RE_SIZE = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")


def _number(text: str) -> str:
    return text.replace(" ", "")


def csv_string_to_list_strip(data_str: str) -> list[str]:
    """Comma-separated values, csv-quoted where a value holds a comma, each stripped (A1111's helper; spaces after a
    comma may precede a quote, which A1111's reader took literally)."""
    rows = csv.reader(StringIO(data_str or ""), skipinitialspace=True)
    return [value.strip() for value in chain.from_iterable(rows)]


def list_to_csv_string(data_list: Sequence[Any]) -> str:
    with StringIO() as out:
        csv.writer(out).writerow(data_list)
        return out.getvalue().strip()


def _range_step(start: float, end: float, step_text: str | None) -> float:
    """The step of `a-b (±s)`; without one, 1 towards the end (A1111 gave nothing for a descending `10-1`)."""
    step = float(step_text) if step_text is not None else (1 if end >= start else -1)
    if step == 0:
        raise JobError("a range step of 0 never reaches its end")
    return step


def expand_int_values(values: Sequence[Any]) -> list[Any]:
    """Integer ranges expanded, other values kept: `1-5` → 1..5, `1-10 (+2)` → 1,3,5,7,9, `10-1 (-3)` → 10,7,4,1
    (the end is included whenever the steps reach it, in both directions), `1-10 [5]` → 1,3,5,7,10."""
    result: list[Any] = []
    for value in values:
        text = str(value)
        if (m := RE_RANGE.fullmatch(text)) is not None:
            start, end = int(_number(m.group(1))), int(_number(m.group(2)))
            step = int(_range_step(start, end, m.group(3)))
            result += list(range(start, end + (1 if step > 0 else -1), step))
        elif (m := RE_RANGE_COUNT.fullmatch(text)) is not None:
            start, end, count = int(_number(m.group(1))), int(_number(m.group(2))), int(m.group(3))
            result += [int(x) for x in np.linspace(start, end, count).tolist()]
        else:
            result.append(value)
    return result


def expand_float_values(values: Sequence[Any]) -> list[Any]:
    """Float ranges expanded, other values kept: `1-3 (+0.5)` → 1,1.5,2,2.5,3, `0-1 [5]` → 0,0.25,0.5,0.75,1.
    Values are computed as start + i·step and rounded to 10 decimals, so `0-1 (+0.1)` ends at exactly 1.0."""
    result: list[Any] = []
    for value in values:
        text = str(value)
        if (m := RE_RANGE_FLOAT.fullmatch(text)) is not None:
            start, end = float(_number(m.group(1))), float(_number(m.group(2)))
            step = _range_step(start, end, m.group(3))
            count = int(np.floor((end - start) / step + 1e-9)) + 1
            result += [round(start + i * step, 10) for i in range(max(count, 0))]
        elif (m := RE_RANGE_COUNT_FLOAT.fullmatch(text)) is not None:
            start, end, count = float(_number(m.group(1))), float(_number(m.group(2))), int(float(m.group(3)))
            result += [round(x, 10) for x in np.linspace(start, end, count).tolist()]
        else:
            result.append(value)
    return result


# --- axes ------------------------------------------------------------------------------------------------------

def _prompt_contains(prompt: str | list[str], text: str) -> bool:
    return any(text in p for p in prompt) if isinstance(prompt, list) else text in prompt


def _prompt_replace(prompt: str | list[str], old: str, new: str) -> str | list[str]:
    return [p.replace(old, new) for p in prompt] if isinstance(prompt, list) else prompt.replace(old, new)


def apply_field(field: str) -> Callable[[Any, Any, list[Any]], None]:
    def fun(p: Any, x: Any, xs: list[Any]) -> None:
        setattr(p, field, x)

    return fun


def apply_override(field: str, boolean: bool = False) -> Callable[[Any, Any, list[Any]], None]:
    def fun(p: Any, x: Any, xs: list[Any]) -> None:
        if boolean:
            x = str(x).lower() == "true"
        p.override_settings[field] = x

    return fun


def apply_prompt(p: Any, x: str, xs: list[str]) -> None:
    """Prompt S/R: the first value is searched for, in the prompt and the negative prompt, and replaced by x."""
    p.prompt = _prompt_replace(p.prompt, xs[0], x)
    p.negative_prompt = _prompt_replace(p.negative_prompt, xs[0], x)


def confirm_prompt(p: Any, xs: list[str]) -> None:
    if not xs or xs[0] == "":
        raise JobError("Prompt S/R needs the text to search for as its first value")
    if not _prompt_contains(p.prompt, xs[0]) and not _prompt_contains(p.negative_prompt, xs[0]):
        raise JobError(f"Prompt S/R did not find {xs[0]!r} in prompt or negative prompt.")


def apply_order(p: Any, x: tuple[str, ...], xs: list[Any]) -> None:
    """Prompt order: the tokens are taken out of the prompt and put back in the order x gives (A1111's)."""
    prompt = p.prompt
    token_order = sorted(((prompt.find(token), token) for token in x), key=lambda t: t[0])
    parts = []
    for _, token in token_order:
        n = prompt.find(token)
        parts.append(prompt[:n])
        prompt = prompt[n + len(token):]
    p.prompt = "".join(part + x[i] for i, part in enumerate(parts)) + prompt


def confirm_order(p: Any, xs: list[tuple[str, ...]]) -> None:
    for token in xs[0] if xs else ():
        if token not in p.prompt:
            raise JobError(f"Prompt order: {token!r} is not in the prompt")


def _apply_sampler(field: str, scheduler_field: str) -> Callable[[Any, Any, list[Any]], None]:
    def fun(p: Any, x: str, xs: list[str]) -> None:
        info, schedule = samplers.resolve(x)
        setattr(p, field, info.name)
        if schedule.label != "Automatic":  # "DPM++ 2M Karras" names the schedule too, as in A1111's API
            setattr(p, scheduler_field, schedule.label)

    return fun


def confirm_samplers(p: Any, xs: list[str]) -> None:
    for x in xs:
        try:
            samplers.resolve(x)
        except ValueError:
            raise JobError(f"Unknown sampler: {x}. Valid samplers: {', '.join(samplers.sampler_names())}") from None


def apply_schedule_type(p: Any, x: str, xs: list[str]) -> None:
    p.scheduler = samplers.find_schedule_type(x).label


def confirm_schedule_types(p: Any, xs: list[str]) -> None:
    for x in xs:
        try:
            samplers.find_schedule_type(x)
        except ValueError as e:
            raise JobError(str(e)) from None


def find_checkpoint(name: str) -> Any:
    """A checkpoint by title, name, file name or hash; else the shortest title containing `name` (A1111's
    closest match). None when nothing matches."""
    registry = shared.models.registry
    info = registry.find(name)
    if info is None:
        registry.refresh()
        info = registry.find(name)
    if info is None and name.strip():
        matches = sorted((c for c in registry.checkpoints if name.strip().lower() in c.title.lower()),
                         key=lambda c: len(c.title))
        info = matches[0] if matches else None
    return info


def apply_checkpoint(p: Any, x: str, xs: list[str]) -> None:
    info = find_checkpoint(x)
    if info is None:
        raise JobError(f"Unknown checkpoint: {x}")
    p.override_settings["sd_model_checkpoint"] = info.title


def confirm_checkpoints(p: Any, xs: list[str]) -> None:
    for x in xs:
        if find_checkpoint(x) is None:
            valid = ", ".join(shared.models.registry.titles())
            raise JobError(f"Unknown checkpoint: {x}. Available: {valid}")


def find_vae(name: str) -> str | None:
    """The `sd_vae` setting for a value: Automatic, None, or the VAE file whose name contains it (A1111)."""
    key = name.strip().lower()
    if key in ("auto", "automatic"):
        return "Automatic"
    if key == "none":
        return "None"
    names = sorted((v.name for v in shared.models.vae_files()), key=len)
    exact = [n for n in names if n.lower() == key]
    partial = [n for n in names if key in n.lower()]
    return (exact or partial or [None])[0]


def apply_vae(p: Any, x: str, xs: list[str]) -> None:
    p.override_settings["sd_vae"] = find_vae(x)


def confirm_vae(p: Any, xs: list[str]) -> None:
    for x in xs:
        if find_vae(x) is None:
            raise JobError(f"Unknown VAE: {x}. Available: {', '.join(shared.models.vae_choices())}")


def apply_size(p: Any, x: str, xs: list[str]) -> None:
    m = RE_SIZE.fullmatch(x)
    p.width, p.height = int(m.group(1)), int(m.group(2))


def confirm_size(p: Any, xs: list[str]) -> None:
    for x in xs:
        if RE_SIZE.fullmatch(x) is None:
            raise JobError(f"Size: {x!r} is not WIDTHxHEIGHT (e.g. 512x768)")


def apply_styles(p: Any, x: str, xs: list[str]) -> None:
    p.styles = [*p.styles, *(s.strip() for s in x.split(",") if s.strip())]


def confirm_hires_upscalers(p: Any, xs: list[str]) -> None:
    for x in xs:
        if x not in processing.LATENT_UPSCALE_MODES and not upscaling.is_known(x):
            valid = ", ".join([*processing.LATENT_UPSCALE_MODES, *upscaling.upscaler_names()])
            raise JobError(f"Unknown hires upscaler: {x}. Valid upscalers: {valid}")


def confirm_choices(label: str, choices: Callable[[], list[str]]) -> Callable[[Any, list[str]], None]:
    def fun(p: Any, xs: list[str]) -> None:
        valid = choices()
        for x in xs:
            if x not in valid:
                raise JobError(f"{label}: unknown value {x!r}. Valid values: {', '.join(valid)}")

    return fun


def format_value_add_label(p: Any, opt: AxisOption, x: Any) -> str:
    if type(x) is float:
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p: Any, opt: AxisOption, x: Any) -> Any:
    if type(x) is float:
        x = round(x, 8)
    return x


def format_value_join_list(p: Any, opt: AxisOption, x: Sequence[str]) -> str:
    return ", ".join(x)


def format_nothing(p: Any, opt: AxisOption, x: Any) -> str:
    return ""


def format_remove_path(p: Any, opt: AxisOption, x: str) -> str:
    return x.replace("\\", "/").rsplit("/", 1)[-1]


def do_nothing(p: Any, x: Any, xs: list[Any]) -> None:
    pass


def str_permutations(x: Any) -> Any:
    """The `type` of an axis whose values are every ordering of the given tokens (A1111's marker)."""
    return x


class AxisOption:
    """One axis type (A1111's class and argument order: extensions construct these positionally).

    `apply(p, x, xs)` sets the cell job `p` for value `x`; `confirm(p, xs)` raises for bad values before anything
    runs; `cost` orders the loops (the costliest axis changes least often); `choices()` fills the values dropdown;
    `prepare(text)` parses the values text instead of the csv/range parser."""

    def __init__(self, label: str, type: Callable[[Any], Any], apply: Callable[[Any, Any, list[Any]], None],
                 format_value: Callable[[Any, AxisOption, Any], Any] = format_value_add_label,
                 confirm: Callable[[Any, list[Any]], None] | None = None, cost: float = 0.0,
                 choices: Callable[[], list[str]] | None = None,
                 prepare: Callable[[str], list[Any]] | None = None) -> None:
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.choices = choices
        self.prepare = prepare


class AxisOptionImg2Img(AxisOption):
    is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    is_img2img = False


def _sampler_choices() -> list[str]:
    return samplers.sampler_names()


def _checkpoint_choices() -> list[str]:
    return sorted(shared.models.registry.titles(), key=str.casefold) if shared.models is not None else []


def _vae_choices() -> list[str]:
    return shared.models.vae_choices() if shared.models is not None else ["Automatic", "None"]


def _style_choices() -> list[str]:
    return list(shared.prompt_styles.styles) if shared.prompt_styles is not None else []


def _hires_upscaler_choices() -> list[str]:
    return [*processing.LATENT_UPSCALE_MODES, *upscaling.upscaler_names()]


# A1111's list and order, without the axes this WebUI has no feature for (Image CFG Scale, Negative Guidance minimum
# sigma, Schedule min/max sigma and rho, Extra noise, Cond. Image Mask Weight, UniPC Order, Face restore, Token
# merging, Always discard next-to-last sigma, SGM noise multiplier, Refiner), and with "Size" added.
axis_options: list[AxisOption] = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Var. seed", int, apply_field("subseed")),
    AxisOption("Var. strength", float, apply_field("subseed_strength")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOptionTxt2Img("Hires steps", int, apply_field("hr_second_pass_steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value, confirm=confirm_prompt),
    AxisOption("Prompt order", str_permutations, apply_order, format_value=format_value_join_list,
               confirm=confirm_order),
    AxisOptionTxt2Img("Sampler", str, _apply_sampler("sampler_name", "scheduler"), format_value=format_value,
                      confirm=confirm_samplers, choices=_sampler_choices),
    AxisOptionTxt2Img("Hires sampler", str, _apply_sampler("hr_sampler_name", "hr_scheduler"),
                      confirm=confirm_samplers, choices=_sampler_choices),
    AxisOptionImg2Img("Sampler", str, _apply_sampler("sampler_name", "scheduler"), format_value=format_value,
                      confirm=confirm_samplers, choices=_sampler_choices),
    AxisOption("Checkpoint name", str, apply_checkpoint, format_value=format_remove_path,
               confirm=confirm_checkpoints, cost=1.0, choices=_checkpoint_choices),
    AxisOption("Sigma Churn", float, apply_field("s_churn")),
    AxisOption("Sigma min", float, apply_field("s_tmin")),
    AxisOption("Sigma max", float, apply_field("s_tmax")),
    AxisOption("Sigma noise", float, apply_field("s_noise")),
    AxisOption("Schedule type", str, apply_schedule_type, confirm=confirm_schedule_types,
               choices=samplers.schedule_type_labels),
    AxisOption("Eta", float, apply_field("eta")),
    AxisOption("Clip skip", int, apply_override("CLIP_stop_at_last_layers")),
    AxisOption("Denoising", float, apply_field("denoising_strength")),
    AxisOption("Initial noise multiplier", float, apply_field("initial_noise_multiplier")),
    AxisOptionTxt2Img("Hires upscaler", str, apply_field("hr_upscaler"), confirm=confirm_hires_upscalers,
                      choices=_hires_upscaler_choices),
    AxisOption("VAE", str, apply_vae, confirm=confirm_vae, cost=0.7, choices=_vae_choices),
    AxisOption("Styles", str, apply_styles, choices=_style_choices),
    AxisOption("RNG source", str, apply_override("randn_source"), confirm=confirm_choices("RNG source",
               lambda: RNG_SOURCES), choices=lambda: RNG_SOURCES),
    AxisOption("Size", str, apply_size, confirm=confirm_size),
]


def options_for(is_img2img: bool) -> list[AxisOption]:
    """The axes of a tab: the common ones and the tab's own (A1111's `current_axis_options`)."""
    return [x for x in axis_options if getattr(x, "is_img2img", None) in (None, is_img2img)]


def parse_axis(p: Any, opt: AxisOption, text: str, dropdown: Sequence[str] | None = None, csv_mode: bool = True,
               raw_mode: bool = False) -> list[Any]:
    """An axis's values: from the dropdown (list-like axes, when it has values and csv mode is off), else from the
    text; ranges expanded; converted to the axis type; checked with the axis's `confirm`. JobError names a bad value.
    """
    if opt.label == "Nothing":
        return [0]
    text = text or ""
    if opt.choices is not None and not csv_mode and dropdown:
        values: list[Any] = list(dropdown)
    elif opt.prepare is not None:
        values = list(opt.prepare(text))
    elif raw_mode and "\n" in text.strip():
        values = text.strip().split("\n")
    else:  # an empty value is kept ("red," replaces red by nothing), an empty text gives no values at all
        values = csv_string_to_list_strip(text) if text.strip() else []
    try:
        if opt.type is int:
            values = expand_int_values(values)
        elif opt.type is float:
            values = expand_float_values(values)
        elif opt.type is str_permutations:
            values = list(permutations(values))
    except JobError as e:
        raise JobError(f"{opt.label}: {e}") from None
    converted = []
    for value in values:
        try:
            converted.append(opt.type(value))
        except (TypeError, ValueError):
            kind = getattr(opt.type, "__name__", str(opt.type))
            raise JobError(f"{opt.label}: {value!r} is not a valid {kind} value") from None
    if not converted:
        raise JobError(f"{opt.label}: no values given")
    if opt.confirm:
        try:
            opt.confirm(p, converted)
        except JobError:
            raise
        except Exception as e:  # an extension's axis raises RuntimeError, as A1111's do
            raise JobError(f"{opt.label}: {e}") from e
    return converted


# --- drawing ---------------------------------------------------------------------------------------------------

def draw_labelled_grid(cells: list[Image.Image], cols: int, rows: int, hor_labels: Sequence[str],
                       ver_labels: Sequence[str], margin: int = 0) -> Image.Image:
    """Cells (row by row) as a grid with one legend per column and per row; smaller cells are centred."""
    grid = images.image_grid(cells, rows=rows)
    width, height = grid.width // cols, grid.height // rows
    return draw_grid_annotations(grid, width, height, [[GridAnnotation(t)] for t in hor_labels],
                                 [[GridAnnotation(t)] for t in ver_labels], margin)


# --- running ---------------------------------------------------------------------------------------------------

def loop_order(x_opt: AxisOption, y_opt: AxisOption, z_opt: AxisOption) -> tuple[str, str, str]:
    """Axes from outermost to innermost loop: the costliest axis (checkpoints, VAEs) changes least often
    (A1111's rule; Z, then Y, then X by default)."""
    costs = {"x": x_opt.cost, "y": y_opt.cost, "z": z_opt.cost}
    first, second = "z", "y"
    for axis, others in (("x", "yz"), ("y", "xz"), ("z", "xy")):
        if all(costs[axis] > costs[o] for o in others):
            first = axis
            second = others[0] if costs[others[0]] > costs[others[1]] else others[1]
    third = next(a for a in "xyz" if a not in (first, second))
    return first, second, third


def cell_order(nx: int, ny: int, nz: int, order: tuple[str, str, str]) -> Iterator[tuple[int, int, int]]:
    counts = {"x": nx, "y": ny, "z": nz}
    for a in range(counts[order[0]]):
        for b in range(counts[order[1]]):
            for c in range(counts[order[2]]):
                index = dict(zip(order, (a, b, c)))
                yield index["x"], index["y"], index["z"]


class ModelSwitcher:
    """Loads the checkpoint and VAE a cell asks for (its override_settings), and the original ones at the end.

    Processing applies a job's override_settings to the options only; the model a job runs on is its context's,
    so these two settings are taken out of the cell's overrides and applied here, with a context for the new model.
    Jobs are given no context until they run, so a replaced model is never kept alive by a waiting cell."""

    def __init__(self, p: Any) -> None:
        self.p = p
        self.template = p.context
        self.models = shared.models
        self.opts = shared.opts
        current = self.models.get() if self.models is not None else None
        self.original_checkpoint = current.checkpoint.title if current is not None else None
        self.original_vae = self.opts.sd_vae
        self.switched = False

    def context_for(self, job: Any) -> Any:
        checkpoint = job.override_settings.pop("sd_model_checkpoint", None)
        vae = job.override_settings.pop("sd_vae", None)
        if checkpoint is None and vae is None and not self.switched:
            return self.template if self.template is not None else shared.context()
        self._load(checkpoint or self.original_checkpoint, vae if vae is not None else self.original_vae)
        return self._context()

    def restore(self) -> None:
        if self.switched:
            self._load(self.original_checkpoint, self.original_vae)
            self.p.context = self._context()

    def _load(self, checkpoint: str | None, vae: str) -> None:
        # the file name only: a reference to the model here would keep it alive while the next one is read
        current_file = self.models.current.checkpoint.filename if self.models.current is not None else None
        vae_changed = self.opts.sd_vae != vae
        info = self.models.registry.find(checkpoint) if checkpoint else None
        if info is None and not vae_changed:
            return
        if info is not None and current_file == info.filename and not vae_changed:
            return
        self.switched = True
        self.p.context = None  # the old model must be freed before the next one is read (two rarely fit)
        self.template = dataclasses.replace(self.template, model=None) if self.template is not None else None
        if info is not None and current_file != info.filename:
            log.info("X/Y/Z plot: loading checkpoint %s", info.title)
        self.models.switch(info.title if info is not None else None, vae if vae_changed else None)

    def _context(self) -> Any:
        if self.template is None:
            return shared.context()
        model = self.models.get()
        if self.template.embeddings is not None:
            self.template.embeddings.refresh(model)
        return dataclasses.replace(self.template, model=model)


def _grid_infotext(job: Any, ctx: Any, extra: dict[str, Any]) -> str:
    """The infotext of a cell job with the plot's own parameters added (what A1111 writes for the grids)."""
    if not job.all_seeds:
        return ""
    info_job = dataclasses.replace(job, extra_generation_params={**job.extra_generation_params, **extra})
    sampler = processing.sampler_for_job(info_job, ctx, info_job.all_seeds[:1])
    return processing.create_infotext(info_job, ctx, 0, sampler, use_main_prompt=True)


def _axis_index(options: list[AxisOption], value: Any) -> AxisOption:
    """An axis type from the dropdown's index or from its label (API clients and the UI's default values)."""
    if value is None or value == "":
        return options[0]
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        for opt in options:
            if opt.label.lower() == value.strip().lower():
                return opt
        raise JobError(f"Unknown X/Y/Z plot axis type {value!r}. Valid types: "
                       f"{', '.join(o.label for o in options)}")
    index = int(value)
    if not 0 <= index < len(options):
        raise JobError(f"X/Y/Z plot axis type index {index} out of range (0..{len(options) - 1})")
    return options[index]


class Script(scripts.Script):
    current_axis_options: list[AxisOption] | None = None

    def title(self) -> str:
        return "X/Y/Z plot"

    def ui(self, is_img2img: bool) -> list[gr.components.Component]:
        self.current_axis_options = options_for(is_img2img)
        labels = [x.label for x in self.current_axis_options]
        rows = []
        for axis, default in (("x", labels[1]), ("y", labels[0]), ("z", labels[0])):
            with gr.Row():
                axis_type = gr.Dropdown(label=f"{axis.upper()} type", choices=labels, value=default, type="index",
                                        elem_id=self.elem_id(f"{axis}_type"))
                values = gr.Textbox(label=f"{axis.upper()} values", lines=1, elem_id=self.elem_id(f"{axis}_values"))
                # its choices are filled per axis type on the page; custom values keep Gradio from refusing a
                # value the server-side component (still without choices) does not list
                values_dropdown = gr.Dropdown(label=f"{axis.upper()} values", visible=False, multiselect=True,
                                              interactive=True, choices=[], value=[], allow_custom_value=True)
                fill = gr.Button(value=FILL_VALUES_SYMBOL, elem_id=f"xyz_grid_fill_{axis}_tool_button",
                                 visible=False, scale=0, min_width=40)
            rows.append((axis_type, values, values_dropdown, fill))

        with gr.Row(variant="compact", elem_id="axis_options"):
            with gr.Column():
                draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=self.elem_id("draw_legend"))
                no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False,
                                             elem_id=self.elem_id("no_fixed_seeds"))
            with gr.Column():
                include_lone_images = gr.Checkbox(label="Include Sub Images", value=False,
                                                  elem_id=self.elem_id("include_lone_images"))
                include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False,
                                                elem_id=self.elem_id("include_sub_grids"))
                raw_mode = gr.Checkbox(label="Use raw text lines", value=False, elem_id=self.elem_id("raw_mode"))
            with gr.Column():
                margin_size = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                        elem_id=self.elem_id("margin_size"))
            with gr.Column():
                csv_mode = gr.Checkbox(label="Use text inputs instead of dropdowns", value=False,
                                       elem_id=self.elem_id("csv_mode"))

        with gr.Row(variant="compact", elem_id="swap_axes"):
            swap_xy = gr.Button(value="Swap X/Y axes", elem_id="xy_grid_swap_axes_button")
            swap_yz = gr.Button(value="Swap Y/Z axes", elem_id="yz_grid_swap_axes_button")
            swap_xz = gr.Button(value="Swap X/Z axes", elem_id="xz_grid_swap_axes_button")

        options = self.current_axis_options
        events = {"show_progress": "hidden", "queue": False, "api_visibility": "undocumented"}

        def swap_axes(type1: int, values1: str, dropdown1: list[str], type2: int, values2: str,
                      dropdown2: list[str]) -> tuple[Any, ...]:
            return options[type2 or 0].label, values2, dropdown2, options[type1 or 0].label, values1, dropdown1

        for button, first, second in ((swap_xy, rows[0], rows[1]), (swap_yz, rows[1], rows[2]),
                                      (swap_xz, rows[0], rows[2])):
            swap_args = [*first[:3], *second[:3]]
            button.click(swap_axes, inputs=swap_args, outputs=swap_args, **events)

        def fill(axis_type: int, csv: bool) -> tuple[Any, Any]:
            axis = options[axis_type or 0]
            if axis.choices is None:
                return gr.update(), gr.update()
            return (list_to_csv_string(axis.choices()), gr.update()) if csv else (gr.update(), axis.choices())

        def select_axis(axis_type: int, values: str, dropdown: list[str], csv: bool) -> tuple[Any, Any, Any]:
            choices = options[axis_type or 0].choices
            if choices is None:
                return gr.update(visible=False), gr.update(visible=True, value=values), gr.update(visible=False)
            choices = choices()
            if csv:
                if dropdown:
                    values = list_to_csv_string([x for x in dropdown if x in choices])
                    dropdown = []
            elif values:
                dropdown = [x for x in csv_string_to_list_strip(values) if x in choices]
                values = ""
            return (gr.update(visible=True), gr.update(visible=csv, value=values),
                    gr.update(choices=choices, visible=not csv, value=dropdown or []))

        for axis_type, values, values_dropdown, fill_button in rows:
            fill_button.click(fill, inputs=[axis_type, csv_mode], outputs=[values, values_dropdown], **events)
            axis_type.change(select_axis, inputs=[axis_type, values, values_dropdown, csv_mode],
                             outputs=[fill_button, values, values_dropdown], **events)

        def change_choice_mode(csv: bool, *axes: Any) -> list[Any]:
            updates = []
            for i in range(0, len(axes), 3):
                updates += select_axis(axes[i], axes[i + 1], axes[i + 2], csv)
            return updates

        csv_mode.change(change_choice_mode, inputs=[csv_mode, *(c for row in rows for c in row[:3])],
                        outputs=[c for row in rows for c in (row[3], row[1], row[2])], **events)

        (x_type, x_values, x_values_dropdown, _), (y_type, y_values, y_values_dropdown, _), \
            (z_type, z_values, z_values_dropdown, _) = rows
        self.infotext_fields = [(x_type, "X Type"), (x_values, "X Values"), (y_type, "Y Type"),
                                (y_values, "Y Values"), (z_type, "Z Type"), (z_values, "Z Values")]
        return [x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
                z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, margin_size,
                csv_mode, raw_mode]

    def run(self, p: processing.Job, x_type: Any = 1, x_values: str = "", x_values_dropdown: Sequence[str] = (),
            y_type: Any = 0, y_values: str = "", y_values_dropdown: Sequence[str] = (), z_type: Any = 0,
            z_values: str = "", z_values_dropdown: Sequence[str] = (), draw_legend: bool = True,
            include_lone_images: bool = False, include_sub_grids: bool = False, no_fixed_seeds: bool = False,
            margin_size: float = 0, csv_mode: bool = False, raw_mode: bool = False) -> processing.Processed:
        options = self.current_axis_options or options_for(p.is_img2img)
        if not no_fixed_seeds:
            p.seed = rng.fixed_seed(p.seed)
            p.subseed = rng.fixed_seed(p.subseed)
        ctx = p.context if p.context is not None else shared.context()
        if not ctx.opts.return_grid:
            p.batch_size = 1  # a cell shows its first image; without grids that is one image of the batch

        axes = []
        for axis_type, values, dropdown in ((x_type, x_values, x_values_dropdown),
                                            (y_type, y_values, y_values_dropdown),
                                            (z_type, z_values, z_values_dropdown)):
            opt = _axis_index(options, axis_type)
            if opt.choices is not None and not csv_mode and dropdown:
                values = list_to_csv_string(list(dropdown))
            parsed = parse_axis(p, opt, values, dropdown, bool(csv_mode), bool(raw_mode))
            if not no_fixed_seeds and opt.label in ("Seed", "Var. seed"):
                parsed = [rng.fixed_seed(v) if v in (None, "", -1) else v for v in parsed]
            axes.append((opt, values or "", parsed))
        (x_opt, x_text, xs), (y_opt, y_text, ys), (z_opt, z_text, zs) = axes
        grid_mp = round(len(xs) * len(ys) * len(zs) * p.width * p.height / 1_000_000)
        if grid_mp > float(ctx.opts.img_max_size_mp):  # A1111: refused before any cell runs
            raise JobError(f"Resulting grid would be too large ({grid_mp} MPixels) "
                           f"(max configured size is {ctx.opts.img_max_size_mp} MPixels)")

        # every cell's job is made and checked before the first one runs: a bad combination costs nothing
        jobs: dict[tuple[int, int, int], processing.Job] = {}
        for ix, x in enumerate(xs):
            for iy, y in enumerate(ys):
                for iz, z in enumerate(zs):
                    job = dataclasses.replace(p, styles=list(p.styles), override_settings=dict(p.override_settings),
                                              extra_generation_params=dict(p.extra_generation_params),
                                              comments=list(p.comments), do_not_save_grid=True)
                    job.context = None
                    try:
                        x_opt.apply(job, x, xs)
                        y_opt.apply(job, y, ys)
                        z_opt.apply(job, z, zs)
                        processing.validate(job)
                    except ValueError as e:  # JobError included
                        raise JobError(f"X/Y/Z plot: {self._describe(axes, ix, iy, iz)}: {e}") from e
                    jobs[(ix, iy, iz)] = job

        nx, ny, nz = len(xs), len(ys), len(zs)
        count = nx * ny * nz
        log.info("X/Y/Z plot will create %d images on %d %dx%d grid%s.%s", count * p.n_iter * p.batch_size, nz, nx,
                 ny, "s" if nz > 1 else "", f" ({p.n_iter * p.batch_size} images per cell)"
                 if p.n_iter * p.batch_size > 1 else "")

        results: dict[tuple[int, int, int], processing.Processed] = {}
        grid_infotexts: list[str | None] = [None] * (1 + nz)
        state = shared.state
        switcher = ModelSwitcher(p)
        try:
            for n, (ix, iy, iz) in enumerate(cell_order(nx, ny, nz, loop_order(x_opt, y_opt, z_opt))):
                if state.interrupted:
                    break
                state.job = f"{ix + iy * nx + iz * nx * ny + 1} out of {count}"
                job = jobs[(ix, iy, iz)]
                job.context = switcher.context_for(job)
                try:
                    result = processing.process_images(job)
                    results[(ix, iy, iz)] = result
                    if ix == 0 and iy == 0:
                        extra = self._axis_params(x_opt, x_text, xs, y_opt, y_text, ys, no_fixed_seeds)
                        grid_infotexts[1 + iz] = _grid_infotext(job, job.context, extra)
                        if iz == 0:
                            extra.update(self._axis_params(z_opt, z_text, zs, None, "", [], no_fixed_seeds, "Z"))
                            grid_infotexts[0] = _grid_infotext(job, job.context, extra)
                finally:
                    job.context = None  # a kept result must not keep its model alive
                log.debug("X/Y/Z plot: cell %d of %d done", n + 1, count)
        finally:
            switcher.restore()
        ctx = p.context if p.context is not None else shared.context()

        if not results:
            raise JobError("X/Y/Z plot: interrupted before any image was made")
        first = next(r for r in results.values())
        blank_size = next((r.images[0].size for r in results.values() if r.images), (p.width, p.height))
        cells, cell_infotexts, ordered = [], [], []
        for iz in range(nz):
            for iy in range(ny):
                for ix in range(nx):
                    result = results.get((ix, iy, iz))
                    if result is not None and result.images:
                        cells.append(result.images[0])
                        cell_infotexts.append(result.infotexts[0])
                        ordered.append(result)
                    else:  # interrupted or skipped: an empty cell keeps the grid's shape
                        cells.append(Image.new("RGB", blank_size))
                        cell_infotexts.append("")
        x_labels = [str(x_opt.format_value(p, x_opt, x)) for x in xs] if draw_legend else [""] * nx
        y_labels = [str(y_opt.format_value(p, y_opt, y)) for y in ys] if draw_legend else [""] * ny
        z_labels = [str(z_opt.format_value(p, z_opt, z)) for z in zs] if draw_legend else [""] * nz
        margin = int(margin_size or 0)
        sub_grids = [draw_labelled_grid(cells[iz * nx * ny:(iz + 1) * nx * ny], nx, ny, x_labels, y_labels, margin)
                     for iz in range(nz)]
        main_grid = draw_labelled_grid(sub_grids, nz, 1, z_labels, [""]) if nz > 1 or any(z_labels) \
            else sub_grids[0]

        fallback = next((t for t in cell_infotexts if t), "")
        main_info = grid_infotexts[0] or fallback
        sub_infos = [t or fallback for t in grid_infotexts[1:]]
        processed = scripts.merge_processed(p, ordered or [first])
        grids = [main_grid, *(sub_grids if include_sub_grids and nz > 1 else [])]
        grid_infos = [main_info, *(sub_infos if include_sub_grids and nz > 1 else [])]
        processed.images = [*grids, *(cells if include_lone_images else [])]
        processed.infotexts = [*grid_infos, *(cell_infotexts if include_lone_images else [])]
        processed.index_of_first_image = len(grids)

        if ctx.opts.grid_save and not p.do_not_save_grid:
            # processing's saver: the grids folder, numbering, metadata and save callbacks of every other grid
            seed = processed.all_seeds[0] if processed.all_seeds else p.seed
            prompt = processed.all_prompts[0] if processed.all_prompts else str(p.prompt)
            for grid, text in zip(grids, grid_infos):
                processed.saved_files.append(processing.save_output_image(grid, p, ctx, text, seed=seed,
                                                                          prompt=prompt, grid=True))
        return processed

    @staticmethod
    def _describe(axes: list[tuple[AxisOption, str, list[Any]]], ix: int, iy: int, iz: int) -> str:
        parts = [f"{opt.label} {values[i]!r}" for (opt, _, values), i in zip(axes, (ix, iy, iz))
                 if opt.label != "Nothing"]
        return "cell " + (", ".join(parts) or "1")

    @staticmethod
    def _axis_params(opt_a: AxisOption, text_a: str, values_a: list[Any], opt_b: AxisOption | None, text_b: str,
                     values_b: list[Any], no_fixed_seeds: bool, first_name: str = "X") -> dict[str, Any]:
        """A1111's grid infotext entries: Script, X/Y (or Z) Type and Values, and the seeds a -1 was fixed to."""
        params: dict[str, Any] = {"Script": "X/Y/Z plot"} if first_name == "X" else {}
        for name, opt, text, values in ((first_name, opt_a, text_a, values_a), ("Y", opt_b, text_b, values_b)):
            if opt is None or opt.label == "Nothing":
                continue
            params[f"{name} Type"] = opt.label
            params[f"{name} Values"] = text
            if opt.label in ("Seed", "Var. seed") and not no_fixed_seeds:
                params[f"Fixed {name} Values"] = ", ".join(str(v) for v in values)
        return params
