"""Create the WebUI's own Gradio blocks so that extensions see them being made (A1111's component callbacks).

A1111 patches Gradio's constructors so that every component and layout block is announced, before and after it is
created, to the scripts of the tab being built (`Script.before_component` / `after_component` and the elem_id
callbacks of `Script.on_before_component` / `on_after_component`) and to `script_callbacks.on_before_component` /
`on_after_component`. Extensions use this to put their own controls next to a known one (`txt2img_generate`,
`txt2img_seed` …) or to change it. Gradio is not patched here: the UI modules build their blocks through `create`
(`create(gr.Slider, 1, 150, label=…, elem_id=…)`), which announces them in A1111's order:

    scripts_current.before_component → on_before_component callbacks → the block is made
    → on_after_component callbacks → scripts_current.after_component

Callbacks get `(component, **kwargs)` with the constructor's arguments by name (positional ones too, so a
Button's text is `kwargs["value"]`), and run inside the layout being built, so what they create lands right before
or after the block. Before the block is made, `component` is the instance whose `__init__` has not run yet (as in
A1111). Blocks that extensions create themselves (in `ui()`, in a callback) are not announced.

The scripts are reached through `script_callbacks.route_component` (`modules.scripts` registers a router for
`scripts_current` when it is imported), so this module does not import the script loader: no import circle.
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from modules import script_callbacks

BlockT = TypeVar("BlockT")

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


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


def announce_before(component: Any, kwargs: dict[str, Any]) -> None:
    """Before the block is made: the routers (the building tab's scripts), then the on_before_component callbacks."""
    script_callbacks.route_component("before", component, kwargs)
    script_callbacks.before_component_callback(component, **kwargs)


def announce_after(component: Any, kwargs: dict[str, Any]) -> None:
    """After the block is made: the on_after_component callbacks, then the routers (A1111's order, mirrored)."""
    script_callbacks.after_component_callback(component, **kwargs)
    script_callbacks.route_component("after", component, kwargs)


def create(cls: type[BlockT], *args: Any, **kwargs: Any) -> BlockT:
    """`cls(*args, **kwargs)` announced to extensions before and after it is made (see the module docstring)."""
    keywords = _by_name(cls, args, kwargs)
    if keywords is not None:
        args, kwargs = (), keywords
    # made in two steps so that before_component gets the instance, as A1111's patched __init__ does
    component = cls.__new__(cls)
    announce_before(component, kwargs)
    component.__init__(*args, **kwargs)
    announce_after(component, kwargs)
    return component
