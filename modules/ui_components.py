"""A1111's `modules.ui_components`, for extensions: thin subclasses of Gradio's components and layouts.

Each behaves exactly like the Gradio class it extends (and renders as it: `get_block_name` names the base), so an
extension's `with FormRow(): ...`, `ToolButton(value="🔄")` or `with InputAccordion(False, label="X") as enabled:`
builds here as in A1111. Differences:

- `FormRow`/`FormColumn`/`FormGroup`/`FormHTML`/`FormColorPicker` are plain `gr.Row`/`gr.Column`/... (A1111 also
  wraps their children in Gradio's compact `Form` style).
- `ToolButton` is a small button with the CSS class `tool` (no A1111 stylesheet here, so Gradio's small size is used).
- `InputAccordion` is a `gr.Checkbox` (its value is what the script receives, True/False) placed as the first child
  of a `gr.Accordion` that opens when the value is True; A1111 hides the checkbox and turns the accordion header
  into the switch with its own JavaScript, which this WebUI does not ship. `with InputAccordion(...)` adds the
  block's children to the accordion; `.extra()` gives a column inside it (A1111: in the header).

Nothing in the core uses this module. Gradio writes a `.pyi` stub beside the module of every component subclass it
sees; that is switched off while these classes are defined.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr


@contextlib.contextmanager
def _no_stub_files() -> Iterator[None]:
    """Keep Gradio's ComponentMeta from writing `modules/ui_components.pyi` (A1111 patches Gradio for the same)."""
    try:
        from gradio import component_meta
    except ImportError:  # a Gradio without it writes no stubs
        yield
        return
    original = getattr(component_meta, "create_or_modify_pyi", None)
    if original is None:
        yield
        return
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        component_meta.create_or_modify_pyi = original


def _with_class(kwargs: dict[str, Any], css_class: str) -> dict[str, Any]:
    classes = kwargs.pop("elem_classes", None) or []
    classes = [classes] if isinstance(classes, str) else list(classes)
    return {**kwargs, "elem_classes": [css_class, *classes]}


def _signature_of(base: type) -> Callable[[type], type]:
    """Report the Gradio base's constructor signature: Gradio reads a component's config (and the props of its
    updates) from the parameters of `type(component).__init__`, which a `**kwargs` constructor would hide."""

    def decorate(cls: type) -> type:
        cls.__init__.__signature__ = inspect.signature(base.__init__)
        return cls

    return decorate


class FormComponent:
    """A1111's marker base class of the form components (Gradio's behaviour is unchanged here)."""

    webui_do_not_create_gradio_pyi_thank_you = True


with _no_stub_files():

    class FormRow(FormComponent, gr.Row):
        """`gr.Row` (A1111: a row of form inputs)."""

        def get_block_name(self) -> str:
            return "row"

    class FormColumn(FormComponent, gr.Column):
        """`gr.Column`."""

        def get_block_name(self) -> str:
            return "column"

    class FormGroup(FormComponent, gr.Group):
        """`gr.Group`."""

        def get_block_name(self) -> str:
            return "group"

    @_signature_of(gr.Row)
    class ResizeHandleRow(gr.Row):
        """`gr.Row` with the CSS class `resize-handle-row` (A1111 makes its columns resizable; here it is a row)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**_with_class(kwargs, "resize-handle-row"))

        def get_block_name(self) -> str:
            return "row"

    @_signature_of(gr.Button)
    class ToolButton(FormComponent, gr.Button):
        """A small icon button (`gr.Button`, size "sm", CSS class `tool`), e.g. `ToolButton(value="🔄")`."""

        def __init__(self, value: Any = "", **kwargs: Any) -> None:
            kwargs.setdefault("size", "sm")
            super().__init__(value=value, **_with_class(kwargs, "tool"))

        def get_block_name(self) -> str:
            return "button"

    class FormHTML(FormComponent, gr.HTML):
        """`gr.HTML`."""

        def get_block_name(self) -> str:
            return "html"

    class FormColorPicker(FormComponent, gr.ColorPicker):
        """`gr.ColorPicker`."""

        def get_block_name(self) -> str:
            return "colorpicker"

    @_signature_of(gr.Dropdown)
    class DropdownMulti(FormComponent, gr.Dropdown):
        """`gr.Dropdown(multiselect=True)`."""

        def __init__(self, choices: Any = None, value: Any = None, **kwargs: Any) -> None:
            super().__init__(choices=choices, value=value, **{**kwargs, "multiselect": True})

        def get_block_name(self) -> str:
            return "dropdown"

    @_signature_of(gr.Dropdown)
    class DropdownEditable(FormComponent, gr.Dropdown):
        """`gr.Dropdown(allow_custom_value=True)`."""

        def __init__(self, choices: Any = None, value: Any = None, **kwargs: Any) -> None:
            super().__init__(choices=choices, value=value, **{**kwargs, "allow_custom_value": True})

        def get_block_name(self) -> str:
            return "dropdown"

    @_signature_of(gr.Checkbox)
    class InputAccordion(gr.Checkbox):
        """A checkbox that is also an accordion: `with InputAccordion(False, label="My ext") as enabled:` (see the
        module docstring). Its value (the checkbox) is the script argument; children go into the accordion."""

        global_index = 0

        def __init__(self, value: Any = False, **kwargs: Any) -> None:
            self.accordion_id = kwargs.get("elem_id")
            if self.accordion_id is None:
                self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
                InputAccordion.global_index += 1
            label = kwargs.get("label") or "Accordion"
            self.accordion = gr.Accordion(label=label, open=bool(value), elem_id=self.accordion_id,
                                          elem_classes=["input-accordion"], visible=kwargs.get("visible", True))
            with self.accordion:
                super().__init__(value=value, **{**kwargs, "label": label,
                                                 "elem_id": f"{self.accordion_id}-checkbox"})

        def extra(self) -> gr.Column:
            """A column for extra controls (A1111: in the accordion's header; here: where it is created)."""
            return gr.Column(elem_id=f"{self.accordion_id}-extra", elem_classes="input-accordion-extra", min_width=0)

        def __enter__(self) -> InputAccordion:
            self.accordion.__enter__()
            return self

        def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
            self.accordion.__exit__(exc_type, exc_val, exc_tb)

        def get_block_name(self) -> str:
            return "checkbox"
