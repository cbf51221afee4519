"""A1111's Gradio 3 idioms on the installed Gradio, and `before_component` / `after_component` for every block.

Most extensions were written for the Gradio 3 that A1111 shipped. `install()` (idempotent; `modules.ui` calls it
at import, before any extension script loads) teaches the installed Gradio those forms:

- `gr.Checkbox.update(value=…, visible=…)` (any block): a classmethod returning `gr.update(…)`.
- event listeners and `.then` / `.success` / `.failure`: `_js=` → `js=`, `show_progress=True/False` →
  "full"/"hidden", `api_name=False` → a private endpoint, `show_api=False` → undocumented, `_preprocess` /
  `_postprocess` → `preprocess` / `postprocess`; `every=` and `status_tracker=` are dropped (they no longer exist
  on listeners).
- `component.style(…)`: returns the component; `grid`/`columns`, `rows`, `height`, `width`, `size`, `container`,
  `preview`, `object_fit`, `equal_height` are applied where the block has that property, the rest (`full_width`,
  `rounded`, `margin`, `border`, `mobile_collapse` …) is ignored.
- `gr.Box` is `gr.Group`, `gr.Variable` is `gr.State`, `gr.components.IOComponent` is `Component`.
- constructor arguments: `source="upload"` → `sources=["upload"]` (`"canvas"` → `["upload"]`); Gradio 3's image
  editing arguments (`tool=`, `shape=`, `brush_radius=`, `brush_color=`, `mask_opacity=`, `invert_colors=`,
  `mirror_webcam=`) are dropped: an image with `tool="sketch"` is a plain image input (its value is the image, not
  Gradio 3's `{"image", "mask"}` dict; drawing a mask needs `gr.ImageEditor`); `tooltip=` becomes `info=` where the
  component has one and is dropped elsewhere; `show_copy_button=` / `show_download_button=` /
  `show_share_button=` / `show_fullscreen_button=` become `buttons=[…]`; `gr.Button(variant="tool")` (and other
  variants Gradio no longer has) is a small secondary button; `gr.File(type="file")` is `type="filepath"` (the
  value is a path string); `gr.Dataframe(max_rows=, overflow_row_behaviour=)` are dropped.

Every block also gets Gradio 3's class `gradio-<name>` (`gradio-textbox`, `gradio-accordion` …) for the extension
scripts and stylesheets that select by it.

Component announcements: A1111 patches `Component.__init__` and `BlockContext.__init__` so that every block made
while the UI is built is announced to the scripts of the tab being built and to the `on_before_component` /
`on_after_component` callbacks, with the constructor's keyword arguments (`elem_id`, `label`, `value` …). The same
is done here for the blocks extensions make themselves; the WebUI's own blocks are announced by
`script_callbacks.create_component` (`modules.ui.components.create`), so a router registered here marks those and
the patched constructor leaves them alone: nothing is announced twice. Not announced: the `Form` blocks Gradio
wraps around form fields itself when a `Blocks` closes (nobody asked for them; they have no elem_id), and
components an event function returns as an update (Gradio 3 returned `gr.X.update` dicts there, not blocks).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
import gradio.blocks
import gradio.components
import gradio.events
import gradio.layouts
from gradio.context import Context, LocalContext

from modules import extension_guard, script_callbacks

log = logging.getLogger("webui.gradio_extensions")

SUPPORTED_GRADIO3_FORMS = (
    "gr.<Component>.update(", "gr.X.update(", "_js=", ".style(", "gr.Box", "gr.Variable", "source=", "tool=",
    "tooltip=", "shape=", "brush_radius=", "brush_color=", "mask_opacity=", "invert_colors=", "mirror_webcam=",
    "show_copy_button=", "show_download_button=", "show_share_button=", "show_fullscreen_button=",
    "variant=\"tool\"", "type=\"file\"", "max_rows=", "overflow_row_behaviour=", "show_progress=False",
    "show_progress=True", "api_name=False", "show_api=", "status_tracker=", "_preprocess=", "_postprocess=",
    "every=", "gr.components.IOComponent",
)
"""The Gradio 3 forms that work here (the extension checker reads this)."""

# Gradio 3 constructor arguments that have no counterpart: dropped when the component does not take them
DROPPED_CONSTRUCTOR_ARGS = frozenset({"tool", "shape", "brush_radius", "brush_color", "mask_opacity",
                                      "invert_colors", "mirror_webcam", "max_rows", "overflow_row_behaviour",
                                      "show_edit_button", "tooltip"})
BUTTON_FLAGS = {"show_copy_button": "copy", "show_download_button": "download", "show_share_button": "share",
                "show_fullscreen_button": "fullscreen"}
BUTTON_VARIANTS = ("primary", "secondary", "stop", "huggingface")
STYLE_PROPERTIES = {"grid": "columns", "columns": "columns", "rows": "rows", "height": "height", "width": "width",
                    "size": "size", "container": "container", "preview": "preview", "object_fit": "object_fit",
                    "equal_height": "equal_height"}

_MARK = "_webui_announced_by_create"  # set on a block that create_component announces itself
_ANNOUNCED = "_webui_announced"  # set on a block once its constructor announced it
_installed = False


# --- constructor arguments ------------------------------------------------------------------------------------------

@functools.cache
def _parameters(init: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword names `init` takes; None when it takes any (**kwargs)."""
    try:
        parameters = inspect.signature(init).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)


def translate_constructor_kwargs(accepted: frozenset[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Gradio 3 constructor arguments as the installed Gradio's, for a constructor taking `accepted` names."""
    if accepted is None:
        return kwargs
    out = dict(kwargs)
    if "source" in out and "source" not in accepted and "sources" in accepted:
        source = out.pop("source")
        out.setdefault("sources", None if source is None else ["upload" if source == "canvas" else source])
    if "tooltip" in out and "tooltip" not in accepted and "info" in accepted and out.get("info") is None:
        out["info"] = out.pop("tooltip")
    flags = {name: out.pop(name) for name in BUTTON_FLAGS if name in out and name not in accepted}
    if flags and "buttons" in accepted and out.get("buttons") is None:
        out["buttons"] = [BUTTON_FLAGS[name] for name, shown in flags.items() if shown]
    if "variant" in out and "variant" in accepted and "size" in accepted and out["variant"] not in BUTTON_VARIANTS:
        if out["variant"] == "tool":
            out.setdefault("size", "sm")
        out["variant"] = "secondary"
    if out.get("type") == "file" and "file_count" in accepted:
        out["type"] = "filepath"
    # Gradio 3 ignored arguments a component does not take (with a warning): gr.Tab(open=False), gr.Blocks(variant=…)
    # in extensions; this program's own code keeps Gradio's error for a mistyped argument
    from_extension = extension_guard.calling_extension() is not None
    dropped = [name for name in out if name not in accepted and (from_extension or name in DROPPED_CONSTRUCTOR_ARGS)]
    for name in dropped:
        del out[name]
    if dropped:
        log.debug("Gradio 3 arguments without a counterpart here, ignored: %s", ", ".join(sorted(dropped)))
    if "render_children" in accepted and "render_children" not in out:
        # Gradio 3 put every tab's content in the page (hidden); extension scripts look elements of other tabs up
        out["render_children"] = True
    if out.get("visible") is False and "visible" in accepted and from_extension:
        # likewise an extension's invisible component: in the page, hidden, as Gradio 3 had it (its scripts read it)
        out["visible"] = "hidden"
    return out


def _announced_kwargs(init: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The constructor's arguments by name, positional ones too (A1111's callbacks read `kwargs["value"]`)."""
    if not args:
        return dict(kwargs)
    try:
        bound = inspect.signature(init).bind_partial(None, *args, **kwargs)
    except TypeError:
        return dict(kwargs)
    named = {name: value for name, value in list(bound.arguments.items())[1:]}
    extra = named.pop("kwargs", None)
    return {**named, **(extra if isinstance(extra, dict) else {})}


def _patch_init(cls: type, announce: bool) -> None:
    original = cls.__dict__["__init__"]
    if getattr(original, "_webui_patched", False):
        return
    accepted = _parameters(original)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs = translate_constructor_kwargs(accepted, kwargs)
        if (not announce or self.__dict__.get(_MARK, False) or self.__dict__.get(_ANNOUNCED, False)
                or type(self) is gradio.layouts.Form  # Gradio's own wrapper around form fields, made at the end
                or LocalContext.in_event_listener.get(False)):  # a component returned as an update, not a block
            original(self, *args, **kwargs)
        else:
            announced = _announced_kwargs(original, args, kwargs)
            # announced once: a block that is both a BlockContext and a Component (gr.HTML runs both wrapped
            # constructors one after the other) is one block
            self.__dict__[_ANNOUNCED] = True
            script_callbacks.route_component("before", self, announced)
            script_callbacks.before_component_callback(self, **announced)
            original(self, *args, **kwargs)
            script_callbacks.after_component_callback(self, **announced)
            script_callbacks.route_component("after", self, announced)
        if announce:
            _add_gradio3_class(self)

    __init__._webui_patched = True  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]


def _add_gradio3_class(block: Any) -> None:
    """Gradio 3 gave every block the class `gradio-<name>` (`.gradio-dropdown`, `.gradio-accordion` …), which
    extension scripts and stylesheets select; the installed Gradio does not, so it is added to `elem_classes`."""
    if isinstance(block, gradio.blocks.Blocks | gradio.layouts.Form) or not hasattr(block, "elem_classes"):
        return
    name = f"gradio-{block.get_block_name()}"
    classes = block.elem_classes
    classes = [classes] if isinstance(classes, str) else list(classes or [])
    if name not in classes:
        block.elem_classes = [*classes, name]


def _mark_created_blocks(phase: str, component: Any, kwargs: dict[str, Any]) -> None:
    """Router: create_component announces this block itself, so its constructor must not (see module doc)."""
    # kept for the whole of create_component's constructor call: a class such as gr.HTML runs several wrapped
    # constructors (BlockContext's, then Component's), none of which may announce the block again
    if phase == "before" and not component.__dict__.get(_ANNOUNCED, False):
        component.__dict__[_MARK] = True
    elif phase == "after":
        component.__dict__.pop(_MARK, None)


# --- event listeners ------------------------------------------------------------------------------------------------

def translate_listener_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Gradio 3 event-listener arguments as the installed Gradio's."""
    out = dict(kwargs)
    if "_js" in out:
        js = out.pop("_js")
        out.setdefault("js", js)
    for old, new in (("_preprocess", "preprocess"), ("_postprocess", "postprocess")):
        if old in out:
            out.setdefault(new, out.pop(old))
    if isinstance(out.get("show_progress"), bool):
        out["show_progress"] = "full" if out["show_progress"] else "hidden"
    if out.get("api_name") is False:
        out["api_name"] = None
        out.setdefault("api_visibility", "private")
    if "show_api" in out:
        if out.pop("show_api") is False:
            out.setdefault("api_visibility", "undocumented")
    if "queue" in out and out["queue"] is None:
        out["queue"] = True
    for dropped in ("every", "status_tracker"):
        out.pop(dropped, None)
    return out


def _wrap_listener(listener: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(listener, "_webui_patched", False):
        return listener

    @functools.wraps(listener)
    def event_trigger(*args: Any, **kwargs: Any) -> Any:
        return listener(*args, **translate_listener_kwargs(kwargs))

    event_trigger._webui_patched = True  # type: ignore[attr-defined]
    return event_trigger


def _patch_listener_factory() -> None:
    """Listeners made from now on (`.then`, `.success`, classes defined later) translate too."""
    setup = gradio.events.EventListener._setup
    if getattr(setup, "_webui_patched", False):
        return

    @functools.wraps(setup)
    def patched_setup(*args: Any, **kwargs: Any) -> Callable[..., Any]:
        return _wrap_listener(setup(*args, **kwargs))

    patched_setup._webui_patched = True  # type: ignore[attr-defined]
    gradio.events.EventListener._setup = staticmethod(patched_setup)  # type: ignore[method-assign]


# --- classmethods and aliases ---------------------------------------------------------------------------------------

def _gradio3_update(cls: type, value: Any = ..., **kwargs: Any) -> dict[str, Any]:
    """`gr.Textbox.update("text", visible=True)`: Gradio 3's per-class update is `gr.update`."""
    if value is not ...:
        kwargs["value"] = value
    return gr.update(**kwargs)


def _gradio3_style(self: Any, **kwargs: Any) -> Any:
    """`component.style(grid=4, height="auto")`: what maps is set on the block; returns the block."""
    for name, value in kwargs.items():
        target = STYLE_PROPERTIES.get(name)
        if target is None or not hasattr(self, target):
            continue
        if target == "columns" and isinstance(value, list | tuple):
            value = value[-1] if value else None
        if target in ("height", "width") and value == "auto":
            value = None
        setattr(self, target, value)
    return self


def _all_block_classes() -> Iterator[type]:
    seen: set[type] = set()
    stack = [gradio.blocks.Block]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
                yield sub


def outside_blocks(build: Callable[[], Any]) -> Any:
    """Call `build` as if no Blocks were being built: Blocks it makes are top-level ones, not rendered into the
    enclosing layout (A1111 builds extension tabs apart and renders them into the page afterwards)."""
    saved = Context.block, Context.root_block
    Context.block = Context.root_block = None
    try:
        return build()
    finally:
        Context.block, Context.root_block = saved


def install() -> None:
    """Teach the installed Gradio A1111's Gradio 3 forms and announce every block made (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    block = gradio.blocks.Block
    block.update = classmethod(_gradio3_update)  # type: ignore[attr-defined]
    block.style = _gradio3_style  # type: ignore[attr-defined]
    for alias, target in (("Box", gr.Group), ("Variable", gr.State)):
        if not hasattr(gr, alias):
            setattr(gr, alias, target)
    if not hasattr(gradio.components, "IOComponent"):
        gradio.components.IOComponent = gradio.components.Component  # type: ignore[attr-defined]
    _patch_listener_factory()
    for cls in [block, *_all_block_classes()]:
        if "update" in cls.__dict__ and cls is not block:
            cls.update = classmethod(_gradio3_update)  # type: ignore[attr-defined]  # Row's takes only visible
        for name, attribute in list(cls.__dict__.items()):
            if callable(attribute) and hasattr(attribute, "event_name"):
                setattr(cls, name, _wrap_listener(attribute))
        if "__init__" in cls.__dict__ and cls.__module__.startswith("gradio."):
            _patch_init(cls, announce=cls in (gradio.components.Component, gradio.blocks.BlockContext))
    script_callbacks.register_component_router("gradio_extensions", _mark_created_blocks)
