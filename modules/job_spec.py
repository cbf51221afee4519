"""What a user asks for, and what a run computes from it: a frozen `JobSpec` and a mutable `RunState`.

The UI, the API and scripts build a spec once (validated at their edge); processing reads it and never writes it.
Everything a run works out (seeds, prompts with styles, the batch being sampled, infotext items, warnings) goes into
the run state. A1111's `p` (`processing.Job`) is an adapter over the two for scripts and extensions: writing
`p.steps = 30` there makes a new spec copy, as a frozen value must.

A spec is plain data: `to_json()` gives a JSON-ready dict (images as base64 PNG) and `from_json` reads it back, so a
job can be stored, queued elsewhere, or sent to another worker.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from PIL import Image

from modules.incompatible import IncompatibleExtensionError

log = logging.getLogger("webui")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class JobSpec:
    """One txt2img/img2img request, A1111's StableDiffusionProcessing input fields with A1111's defaults."""

    prompt: str | tuple[str, ...] = ""
    negative_prompt: str | tuple[str, ...] = ""
    styles: tuple[str, ...] = ()
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str = "DPM++ 2M"
    scheduler: str | None = "Automatic"
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    eta: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    s_min_uncond: float | None = None         # None: the setting (A1111's "Negative Guidance minimum sigma")
    denoising_strength: float | None = None   # None: the mode's default (0.75 img2img, 0.7 hires fix)
    # img2img / inpainting
    init_images: tuple[Image.Image, ...] = ()
    resize_mode: int = 0
    image_mask: Image.Image | None = None
    mask_blur: int = 4
    inpainting_fill: int = 1
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    # hires fix (txt2img)
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str | None = "Latent"
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    # the SDXL refiner (A1111 1.6): another checkpoint takes the last steps; switch_at None switches at once
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    # behaviour
    override_settings: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    override_settings_restore_afterwards: bool = True
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    outpath_samples: str | None = None
    outpath_grids: str | None = None

    def __post_init__(self) -> None:
        # containers become immutable ones, so that nothing can change a spec in place
        for name in ("prompt", "negative_prompt"):
            value = getattr(self, name)
            if isinstance(value, list | tuple):
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "styles", tuple(self.styles or ()))
        object.__setattr__(self, "init_images", tuple(self.init_images or ()))
        object.__setattr__(self, "override_settings", MappingProxyType(dict(self.override_settings or {})))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickling and deepcopy: the read-only mapping travels as a plain dict (a mappingproxy cannot be copied)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["override_settings"] = dict(self.override_settings)
        return (_spec_from_values, (values,))

    @property
    def is_img2img(self) -> bool:
        return bool(self.init_images)

    @property
    def mode(self) -> str:
        return "img2img" if self.is_img2img else "txt2img"

    def replace(self, **changes: Any) -> JobSpec:
        """A copy with some fields changed (the spec itself never changes)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: images as base64 PNG, tuples as lists."""
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "init_images":
                value = [_image_to_text(image) for image in value]
            elif f.name == "image_mask":
                value = _image_to_text(value) if value is not None else None
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            data[f.name] = value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown job field(s): {', '.join(unknown)}")
        values = dict(data)
        if "init_images" in values:
            values["init_images"] = [_image_from_text(text) for text in values["init_images"] or []]
        if values.get("image_mask") is not None:
            values["image_mask"] = _image_from_text(values["image_mask"])
        return cls(**values)


def _spec_from_values(values: dict[str, Any]) -> JobSpec:
    return JobSpec(**values)


@dataclass
class RunState:
    """What one run of a spec computes, in A1111's attribute names (scripts read and write them on `p`)."""

    denoising_strength: float | None = None  # the strength in effect (the spec's, or the mode's default)
    extra_generation_params: dict[str, Any] = field(default_factory=dict)  # infotext items (scripts add theirs)
    comments: list[str] = field(default_factory=list)  # warnings for the user, e.g. a LoRA that was not found
    clip_skip: int = 1
    all_prompts: list[str] = field(default_factory=list)
    all_negative_prompts: list[str] = field(default_factory=list)
    all_seeds: list[int] = field(default_factory=list)
    all_subseeds: list[int] = field(default_factory=list)
    # the batch being sampled: its prompts (network tags removed once the networks are active), negative prompts,
    # seeds and subseeds, the batch number and, per image, the index in the batch
    prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    iteration: int = 0
    batch_index: int = 0
    # A1111's flags for scripts: the always-on scripts' setup() ran (once, even when a selectable script runs
    # process_images several times on copies), and the hires pass is sampling now
    scripts_setup_complete: bool = False
    is_hr_pass: bool = False
    # inpainting: each image's blurred full-size mask of the batch just made (A1111's p.mask_for_overlay)
    masks_for_overlay: list[Any] = field(default_factory=list)
    # A1111 attributes extensions read; here they keep A1111's values where this core has no such step (no tiling,
    # no colour correction), are filled by the run where it has (the hires target size), else stay None
    tiling: bool = False
    all_hr_prompts: list[str] = field(default_factory=list)  # the hires pass's prompts (A1111: hr_prompt or prompt)
    all_hr_negative_prompts: list[str] = field(default_factory=list)
    overlay_images: list[Any] | None = None
    color_corrections: list[Any] | None = None
    paste_to: tuple[int, int, int, int] | None = None
    mask_for_overlay: Any = None
    image_conditioning: Any = None
    sampler: Any = None
    hr_upscale_to_x: int = 0
    hr_upscale_to_y: int = 0
    is_api: bool = False
    rng: Any = None            # A1111's ImageRNG of the batch; the sampling loop draws its own noise here
    init_latent: Any = None    # img2img: the batch's encoded init images (set while sampling)
    # extra denoiser inputs for this run (ControlNet, T2I-Adapter): objects with `before_denoiser(call)`
    # (engines.DenoiserHook) that scripts add in `process`; the sampling loop asks each before every denoiser call
    denoiser_hooks: list[Any] = field(default_factory=list)
    cached_c: list[Any] = field(default_factory=lambda: [None, None])
    cached_uc: list[Any] = field(default_factory=lambda: [None, None])


SPEC_FIELDS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(JobSpec))
# A1111's p.sample / p.init drive its ldm sampling; an extension replacing them would change nothing here
_LDM_ENTRY_POINTS = frozenset({"sample", "init"})
RUN_FIELDS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(RunState))


def _image_to_text(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _image_from_text(text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image


# --- A1111's `p`: one spec copy + its run state ----------------------------------------------------------------------

class _SpecDict(dict):
    """A spec's mapping as A1111 scripts change it in place (`p.override_settings[key] = value`): every change makes
    the job a new spec copy holding the changed mapping."""

    def __init__(self, job: Job, name: str, data: Mapping[str, Any]) -> None:
        super().__init__(data)
        self._job, self._name, self._source = job, name, data

    def _publish(self) -> None:
        if getattr(self._job.spec, self._name) is self._source:  # not replaced meanwhile (p.x = ... since)
            self._job._replace_spec(**{self._name: dict(self)})
            self._source = getattr(self._job.spec, self._name)

    def __copy__(self) -> dict[str, Any]:
        return dict(self)  # a copy is the script's own: changing it must not change the job

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))


class _SpecList(list):
    """A spec's sequence as A1111 scripts change it in place (`p.styles.append(...)`, `p.init_images[0] = ...`)."""

    def __init__(self, job: Job, name: str, data: Any) -> None:
        super().__init__(data)
        self._job, self._name, self._source = job, name, data

    def _publish(self) -> None:
        if getattr(self._job.spec, self._name) is self._source:  # not replaced meanwhile (p.x = ... since)
            self._job._replace_spec(**{self._name: tuple(self)})
            self._source = getattr(self._job.spec, self._name)

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return copy.deepcopy(list(self), memo)

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))


def _publishing(cls: type, method: str) -> None:
    base = getattr(cls.__mro__[1], method)

    def changed(self, *args: Any, **kwargs: Any) -> Any:
        result = base(self, *args, **kwargs)
        self._publish()
        return self if method.startswith("__i") else result

    changed.__name__ = method
    setattr(cls, method, changed)


for _method in ("__setitem__", "__delitem__", "pop", "popitem", "update", "setdefault", "clear", "__ior__"):
    _publishing(_SpecDict, _method)
for _method in ("__setitem__", "__delitem__", "append", "extend", "insert", "remove", "pop", "clear", "sort",
                "reverse", "__iadd__"):
    _publishing(_SpecList, _method)


@dataclass(init=False, eq=False)
class Job:
    """A1111's `p` (StableDiffusionProcessing): the attributes scripts and extensions know, over a frozen `spec`
    and the `run` state. Reading `p.steps` reads the spec; writing it makes a new spec copy (what processing reads
    next); `p.all_seeds`, `p.extra_generation_params`, ... are the run's. Other attributes (a script's own) are kept
    on the job. Declared as a dataclass of every name so that `dataclasses.replace(p, seed=...)` and
    `dataclasses.fields(p)` work as they did when `p` was a plain dataclass."""

    # field names only (no defaults here: the values live in `spec` and `run`)
    prompt: str | list[str]
    negative_prompt: str | list[str]
    styles: list[str]
    seed: int
    subseed: int
    subseed_strength: float
    seed_resize_from_h: int
    seed_resize_from_w: int
    sampler_name: str
    scheduler: str | None
    batch_size: int
    n_iter: int
    steps: int
    cfg_scale: float
    width: int
    height: int
    eta: float | None
    s_churn: float | None
    s_tmax: float | None
    s_tmin: float | None
    s_noise: float | None
    s_min_uncond: float | None
    denoising_strength: float | None
    init_images: list[Image.Image]
    resize_mode: int
    image_mask: Image.Image | None
    mask_blur: int
    inpainting_fill: int
    inpaint_full_res: bool
    inpaint_full_res_padding: int
    inpainting_mask_invert: int
    initial_noise_multiplier: float | None
    enable_hr: bool
    hr_scale: float
    hr_upscaler: str | None
    hr_second_pass_steps: int
    hr_resize_x: int
    hr_resize_y: int
    hr_sampler_name: str | None
    hr_scheduler: str | None
    hr_prompt: str
    hr_negative_prompt: str
    refiner_checkpoint: str | None
    refiner_switch_at: float | None
    override_settings: dict[str, Any]
    override_settings_restore_afterwards: bool
    extra_generation_params: dict[str, Any]
    do_not_save_samples: bool
    do_not_save_grid: bool
    outpath_samples: str | None
    outpath_grids: str | None
    all_prompts: list[str]
    all_negative_prompts: list[str]
    all_seeds: list[int]
    all_subseeds: list[int]
    clip_skip: int
    comments: list[str]
    scripts: Any            # the tab's ScriptRunner (A1111's p.scripts) and the UI's script values (p.script_args)
    script_args: list[Any]
    context: Any            # the application's Context while the job runs, so scripts can call process_images(p)
    scripts_setup_complete: bool
    is_hr_pass: bool
    prompts: list[str]
    negative_prompts: list[str]
    seeds: list[int]
    subseeds: list[int]
    iteration: int
    batch_index: int
    masks_for_overlay: list[Any]

    def __init__(self, spec: JobSpec | None = None, *, scripts: Any = None, script_args: Any = (),
                 context: Any = None, **values: Any) -> None:
        unknown = sorted(set(values) - SPEC_FIELDS - RUN_FIELDS)
        if unknown:
            raise TypeError(f"Job got unexpected field(s): {', '.join(unknown)}")
        spec_values = {k: v for k, v in values.items() if k in SPEC_FIELDS}
        run_values = {k: v for k, v in values.items() if k in RUN_FIELDS and k != "denoising_strength"}
        run = RunState(**run_values)
        run.extra_generation_params = dict(run.extra_generation_params or {})
        run.comments = list(run.comments.values()) if isinstance(run.comments, Mapping) else list(run.comments)
        object.__setattr__(self, "spec", (spec or JobSpec()).replace(**spec_values) if spec_values or spec is None
                           else spec)
        object.__setattr__(self, "run", run)
        object.__setattr__(self, "scripts", scripts)
        object.__setattr__(self, "script_args", list(script_args or ()))
        object.__setattr__(self, "context", context)
        # `spec` (JobSpec) and `run` (RunState) are plain attributes, not dataclass fields: replace() copies values

    def __getattr__(self, name: str) -> Any:  # only for names not found on the object itself
        if name.startswith("__") or name in ("spec", "run"):
            raise AttributeError(name)
        if name == "denoising_strength":
            resolved = self.run.denoising_strength
            return resolved if resolved is not None else self.spec.denoising_strength
        if name in SPEC_FIELDS:
            value = getattr(self.spec, name)
            if isinstance(value, Mapping):
                return _SpecDict(self, name, value)
            if name in ("styles", "init_images") or (name in ("prompt", "negative_prompt")
                                                      and isinstance(value, tuple)):
                return _SpecList(self, name, value)
            return value
        if name in RUN_FIELDS:
            return getattr(self.run, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LDM_ENTRY_POINTS:
            raise IncompatibleExtensionError(
                f"replacing p.{name} is not supported: A1111 calls it to sample its ldm model; this program samples "
                "in its own loop (extensions change sampling through the CFG denoiser callbacks and samplers)")
        if name in SPEC_FIELDS:
            self._replace_spec(**{name: value})
            if name == "denoising_strength":
                self.run.denoising_strength = value  # a script's choice beats the resolved default
        elif name in RUN_FIELDS:
            setattr(self.run, name, value)
        else:
            object.__setattr__(self, name, value)

    @property
    def mask_blur_x(self) -> int:
        """A1111's horizontal mask blur: this program blurs both directions by `mask_blur`."""
        return self.mask_blur

    @mask_blur_x.setter
    def mask_blur_x(self, value: int) -> None:
        self.mask_blur = value

    @property
    def mask_blur_y(self) -> int:
        return self.mask_blur

    @mask_blur_y.setter
    def mask_blur_y(self, value: int) -> None:
        self.mask_blur = value

    @property
    def script_args_value(self) -> Any:
        """A1111 1.7's storage behind `p.script_args` (some extensions read it directly)."""
        return self.script_args

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        """A1111's `p.sample(conditioning, unconditional_conditioning, seeds, …)` samples its ldm model directly."""
        raise IncompatibleExtensionError("p.sample() is A1111's ldm sampling entry; this program samples in its own "
                                         "loop (use processing.process_images, or the CFG denoiser callbacks)")

    def init(self, *args: Any, **kwargs: Any) -> Any:
        """A1111's `p.init(all_prompts, all_seeds, all_subseeds)` prepares its ldm sampling."""
        raise IncompatibleExtensionError("p.init() prepares A1111's ldm sampling; this program prepares a job inside "
                                         "processing.process_images")

    def _replace_spec(self, **changes: Any) -> None:
        object.__setattr__(self, "spec", self.spec.replace(**changes))

    def __deepcopy__(self, memo: dict[int, Any]) -> Job:
        """`copy.deepcopy(p)` (A1111 extensions): a deep copy of the job's values; the running application's objects
        (`context` with the model, the `scripts` runner) are shared, as A1111's p.sd_model is not copied either."""
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            shared_object = key in ("context", "scripts")
            clone.__dict__[key] = value if shared_object else copy.deepcopy(value, memo)
        return clone

    def __copy__(self) -> Job:
        """`copy.copy(p)` (A1111 extensions): the same spec (frozen), a copy of the run state and own attributes."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        object.__setattr__(clone, "run", dataclasses.replace(self.run))
        return clone

    @property
    def is_img2img(self) -> bool:
        return self.spec.is_img2img

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def sd_model(self) -> Any:
        """A1111's `p.sd_model`: the loaded model wrapper of the job's context; None outside a run."""
        return self.context.model if self.context is not None else None

    @sd_model.setter
    def sd_model(self, value: Any) -> None:
        """Accepted and ignored (A1111 scripts write `p.sd_model = shared.sd_model`): a job always runs on the model
        of its context."""


# --- A1111's processing class names (for extensions) ------------------------------------------------------------
#
# Every job is a `Job`; the UI and the API build plain `Job`s. A1111 extensions test the kind of job with
# `isinstance(p, StableDiffusionProcessingImg2Img)`, so these names are thin subclasses whose metaclass answers
# `isinstance` for a plain `Job` from its mode (img2img = it has init images); an instance of one of these classes
# (an extension constructing `StableDiffusionProcessingTxt2Img(prompt=..., ...)`) is judged by its class. The
# constructors take A1111's keyword arguments: `sd_model` is ignored (a job runs on its context's model), `mask` is
# `image_mask`, None for a field with a non-None default means that default, and A1111-only names (`restore_faces`,
# `tiling`, ...) are kept as plain attributes. `process_images` accepts them like any Job. Nothing in the core uses
# them.

_A1111_RENAMED = {"mask": "image_mask"}


def _field_defaults_not_none() -> frozenset[str]:
    return frozenset(f.name for cls in (JobSpec, RunState) for f in dataclasses.fields(cls)
                     if f.default is not None or f.default_factory is not dataclasses.MISSING)


class _JobKind(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        if type.__instancecheck__(StableDiffusionProcessing, obj):
            return type.__instancecheck__(cls, obj)
        return isinstance(obj, Job) and cls.a1111_mode in (None, obj.mode)


class StableDiffusionProcessing(Job, metaclass=_JobKind):
    """A1111's base class name: `isinstance(p, StableDiffusionProcessing)` is True for every job."""

    a1111_mode: ClassVar[str | None] = None

    def __init__(self, sd_model: Any = None, **kwargs: Any) -> None:
        known = {f.name for f in dataclasses.fields(Job)}  # spec, run state, scripts and context
        not_none = _field_defaults_not_none()
        values = {_A1111_RENAMED.get(key, key): value for key, value in kwargs.items()}
        if isinstance(values.get("comments"), dict):  # A1111 keeps comments as a dict of texts
            values["comments"] = list(values["comments"])
        super().__init__(**{key: value for key, value in values.items()
                            if key in known and not (value is None and key in not_none)})
        for key, value in values.items():
            if key not in known:
                try:
                    setattr(self, key, value)
                except AttributeError:  # a read-only property such as `mode`
                    log.debug("%s: ignoring argument %s", type(self).__name__, key)


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    """A1111's txt2img job class: `isinstance(p, StableDiffusionProcessingTxt2Img)` is True for txt2img jobs."""

    a1111_mode = "txt2img"


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    """A1111's img2img job class: `isinstance(p, StableDiffusionProcessingImg2Img)` is True for img2img jobs."""

    a1111_mode = "img2img"
