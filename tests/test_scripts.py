"""A1111's script API on the demo model: extension discovery, args slicing, always-on hooks, selectable built-ins
(Prompt matrix, Prompts from file), script_callbacks, and the Script dropdown of the txt2img/img2img tabs."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from modules import script_callbacks, scripts
from modules.processing import Job
from tests.servers import free_port

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}

# A1111's minimal extension, made testable: an always-on script that inverts the image when its checkbox is on.
INVERT_EXTENSION = '''
import gradio as gr
from PIL import ImageOps

from modules import processing, script_callbacks, scripts, shared


class InvertScript(scripts.Script):
    def title(self):
        return "Invert colours"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Invert colours", open=False):
            enabled = gr.Checkbox(label="Invert", value=False, elem_id=self.elem_id("enabled"))
            note = gr.Textbox(label="Note", value="negative")
        return [enabled, note]

    def process(self, p, enabled, note):
        if enabled:
            p.extra_generation_params["Inverted"] = note

    def postprocess_image(self, p, pp, enabled, note):
        if enabled:
            pp.image = ImageOps.invert(pp.image.convert("RGB"))
'''


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def write_extension(data_dir: Path, name: str, files: dict[str, str]) -> Path:
    folder = data_dir / "extensions" / name / "scripts"
    folder.mkdir(parents=True, exist_ok=True)
    for filename, code in files.items():
        (folder / filename).write_text(textwrap.dedent(code))
    return folder.parent


@pytest.fixture
def script_env(app):
    """The app with scripts loaded from its data dir's extensions; afterwards only the built-ins stay loaded."""
    yield app
    scripts.load_scripts(extension_dirs=[])


def build_tabs() -> gr.Blocks:
    from modules.ui import img2img, txt2img

    with gr.Blocks() as demo:
        txt2img.create_tab((64, 64))
        img2img.create_tab((64, 64))
    return demo


def scripted_job(runner: scripts.ScriptRunner, values: dict[int, object] | None = None, **fields) -> Job:
    """A job with the runner attached and the UI's default script values, some replaced (index -> value)."""
    job = Job(**{**SMALL, "prompt": "a red circle", "seed": 3, **fields})
    args = runner.default_args()
    for index, value in (values or {}).items():
        args[index] = value
    runner.attach(job, args)
    return job


def test_extension_script_is_discovered_and_inverts_exactly(script_env, tmp_path):
    write_extension(tmp_path, "invert-ext", {"invert.py": INVERT_EXTENSION})
    scripts.load_scripts()
    assert scripts.load_errors == []
    runner = scripts.scripts_txt2img
    invert = next(s for s in runner.alwayson_scripts if s.title() == "Invert colours")
    assert invert.filename.endswith("invert-ext/scripts/invert.py") and invert.is_txt2img and not invert.is_img2img
    assert scripts.scripts_img2img.alwayson_scripts[0].is_img2img

    demo = build_tabs()
    # A1111's layout: [dropdown] + always-on scripts' components + selectable scripts' components
    assert runner.inputs[0].elem_id == "script_list"
    assert runner.inputs[0].choices[0][0] == "None"
    assert [c[0] for c in runner.inputs[0].choices][1:] == runner.titles
    assert {"Prompt matrix", "Prompts from file or textbox"} <= set(runner.titles)
    # always-on scripts' slices follow the dropdown, one after another (the built-in FreeU's included)
    alwayson = runner.alwayson_scripts
    assert alwayson[0].args_from == 1 and all(a.args_to == b.args_from for a, b in zip(alwayson, alwayson[1:]))
    start = invert.args_from
    assert invert.args_to == start + 2
    enabled, note = runner.inputs[start:start + 2]
    assert isinstance(enabled, gr.Checkbox) and enabled.elem_id == "script_txt2img_invert_colours_enabled"
    assert isinstance(note, gr.Textbox) and note.value == "negative"
    assert enabled in demo.blocks.values()
    selectable = runner.selectable_scripts
    assert selectable[0].args_from == alwayson[-1].args_to and selectable[-1].args_to == len(runner.inputs)
    assert all(a.args_to == b.args_from for a, b in zip(selectable, selectable[1:]))
    # choosing a script in the dropdown shows only that script's group
    (select,) = [f.fn for f in demo.fns.values() if [*f.inputs] == [runner.inputs[0]]]
    assert [g.visible for g in select(2)] == [i == 1 for i in range(len(selectable))]
    assert not any(g.visible for g in select(0))
    assert all(s.group.visible is False for s in selectable) and invert.group.visible is True

    plain = script_env.run_job(Job(**SMALL, prompt="a red circle", seed=3))
    off = script_env.run_job(scripted_job(runner, {start: False}))
    on = script_env.run_job(scripted_job(runner, {start: True, start + 1: "flipped"}))
    assert np.array_equal(_pixels(off.images[0]), _pixels(plain.images[0]))
    assert off.infotexts == plain.infotexts
    assert np.array_equal(_pixels(on.images[0]), 255 - _pixels(plain.images[0]))
    assert "Inverted: flipped" in on.infotexts[0] and "Inverted" not in plain.infotexts[0]
    saved = Image.open(on.saved_files[0])
    assert np.array_equal(_pixels(saved), _pixels(on.images[0]))
    assert saved.text["parameters"] == on.infotexts[0]


def test_broken_scripts_are_reported_and_the_app_keeps_working(script_env, tmp_path, caplog):
    write_extension(tmp_path, "broken-ext", {
        "import_error.py": "raise RuntimeError('boom at import')\n",
        "broken_hook.py": '''
            import gradio as gr
            from modules import scripts

            class BrokenHook(scripts.Script):
                def title(self):
                    return "Broken hook"

                def show(self, is_img2img):
                    return scripts.AlwaysVisible

                def ui(self, is_img2img):
                    return [gr.Checkbox(label="On", value=True)]

                def process(self, p, on):
                    raise ValueError("hook exploded")

                def postprocess(self, p, processed, on):
                    raise KeyError("late failure")
            ''',
        "broken_ui.py": '''
            from modules import scripts

            class BrokenUi(scripts.Script):
                def title(self):
                    return "Broken UI"

                def ui(self, is_img2img):
                    raise RuntimeError("no UI today")
            ''',
    })
    scripts.load_scripts()
    (path, error), = scripts.load_errors
    assert path.endswith("import_error.py") and "boom at import" in error
    assert any("import_error.py" in r.getMessage() for r in caplog.records)
    runner = scripts.scripts_txt2img
    assert "Broken UI" in runner.titles

    build_tabs()  # the failing ui() is logged; the tab is still built
    assert any("broken_ui.py" in r.getMessage() for r in caplog.records)
    broken_ui = next(s for s in runner.selectable_scripts if s.title() == "Broken UI")
    assert broken_ui.args_from == broken_ui.args_to

    processed = script_env.run_job(scripted_job(runner))
    assert len(processed.images) == 1 and len(processed.saved_files) == 1
    messages = "\n".join(processed.comments)
    assert "process of script 'Broken hook'" in messages and "broken_hook.py" in messages
    assert "hook exploded" in messages and "late failure" in messages
    assert any("broken_hook.py" in r.getMessage() for r in caplog.records)


def test_prompt_matrix_makes_every_combination_and_a_grid(script_env):
    scripts.load_scripts(extension_dirs=[])
    runner = scripts.scripts_txt2img
    matrix = runner.selectable_scripts[runner.titles.index("Prompt matrix")]
    index = runner.selectable_scripts.index(matrix) + 1
    processed = script_env.run_job(scripted_job(runner, {0: index}, prompt="a|red|blue", seed=7))
    assert len(processed.images) == 5 and processed.index_of_first_image == 1
    prompts = [text.splitlines()[0] for text in processed.infotexts[1:]]
    assert prompts == ["a", "a, red", "a, blue", "a, red, blue"]
    assert all("Seed: 7," in text for text in processed.infotexts)  # same seed for every picture by default
    grid = processed.images[0]
    assert grid.width > 128 and grid.height > 128  # 2x2 cells of 64 plus the legends
    assert any("txt2img-grids" in path for path in processed.saved_files)

    different = script_env.run_job(scripted_job(runner, {0: index, matrix.args_from: True, matrix.args_from + 1: True},
                                                prompt="a|red|blue", seed=7))
    assert different.all_prompts == ["a", "red, a", "blue, a", "red, blue, a"]  # variable parts at the start
    assert different.all_seeds == [7, 8, 9, 10]


def test_prompts_from_file_lines_set_the_job_fields(script_env):
    scripts.load_scripts(extension_dirs=[])
    runner = scripts.scripts_txt2img
    runner.ensure_ui()  # without a tab, a throwaway Blocks gives the inputs and their slices
    script = runner.selectable_scripts[runner.titles.index("Prompts from file or textbox")]
    index = runner.selectable_scripts.index(script) + 1
    text = '--prompt "a blue square" --negative_prompt "red" --seed 5 --steps 2 --cfg_scale 6.5\nplain line here\n'
    job = scripted_job(runner, {0: index, script.args_from + 3: text}, prompt="", seed=11, steps=3)
    processed = script_env.run_job(job)
    assert len(processed.images) == 2
    first, second = processed.infotexts
    assert first.startswith("a blue square\nNegative prompt: red\nSteps: 2, ")
    assert "Seed: 5," in first and "CFG scale: 6.5," in first
    assert second.startswith("plain line here\nSteps: 3, ") and "Seed: 11," in second
    assert processed.all_seeds == [5, 11] and len(processed.saved_files) == 2


def test_prompts_from_file_parses_a1111_options(script_env):
    import sys

    scripts.load_scripts(extension_dirs=[])
    runner = scripts.scripts_txt2img
    script = runner.selectable_scripts[runner.titles.index("Prompts from file or textbox")]
    cmdargs = sys.modules[type(script).__module__].cmdargs
    assert cmdargs('--prompt a fluffy cat --seed 5 --sampler_name "k_euler_a" --width 96') == {
        "prompt": "a fluffy cat", "seed": 5, "sampler_name": "Euler a", "width": 96}
    assert cmdargs('--sampler_name "DPM++ 2M Karras" --do_not_save_samples true') == {
        "sampler_name": "DPM++ 2M", "scheduler": "Karras", "do_not_save_samples": True}
    with pytest.raises(ValueError, match="unknown commandline option"):
        cmdargs("--bogus 1")
    with pytest.raises(ValueError, match="missing argument"):
        cmdargs("--steps")


SLICING_EXTENSION = '''
import gradio as gr
from modules import processing, scripts

received = {}


class TwoInputs(scripts.Script):
    def title(self):
        return "Two inputs"

    def ui(self, is_img2img):
        return [gr.Checkbox(label="a", value=True), gr.Number(label="b", value=2)]

    def run(self, p, *args):
        received["two"] = args
        return processing.process_images(p)


class ThreeInputs(scripts.Script):
    def title(self):
        return "Three inputs"

    def ui(self, is_img2img):
        return [gr.Textbox(label="c", value="x"), gr.Slider(label="d", value=4), gr.Textbox(label="e", value="y")]

    def run(self, p, c, d, e):
        received["three"] = (c, d, e)
        return processing.process_images(p)


class OnlyImg2img(scripts.Script):
    def title(self):
        return "Only img2img"

    def show(self, is_img2img):
        return is_img2img
'''


def test_args_slicing_with_two_selectable_scripts(script_env, tmp_path):
    import sys

    write_extension(tmp_path, "slicing", {"slicing.py": SLICING_EXTENSION})
    scripts.load_scripts()
    runner = scripts.scripts_txt2img
    build_tabs()
    two = next(s for s in runner.selectable_scripts if s.title() == "Two inputs")
    three = next(s for s in runner.selectable_scripts if s.title() == "Three inputs")
    assert two.args_to - two.args_from == 2 and three.args_to - three.args_from == 3
    assert three.args_from == two.args_to  # same file, declaration order
    assert "Only img2img" not in runner.titles and "Only img2img" in scripts.scripts_img2img.titles
    module = sys.modules[type(two).__module__]

    values = runner.default_args()
    values[0] = runner.selectable_scripts.index(three) + 1
    values[three.args_from:three.args_to] = ["c!", 9, "e!"]
    job = Job(**SMALL, prompt="p", seed=1)
    runner.attach(job, values)
    processed = script_env.run_job(job)
    assert module.received == {"three": ("c!", 9, "e!")} and len(processed.images) == 1
    assert job.script_args == values

    # by title, as the API's script_name; an older client's short argument list gets the defaults
    job = Job(**SMALL, prompt="p", seed=1)
    runner.attach(job, ["Two inputs"])
    script_env.run_job(job)
    assert module.received["two"] == (True, 2)
    with pytest.raises(ValueError, match="Unknown script"):
        job = Job(**SMALL, prompt="p", seed=1)
        runner.attach(job, ["No such script"])
        script_env.run_job(job)


def test_image_saving_callbacks_see_the_file_and_a_failing_one_is_harmless(app):
    seen: dict[str, list] = {"before": [], "after": []}

    def before(params: script_callbacks.ImageSaveParams) -> None:
        seen["before"].append(params.filename)
        params.pnginfo["extension"] = "was here"

    def after(params: script_callbacks.ImageSaveParams) -> None:
        seen["after"].append((params.filename, params.p.seed))

    def broken(params: script_callbacks.ImageSaveParams) -> None:
        raise RuntimeError("callback failure")

    script_callbacks.on_before_image_saved(broken)
    script_callbacks.on_before_image_saved(before)
    script_callbacks.on_image_saved(after, name="recorder")
    try:
        processed = app.run_job(Job(**SMALL, prompt="p", seed=21))
        (path,) = processed.saved_files
        assert seen["after"] == [(path, 21)]
        assert seen["before"] and Path(path).parent.parent == Path(seen["before"][0])  # folder/<date>/file
        assert Image.open(path).text["extension"] == "was here"
        assert Image.open(path).text["parameters"] == processed.infotexts[0]
        callbacks = script_callbacks.callback_map["callbacks_image_saved"]
        assert callbacks[-1].script == __file__ and callbacks[-1].name == "recorder"

        script_callbacks.remove_callbacks_for_function(broken)
        assert all(c.callback is not broken for c in script_callbacks.callback_map["callbacks_before_image_saved"])
    finally:
        script_callbacks.remove_current_script_callbacks()
    assert not any(c.script == __file__ for cs in script_callbacks.callback_map.values() for c in cs)
    app.run_job(Job(**SMALL, prompt="p", seed=22))
    assert len(seen["after"]) == 1


def test_cfg_denoiser_callbacks_see_every_step(app):
    steps: list[tuple[int, int, tuple]] = []

    def denoiser(params: script_callbacks.CFGDenoiserParams) -> None:
        steps.append((params.sampling_step, params.total_sampling_steps, tuple(params.x.shape)))
        assert params.text_cond.shape[0] == params.text_uncond.shape[0] == 1

    def denoised(params: script_callbacks.CFGDenoisedParams) -> None:
        params.x = params.x * 1.0

    script_callbacks.on_cfg_denoiser(denoiser)
    script_callbacks.on_cfg_denoised(denoised)
    try:
        with_callbacks = app.run_job(Job(**SMALL, prompt="p", seed=4, do_not_save_samples=True))
    finally:
        script_callbacks.remove_current_script_callbacks()
    assert [s[:2] for s in steps] == [(0, 2), (1, 2)] and steps[0][2][0] == 2  # cond + uncond rows
    plain = app.run_job(Job(**SMALL, prompt="p", seed=4, do_not_save_samples=True))
    assert np.array_equal(_pixels(with_callbacks.images[0]), _pixels(plain.images[0]))


def test_tabs_through_gradio_client_old_arguments_and_the_script_dropdown(script_env, tmp_path):
    from gradio_client import Client, handle_file

    write_extension(tmp_path, "invert-ext", {"invert.py": INVERT_EXTENSION})
    scripts.load_scripts()
    demo = build_tabs()
    demo.queue()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
    try:
        client = Client(f"http://127.0.0.1:{port}", verbose=False)
        # the 12 arguments older clients send; every later input (scripts included) takes its default
        gallery, info, _ = client.predict("a red circle", "", "Euler", "Automatic", 2, 7, 3, 64, 64, 1, 1, [],
                                          api_name="/txt2img")
        assert len(gallery) == 1 and "Seed: 3," in info and "Inverted" not in info

        runner = scripts.scripts_txt2img
        base = ["a|red|blue", "", "Euler", "Automatic", 2, 7, 3, 64, 64, 1, 1, [], False, "Latent", 0, 0.7, 2, 0, 0,
                "Use same sampler", "Use same scheduler", "", "", -1, 0, 0, 0]
        values = [c.value for c in runner.inputs]
        values[0] = "Prompt matrix"
        invert = next(s for s in runner.alwayson_scripts if s.title() == "Invert colours")
        # the always-on extension, on, still applies to every image of the script
        values[invert.args_from:invert.args_to] = [True, "ui"]
        # a gr.State (a built-in ControlNet unit) is no client parameter: the server keeps its value
        values = [v for v, c in zip(values, runner.inputs) if not isinstance(c, gr.State)]
        gallery, info, _ = client.predict(*base, *values, api_name="/txt2img")
        assert len(gallery) == 5
        assert info.startswith("a\n") and "Inverted: ui" in info

        init = tmp_path / "init.png"
        Image.new("RGB", (64, 64), (30, 120, 200)).save(init)
        gallery, info, _ = client.predict(
            "img2img", handle_file(str(init)), None, None, None, None, "a yellow circle", "", "Euler", "Automatic",
            2, 7, 0.75, 5, 64, 64, 1, 1, "Just resize", 4, "Inpaint masked", "original", "Whole picture", 32,
            api_name="/img2img")
        assert len(gallery) == 1 and "Seed: 5," in info and "Inverted" not in info
    finally:
        demo.close()


SIBLING_PACKAGE_EXTENSION = {
    "lib_sibling/__init__.py": "",
    "lib_sibling/core.py": '''
        from modules import scripts

        MARK = "from the sibling package"


        class SiblingScript(scripts.Script):
            def title(self):
                return "Sibling script"

            def show(self, is_img2img):
                return scripts.AlwaysVisible

            def process(self, p, *args):
                p.extra_generation_params["Sibling"] = MARK
    ''',
    "scripts/entry.py": '''
        from lib_sibling.core import SiblingScript  # noqa: F401 (A1111 registers imported Script classes too)
    ''',
}


def test_extension_imports_its_own_sibling_package_and_its_imported_script_is_registered(script_env, tmp_path):
    folder = tmp_path / "extensions" / "sibling-ext"
    for name, code in SIBLING_PACKAGE_EXTENSION.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(code))
    path_before = list(sys.path)
    scripts.load_scripts()
    assert scripts.load_errors == []
    assert sys.path == path_before  # the folder was on sys.path only while the extension's script imported
    sibling = [s for s in scripts.scripts_txt2img.alwayson_scripts if s.title() == "Sibling script"]
    assert len(sibling) == 1 and sibling[0].filename.endswith("sibling-ext/scripts/entry.py")
    processed = script_env.run_job(scripted_job(scripts.scripts_txt2img, do_not_save_samples=True))
    assert "Sibling: from the sibling package" in processed.infotexts[0]


def test_fix_seed_and_get_fixed_seed_as_a1111_scripts_call_them():
    from modules import processing

    job = Job(seed=-1, subseed=7)
    processing.fix_seed(job)
    assert job.seed >= 0 and job.subseed == 7
    assert processing.get_fixed_seed(12) == 12 and processing.get_fixed_seed("") >= 0
