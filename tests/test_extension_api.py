"""A1111's extension-facing surface beyond Script/run: the remaining Script hooks on real jobs, the cfg_after_cfg and
infotext_pasted callbacks, extensions' preload.py flags, the A1111 class names for isinstance checks,
`shared.sd_model`, and the adapter modules (paths, ui_components, infotext_utils). Tiny demo model, 64x64, 2 steps."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from modules import cmd_args, processing, script_callbacks, scripts
from modules.processing import Job

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}
REPO_ROOT = Path(__file__).resolve().parents[1]

RECORDER = '''
import dataclasses

import gradio as gr
from PIL import ImageOps

from modules import processing, scripts, shared

calls = []   # hook names (with details) in call order
kinds = []   # what process() saw: (is txt2img, is img2img, p.sd_model is shared.sd_model, shared.sd_model is set)


class Recorder(scripts.Script):
    def title(self):
        return "Recorder"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Checkbox(label="Invert", value=False)]

    def setup(self, p, invert):
        calls.append("setup")

    def before_process(self, p, invert):
        calls.append("before_process")

    def process(self, p, invert):
        calls.append("process")
        p.recorder_was_here = True  # extensions add attributes to p; the hires pass must cope
        kinds.append((isinstance(p, processing.StableDiffusionProcessingTxt2Img),
                      isinstance(p, processing.StableDiffusionProcessingImg2Img),
                      p.sd_model is shared.sd_model, shared.sd_model is not None))

    def before_process_batch(self, p, invert, **kwargs):
        calls.append("before_process_batch")

    def process_batch(self, p, invert, **kwargs):
        calls.append("process_batch")

    def process_before_every_sampling(self, p, invert, **kwargs):
        calls.append(("process_before_every_sampling", p.is_hr_pass, tuple(kwargs["x"].shape[-2:]), sorted(kwargs)))

    def before_hr(self, p, invert):
        calls.append(("before_hr", p.is_hr_pass))

    def post_sample(self, p, ps, invert):
        calls.append(("post_sample", tuple(ps.samples.shape[-2:])))

    def postprocess_batch(self, p, invert, **kwargs):
        calls.append("postprocess_batch")

    def postprocess_batch_list(self, p, pp, invert, **kwargs):
        calls.append(("postprocess_batch_list", len(pp.images), kwargs.get("batch_number")))
        if invert:
            pp.images = [ImageOps.invert(image.convert("RGB")) for image in pp.images]

    def postprocess_image(self, p, pp, invert):
        calls.append("postprocess_image")

    def postprocess(self, p, processed, invert):
        calls.append("postprocess")


class Twice(scripts.Script):
    """A selectable script that runs the job twice: setup() must still run once."""

    def title(self):
        return "Twice"

    def run(self, p):
        calls.append("run")
        results = [processing.process_images(dataclasses.replace(p, seed=p.seed + i)) for i in range(2)]
        return scripts.merge_processed(p, results)
'''


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture
def recorder(app, tmp_path):
    """The app with the recorder extension loaded; yields its script module. Afterwards only built-ins stay."""
    folder = tmp_path / "extensions" / "recorder-ext" / "scripts"
    folder.mkdir(parents=True)
    (folder / "recorder.py").write_text(RECORDER)
    scripts.load_scripts(extension_dirs=[str(folder.parent)])
    assert scripts.load_errors == []
    (module,) = {d.module for d in scripts.scripts_data if d.path.endswith("recorder.py")}
    yield module
    scripts.load_scripts(extension_dirs=[])


def _attach(runner: scripts.ScriptRunner, job: Job, invert: bool = False, selected: str | None = None) -> Job:
    args = runner.default_args()
    script = next(s for s in runner.alwayson_scripts if s.title() == "Recorder")
    args[script.args_from] = invert
    if selected:
        args[0] = runner.titles.index(selected) + 1
    runner.attach(job, args)
    return job


def test_hook_order_on_a_hires_job_and_batch_list_replacement(app, recorder):
    runner = scripts.scripts_txt2img
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 2, "denoising_strength": 0.6}
    plain = app.run_job(_attach(runner, Job(**SMALL, **hires, prompt="a cat", seed=5)))
    f = 64 // recorder.calls[5][2][0]  # the latent scale factor of the model
    first, second = (64 // f, 64 // f), (96 // f, 96 // f)
    kwargs = ["c", "noise", "uc", "x"]
    assert recorder.calls == [
        "setup", "before_process", "process", "before_process_batch", "process_batch",
        ("process_before_every_sampling", False, first, kwargs),
        ("before_hr", True),
        ("process_before_every_sampling", True, second, kwargs),
        ("post_sample", second),
        "postprocess_batch", ("postprocess_batch_list", 1, 0), "postprocess_image", "postprocess",
    ]
    assert plain.images[0].size == (96, 96)

    recorder.calls.clear()
    inverted = app.run_job(_attach(runner, Job(**SMALL, **hires, prompt="a cat", seed=5), invert=True))
    assert np.array_equal(_pixels(inverted.images[0]), 255 - _pixels(plain.images[0]))
    (saved,) = inverted.saved_files
    assert np.array_equal(_pixels(Image.open(saved)), _pixels(inverted.images[0]))  # what is saved is the new list

    # a selectable script running two jobs: setup() once, before the script's run()
    recorder.calls.clear()
    processed = app.run_job(_attach(runner, Job(**SMALL, prompt="a cat", seed=5), selected="Twice"))
    assert len(processed.images) == 2
    names = [c if isinstance(c, str) else c[0] for c in recorder.calls]
    assert names[:2] == ["setup", "run"] and names.count("setup") == 1 and names.count("before_process") == 2
    assert names.count("post_sample") == 2 and "before_hr" not in names


def test_img2img_hooks_and_a1111_class_names(app, recorder):
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    runner = scripts.scripts_img2img
    processed = app.run_job(_attach(runner, Job(**SMALL, prompt="p", seed=2, init_images=[init],
                                                  denoising_strength=0.5)))
    assert len(processed.images) == 1
    names = [c if isinstance(c, str) else c[0] for c in recorder.calls]
    assert names.count("process_before_every_sampling") == 1 and names.count("post_sample") == 1
    app.run_job(_attach(scripts.scripts_txt2img, Job(**SMALL, prompt="p", seed=2)))
    assert recorder.kinds == [(False, True, True, True), (True, False, True, True)]

    txt, img = Job(**SMALL), Job(**SMALL, init_images=[init])
    base = processing.StableDiffusionProcessing
    t2i, i2i = processing.StableDiffusionProcessingTxt2Img, processing.StableDiffusionProcessingImg2Img
    assert isinstance(txt, base) and isinstance(img, base) and not isinstance("job", base)
    assert isinstance(txt, t2i) and not isinstance(txt, i2i)
    assert isinstance(img, i2i) and not isinstance(img, t2i)
    assert issubclass(i2i, Job) and issubclass(t2i, base)

    # an extension building its own job with A1111's keyword arguments
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    job = i2i(sd_model=object(), prompt="p", seed=3, init_images=[init], mask=mask, mask_blur=0, styles=None,
              restore_faces=False, denoising_strength=0.5, **SMALL)
    assert job.image_mask is mask and job.styles == [] and job.restore_faces is False
    assert isinstance(job, i2i) and not isinstance(job, t2i)
    result = app.run_job(job).images[0]
    outside = np.asarray(mask) == 0
    assert np.array_equal(_pixels(result)[outside], _pixels(init)[outside])  # a real inpainting job
    assert not np.array_equal(_pixels(result)[~outside], _pixels(init)[~outside])
    assert job.sd_model is None  # outside a run the job holds no model


def test_shared_sd_model_is_the_current_model(app):
    assert app.sd_model is app.models.current
    model = app.models.get()
    assert model is not None and app.sd_model is model
    with pytest.raises(AttributeError):
        app.no_such_attribute  # noqa: B018


def test_cfg_after_cfg_sees_every_step_and_a_failing_callback_is_harmless(app, caplog):
    seen: list[tuple[int, int, tuple]] = []

    def after_cfg(params: script_callbacks.AfterCFGCallbackParams) -> None:
        seen.append((params.sampling_step, params.total_sampling_steps, tuple(params.x.shape)))
        params.x = params.x * 1.0

    def broken(params: script_callbacks.AfterCFGCallbackParams) -> None:
        raise RuntimeError("after-cfg failure")

    script_callbacks.on_cfg_after_cfg(broken)
    script_callbacks.on_cfg_after_cfg(after_cfg)
    try:
        with_callbacks = app.run_job(Job(**SMALL, prompt="p", seed=4, do_not_save_samples=True))
    finally:
        script_callbacks.remove_current_script_callbacks()
    assert [s[:2] for s in seen] == [(0, 2), (1, 2)] and seen[0][2][0] == 1  # one guided row per image
    assert "after-cfg failure" in caplog.text
    plain = app.run_job(Job(**SMALL, prompt="p", seed=4, do_not_save_samples=True))
    assert np.array_equal(_pixels(with_callbacks.images[0]), _pixels(plain.images[0]))


def test_infotext_pasted_callback_can_change_pasted_values(caplog):
    from modules.ui import paste

    text = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64"
    seen = []

    def edit(infotext: str, params: dict) -> None:
        seen.append(infotext)
        params["Steps"] = "7"
        params["Prompt"] = params["Prompt"] + ", pasted"

    def broken(infotext: str, params: dict) -> None:
        raise KeyError("paste failure")

    assert paste.infotext_values(text)["steps"] == 20
    script_callbacks.on_infotext_pasted(broken)
    script_callbacks.on_infotext_pasted(edit)
    try:
        values = paste.infotext_values(text)
    finally:
        script_callbacks.remove_current_script_callbacks()
    assert seen == [text]
    assert values["steps"] == 7 and values["prompt"] == "a cat, pasted" and values["seed"] == 5
    assert "paste failure" in caplog.text


PRELOAD = '''
import os

from modules import paths


def preload(parser):
    parser.add_argument("--my-flag", action="store_true", help="my extension's flag")
    parser.add_argument("--my-ext-dir", default=os.path.join(paths.models_path, "MyExt"))
'''


def _write(path: Path, code: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))


def test_preload_adds_flags_and_broken_preloads_are_logged(tmp_path, caplog):
    _write(tmp_path / "extensions" / "my-ext" / "preload.py", PRELOAD)
    _write(tmp_path / "extensions" / "a-broken" / "preload.py", "def preload(parser):\n    raise RuntimeError('x')\n")
    _write(tmp_path / "extensions" / "b-import" / "preload.py", "import no_such_module_here\n")
    _write(tmp_path / "extensions" / "c-exit" / "preload.py", "import sys\nsys.exit(3)\n")
    _write(tmp_path / "extensions" / "d-noop" / "preload.py", "X = 1\n")  # no preload(): nothing to call

    with caplog.at_level(logging.ERROR):
        args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--my-flag"], environ={})
    assert args.my_flag is True
    assert args.my_ext_dir == os.path.join(str(tmp_path), "models", "MyExt")  # paths follow --data-dir in preload
    for name in ("a-broken", "b-import", "c-exit"):
        assert any(name in r.getMessage() and "preload(parser) failed" in r.getMessage() for r in caplog.records)
    assert args.data_dir == str(tmp_path) and args.api is False  # the rest of start-up is unaffected

    env = cmd_args.parse_args(["--data-dir", str(tmp_path)], environ={"COMMANDLINE_ARGS": "--my-flag"})
    assert env.my_flag is True
    assert cmd_args.parse_args(["--data-dir", str(tmp_path)], environ={}).my_flag is False


@pytest.mark.parametrize("how", ["--disable-extra-extensions", "--disable-all-extensions", "setting"])
def test_preload_of_disabled_extensions_is_not_run(tmp_path, how, capsys):
    _write(tmp_path / "extensions" / "my-ext" / "preload.py", PRELOAD)
    flags = ["--data-dir", str(tmp_path)]
    if how == "setting":
        (tmp_path / "config.json").write_text(json.dumps({"disabled_extensions": ["my-ext"]}))
    else:
        flags.append(how)
    assert not hasattr(cmd_args.parse_args(flags, environ={}), "my_flag")
    with pytest.raises(SystemExit):
        cmd_args.parse_args([*flags, "--my-flag"], environ={})
    assert "unrecognized arguments: --my-flag" in capsys.readouterr().err


def test_paths_follow_the_flags(app, tmp_path):
    from modules import paths, paths_internal
    from modules.paths import data_path, models_path

    assert data_path == paths.data_path == paths_internal.data_path == str(tmp_path)
    assert models_path == paths.models_path == str(tmp_path / "models") == app.cmd_opts.models_dir
    assert paths.extensions_dir == str(tmp_path / "extensions")
    assert paths.default_output_dir == str(tmp_path / "outputs")
    assert paths.script_path == paths_internal.script_path == str(REPO_ROOT) == paths.sd_path
    assert paths.extensions_builtin_dir == str(REPO_ROOT / "extensions-builtin")
    assert paths.modules_path == str(REPO_ROOT / "modules") and os.path.isdir(paths.sd_configs_path)
    assert paths.paths == {} and "models_path" in dir(paths)
    with pytest.raises(AttributeError):
        paths.no_such_path  # noqa: B018


def test_ui_components_build_inside_blocks():
    from modules import ui_components as uc

    with gr.Blocks() as demo:
        with uc.FormRow(), uc.FormColumn(), uc.FormGroup():
            button = uc.ToolButton(value="\U0001f504", elem_id="my_refresh")
        with uc.ResizeHandleRow():
            multi = uc.DropdownMulti(["a", "b"], value=["a"])
        with uc.InputAccordion(True, label="My ext") as enabled:
            inner = gr.Textbox(label="Suffix")
        button.click(lambda on, text: text, inputs=[enabled, inner], outputs=[inner])
    config = demo.get_config_file()
    types = {c["id"]: c["type"] for c in config["components"]}
    assert types[button._id] == "button" and types[enabled._id] == "checkbox" and types[multi._id] == "dropdown"
    props = {c["id"]: c["props"] for c in config["components"]}
    assert props[button._id]["value"] == "\U0001f504" and "tool" in props[button._id]["elem_classes"]
    assert props[enabled._id]["value"] is True and props[enabled._id]["label"] == "My ext"
    assert props[enabled.accordion._id]["open"] is True and multi.multiselect is True
    assert isinstance(enabled, gr.Checkbox) and isinstance(button, gr.Button)

    def inside(block, container) -> bool:
        while block is not None:
            if block is container:
                return True
            block = block.parent
        return False

    assert inside(inner, enabled.accordion) and inside(enabled, enabled.accordion)
    assert not (REPO_ROOT / "modules" / "ui_components.pyi").exists()  # Gradio's stub writer stayed off


def test_infotext_utils_is_ours_with_a1111_names(app):
    from modules import generation_parameters_copypaste, infotext, infotext_utils

    text = "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64, Clip skip: 2, ENSD: 31337"
    assert infotext_utils.parse_generation_parameters is infotext.parse_generation_parameters
    assert infotext_utils.parse_generation_parameters(text) == infotext.parse_generation_parameters(text)
    assert generation_parameters_copypaste is infotext_utils
    assert infotext_utils.create_override_settings_dict(["Clip skip: 2", "ENSD: 31337", "Nonsense: 1"]) == {
        "CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337}
    overrides = infotext_utils.get_override_settings(infotext.parse_generation_parameters(text))
    assert ("Clip skip", "CLIP_stop_at_last_layers", 2) in overrides
    field = infotext_utils.PasteField("component", "Steps", api="steps")
    assert tuple(field) == ("component", "Steps") and field.api == "steps" and field.label == "Steps"
    infotext_utils.add_paste_fields("my_tab", None, [("component", "Seed")])
    try:
        assert infotext_utils.paste_fields["my_tab"]["fields"][0].label == "Seed"
        binding = infotext_utils.ParamBinding(paste_button=None, tabname="txt2img")
        infotext_utils.register_paste_params_button(binding)
        assert infotext_utils.registered_param_bindings[-1] is binding
    finally:
        infotext_utils.paste_fields.pop("my_tab", None)
        infotext_utils.registered_param_bindings.clear()
