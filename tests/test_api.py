"""The /sdapi/v1 API on a real server (`webui.py --api --nowebui` on loopback), driven by the real `webuiapi`
client and plain `requests`: generation, info, options, lists, progress, the queue, async jobs, errors, auth."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image, PngImagePlugin

from tests.servers import running_webui

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def api_server(webui_api_server):
    """The run's shared API-only server (tests/conftest.py); this module is the first to use it."""
    return webui_api_server


@pytest.fixture
def client(api_server):
    import webuiapi

    url, _, _ = api_server
    port = int(url.rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=2)


def _b64(image: Image.Image, info: str | None = None, prefix: bool = False) -> str:
    buffer = io.BytesIO()
    meta = PngImagePlugin.PngInfo()
    if info:
        meta.add_text("parameters", info)
    image.save(buffer, format="PNG", pnginfo=meta)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"data:image/png;base64,{data}" if prefix else data


def _png(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def test_txt2img_with_webuiapi(client, api_server):
    _, data_dir, _ = api_server
    result = client.txt2img(prompt="a large red circle on the left, blue background", seed=1234, batch_size=2,
                            **SMALL)
    assert [im.size for im in result.images] == [(128, 64), (64, 64), (64, 64)]  # grid first, as A1111
    info = result.info
    assert info["all_seeds"] == [1234, 1235] and info["seed"] == 1234 and info["sampler_name"] == "Euler a"
    for key in ("prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "subseed", "all_subseeds",
                "subseed_strength", "width", "height", "cfg_scale", "steps", "batch_size", "restore_faces",
                "face_restoration_model", "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash",
                "seed_resize_from_w", "seed_resize_from_h", "denoising_strength", "extra_generation_params",
                "index_of_first_image", "infotexts", "styles", "job_timestamp", "clip_skip",
                "is_using_inpainting_conditioning", "version"):
        assert key in info, key
    assert isinstance(info["infotexts"], list) and info["index_of_first_image"] == 1
    assert result.images[1].info["parameters"] == info["infotexts"][1]
    assert "Seed: 1235," in result.images[2].info["parameters"]
    assert not list((data_dir / "outputs").rglob("*.png"))  # save_images defaults to false


def test_raw_response_shape_defaults_and_saving(api_server):
    url, data_dir, _ = api_server
    response = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "a red circle", "seed": 5, **SMALL,
                                                                "save_images": True}, timeout=120)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"images", "parameters", "info"} and isinstance(body["info"], str)
    assert not body["images"][0].startswith("data:")
    info = json.loads(body["info"])
    assert info["sampler_name"] == "Euler"  # the API's default sampler
    assert body["parameters"]["prompt"] == "a red circle" and body["parameters"]["send_images"] is True
    saved = list((data_dir / "outputs" / "txt2img-images").rglob("*.png"))
    assert len(saved) == 1 and Image.open(saved[0]).text["parameters"] == info["infotexts"][0]
    nothing = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "send_images": False},
                            timeout=120).json()
    assert nothing["images"] == []


def test_sampler_names_infotext_and_override_settings(api_server):
    url, _, _ = api_server
    body = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "p", **SMALL, "sampler_name": "DPM++ 2M Karras",
                                                          "override_settings": {"CLIP_stop_at_last_layers": 2}},
                         timeout=120).json()
    text = json.loads(body["info"])["infotexts"][0]
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in text and "Clip skip: 2" in text
    options = requests.get(f"{url}/sdapi/v1/options", timeout=30).json()
    assert options["CLIP_stop_at_last_layers"] == 1  # restored after the job
    body = requests.post(f"{url}/sdapi/v1/txt2img", json={
        "infotext": "a yellow square\nNegative prompt: red\nSteps: 3, Sampler: Euler, CFG scale: 4, Seed: 77, "
                    "Size: 64x64", "steps": 2}, timeout=120).json()
    info = json.loads(body["info"])
    assert (info["prompt"], info["negative_prompt"], info["seed"], info["cfg_scale"]) == ("a yellow square", "red",
                                                                                          77, 4.0)
    assert info["steps"] == 2  # set by the request, so the infotext does not override it
    indexed = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "p", **SMALL, "sampler_index": "DDIM"},
                            timeout=120).json()
    assert json.loads(indexed["info"])["sampler_name"] == "DDIM"


def test_img2img_inpaint_and_include_init_images(client, api_server):
    url, _, _ = api_server
    init = Image.new("RGB", (64, 64), (30, 70, 220))
    result = client.img2img(images=[init], prompt="a large red circle on the left, blue background", seed=3,
                            denoising_strength=0.5, **SMALL)
    assert result.images[0].size == (64, 64) and result.info["denoising_strength"] == 0.5
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    body = requests.post(f"{url}/sdapi/v1/img2img", json={
        "init_images": [_b64(init, prefix=True)], "mask": _b64(mask.convert("RGB")), "prompt": "a yellow circle",
        "mask_blur": 0, "inpainting_fill": 1, "inpaint_full_res": False, "denoising_strength": 1.0, "seed": 4,
        "include_init_images": True, **SMALL}, timeout=120).json()
    out, echoed = (_png(data) for data in body["images"])
    right = (slice(None), slice(32, None))
    import numpy as np

    assert np.array_equal(np.asarray(out.convert("RGB"))[right], np.asarray(init)[right])  # unmasked half kept
    assert np.array_equal(np.asarray(echoed.convert("RGB")), np.asarray(init))
    assert body["parameters"]["init_images"] is None
    assert requests.post(f"{url}/sdapi/v1/img2img", json={"prompt": "x", **SMALL}, timeout=30).status_code == 404


def test_png_info_options_and_lists(client, api_server):
    url, _, _ = api_server
    text = "a cat\nSteps: 9, Sampler: Euler, CFG scale: 6, Seed: 42, Size: 64x64"
    info = requests.post(f"{url}/sdapi/v1/png-info", json={"image": _b64(Image.new("RGB", (8, 8)), text)},
                         timeout=30).json()
    assert info["info"] == text and info["parameters"]["Seed"] == "42" and info["items"] == {}
    assert client.png_info(Image.new("RGB", (8, 8))).info == ""
    options = client.get_options()
    assert options["sd_model_checkpoint"].startswith("demo-shapes-sd1.safetensors [")
    client.set_options({"samples_format": "jpg", "CLIP_stop_at_last_layers": 2})
    assert client.get_options()["samples_format"] == "jpg"
    saved = json.loads((api_server[1] / "config.json").read_text())
    assert (saved["samples_format"], saved["CLIP_stop_at_last_layers"]) == ("jpg", 2)  # persisted
    client.set_options({"samples_format": "png", "CLIP_stop_at_last_layers": 1})
    # path and file name settings cannot point outside the data folder through the API (403, tested below), but
    # posting back the values GET /options gave is fine, as clients do, and so is a folder inside
    unchanged = {key: options[key] for key in ("outdir_txt2img_samples", "samples_filename_pattern",
                                               "directories_filename_pattern")}
    assert requests.post(f"{url}/sdapi/v1/options", json=unchanged, timeout=30).status_code == 200
    inside = {"outdir_txt2img_samples": "outputs/mine", "samples_filename_pattern": "[seed]-[prompt_words]"}
    assert requests.post(f"{url}/sdapi/v1/options", json=inside, timeout=30).status_code == 200
    assert client.get_options()["outdir_txt2img_samples"] == "outputs/mine"
    assert requests.post(f"{url}/sdapi/v1/options", json=unchanged, timeout=30).status_code == 200
    models = client.get_sd_models()
    assert models[0]["model_name"] == "demo-shapes-sd1" and len(models[0]["sha256"]) == 64
    assert set(models[0]) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    samplers = client.get_samplers()
    assert {"name": "Euler", "aliases": ["k_euler"]}.items() <= {k: samplers[[s["name"] for s in samplers].index(
        "Euler")][k] for k in ("name", "aliases")}.items()
    assert "Karras" in [s["label"] for s in client.get_schedulers()]
    assert client.get_loras() == [] and set(client.get_embeddings()) == {"loaded", "skipped"}
    for route in ("cmd-flags", "upscalers", "latent-upscale-modes", "sd-vae", "hypernetworks", "prompt-styles",
                  "face-restorers", "realesrgan-models", "scripts", "script-info", "extensions", "memory",
                  "pending-tasks"):
        response = requests.get(f"{url}/sdapi/v1/{route}", timeout=30)
        assert response.status_code == 200, route
    assert requests.get(f"{url}/sdapi/v1/cmd-flags", timeout=30).json()["nowebui"] is True
    assert {"name": "Latent"} in requests.get(f"{url}/sdapi/v1/latent-upscale-modes", timeout=30).json()
    assert set(requests.get(f"{url}/sdapi/v1/scripts", timeout=30).json()) == {"txt2img", "img2img"}
    assert "ram" in requests.get(f"{url}/sdapi/v1/memory", timeout=30).json()
    for route in ("refresh-checkpoints", "refresh-vae", "refresh-embeddings", "refresh-loras"):
        assert requests.post(f"{url}/sdapi/v1/{route}", timeout=60).status_code == 200, route
    assert requests.post(f"{url}/sdapi/v1/unload-checkpoint", timeout=60).status_code == 200
    assert requests.post(f"{url}/sdapi/v1/reload-checkpoint", timeout=120).status_code == 200
    schema = requests.get(f"{url}/openapi.json", timeout=30).json()
    assert "/sdapi/v1/txt2img" in schema["paths"] and "/sdapi/v1/jobs/{job_id}" in schema["paths"]
    assert requests.get(f"{url}/docs", timeout=30).status_code == 200


def test_progress_and_interrupt_while_a_job_runs(client, api_server):
    url, _, _ = api_server
    client.set_options({"show_progress_every_n_steps": 1})
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("r", requests.post(
        f"{url}/sdapi/v1/txt2img", json={"prompt": "a red circle", "width": 64, "height": 64, "steps": 150,
                                         "force_task_id": "task(long)"}, timeout=300)))
    worker.start()
    seen = None
    deadline = time.time() + 60
    while time.time() < deadline:
        progress = client.get_progress()
        if progress["state"]["sampling_step"] >= 2 and progress["current_image"]:
            seen = progress
            break
        time.sleep(0.1)
    assert seen is not None and 0 < seen["progress"] < 1 and seen["state"]["job"] == "txt2img"
    assert _png(seen["current_image"]).size == (64, 64)
    by_id = requests.get(f"{url}/sdapi/v1/progress", params={"id_task": "task(long)", "skip_current_image": True},
                         timeout=30).json()
    assert by_id["status"] == "running" and by_id["current_image"] is None
    client.interrupt()
    worker.join(120)
    assert outcome["r"].status_code == 200
    info = json.loads(outcome["r"].json()["info"])
    # the interrupted image is dropped (A1111 would decode the half-sampled latents): the job ends early
    assert outcome["r"].json()["images"] == [] and info["steps"] == 150
    done = requests.get(f"{url}/sdapi/v1/progress", params={"id_task": "task(long)"}, timeout=30).json()
    assert done["status"] == "done" and done["progress"] == 1.0


def test_twenty_concurrent_requests_each_get_their_own_images(api_server):
    url, _, _ = api_server
    results: dict[int, requests.Response] = {}

    def call(seed: int) -> None:
        results[seed] = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "p", "seed": seed, **SMALL,
                                                                         "steps": 1}, timeout=600)

    threads = [threading.Thread(target=call, args=(1000 + i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert sorted(results) == list(range(1000, 1020))
    for seed, response in results.items():
        assert response.status_code == 200
        body = response.json()
        assert json.loads(body["info"])["all_seeds"] == [seed]
        assert f"Seed: {seed}," in _png(body["images"][0]).info["parameters"]


def test_async_jobs_round_trip_and_cancel(api_server):
    url, _, _ = api_server
    long = requests.post(f"{url}/sdapi/v1/jobs", json={"type": "txt2img", "prompt": "p", "width": 64, "height": 64,
                                                        "steps": 150}, timeout=30).json()
    queued = requests.post(f"{url}/sdapi/v1/jobs", json={"type": "txt2img", "prompt": "q", **SMALL, "seed": 9},
                           timeout=30).json()
    status = requests.get(f"{url}/sdapi/v1/jobs/{queued['id']}", timeout=30).json()
    assert status["status"] == "queued" and status["queue_position"] == 0
    pending = requests.get(f"{url}/sdapi/v1/pending-tasks", timeout=30).json()
    assert queued["id"] in pending["tasks"]
    assert requests.delete(f"{url}/sdapi/v1/jobs/{queued['id']}", timeout=30).json()["cancel_requested"] is True
    assert requests.delete(f"{url}/sdapi/v1/jobs/{long['id']}", timeout=30).status_code == 200  # interrupts it

    def wait(job_id: str) -> dict:
        deadline = time.time() + 120
        while time.time() < deadline:
            record = requests.get(f"{url}/sdapi/v1/jobs/{job_id}", timeout=30).json()
            if record["status"] not in ("queued", "running"):
                return record
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish")

    assert wait(queued["id"])["status"] == "cancelled"
    assert wait(long["id"])["status"] in ("cancelled", "done")
    job = requests.post(f"{url}/sdapi/v1/jobs", json={"type": "img2img", "init_images": [_b64(Image.new(
        "RGB", (64, 64), "red"))], "prompt": "p", "seed": 11, **SMALL}, timeout=30).json()
    record = wait(job["id"])
    assert record["status"] == "done" and record["progress"] == 1.0
    assert json.loads(record["result"]["info"])["seed"] == 11 and len(record["result"]["images"]) == 1
    assert requests.get(f"{url}/sdapi/v1/jobs/nope", timeout=30).status_code == 404


def test_infotext_with_infinite_values_and_a_reused_task_id(api_server):
    """"Batch size: inf" in an infotext is skipped like any value that does not convert (not a 500); an async job
    whose force_task_id is already queued or running is a 409 with A1111's error body, not a 500."""
    url, _, _ = api_server
    response = requests.post(f"{url}/sdapi/v1/txt2img", json={
        "prompt": "p", **SMALL, "infotext": "p\nSteps: 2, Seed: 1e400, Batch size: inf, Size: 64x64"}, timeout=120)
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 1
    body = {"type": "txt2img", "prompt": "p", "width": 64, "height": 64, "steps": 150, "force_task_id": "dup-1"}
    first = requests.post(f"{url}/sdapi/v1/jobs", json=body, timeout=30)
    assert first.status_code == 200 and first.json()["id"] == "dup-1"
    second = requests.post(f"{url}/sdapi/v1/jobs", json=body, timeout=30)
    assert second.status_code == 409, second.text
    assert set(second.json()) == {"error", "detail", "body", "errors"} and "dup-1" in second.json()["detail"]
    # a synchronous request naming that id does not take over the async job's record
    sync = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "p", **SMALL, "force_task_id": "dup-1"},
                         timeout=120)
    assert sync.status_code == 400 and "dup-1" in sync.json()["detail"], sync.text
    assert requests.get(f"{url}/sdapi/v1/jobs/dup-1", timeout=30).json()["status"] in ("queued", "running")
    requests.delete(f"{url}/sdapi/v1/jobs/dup-1", timeout=30)
    deadline = time.time() + 120
    while requests.get(f"{url}/sdapi/v1/jobs/dup-1", timeout=30).json()["status"] in ("queued", "running"):
        assert time.time() < deadline
        time.sleep(0.1)


def _bomb() -> str:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")  # 400 Mpx, a few KB: above PIL's bomb limit
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(("route", "body", "status", "message"), [
    ("txt2img", "{not json", 422, "JSON"),
    ("txt2img", {"prompt": "p", "steps": "many"}, 422, "steps"),
    ("txt2img", {"prompt": "p", **SMALL, "sampler_name": "Nope"}, 400, "Nope"),
    ("txt2img", {"prompt": "p", **SMALL, "scheduler": "sideways"}, 400, "sideways"),
    ("txt2img", {"prompt": "p", "width": 60, "height": 64, "steps": 2}, 422, "multiple of 8"),
    ("txt2img", {"prompt": "p", **SMALL, "enable_hr": True, "hr_scale": 100}, 422, "hires fix size 6400x6400"),
    ("txt2img", {"prompt": "p", **SMALL, "enable_hr": True, "hr_resize_x": 8192}, 422, "hires fix size 8192x8192"),
    ("txt2img", {"prompt": "p", "width": 0, "height": 64, "steps": 2}, 422, "multiple of 8"),
    ("txt2img", {"prompt": "p", "width": 8192, "height": 64, "steps": 2}, 422, "above the limit"),
    ("txt2img", {"prompt": "p", **SMALL, "steps": 0}, 400, "steps"),
    ("txt2img", {"prompt": "p", **SMALL, "enable_hr": True, "hr_upscaler": "Nope"}, 400, "Nope"),
    ("txt2img", {"prompt": "p", **SMALL, "script_name": "no such script"}, 422, "no such script"),
    ("txt2img", {"prompt": "p", **SMALL, "override_settings": {"no_such_setting": 1}}, 400, "no_such_setting"),
    ("img2img", {"init_images": ["!!notbase64!!"], **SMALL}, 400, "base64"),
    ("img2img", {"init_images": [base64.b64encode(b"hello").decode()], **SMALL}, 400, "not an image"),
    ("img2img", {"init_images": [_bomb()], **SMALL}, 413, "too large"),
    ("options", {"no_such_setting": 1}, 400, "no_such_setting"),
    ("options", {"sd_model_checkpoint": "missing.safetensors"}, 400, "missing.safetensors"),
    ("options", {"CLIP_stop_at_last_layers": "lots"}, 400, "CLIP_stop_at_last_layers"),
    ("interrogate", {"image": _b64(Image.new("RGB", (8, 8)))}, 501, "interrogation"),
    ("png-info", {"image": "%%%"}, 400, "base64"),
    ("jobs", {"type": "upscale"}, 422, "type"),
    ("txt2img", '{"prompt": "p", "width": 64, "height": 64, "steps": 2, "cfg_scale": NaN}', 422, "cfg_scale"),
    ("txt2img", '{"prompt": "p", "width": 64, "height": 64, "steps": 2, "override_settings": {"eta_ddim": Infinity}}',
     422, "NaN and Infinity"),
    ("jobs", '{"type": "txt2img", "prompt": "p", "steps": 2, "denoising_strength": -Infinity}', 422,
     "denoising_strength"),
    ("options", {"outdir_txt2img_samples": "/tmp/elsewhere"}, 403, "outdir_txt2img_samples"),
    ("options", {"directories_filename_pattern": "../../[seed]"}, 403, "directories_filename_pattern"),
    ("txt2img", {"prompt": "p", **SMALL, "save_images": True,
                 "override_settings": {"samples_filename_pattern": "../../../x-[seed]"}}, 403,
     "samples_filename_pattern"),
])
def test_client_mistakes_are_4xx_with_a1111_error_body(api_server, route, body, status, message):
    url, _, _ = api_server
    if isinstance(body, str):
        response = requests.post(f"{url}/sdapi/v1/{route}", data=body, headers={"Content-Type": "application/json"},
                                 timeout=60)
    else:
        response = requests.post(f"{url}/sdapi/v1/{route}", json=body, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) == {"error", "detail", "body", "errors"}
    assert message.lower() in json.dumps(error).lower()
    assert requests.get(f"{url}/sdapi/v1/samplers", timeout=30).status_code == 200  # still serving


def test_api_auth_protects_every_route(tmp_path):
    with running_webui(tmp_path, "--api", "--nowebui", "--api-auth", "alice:secret") as (url, _):
        schema = requests.get(f"{url}/openapi.json", timeout=30).json()
        routes = [(path, method) for path, methods in schema["paths"].items() for method in methods
                  if path.startswith("/sdapi/")]
        assert ("/sdapi/v1/loras", "get") in routes and len(routes) >= 35
        for path, method in routes:
            response = requests.request(method, url + path.replace("{job_id}", "x"), json={}, timeout=30)
            assert response.status_code == 401, (path, method)
            assert response.headers["WWW-Authenticate"] == "Basic"
        wrong = requests.get(f"{url}/sdapi/v1/samplers", auth=("alice", "nope"), timeout=30)
        assert wrong.status_code == 401 and wrong.json()["detail"] == "Incorrect username or password"
        # failed logins lock the client out for 0.5 s, 1 s, 2 s …: even the right password waits its turn
        locked = requests.get(f"{url}/sdapi/v1/samplers", auth=("alice", "secret"), timeout=30)
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
        time.sleep(0.6)
        assert requests.get(f"{url}/sdapi/v1/samplers", auth=("alice", "nope"), timeout=30).status_code == 401
        time.sleep(0.6)
        assert requests.get(f"{url}/sdapi/v1/samplers", auth=("alice", "secret"), timeout=30).status_code == 429
        time.sleep(0.5)  # the second failure doubled the delay to 1 s
        assert requests.get(f"{url}/sdapi/v1/samplers", auth=("alice", "secret"), timeout=30).status_code == 200
        assert requests.get(f"{url}/sdapi/v1/loras", auth=("alice", "secret"), timeout=30).status_code == 200
        flags = requests.get(f"{url}/sdapi/v1/cmd-flags", auth=("alice", "secret"), timeout=30).json()
        assert flags["api_auth"] is None and "secret" not in json.dumps(flags)  # logins are never shown
        assert flags["nowebui"] is True


def test_api_log_flag_logs_each_request(api_server):
    """The shared API server runs with --api-log (tests/conftest.py): this request adds one more log line."""
    url, _, log_path = api_server
    line = "GET /sdapi/v1/samplers 200"
    before = Path(log_path).read_text(errors="replace").count(line)
    requests.get(f"{url}/sdapi/v1/samplers", timeout=30)
    deadline = time.time() + 10
    while Path(log_path).read_text(errors="replace").count(line) <= before and time.time() < deadline:
        time.sleep(0.1)
    assert Path(log_path).read_text(errors="replace").count(line) > before


def test_extras_single_and_batch(client, api_server):
    url, data_dir, _ = api_server
    source = Image.new("RGB", (24, 16), (200, 30, 30))
    source.putpixel((3, 3), (0, 255, 0))
    result = client.extra_single_image(source, upscaler_1="Lanczos", upscaling_resize=2)
    assert result.image.size == (48, 32)
    assert result.image.getpixel((0, 0)) == source.resize((48, 32), Image.Resampling.LANCZOS).getpixel((0, 0))
    body = requests.post(f"{url}/sdapi/v1/extra-batch-images", json={
        "imageList": [{"data": _b64(source), "name": "a.png"}, {"data": _b64(source, prefix=True), "name": "b"}],
        "resize_mode": 1, "upscaling_resize_w": 40, "upscaling_resize_h": 40, "upscaler_1": "Nearest"},
        timeout=60).json()
    assert [_png(data).size for data in body["images"]] == [(40, 40), (40, 40)] and "html_info" in body
    assert not list((data_dir / "outputs").rglob("extras-images/*.png"))  # the API does not save extras
    bad = requests.post(f"{url}/sdapi/v1/extra-single-image", json={"image": _b64(source), "upscaler_1": "Nope"},
                        timeout=60)
    assert bad.status_code == 400 and "Nope" in bad.json()["detail"]
    upscalers = [u["name"] for u in requests.get(f"{url}/sdapi/v1/upscalers", timeout=30).json()]
    assert upscalers[:3] == ["None", "Lanczos", "Nearest"]


def test_selectable_script_through_the_api(api_server):
    url, _, _ = api_server
    lists = requests.get(f"{url}/sdapi/v1/scripts", timeout=30).json()
    assert "prompt matrix" in lists["txt2img"] and "prompts from file or textbox" in lists["img2img"]
    body = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "a circle|red|blue", "seed": 8, **SMALL,
                                                          "script_name": "Prompt matrix", "script_args": []},
                         timeout=300).json()
    info = json.loads(body["info"])
    assert sorted(info["all_prompts"]) == sorted(["a circle", "a circle, red", "a circle, blue",
                                                  "a circle, red, blue"])
    assert len(body["images"]) == 5  # the grid and the four combinations


def test_mask_of_another_size_is_resized(api_server):
    url, _, _ = api_server
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))  # the left half, at half the size
    init = Image.new("RGB", (64, 64), (30, 70, 220))
    body = requests.post(f"{url}/sdapi/v1/img2img", json={
        "init_images": [_b64(init)], "mask": _b64(mask), "prompt": "a yellow circle", "mask_blur": 0,
        "inpainting_fill": 1, "inpaint_full_res": False, "denoising_strength": 1.0, "seed": 4, **SMALL}, timeout=120)
    assert body.status_code == 200
    import numpy as np

    out = np.asarray(_png(body.json()["images"][0]).convert("RGB"))
    # the mask was scaled to 64x64 (a soft edge at the seam, as A1111 resizes it): the right half is kept
    assert np.array_equal(out[:, 40:], np.asarray(init)[:, 40:])


def test_fifty_concurrent_saving_requests_number_files_without_gaps(api_server):
    url, data_dir, _ = api_server
    folder = data_dir / "outputs" / "txt2img-images"
    before = set(folder.rglob("*.png")) if folder.exists() else set()
    results: dict[int, requests.Response] = {}

    def call(seed: int) -> None:
        results[seed] = requests.post(f"{url}/sdapi/v1/txt2img", json={
            "prompt": "p", "seed": seed, "width": 64, "height": 64, "steps": 1, "save_images": True}, timeout=900)

    threads = [threading.Thread(target=call, args=(5000 + i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(900)
    assert all(r.status_code == 200 for r in results.values()) and len(results) == 50
    new = sorted(set(folder.rglob("*.png")) - before)
    assert len(new) == 50  # every image saved exactly once
    numbers = sorted(int(p.name.split("-", 1)[0]) for p in new)
    assert numbers == list(range(numbers[0], numbers[0] + 50))  # no gaps, no collisions
    assert sorted(int(p.stem.split("-", 1)[1]) for p in new) == list(range(5000, 5050))
