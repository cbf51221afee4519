"""A1111's Gradio 3 idioms on the installed Gradio (modules/gradio_extensions.py), and the component announcements
for blocks that extensions make themselves. Plain Gradio objects and their config: no server, no browser."""

from __future__ import annotations

import gradio as gr
import pytest

from modules import gradio_extensions, script_callbacks, scripts

gradio_extensions.install()


@pytest.fixture
def announced():
    """Every after_component announcement while the test runs: (class name, elem_id, value)."""
    seen: list[tuple[str, str | None, object]] = []

    def record(component, **kwargs):
        seen.append((type(component).__name__, kwargs.get("elem_id"), kwargs.get("value")))

    script_callbacks.on_after_component(record)
    yield seen
    script_callbacks.remove_callbacks_for_function(record)


def _dependencies(demo: gr.Blocks) -> list[dict]:
    return demo.get_config_file()["dependencies"]


def test_install_is_idempotent_and_the_forms_are_listed():
    before = (gr.Checkbox.__init__, gr.Button.click)
    gradio_extensions.install()
    assert (gr.Checkbox.__init__, gr.Button.click) == before  # not wrapped twice
    assert gr.Checkbox.__init__._webui_patched and gr.Button.click._webui_patched
    assert gradio_extensions.SUPPORTED_GRADIO3_FORMS == tuple(gradio_extensions.SUPPORTED_GRADIO3_FORMS)
    for census_form in ("gr.<Component>.update(", "_js=", ".style(", "gr.Box", "source=", "tool=", "tooltip="):
        assert census_form in gradio_extensions.SUPPORTED_GRADIO3_FORMS


def test_class_update_is_gr_update():
    assert gr.Checkbox.update(value=True, visible=False) == {"__type__": "update", "value": True, "visible": False}
    assert gr.Textbox.update("text") == {"__type__": "update", "value": "text"}
    assert gr.Dropdown.update(choices=["a", "b"]) == {"__type__": "update", "choices": ["a", "b"]}
    assert gr.Row.update(visible=False) == {"__type__": "update", "visible": False}
    assert gr.Accordion.update(open=True) == {"__type__": "update", "open": True}


def test_listener_arguments_are_translated():
    with gr.Blocks() as demo:
        button, box = gr.Button("Go"), gr.Textbox()
        button.click(fn=None, _js="() => 1", inputs=[], outputs=[box], show_progress=False, api_name=False) \
            .then(fn=lambda: "x", _js="() => 2", outputs=[box], _preprocess=False)
        box.change(fn=lambda v: v, inputs=[box], outputs=[box], show_api=False, every=1.0, status_tracker=None)
        demo.load(fn=None, _js="() => 3")
    first, then, change, load = _dependencies(demo)
    assert (first["js"], first["show_progress"], first["api_visibility"]) == ("() => 1", "hidden", "private")
    assert (then["js"], then["trigger_after"]) == ("() => 2", 0)
    assert change["api_visibility"] == "undocumented"
    assert load["js"] == "() => 3"


def test_style_applies_what_maps_and_returns_the_block():
    with gr.Blocks():
        gallery = gr.Gallery()
        assert gallery.style(grid=[2, 4], height="auto", rounded=True) is gallery
        assert (gallery.columns, gallery.height) == (4, None)
        button = gr.Button("b").style(full_width=True, size="sm")
        assert button.size == "sm"
        with gr.Row().style(equal_height=True) as row:
            pass
        assert row.equal_height is True
        assert gr.Textbox().style(container=False).container is False


def test_box_and_variable_aliases():
    assert gr.Box is gr.Group and gr.Variable is gr.State
    assert gr.components.IOComponent is gr.components.Component
    with gr.Blocks():
        with gr.Box(elem_id="a_box") as box:
            inner = gr.Button()
    assert isinstance(box, gr.Group) and inner in box.children


def test_constructor_arguments_are_translated():
    with gr.Blocks():
        image = gr.Image(source="upload", tool="sketch", type="pil", shape=(512, 512), brush_radius=4,
                         mask_opacity=0.5, invert_colors=False, mirror_webcam=True)
        canvas = gr.Image(source="canvas")
        audio = gr.Audio(source="microphone", type="filepath")
        video = gr.Video(source="upload")
        tool_button = gr.Button("🔄", variant="tool", tooltip="Refresh")
        textbox = gr.Textbox(label="t", tooltip="Help text", show_copy_button=True)
        file = gr.File(type="file")
        table = gr.Dataframe(max_rows=5, overflow_row_behaviour="paginate")
    assert (image.sources, image.type) == (["upload"], "pil")
    assert canvas.sources == ["upload"]
    assert audio.sources == ["microphone"] and video.sources == ["upload"]
    assert (tool_button.variant, tool_button.size) == ("secondary", "sm")
    assert (textbox.info, textbox.buttons) == ("Help text", ["copy"])
    assert file.type == "filepath"
    assert isinstance(table, gr.Dataframe)


def test_unknown_arguments_still_raise():
    with gr.Blocks(), pytest.raises(TypeError):
        gr.Checkbox(not_an_argument=1)


def test_translation_table_directly():
    accepted = frozenset({"value", "sources", "info", "buttons", "variant", "size"})
    out = gradio_extensions.translate_constructor_kwargs(accepted, {"source": "webcam", "tool": "x",
                                                                    "tooltip": "t", "variant": "tool"})
    assert out == {"sources": ["webcam"], "info": "t", "variant": "secondary", "size": "sm"}
    assert gradio_extensions.translate_constructor_kwargs(None, {"tool": 1}) == {"tool": 1}  # takes **kwargs
    assert gradio_extensions.translate_listener_kwargs({"_js": "f", "show_progress": True, "queue": None}) == {
        "js": "f", "show_progress": "full", "queue": True}


def test_every_block_an_extension_makes_is_announced_once(announced):
    with gr.Blocks():
        with gr.Row(elem_id="ext_row"):
            gr.Checkbox(True, label="c", elem_id="ext_checkbox")
            gr.Button("Click me", elem_id="ext_button")
        script_callbacks.create_component(gr.Textbox, label="own", elem_id="webui_textbox")
    ids = [elem_id for _, elem_id, _ in announced if elem_id]
    assert ids == ["ext_row", "ext_checkbox", "ext_button", "webui_textbox"]  # create_component's: once
    assert ("Checkbox", "ext_checkbox", True) in announced  # positional arguments are named
    assert ("Button", "ext_button", "Click me") in announced


def test_before_component_gets_the_block_before_it_is_made():
    states: list[bool] = []

    def before(component, **kwargs):
        if kwargs.get("elem_id") == "ext_before":
            states.append(hasattr(component, "_id"))

    script_callbacks.on_before_component(before)
    try:
        with gr.Blocks():
            gr.Slider(1, 10, elem_id="ext_before")
    finally:
        script_callbacks.remove_callbacks_for_function(before)
    assert states == [False]


def test_after_component_adds_a_block_right_after_an_extension_block():
    def add_after(component, **kwargs):
        if kwargs.get("elem_id") == "ext_anchor":
            gr.HTML("added", elem_id="ext_added")

    script_callbacks.on_after_component(add_after)
    try:
        with gr.Blocks(), gr.Column() as column:
            gr.Button(elem_id="ext_anchor")  # buttons: Gradio wraps form fields in a Form block
            gr.Button(elem_id="ext_last")
    finally:
        script_callbacks.remove_callbacks_for_function(add_after)
    assert [child.elem_id for child in column.children] == ["ext_anchor", "ext_added", "ext_last"]


def test_the_building_tabs_scripts_see_extension_blocks():
    class Watcher(scripts.Script):
        def __init__(self):
            self.seen: list[tuple[str, str]] = []

        def title(self):
            return "Watcher"

        def before_component(self, component, **kwargs):
            self.seen.append(("before", kwargs.get("elem_id")))

        def after_component(self, component, **kwargs):
            self.seen.append(("after", kwargs.get("elem_id")))

    watcher = Watcher()
    runner = scripts.ScriptRunner()
    runner.scripts.append(watcher)
    with scripts.current_runner(runner), gr.Blocks():
        gr.Number(elem_id="ext_number")
    assert [entry for entry in watcher.seen if entry[1] == "ext_number"] == [("before", "ext_number"),
                                                                            ("after", "ext_number")]


def test_gradio3_forms_the_installed_gradio_still_takes():
    with gr.Blocks():
        with gr.Row(variant="compact", elem_classes="a-row") as row, gr.Column(variant="panel") as column:
            dropdown = gr.Dropdown(["a", "b"], value="b", type="index")
            radio = gr.Radio(["x", "y"], value="x", type="index")
            textbox = gr.Textbox(lines=3, elem_classes="prompt")
            html = gr.HTML("hidden", visible=False)
            image = gr.Image(type="numpy", shape=(64, 64))
    assert (row.variant, column.variant) == ("compact", "panel")
    assert dropdown.preprocess("b") == 1 and radio.preprocess("y") == 1  # the index, as in Gradio 3
    assert textbox.lines == 3 and "prompt" in textbox.elem_classes and "a-row" in row.elem_classes
    assert html.visible is False and image.type == "numpy"


def test_blocks_get_gradio3_class_names():
    with gr.Blocks():
        with gr.Accordion("Settings") as accordion:
            textbox = gr.Textbox(elem_classes="prompt")
            button = script_callbacks.create_component(gr.Button, "x", elem_classes=["tool"])
    assert accordion.elem_classes == ["gradio-accordion"]
    assert textbox.elem_classes == ["prompt", "gradio-textbox"]
    assert button.elem_classes == ["tool", "gradio-button"]


def test_components_returned_by_an_event_function_are_not_announced(announced):
    from gradio.context import LocalContext

    token = LocalContext.in_event_listener.set(True)  # what Gradio sets while it runs an event's function
    try:
        gr.Textbox(value="new value", elem_id="returned_update")
    finally:
        LocalContext.in_event_listener.reset(token)
    assert not any(elem_id == "returned_update" for _, elem_id, _ in announced)
