"""A1111's `modules.scripts_postprocessing`: Extras-tab scripts of extensions (`ScriptPostprocessing` subclasses
with `ui()` -> {name: component} and `process(pp, **args)` changing `pp.image` / `pp.info`).

Every `ScriptPostprocessing` subclass defined by a loaded script file is found (as A1111 collects them while it
loads scripts), ordered by the `postprocessing_operation_order` setting, then `order`, then name. The Extras job
(`modules.postprocessing.run_extras`, core) fires the `extras_image` hook for each image after upscaling and
before saving; `connect()` attaches the runner there, so the scripts change the image that is saved and returned.
Their arguments are the Extras job's own (`request.script_args`, the Extras tab's controls, in `setup_ui()`'s
order), else `ScriptPostprocessingRunner.args` (e.g. `create_args_for_run` as A1111's API does), else the values
their `ui()` components start with. An adapter: the core never imports it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from PIL import Image

from modules import errors, hooks, shared

log = logging.getLogger("webui")


class PostprocessedImageSharedInfo:
    def __init__(self) -> None:
        self.target_width: int | None = None
        self.target_height: int | None = None


class PostprocessedImage:
    """The image a postprocessing script works on: replace `image`, add infotext items to `info`, file name tags
    to `nametags`; `extra_images` holds further images a script makes (kept on the object)."""

    def __init__(self, image: Image.Image) -> None:
        self.image = image
        self.info: dict[str, Any] = {}
        self.shared = PostprocessedImageSharedInfo()
        self.extra_images: list[Image.Image] = []
        self.nametags: list[str] = []
        self.disable_processing = False
        self.caption: str | None = None

    def get_suffix(self, used_suffixes: set[str] | None = None) -> str:
        used = used_suffixes if used_suffixes is not None else set()
        suffix = "-".join(self.nametags)
        if suffix:
            suffix = "-" + suffix
        if suffix not in used:
            used.add(suffix)
            return suffix
        number = 1
        while f"{suffix}-{number}" in used:
            number += 1
        used.add(f"{suffix}-{number}")
        return f"{suffix}-{number}"

    def create_copy(self, new_image: Image.Image, nametags: list[str] | None = None,
                    disable_processing: bool = False) -> PostprocessedImage:
        copy = PostprocessedImage(new_image)
        copy.info = dict(self.info)
        copy.shared = self.shared
        copy.nametags = [*self.nametags, *(nametags or [])]
        copy.disable_processing = disable_processing
        copy.caption = self.caption
        return copy


class ScriptPostprocessing:
    filename: str | None = None
    controls: dict[str, Any] | None = None
    args_from: int | None = None
    args_to: int | None = None
    order = 1000
    """ordering in the Extras tab and of processing"""
    name: str | None = None
    """the script's title"""
    group = None
    """the gr.Group holding the script's UI"""

    def ui(self) -> dict[str, Any]:
        """Gradio components; {parameter name: component}. Their values are passed to `process` by name."""
        return {}

    def process(self, pp: PostprocessedImage, **args: Any) -> None:
        """Change `pp.image` / `pp.info`."""

    def process_firstpass(self, pp: PostprocessedImage, **args: Any) -> None:
        """Called for every script before any `process` (A1111 1.7+), e.g. to settle the target size."""

    def image_changed(self) -> None:
        pass


def wrap_call(func: Any, filename: str | None, funcname: str, *args: Any, default: Any = None,
              **kwargs: Any) -> Any:
    try:
        return func(*args, **kwargs)
    except Exception as e:
        errors.display(e, f"calling {filename}/{funcname}")
    return default


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


class ScriptPostprocessingRunner:
    def __init__(self) -> None:
        self.scripts: list[ScriptPostprocessing] | None = None
        self.ui_created = False
        self.args: list[Any] | None = None  # values for the next runs; None: the components' starting values

    def initialize_scripts(self, scripts_data: list[Any] | None = None) -> None:
        """One instance of each script class (`scripts_data`: A1111's records with `script_class` and `path`;
        default: every subclass defined by a loaded module)."""
        self.scripts = []
        if scripts_data is None:
            classes = [(cls, getattr(sys.modules.get(cls.__module__), "__file__", None))
                       for cls in _subclasses(ScriptPostprocessing)]
        else:
            classes = [(data.script_class, data.path) for data in scripts_data]
        seen: set[type] = set()
        for cls, path in classes:
            if cls in seen or cls.name in (None, "Simple Upscale"):
                continue  # an unnamed base class of an extension; upscaling itself is the core's
            seen.add(cls)
            try:
                script = cls()
            except Exception as e:
                errors.display(e, f"creating postprocessing script {cls.__name__}")
                continue
            script.filename = path
            self.scripts.append(script)
        self.ui_created = False

    def scripts_in_preferred_order(self) -> list[ScriptPostprocessing]:
        if self.scripts is None:
            self.initialize_scripts()
        order = list(getattr(shared.opts, "postprocessing_operation_order", []) or [])

        def score(indexed: tuple[int, ScriptPostprocessing]) -> tuple:
            index, script = indexed
            place = order.index(script.name) if script.name in order else len(order)
            return place, script.order, script.name, index

        return [script for _index, script in sorted(enumerate(self.scripts), key=score)]

    def create_script_ui(self, script: ScriptPostprocessing, inputs: list[Any]) -> None:
        script.args_from = len(inputs)
        script.controls = wrap_call(script.ui, script.filename, "ui") or {}
        for control in script.controls.values():
            control.custom_script_source = os.path.basename(script.filename or "")
        inputs += list(script.controls.values())
        script.args_to = len(inputs)

    def setup_ui(self) -> list[Any]:
        import gradio as gr

        inputs: list[Any] = []
        for script in self.scripts_in_preferred_order():
            with gr.Row() as group:
                self.create_script_ui(script, inputs)
            script.group = group
        self.ui_created = True
        return inputs

    def _ensure_ui(self) -> None:
        if not self.ui_created:
            import gradio as gr

            with gr.Blocks(analytics_enabled=False):
                self.setup_ui()

    def default_args(self) -> list[Any]:
        """The values every script's components start with."""
        self._ensure_ui()
        args: list[Any] = []
        for script in self.scripts_in_preferred_order():
            args += [getattr(control, "value", None) for control in (script.controls or {}).values()]
        return args

    def create_args_for_run(self, scripts_args: dict[str, dict[str, Any]]) -> list[Any]:
        """Args for `run` from {script name: {parameter name: value}} (others None), as A1111's API builds them."""
        self._ensure_ui()
        scripts = self.scripts_in_preferred_order()
        args: list[Any] = [None] * max((script.args_to or 0 for script in scripts), default=0)
        for script in scripts:
            values = scripts_args.get(script.name)
            if values is not None:
                for offset, name in enumerate(script.controls or {}):
                    args[script.args_from + offset] = values.get(name)
        return args

    def run(self, pp: PostprocessedImage, args: list[Any]) -> None:
        """Every script's `process_firstpass`, then every script's `process`, with its slice of `args`."""
        self._ensure_ui()
        scripts = self.scripts_in_preferred_order()
        calls = []
        for script in scripts:
            values = args[script.args_from:script.args_to]
            calls.append((script, dict(zip(script.controls or {}, values, strict=False))))
        for script, process_args in calls:
            script.process_firstpass(pp, **process_args)
        for script, process_args in calls:
            if pp.disable_processing:
                break
            shared.state.job = script.name or ""
            script.process(pp, **process_args)

    def image_changed(self) -> None:
        for script in self.scripts_in_preferred_order():
            script.image_changed()


_runner: ScriptPostprocessingRunner | None = None


def runner() -> ScriptPostprocessingRunner:
    """The application's runner (A1111's `scripts.scripts_postproc`)."""
    global _runner
    if _runner is None:
        _runner = ScriptPostprocessingRunner()
    return _runner


def reload() -> None:
    """Find the script classes again (after extensions' scripts are (re)loaded)."""
    runner().initialize_scripts()


def _on_extras_image(params: Any) -> None:
    """The `extras_image` hook: run the extensions' postprocessing scripts on one Extras image."""
    scripts_runner = runner()
    if not scripts_runner.scripts_in_preferred_order():
        return
    pp = PostprocessedImage(params.image)
    # the job's own values (an ExtrasRequest's `script_args`, set by the Extras tab), else the runner's, else defaults
    args = getattr(getattr(params, "request", None), "script_args", None)
    if args is None:
        args = scripts_runner.args if scripts_runner.args is not None else scripts_runner.default_args()
    scripts_runner.run(pp, args)
    params.image = pp.image
    params.info.update(pp.info)


def connect() -> bool:
    """Attach the scripts to the Extras job; False when the core has no `extras_image` point (yet)."""
    if "extras_image" not in hooks.POINTS:
        log.info("Extras postprocessing scripts cannot run: the core fires no extras_image hook")
        return False
    hooks.connect("extras_image", _on_extras_image)
    return True


connect()  # imported by the extensions that define such scripts (and by shared_items): they run from then on
