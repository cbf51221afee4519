"""A1111's module-level names that extensions use from devices, images, shared, util, call_queue, errors, upscaler,
face_restoration, interrogate/deepbooru, timer, progress and the shared_* modules: each through what it does."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from modules import devices, images


def _stripes(width: int = 100, height: int = 50) -> Image.Image:
    """Left half red, right half blue: where the pixels land shows how an image was resized."""
    image = Image.new("RGB", (width, height), "red")
    image.paste(Image.new("RGB", (width // 2, height), "blue"), (width // 2, 0))
    return image


# --- devices ----------------------------------------------------------------------------------------------------

def test_devices_names_follow_the_policy_the_application_hands_over(app):
    assert devices.device == torch.device("cpu")  # the app fixture runs with --use-cpu all
    assert devices.cpu == torch.device("cpu")
    assert devices.dtype == devices.dtype_unet == devices.dtype_vae == torch.float32
    assert devices.get_device_for("esrgan") == devices.cpu
    assert app.device == devices.device
    with devices.autocast():  # full precision: nothing changes
        assert not torch.is_autocast_enabled()
        assert (torch.ones(2) * 2).dtype == torch.float32

    half = devices.DevicePolicy(torch.device("cuda"), torch.float16, torch.float32)
    devices.use_policy(half, use_cpu=["interrogate"], device_id="1")
    try:
        assert devices.device == torch.device("cuda")
        assert devices.dtype == devices.dtype_unet == torch.float16 and devices.dtype_vae == torch.float32
        assert devices.device_interrogate == devices.cpu  # --use-cpu interrogate
        assert devices.get_device_for("interrogate") == devices.cpu
        assert devices.get_cuda_device_string() == "cuda:1"
    finally:
        devices.use_policy(devices.choose_policy(["all"]), ["all"])
    from modules.devices import device  # A1111's from-import form

    assert device == torch.device("cpu")
    assert devices.get_optimal_device_name() in ("cpu", "cuda", "mps")
    assert devices.get_optimal_device() == torch.device(devices.get_optimal_device_name())


def test_test_for_nans_raises_only_for_all_nan_tensors(app):
    devices.test_for_nans(torch.tensor([1.0, float("nan")]), "unet")  # some NaNs: A1111 lets it pass
    with pytest.raises(devices.NansException, match="produced in Unet.*--disable-nan-check"):
        devices.test_for_nans(torch.full((2, 2), float("nan")), "unet")
    devices.use_policy(devices.DevicePolicy(torch.device("cpu"), torch.float32, torch.float32, nan_check=False))
    try:
        devices.test_for_nans(torch.full((2, 2), float("nan")), "vae")  # --disable-nan-check
    finally:
        devices.use_policy(devices.choose_policy(["all"]), ["all"])


def test_devices_randn_is_seeded():
    assert torch.equal(devices.randn(5, (2, 3)), devices.randn(5, (2, 3)))
    assert not torch.equal(devices.randn(5, (2, 3)), devices.randn(6, (2, 3)))


# --- images -----------------------------------------------------------------------------------------------------

def test_resize_image_modes_give_a1111s_sizes_and_pixels():
    wide = _stripes()  # 2:1
    just = images.resize_image(0, wide, 64, 64)
    assert just.size == (64, 64)
    assert just.getpixel((5, 32))[0] > 200 and just.getpixel((58, 32))[2] > 200  # stretched: both halves stay

    crop = images.resize_image(1, wide, 64, 64)  # cover 64x64, cut the sides: a 128x64 middle 64 columns
    assert crop.size == (64, 64)
    assert crop.getpixel((2, 32))[0] > 200 and crop.getpixel((61, 32))[2] > 200

    fill = images.resize_image(2, wide, 64, 64)  # fit 64x32 in the middle; bands above/below repeat the edges
    assert fill.size == (64, 64)
    assert fill.getpixel((5, 2))[0] > 200 and fill.getpixel((58, 61))[2] > 200
    assert np.asarray(fill).reshape(-1, 3).sum(axis=1).min() > 0  # no black left anywhere

    tall = images.resize_image(2, _stripes(50, 100), 64, 32)  # fit 16x32, bands left/right
    assert tall.getpixel((0, 16))[0] > 200 and tall.getpixel((63, 16))[2] > 200


def test_resize_image_enlarges_with_the_named_upscaler():
    small = Image.new("RGB", (4, 4), "black")
    small.putpixel((0, 0), (255, 255, 255))
    nearest = images.resize_image(0, small, 16, 16, upscaler_name="Nearest")
    assert nearest.size == (16, 16)
    block = np.asarray(nearest)[:4, :4]
    assert (block == 255).all() and (np.asarray(nearest)[4:8, :4] == 0).all()  # hard 4x4 blocks: nearest
    lanczos = images.resize_image(0, small, 16, 16, upscaler_name="Lanczos")
    assert not (np.asarray(lanczos)[:4, :4] == 255).all()  # smooth edge
    with pytest.raises(ValueError, match="Unknown upscaler 'No such'"):
        images.resize_image(0, small, 16, 16, upscaler_name="No such")


def test_flatten_puts_the_background_under_transparency():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    flat = images.flatten(rgba, "#ffffff")
    assert flat.mode == "RGB"
    assert flat.getpixel((0, 0)) == (255, 255, 255) and flat.getpixel((1, 0)) == (10, 20, 30)


# --- shared, util -----------------------------------------------------------------------------------------------

def test_shared_listing_helpers_walk_files_in_natural_order(app, tmp_path):
    folder = tmp_path / "listing"
    (folder / "sub").mkdir(parents=True)
    for name in ("img10.png", "img2.png", ".hidden", "note.txt", "sub/a.PNG"):
        (folder / name).write_text("x")
    assert [os.path.basename(p) for p in app.listfiles(str(folder))] == ["img2.png", "img10.png", "note.txt"]
    walked = [os.path.relpath(p, folder) for p in app.walk_files(str(folder), allowed_extensions=[".png"])]
    assert walked == ["img2.png", "img10.png", os.path.join("sub", "a.PNG")]
    assert list(app.walk_files(str(folder / "missing"))) == []
    assert sorted(["a10", "a9", "A1"], key=app.natural_sort_key) == ["A1", "a9", "a10"]


def test_shared_a1111_names_read_the_application(app):
    assert app.list_checkpoint_tiles() == sorted(c.title for c in app.models.registry.checkpoints)
    names = [u.name for u in app.sd_upscalers]
    assert names[:3] == ["None", "Lanczos", "Nearest"]
    assert app.hide_dirs == {"visible": True}
    assert app.models_path == os.path.join(app.cmd_opts.data_dir, "models")
    assert app.face_restorers == []
    app.options_templates.update(app.options_section(("compat-test", "Compat test"), {
        "compat_test_option": app.OptionInfo(7, "A setting added the old way")}))
    assert app.opts.compat_test_option == 7  # options_templates is the settings' own table, as in A1111
    from modules import shared_options

    assert shared_options.options_templates is app.opts.data_labels


def test_total_tqdm_counts_updates(app):
    app.total_tqdm.updateTotal(5)
    app.total_tqdm.update()
    app.total_tqdm.update()
    assert app.total_tqdm.count == 2
    app.total_tqdm.clear()
    assert app.total_tqdm.count == 0


# --- call_queue -------------------------------------------------------------------------------------------------

def test_wrap_gradio_gpu_call_runs_the_function_as_a_job_of_the_one_queue(app):
    from modules import call_queue

    seen = {}

    def generate(id_task, prompt):
        running = app.runner.current()
        seen.update(task=running.id, label=running.label, in_turn=app.runner.in_turn(), job_count=app.state.job_count)
        return [f"image of {prompt}", "<p>info</p>"]

    wrapped = call_queue.wrap_gradio_gpu_call(generate, extra_outputs=[None, ""])
    started = threading.Event()
    result = {}
    with app.queue_lock:  # the device is busy: the call must wait its turn
        worker = threading.Thread(target=lambda: (started.set(), result.update(out=wrapped("task(abc123)", "cat"))))
        worker.start()
        started.wait()
        time.sleep(0.3)
        assert not seen
        assert [t.id for t in app.runner.queued()] == ["task(abc123)"]  # waiting, visible with its id
    worker.join(10)
    assert seen == {"task": "task(abc123)", "label": "generate", "in_turn": True, "job_count": 1}
    output = result["out"]
    assert output[0] == "image of cat" and output[1].startswith("<p>info</p>") and "Time taken" in output[1]
    assert app.tasks.get("task(abc123)").status == "done"


def test_wrap_gradio_call_answers_an_error_with_a1111s_outputs(app, capsys):
    from modules import call_queue, errors

    def broken(x):
        raise ValueError("bad input")

    outputs = call_queue.wrap_gradio_call(broken, extra_outputs=[None, "", ""])(1)
    assert outputs[:3] == (None, "", "")
    assert outputs[3] == "<div class='error'>ValueError: bad input</div>"
    assert "*** Error completing request" in capsys.readouterr().err
    assert errors.get_exceptions()[0]["exception"] == "bad input"
    assert call_queue.wrap_queued_call(lambda a, b: a + b)(2, 3) == 5
    assert call_queue.queue_lock is app.queue_lock


# --- errors -----------------------------------------------------------------------------------------------------

def test_errors_report_display_once_and_run(capsys):
    from modules import errors

    try:
        raise KeyError("missing thing")
    except KeyError as e:
        errors.report("Loading failed\nsecond line", exc_info=True)
        errors.display_once(e, "compat-test-task")
        errors.display_once(e, "compat-test-task")
    err = capsys.readouterr().err
    assert "*** Loading failed\n*** second line" in err and "KeyError: 'missing thing'" in err
    assert err.count("compat-test-task: KeyError") == 1
    errors.run(lambda: 1 / 0, "dividing")
    assert "dividing: ZeroDivisionError" in capsys.readouterr().err
    assert errors.get_exceptions()[0]["exception"] == "division by zero"
    assert len(errors.get_exceptions()) <= errors.MAX_RECORDS


# --- upscaler, face restoration, interrogation -----------------------------------------------------------------

def test_upscaler_entries_run_the_registry_and_extension_subclasses_are_listed(app):
    from modules import upscaler

    nearest = next(u for u in app.sd_upscalers if u.name == "Nearest")
    small = Image.new("RGB", (10, 10), "black")
    small.putpixel((0, 0), (255, 255, 255))
    big = nearest.scaler.upscale(small, 2.5, nearest.data_path)
    assert big.size == (24, 24)  # A1111 rounds the target down to a multiple of 8

    class Doubler(upscaler.Upscaler):
        name = "Doubler"

        def __init__(self, dirname=None):
            super().__init__()
            self.scalers = [upscaler.UpscalerData("Doubler x2", None, self, 2)]

        def do_upscale(self, img, selected_model):
            return img.resize((img.width * 2, img.height * 2))

    try:
        entry = next(u for u in app.sd_upscalers if u.name == "Doubler x2")
        assert entry.scale == 2 and isinstance(entry.scaler, Doubler)
        assert entry.scaler.upscale(small, 4, None).size == (40, 40)  # two passes of 2x, then exactly the target
    finally:
        upscaler._extension_upscalers.clear()
    assert upscaler.UpscalerLanczos().upscale(small, 1.6).size == (16, 16)


def test_face_restoration_runs_the_registered_restorer(app):
    from modules import face_restoration

    image = np.zeros((4, 4, 3), dtype=np.uint8)
    assert face_restoration.restore_faces(image) is image  # none registered: unchanged

    class Brighten(face_restoration.FaceRestoration):
        def name(self):
            return "Brighten"

        def restore(self, np_image):
            return np_image + 10

    app.face_restorers.append(Brighten())
    try:
        assert face_restoration.restore_faces(image).max() == 10
    finally:
        app.face_restorers.clear()


def test_interrogation_says_what_is_missing(app):
    from modules import deepbooru, interrogate

    image = Image.new("RGB", (8, 8))
    with pytest.raises(interrogate.InterrogatorUnavailable, match="no BLIP/CLIP model"):
        app.interrogator.interrogate(image)
    with pytest.raises(interrogate.InterrogatorUnavailable, match="no torch_deepdanbooru model"):
        deepbooru.model.start()
    deepbooru.model.stop()  # in `finally` blocks: must not raise
    app.interrogator.unload()


# --- timer, progress --------------------------------------------------------------------------------------------

def test_timer_records_categories():
    from modules import timer

    t = timer.Timer()
    time.sleep(0.12)
    t.record("load")
    with t.subcategory("scripts"):
        time.sleep(0.11)
    assert t.records["load"] >= 0.1 and t.records["scripts"] >= 0.1
    assert t.summary().startswith(f"{t.total:.1f}s (load: ")


def test_progress_views_the_runner_tasks(app):
    from modules import progress

    task_id = progress.create_task_id("txt2img")
    assert task_id.startswith("task(txt2img-") and task_id.endswith(")")
    progress.add_task_to_queue(task_id)
    assert task_id in progress.pending_tasks
    assert progress.progressapi({"id_task": task_id})["queued"] is True
    progress.start_task(task_id)
    assert progress.current_task == task_id
    assert progress.progressapi({"id_task": task_id})["active"] is True
    progress.record_results(task_id, ["result"])
    progress.finish_task(task_id)
    assert progress.progressapi({"id_task": task_id})["completed"] is True
    assert progress.restore_progress(task_id) == ["result"]

    seen = {}
    app.runner.run("extension", lambda: seen.update(current=progress.current_task), task_id="task(runner-1)")
    assert seen["current"] == "task(runner-1)"
    assert progress.progressapi({"id_task": "task(runner-1)"})["completed"] is True


# --- processing helpers -----------------------------------------------------------------------------------------

def test_create_random_tensors_is_the_seeded_noise_with_variations():
    from modules import processing

    noise = processing.create_random_tensors((4, 8, 8), seeds=[1, 2])
    assert noise.shape == (2, 4, 8, 8)
    assert torch.equal(noise[1], processing.create_random_tensors((4, 8, 8), seeds=[2])[0])  # per-image seeds
    varied = processing.create_random_tensors((4, 8, 8), seeds=[1], subseeds=[9], subseed_strength=0.5)
    assert not torch.equal(varied[0], noise[0])
    assert processing.opt_f == 8 and processing.opt_C == 4
    assert processing.process_images_inner is processing.process_images


def test_color_correction_moves_colours_toward_the_source_and_keeps_lightness():
    from modules import processing

    source = Image.new("RGB", (16, 16), (40, 60, 200))  # blue
    drifted = Image.new("RGB", (16, 16), (170, 60, 90))  # reddish
    corrected = processing.apply_color_correction(processing.setup_color_correction(source), drifted)
    r, g, b = corrected.getpixel((3, 3))
    assert b > r  # now blue-ish
    lightness = np.asarray(drifted.convert("L"), dtype=float).mean()
    assert abs(np.asarray(corrected.convert("L"), dtype=float).mean() - lightness) < 25


def test_create_binary_mask_and_apply_overlay():
    from modules import processing

    rgba = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 0, 200))
    rgba.putpixel((1, 0), (0, 0, 0, 100))
    mask = processing.create_binary_mask(rgba)
    assert mask.mode == "L" and list(mask.tobytes()) == [255, 0, 0, 0]
    assert list(processing.create_binary_mask(rgba, round=False).tobytes()) == [200, 100, 0, 0]
    assert processing.create_binary_mask(Image.new("RGB", (2, 2), "white")).getpixel((0, 0)) == 255

    overlay = Image.new("RGBA", (8, 8), (0, 255, 0, 255))
    overlay.paste((0, 0, 0, 0), (2, 2, 6, 6))  # a transparent hole where the generated crop shows
    result = processing.apply_overlay(Image.new("RGB", (4, 4), "red"), (2, 2, 4, 4), overlay)
    assert result.getpixel((3, 3)) == (255, 0, 0) and result.getpixel((0, 0)) == (0, 255, 0)


def test_images_tensor_to_samples_round_trips_through_the_model(tiny_app):
    from modules import processing

    model = tiny_app.models.get()
    pixels = torch.rand(1, 3, 64, 64)
    latents = processing.images_tensor_to_samples(pixels, model=model)
    assert latents.shape == (1, 4, 8, 8)
    decoded = processing.samples_to_images_tensor(latents, model=model)
    assert decoded.shape == (1, 3, 64, 64) and torch.isfinite(decoded).all()
    assert len(processing.decode_latent_batch(model, latents, target_device="cpu")) == 1
    assert torch.allclose(processing.decode_first_stage(model, latents), decoded)


# --- cache, extras ----------------------------------------------------------------------------------------------

def test_cached_data_for_file_recomputes_only_when_the_file_changes(app, tmp_path):
    import json

    from modules import cache

    target = tmp_path / "model.bin"
    target.write_bytes(b"one")
    calls = []

    def compute():
        calls.append(1)
        return {"size": target.stat().st_size}

    assert cache.cached_data_for_file("compat-test", "model", str(target), compute) == {"size": 3}
    assert cache.cached_data_for_file("compat-test", "model", str(target), compute) == {"size": 3}
    assert len(calls) == 1
    target.write_bytes(b"longer")
    os.utime(target, (time.time() + 10, time.time() + 10))
    assert cache.cached_data_for_file("compat-test", "model", str(target), compute) == {"size": 6}
    assert len(calls) == 2
    assert cache.cached_data_for_file("compat-test", "none", str(target), lambda: None) is None
    stored = json.loads(open(app.cache_path, encoding="utf-8").read())
    assert stored["compat-test"]["model"]["value"] == {"size": 6}
    cache.cache("compat-other")["key"] = [1, 2]
    cache.dump_cache()
    assert json.loads(open(app.cache_path, encoding="utf-8").read())["compat-other"] == {"key": [1, 2]}


def test_run_pnginfo_shows_the_parameters(tmp_path):
    from PIL import PngImagePlugin

    from modules import extras

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler, Seed: 5")
    path = tmp_path / "with-info.png"
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    with Image.open(path) as image:
        empty, geninfo, html_info = extras.run_pnginfo(image)
    assert empty == "" and geninfo.startswith("a cat\nSteps: 20")
    assert "<b><p>parameters</p></b>" in html_info and "a cat<br>" in html_info
    assert extras.run_pnginfo(Image.new("RGB", (2, 2)))[2] == "<div><p>Nothing found in the image.</p></div>"


# --- txt2img / img2img in A1111's positional form ----------------------------------------------------------------

def _txt2img_args(prompt: str, width: int = 64, height: int = 64) -> list:
    # prompt, negative, styles, n_iter, batch_size, cfg, height, width, enable_hr, denoising, hr_scale, hr_upscaler,
    # hr steps, hr_resize_x/y, hr checkpoint, hr sampler, hr scheduler, hr prompt, hr negative, override texts
    return [prompt, "", [], 1, 2, 7.0, height, width, False, 0.7, 2.0, "Latent", 0, 0, 0, "Use same checkpoint",
            "Use same sampler", "Use same scheduler", "", "", ["Clip skip: 2"]]


def test_txt2img_runs_a1111s_argument_list_as_a_job(tiny_app):
    import json

    from modules import txt2img

    images_out, generation_info, info_html, comments_html = txt2img.txt2img("task(compat-t2i)", None,
                                                                            *_txt2img_args("a red ball", 64, 48))
    assert len(images_out) == 3 and images_out[-1].size == (64, 48)  # the grid, then the batch of two
    info = json.loads(generation_info)
    assert info["prompt"] == "a red ball" and info["width"] == 64 and info["height"] == 48
    assert "Clip skip: 2" in info["infotexts"][0]
    assert info_html.startswith("<p>a red ball") and "comments" in comments_html
    assert tiny_app.tasks.get("task(compat-t2i)").status == "done"


def test_img2img_process_batch_runs_every_image_of_a_folder(tiny_app, tmp_path):
    from modules import img2img
    from modules.processing import Job

    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for name, colour in (("first", "red"), ("second", "blue")):
        Image.new("RGB", (64, 64), colour).save(source / f"{name}.png")
    (source / "notes.txt").write_text("not an image")
    job = Job(prompt="a ball", width=64, height=64, steps=2, sampler_name="Euler", init_images=[],
              denoising_strength=0.5)

    def work():
        job.context = tiny_app.context()
        try:
            return img2img.process_batch(job, str(source), str(target), None, [])
        finally:
            job.context = None

    last = tiny_app.runner.run("img2img", work)
    assert last is not None and last.images[0].size == (64, 64)
    assert sorted(os.listdir(target)) == ["00000-first.png", "00001-second.png"]  # A1111: number, source's name


# --- modules.ui / ui_common names ---------------------------------------------------------------------------------

def _handler_of(demo, trigger_id: int):
    for dependency in demo.fns.values():
        if any(getattr(target, "_id", target) == trigger_id or (isinstance(target, tuple) and target[0] == trigger_id)
               for target in dependency.targets):
            return dependency.fn
    raise AssertionError("no handler for the button")


def test_create_refresh_button_refreshes_and_updates_the_component():
    import gradio as gr

    from modules.ui import a1111_names

    names = ["a"]
    with gr.Blocks() as demo:
        dropdown = gr.Dropdown(choices=list(names), label="Models")
        button = a1111_names.create_refresh_button(dropdown, lambda: names.append("b"),
                                                   lambda: {"choices": list(names)}, "refresh_models")
    assert button.elem_id == "refresh_models" and button.value == a1111_names.refresh_symbol
    update = _handler_of(demo, button._id)()
    assert update["choices"] == ["a", "b"] and names == ["a", "b"]
    assert a1111_names.gr_show(False)["visible"] is False
    assert a1111_names.plaintext_to_html("a<b\nc", "x") == "<p class='x'>a&lt;b<br>\nc</p>"


def test_output_panel_and_paste_fields_in_a1111s_shape(app):
    import gradio as gr

    from modules import ui_common
    from modules.ui import a1111_names

    with gr.Blocks():
        panel = ui_common.create_output_panel("compat_tab", "/tmp")
        prompt, negative, steps = gr.Textbox(), gr.Textbox(), gr.Slider()
        a1111_names.record_paste_fields("txt2img", {"prompt": prompt, "negative_prompt": negative, "steps": steps})
    gallery, generation_info, infotext, html_log = panel  # the old tuple form
    assert gallery is panel.gallery and isinstance(gallery, gr.Gallery)
    assert isinstance(generation_info, gr.Textbox) and isinstance(html_log, gr.HTML)
    assert panel[2] is panel.infotext
    fields = a1111_names.txt2img_paste_fields
    assert fields[0] == (prompt, "Prompt") and fields[1] == (negative, "Negative prompt")
    assert (steps, "Steps") in fields
    assert "v" in a1111_names.versions_html() and "gradio: " in a1111_names.versions_html()


def test_ui_common_save_files_writes_the_selected_image(app, tmp_path):
    import json

    from modules import ui_common

    path = tmp_path / "result.png"
    Image.new("RGB", (8, 8), "red").save(path)
    _files, _, _, message = ui_common.save_files(json.dumps({"infotexts": ["a red square\nSteps: 1"]}),
                                                 [{"name": str(path)}], False, 0)
    save_dir = os.path.join(app.cmd_opts.data_dir, app.opts.outdir_save)
    written = [name for name in os.listdir(save_dir) if name.endswith(".png")]
    assert len(written) == 1 and written[0] in message
    with Image.open(os.path.join(save_dir, written[0])) as saved:
        assert saved.convert("RGB").getpixel((2, 2)) == (255, 0, 0)
    assert message.startswith("<p>Saved: ")


# --- postprocessing scripts -------------------------------------------------------------------------------------

def _inverter_script():
    import gradio as gr

    from modules import scripts_postprocessing

    class CompatInvert(scripts_postprocessing.ScriptPostprocessing):
        name = "Compat invert"
        order = 50

        def ui(self):
            return {"enable": gr.Checkbox(value=True, label="Invert"), "amount": gr.Slider(value=255)}

        def process(self, pp, enable, amount):
            if enable:
                pp.image = Image.eval(pp.image, lambda x: int(amount) - x)
                pp.info["Compat invert"] = int(amount)

    return CompatInvert


def test_postprocessing_runner_runs_scripts_with_their_arguments(app):
    from modules import scripts_postprocessing

    script_class = _inverter_script()
    runner = scripts_postprocessing.ScriptPostprocessingRunner()
    try:
        runner.initialize_scripts()
        assert [s.name for s in runner.scripts_in_preferred_order()] == ["Compat invert"]
        pp = scripts_postprocessing.PostprocessedImage(Image.new("RGB", (2, 2), (10, 20, 30)))
        runner.run(pp, runner.default_args())
        assert pp.image.getpixel((0, 0)) == (245, 235, 225) and pp.info == {"Compat invert": 255}
        off = scripts_postprocessing.PostprocessedImage(Image.new("RGB", (2, 2), (10, 20, 30)))
        runner.run(off, runner.create_args_for_run({"Compat invert": {"enable": False, "amount": 255}}))
        assert off.image.getpixel((0, 0)) == (10, 20, 30) and off.info == {}
    finally:
        del script_class
        scripts_postprocessing.runner().scripts = None


def test_postprocessing_script_changes_the_image_of_a_real_extras_job(app):
    from modules import hooks, postprocessing, scripts_postprocessing

    if "extras_image" not in hooks.POINTS:
        pytest.skip("the core's Extras job fires no extras_image hook yet (modules/postprocessing.py, lead)")
    script_class = _inverter_script()
    scripts_postprocessing.reload()
    assert scripts_postprocessing.connect()
    try:
        request = postprocessing.ExtrasRequest(image=Image.new("RGB", (8, 8), (10, 20, 30)),
                                               extras_upscaler_1="Nearest", upscaling_resize=2)
        result = app.run_extras_job(request)
        assert result.images[0].size == (16, 16) and result.images[0].getpixel((0, 0)) == (245, 235, 225)
        assert "Compat invert: 255" in result.infotext
        with Image.open(result.saved_files[0]) as saved:
            assert saved.convert("RGB").getpixel((0, 0)) == (245, 235, 225)
    finally:
        del script_class
        scripts_postprocessing.runner().scripts = None


# --- extra networks pages ---------------------------------------------------------------------------------------

def test_a_registered_extra_networks_page_gives_cards(app, tmp_path):
    from modules import ui_extra_networks
    from modules.ui_extra_networks_user_metadata import UserMetadataEditor

    folder = tmp_path / "LyCORIS"
    folder.mkdir()
    (folder / "style.safetensors").write_bytes(b"x")
    Image.new("RGB", (4, 4)).save(folder / "style.preview.png")
    (folder / "style.json").write_text('{"description": "a style"}')

    class LycoPage(ui_extra_networks.ExtraNetworksPage):
        def __init__(self):
            super().__init__("LyCORIS")

        def list_items(self):
            for path in sorted(folder.glob("*.safetensors")):
                name = path.stem
                item = {"name": name, "filename": str(path), "preview": self.find_preview(str(path)),
                        "search_term": self.search_terms_from_path(str(path)),
                        "prompt": ui_extra_networks.quote_js(f"<lyco:{name}:") + " + opts.extra_networks_default_"
                                  "multiplier + " + ui_extra_networks.quote_js(">")}
                self.items[name] = item
                yield item

        def allowed_directories_for_previews(self):
            return [str(folder)]

    page = LycoPage()
    ui_extra_networks.register_page(page)
    try:
        cards = ui_extra_networks.registered_cards()["LyCORIS"]
        assert [(c["name"], c["tag"]) for c in cards] == [("style", "<lyco:style:1>")]
        assert cards[0]["preview"].endswith("style.preview.png") and "/style.safetensors" in cards[0]["search"]
        assert str(folder) in ui_extra_networks.allowed_dirs
        editor = UserMetadataEditor(None, "txt2img", page)
        assert editor.get_user_metadata("style") == {"description": "a style"}
        editor.save_user_metadata("style", "new words", "a note")
        assert '"notes": "a note"' in (folder / "style.json").read_text()
    finally:
        ui_extra_networks.unregister_page(page)
    assert ui_extra_networks.quote_js('say "hi"') == '"say \\"hi\\""'


def test_processed_takes_a1111s_positional_form():
    from modules.processing import Job, Processed

    p = Job(prompt="a cat", negative_prompt="blur", seed=5)
    p.all_seeds = [5, 6]
    empty = Processed(p, [], p.seed, "ControlNet not enabled")
    assert empty.info == "ControlNet not enabled" and empty.images == [] and empty.job is p
    assert empty.all_seeds == [5, 6] and empty.all_prompts == ["a cat"] and empty.all_negative_prompts == ["blur"]
    image = Image.new("RGB", (4, 4))
    full = Processed(p, [image], 7, "info", 9, ["x"], ["y"], [7], [9], 0, ["t1"], "a comment", [image])
    assert (full.seed, full.subseed, full.all_prompts, full.infotexts) == (7, 9, ["x"], ["t1"])
    assert full.comments == ["a comment"] and full.extra_images == [image]
    assert full.js()["seed"] == 7 and full.js()["prompt"] == "x"
    assert (full.prompt, full.negative_prompt, full.width, full.steps) == ("x", "y", p.width, p.steps)
    grid_first = Processed(p, [image, image, image], 7, "", infotexts=["grid", "first", "second"],
                           index_of_first_image=1)
    assert grid_first.infotext(p, 0) == "first" and grid_first.infotext(p, 1) == "second"
    with pytest.raises(AttributeError):
        _ = full.no_such_attribute


def test_small_ui_names_memory_monitor_and_gradio_temp_paths(app):
    import tempfile

    from modules import call_queue, ui_tempdir
    from modules.ui import a1111_names

    assert a1111_names.resize_from_to_html(512, 256, 1.5) == \
        "resize: from <span class='resolution'>512x256</span> to <span class='resolution'>768x384</span>"
    assert a1111_names.resize_from_to_html(0, 0, 2) == "no image selected"
    assert a1111_names.wrap_gradio_gpu_call is call_queue.wrap_gradio_gpu_call
    assert set(a1111_names.__all__) <= set(dir(a1111_names))
    assert ui_tempdir.is_gradio_temp_path(os.path.join(tempfile.gettempdir(), "gradio", "upload.png"))
    assert not ui_tempdir.is_gradio_temp_path(app.cmd_opts.data_dir)
    assert app.mem_mon.read() == {}  # the CPU: nothing to report, as A1111's disabled monitor
    assert app.mem_mon is app.mem_mon


def test_create_infotext_in_a1111s_form_matches_the_jobs_own(tiny_app):
    from modules import processing
    from modules.processing import Job

    job = Job(prompt="a green hill", negative_prompt="fog", width=64, height=64, steps=2, sampler_name="Euler",
              batch_size=2, seed=11)

    def work():
        job.context = tiny_app.context()
        try:
            processed = processing.process_images(job)
            second = processing.create_infotext(job, job.all_prompts, job.all_seeds, job.all_subseeds, None, 0, 1)
            renamed = processing.create_infotext(job, ["another prompt", "x"], [99, 100], job.all_subseeds)
            return processed, second, renamed
        finally:
            job.context = None

    processed, second, renamed = tiny_app.runner.run("txt2img", work)
    assert second == processed.infotexts[processed.index_of_first_image + 1]
    assert "Seed: 12" in second and second.startswith("a green hill\nNegative prompt: fog")
    assert renamed.startswith("another prompt") and "Seed: 99" in renamed
    assert job.all_seeds == [11, 12]  # the job's own lists are back
    with pytest.raises(processing.JobError, match="needs a running job"):
        processing.create_infotext(Job(prompt="x"), ["x"], [1], [1])
