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

The factory is `script_callbacks.create_component`, which the script loader uses too (its dropdown and groups):
the scripts are reached through a router that `modules.scripts` registers for `scripts_current` when it is imported,
so neither `modules.ui` nor `modules.scripts` imports the other.
"""

from __future__ import annotations

from modules.script_callbacks import create_component

__all__ = ["create"]

# the UI's name for it (`create(gr.Slider, 1, 150, label=…, elem_id=…)`)
create = create_component
