"""A1111's callback registry for extensions: `on_X(fn)` registers, `X_callback(...)` calls every registered function.

This module is an adapter: the core fires its own hook points (`modules.hooks`) and never imports it. At import,
one dispatcher per core point is connected there (`hooks.connect`), so the core's `hooks.fire("cfg_denoiser",
params)` runs every `on_cfg_denoiser` callback; the parameter classes are the core's, under A1111's names. The UI
calls the UI-only callbacks (`before_component`, `ui_tabs`, `ui_settings`, `infotext_pasted`, `before_reload` ...)
directly. The callbacks of features this WebUI does not have (`ui_train_tabs`, `list_optimizers`, `list_unets`)
are accepted, never called, and their registration is logged once with the registering file.

Each callback remembers the file that registered it (A1111's rule: the first stack frame outside this module), so
`remove_current_script_callbacks()` can drop one script's callbacks and an error names the culprit. A failing callback
is logged with its file and never propagates: one broken extension must not stop saving or sampling.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from modules import extension_guard, extension_status, hooks
from modules.hooks import (  # noqa: F401 (A1111's names for the core's parameter objects)
    AfterCFGCallbackParams,
    BeforeTokenCounterParams,
    CFGDenoisedParams,
    CFGDenoiserParams,
    ExtraNoiseParams,
    ImageGridLoopParams,
    ImageSaveParams,
)

log = logging.getLogger("webui")


@dataclass
class ScriptCallback:
    script: str                 # file that registered it
    callback: Callable[..., Any]
    name: str | None = None


@dataclass
class UiTrainTabParams:
    txt2img_preview_params: list[Any] = field(default_factory=list)


CALLBACK_NAMES = (
    "callbacks_app_started", "callbacks_model_loaded", "callbacks_ui_tabs", "callbacks_ui_train_tabs",
    "callbacks_ui_settings", "callbacks_before_image_saved", "callbacks_image_saved", "callbacks_extra_noise",
    "callbacks_cfg_denoiser", "callbacks_cfg_denoised", "callbacks_cfg_after_cfg", "callbacks_before_component",
    "callbacks_after_component", "callbacks_image_grid", "callbacks_infotext_pasted", "callbacks_script_unloaded",
    "callbacks_before_ui", "callbacks_on_reload", "callbacks_list_optimizers", "callbacks_list_unets",
    "callbacks_before_token_counter",
)
callback_map: dict[str, list[ScriptCallback]] = {name: [] for name in CALLBACK_NAMES}


def _caller_file() -> str:
    """The file of the first frame outside this module (the script that registered or removes callbacks)."""
    here = os.path.normcase(os.path.abspath(__file__))
    frame = inspect.currentframe()
    try:
        while frame is not None:
            filename = frame.f_code.co_filename
            if os.path.normcase(os.path.abspath(filename)) != here:
                return filename
            frame = frame.f_back
    finally:
        del frame
    return "unknown file"


def add_callback(callbacks: list[ScriptCallback], fun: Callable[..., Any], *, name: str | None = None,
                 filename: str | None = None) -> None:
    callbacks.append(ScriptCallback(filename or _caller_file(), fun, name))


def _run(kind: str, /, *args: Any, **kwargs: Any) -> list[Any]:
    """Call every callback of a kind; a failing one is logged with its file and skipped. Returns the results."""
    results = []
    for c in list(callback_map[f"callbacks_{kind}"]):
        if extension_status.is_incompatible_file(c.script):
            continue  # an incompatible extension's callback would only fail again (every step, for cfg ones)
        try:
            results.append(c.callback(*args, **kwargs))
        except Exception as e:
            log.exception("Error executing callback %s for %s (registered by %s)", c.name or
                          getattr(c.callback, "__name__", "?"), kind, c.script)
            _record_callback_failure(c, kind, e)
    return results


def has_callbacks(kind: str) -> bool:
    """Whether any callback of a kind is registered (lets hot loops skip building parameter objects)."""
    return bool(callback_map[f"callbacks_{kind}"])


def _record_callback_failure(callback: ScriptCallback, kind: str, error: BaseException) -> None:
    """An extension's failing callback shows in its status (incompatible when it needed an ldm internal)."""
    extension = extension_status.extension_name_of(callback.script) if os.path.isabs(callback.script) else None
    if not extension:
        return
    incompatible = extension_guard.incompatibility_in(error)
    if incompatible is not None:
        extension_status.mark_incompatible(extension, str(incompatible))
    else:
        extension_status.record_script_failure(
            extension, f"{os.path.basename(callback.script)} (on_{kind})", error)


def clear_callbacks() -> None:
    for callbacks in callback_map.values():
        callbacks.clear()


def remove_current_script_callbacks() -> None:
    """Remove every callback registered by the calling script file (A1111: used by scripts that reload)."""
    filename = _caller_file()
    if filename == "unknown file":
        return
    for callbacks in callback_map.values():
        callbacks[:] = [c for c in callbacks if c.script != filename]


def remove_callbacks_for_function(callback_func: Callable[..., Any]) -> None:
    for callbacks in callback_map.values():
        callbacks[:] = [c for c in callbacks if c.callback != callback_func]


# --- invokers (called by the application) ----------------------------------------------------------------------

def app_started_callback(demo: Any, app: Any) -> None:
    _run("app_started", demo, app)


def app_reload_callback() -> None:
    """The `on_before_reload` callbacks: the UI is about to restart (A1111's name)."""
    _run("on_reload")



def model_loaded_callback(sd_model: Any) -> None:
    _run("model_loaded", sd_model)


def ui_tabs_callback() -> list[tuple[Any, str, str]]:
    """Every extension tab as (blocks, title, elem_id); a callback's result may be None or a list of tabs."""
    tabs: list[tuple[Any, str, str]] = []
    for result in _run("ui_tabs"):
        tabs += result or []
    return tabs


def ui_train_tabs_callback(params: UiTrainTabParams) -> None:
    """Never called by this WebUI (it has no Train tab)."""
    _run("ui_train_tabs", params)


ui_settings_registered = False  # whether the on_ui_settings callbacks ran since the scripts (re)loaded


def ui_settings_callback() -> None:
    global ui_settings_registered
    _run("ui_settings")
    ui_settings_registered = True


def ensure_ui_settings() -> None:
    """Run the on_ui_settings callbacks once per load of the scripts, in every mode (UI or --nowebui), so that
    `shared.opts.<extension key>` exists wherever the extension's scripts run."""
    if not ui_settings_registered:
        ui_settings_callback()


def before_image_saved_callback(params: ImageSaveParams) -> None:
    _run("before_image_saved", params)


def image_saved_callback(params: ImageSaveParams) -> None:
    _run("image_saved", params)


def extra_noise_callback(params: ExtraNoiseParams) -> None:
    _run("extra_noise", params)


def cfg_denoiser_callback(params: CFGDenoiserParams) -> None:
    _run("cfg_denoiser", params)


def cfg_denoised_callback(params: CFGDenoisedParams) -> None:
    _run("cfg_denoised", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams) -> None:
    _run("cfg_after_cfg", params)


def before_component_callback(component: Any, **kwargs: Any) -> None:
    """`callback(component, **kwargs)` as A1111 calls it: the constructor's keyword arguments (elem_id, label ...)."""
    _run("before_component", component, **kwargs)


def after_component_callback(component: Any, **kwargs: Any) -> None:
    _run("after_component", component, **kwargs)


# --- the UI's components ---------------------------------------------------------------------------------------------
# A1111 patches Gradio's constructors so that every block of its UI is announced before and after it is made: to the
# scripts of the tab being built and to the on_before/after_component callbacks. Here the UI makes its blocks through
# `create_component` (`modules.ui.components.create`). It lives in this module, which both the UI and the script
# loader import, so that neither imports the other: the scripts are reached through a *router* that
# `modules.scripts` registers at import (for `scripts_current`).

ComponentRouter = Callable[[str, Any, dict[str, Any]], None]
"""`router(phase, component, kwargs)`: `phase` is "before" (the block's `__init__` has not run) or "after"."""
component_routers: dict[str, ComponentRouter] = {}
BlockT = TypeVar("BlockT")


def register_component_router(name: str, router: ComponentRouter) -> None:
    """Add (or replace, by name: a reloaded module registers again) a router of the UI's components."""
    component_routers[name] = router


def route_component(phase: str, component: Any, kwargs: dict[str, Any]) -> None:
    """Hand a component being made to every router; one that raises is logged and the UI is built on."""
    for name, router in list(component_routers.items()):
        try:
            router(phase, component, kwargs)
        except Exception:
            log.exception("Error routing the %s_component event to %s", phase, name)


def _by_name(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """`args` and `kwargs` as keyword arguments of `cls`, or None when the positional ones cannot be named."""
    if not args:
        return dict(kwargs)
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        return None
    named = parameters[:len(args)]
    if len(named) < len(args) or any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in named):
        return None
    if any(p.name in kwargs for p in named):
        return None  # the constructor will raise its own TypeError
    return {**{p.name: value for p, value in zip(named, args)}, **kwargs}


def create_component(cls: type[BlockT], *args: Any, **kwargs: Any) -> BlockT:
    """`cls(*args, **kwargs)` announced in A1111's order: the routers (the building tab's scripts), the
    on_before_component callbacks, the block is made, the on_after_component callbacks, the routers again.

    The callbacks get the constructor's arguments by name (positional ones too, so a Button's text is
    `kwargs["value"]`); before the block is made, `component` is the instance whose `__init__` has not run yet."""
    keywords = _by_name(cls, args, kwargs)
    if keywords is not None:
        args, kwargs = (), keywords
    # made in two steps so that before_component gets the instance, as A1111's patched __init__ does
    component = cls.__new__(cls)
    route_component("before", component, kwargs)
    before_component_callback(component, **kwargs)
    component.__init__(*args, **kwargs)
    after_component_callback(component, **kwargs)
    route_component("after", component, kwargs)
    return component


def image_grid_callback(params: ImageGridLoopParams) -> None:
    _run("image_grid", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]) -> None:
    _run("infotext_pasted", infotext, params)


def script_unloaded_callback() -> None:
    _run("script_unloaded")


def before_ui_callback() -> None:
    _run("before_ui")


def list_optimizers_callback() -> list[Any]:
    """Never called by this WebUI (no A1111 cross-attention optimisations to choose from)."""
    found: list[Any] = []
    _run("list_optimizers", found)
    return found


def list_unets_callback() -> list[Any]:
    """Never called by this WebUI (no UNet replacements)."""
    found: list[Any] = []
    _run("list_unets", found)
    return found


def before_token_counter_callback(params: BeforeTokenCounterParams) -> None:
    _run("before_token_counter", params)


# --- the core's hook points ---------------------------------------------------------------------------------------

class Dispatcher:
    """Listens to one core hook point and runs the callbacks registered for it; `has_listeners` lets the core's
    hot loops (every sampling step) skip building parameter objects while no extension registered one."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.__qualname__ = f"script_callbacks.Dispatcher({point})"  # what hooks' error log names

    def __call__(self, *args: Any) -> None:
        _run(self.point, *args)

    def has_listeners(self) -> bool:
        return has_callbacks(self.point)


# each core point and the A1111 callbacks it runs (same name)
HOOK_POINTS = ("before_image_saved", "image_saved", "image_grid", "extra_noise", "cfg_denoiser", "cfg_denoised",
               "cfg_after_cfg", "before_token_counter", "model_loaded")
dispatchers: dict[str, Dispatcher] = {point: Dispatcher(point) for point in HOOK_POINTS}
for _point, _dispatcher in dispatchers.items():
    hooks.connect(_point, _dispatcher)


# --- registration (called by extensions) -----------------------------------------------------------------------

def _register_unsupported(kind: str, callback: Callable[..., Any], name: str | None, missing: str) -> None:
    """Keep the callback (remove_* and the invoker still work) and say once, naming the file, that nothing calls
    it: an extension that relies on it then fails visibly in the log rather than silently."""
    filename = _caller_file()
    add_callback(callback_map[f"callbacks_{kind}"], callback, name=name, filename=filename)
    log.warning("on_%s registered by %s: %s; the callback will not be called", kind, _display_path(filename),
                missing)


def _display_path(path: str) -> str:
    """The path relative to the working directory when it is inside it (extensions/foo/scripts/x.py)."""
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return path if relative.startswith("..") else relative


def on_app_started(callback: Callable[[Any, Any], None], *, name: str | None = None) -> None:
    """`callback(demo, app)` once the Gradio app (and its FastAPI `app`) is running: add routes here."""
    add_callback(callback_map["callbacks_app_started"], callback, name=name)


def on_before_reload(callback: Callable[[], None], *, name: str | None = None) -> None:
    """`callback()` just before the server restarts ("Apply and restart UI"), before `script_unloaded`."""
    add_callback(callback_map["callbacks_on_reload"], callback, name=name)


def on_model_loaded(callback: Callable[[Any], None], *, name: str | None = None) -> None:
    """`callback(sd_model)` whenever a checkpoint has been loaded."""
    add_callback(callback_map["callbacks_model_loaded"], callback, name=name)


def on_ui_tabs(callback: Callable[[], list[tuple[Any, str, str]] | None], *, name: str | None = None) -> None:
    """`callback()` returns [(gr.Blocks, title, elem_id)]: extra top-level tabs."""
    add_callback(callback_map["callbacks_ui_tabs"], callback, name=name)


def on_ui_train_tabs(callback: Callable[[UiTrainTabParams], None], *, name: str | None = None) -> None:
    """Accepted and never called: this WebUI has no Train tab (logged once, with the registering file)."""
    _register_unsupported("ui_train_tabs", callback, name, "this WebUI has no Train tab")


def on_ui_settings(callback: Callable[[], None], *, name: str | None = None) -> None:
    """`callback()` before the settings tab is built: add options with `shared.opts.add_option(key, OptionInfo)`."""
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name)


def on_before_image_saved(callback: Callable[[ImageSaveParams], None], *, name: str | None = None) -> None:
    """`callback(params)` before an image is written; it may replace `params.image` or edit `params.pnginfo`."""
    add_callback(callback_map["callbacks_before_image_saved"], callback, name=name)


def on_image_saved(callback: Callable[[ImageSaveParams], None], *, name: str | None = None) -> None:
    """`callback(params)` after an image was written; `params.filename` is its path."""
    add_callback(callback_map["callbacks_image_saved"], callback, name=name)


def on_extra_noise(callback: Callable[[ExtraNoiseParams], None], *, name: str | None = None) -> None:
    """`callback(params)` in img2img before the noise is added to the encoded image: `params.noise` may be
    replaced."""
    add_callback(callback_map["callbacks_extra_noise"], callback, name=name)


def on_cfg_denoiser(callback: Callable[[CFGDenoiserParams], None], *, name: str | None = None) -> None:
    """`callback(params)` before every UNet call of the sampling loop."""
    add_callback(callback_map["callbacks_cfg_denoiser"], callback, name=name)


def on_cfg_denoised(callback: Callable[[CFGDenoisedParams], None], *, name: str | None = None) -> None:
    """`callback(params)` after every UNet call, before the guidance is combined."""
    add_callback(callback_map["callbacks_cfg_denoised"], callback, name=name)


def on_cfg_after_cfg(callback: Callable[[AfterCFGCallbackParams], None], *, name: str | None = None) -> None:
    """`callback(params)` after every step's guidance is combined, before the scheduler step."""
    add_callback(callback_map["callbacks_cfg_after_cfg"], callback, name=name)


def on_before_component(callback: Callable[..., None], *, name: str | None = None) -> None:
    """`callback(component, **kwargs)` before each component of the WebUI's own UI is created; `kwargs` are its
    constructor arguments: use `kwargs.get("elem_id")` / `label` to find one. Components created meanwhile (inside
    the current layout) appear right before it."""
    add_callback(callback_map["callbacks_before_component"], callback, name=name)


def on_after_component(callback: Callable[..., None], *, name: str | None = None) -> None:
    """`callback(component, **kwargs)` right after each component of the WebUI's own UI is created (see
    `on_before_component`); components created meanwhile appear right after it."""
    add_callback(callback_map["callbacks_after_component"], callback, name=name)


def on_image_grid(callback: Callable[[ImageGridLoopParams], None], *, name: str | None = None) -> None:
    """`callback(params)` before a grid is assembled: `params.imgs`, `cols`, `rows` may be changed."""
    add_callback(callback_map["callbacks_image_grid"], callback, name=name)


def on_infotext_pasted(callback: Callable[[str, dict[str, Any]], None], *, name: str | None = None) -> None:
    """`callback(infotext, params)` when an infotext is pasted into a tab (paste button, PNG info, send-to), after
    it is parsed and before the fields are filled: the callback may add, change or remove keys of `params`."""
    add_callback(callback_map["callbacks_infotext_pasted"], callback, name=name)


def on_script_unloaded(callback: Callable[[], None], *, name: str | None = None) -> None:
    """`callback()` before scripts are reloaded or the server restarts (free what the script holds)."""
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name)


def on_before_ui(callback: Callable[[], None], *, name: str | None = None) -> None:
    """`callback()` before the UI is built."""
    add_callback(callback_map["callbacks_before_ui"], callback, name=name)


def on_list_optimizers(callback: Callable[[list[Any]], None], *, name: str | None = None) -> None:
    """Accepted and never called: no A1111 cross-attention optimisations here (PyTorch SDPA is always used)."""
    _register_unsupported("list_optimizers", callback, name,
                          "this WebUI has no cross-attention optimisation choice (it always uses PyTorch SDPA)")


def on_list_unets(callback: Callable[[list[Any]], None], *, name: str | None = None) -> None:
    """Accepted and never called: this WebUI has no UNet replacements."""
    _register_unsupported("list_unets", callback, name, "this WebUI has no UNet replacements")


def on_before_token_counter(callback: Callable[[BeforeTokenCounterParams], None], *,
                            name: str | None = None) -> None:
    """`callback(params)` before the UI's token counter counts a prompt: `params.prompt` (and `steps`) may be
    rewritten, e.g. to count a wildcard's expansion; `is_positive` tells the prompt from the negative one."""
    add_callback(callback_map["callbacks_before_token_counter"], callback, name=name)
