"""End to end: start the real server (webui.py in a subprocess on a loopback port) and drive the txt2img tab."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.servers import running_webui, server_process

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(webui_server):
    """The run's shared UI server (tests/conftest.py), for the UI test modules that import this fixture."""
    return webui_server


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    """This module's own server: its tests count the files from the first one, switch the model and stop it."""
    data_dir = tmp_path_factory.mktemp("server-data")
    with running_webui(data_dir, "--api", "--api-log") as (url, log_path):
        yield url, data_dir, log_path


def test_txt2img_tab_generates_and_saves_with_infotext(own_server):
    from gradio_client import Client

    url, data_dir, _ = own_server
    client = Client(url, verbose=False)
    gallery, info, html_info = client.predict(
        "a small blue square", "noise", "Euler a", "Automatic", 5, 7, 4242, 64, 64, 1, 1, [], api_name="/txt2img")
    assert len(gallery) == 1
    saved = list((data_dir / "outputs" / "txt2img-images").rglob("*.png"))
    assert len(saved) == 1
    assert re.fullmatch(r"00000-4242\.png", saved[0].name)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", saved[0].parent.name)
    text = Image.open(saved[0]).text["parameters"]
    assert text == info
    assert text.startswith("a small blue square\nNegative prompt: noise\nSteps: 5, Sampler: Euler a, ")
    assert "Seed: 4242, Size: 64x64, Model hash: " in text and "Model: demo-shapes-sd1" in text
    assert "demo-shapes-sd1.safetensors" in [p.name for p in (data_dir / "models" / "Stable-diffusion").iterdir()]


def test_checkpoint_refresh_and_switch_from_the_ui(own_server, tiny_checkpoints):
    from gradio_client import Client

    url, data_dir, _ = own_server
    target = data_dir / "models" / "Stable-diffusion" / "second.safetensors"
    target.write_bytes(tiny_checkpoints["sd2"].read_bytes())
    client = Client(url, verbose=False)
    client.predict(api_name="/refresh_checkpoints")
    title = f"second.safetensors [{hashlib.sha256(target.read_bytes()).hexdigest()[:10]}]"
    client.predict(title, api_name="/change_checkpoint")
    _, info, _ = client.predict("p", "", "Euler", "Automatic", 2, 7, 1, 64, 64, 1, 1, [], api_name="/txt2img")
    assert "Model: second" in info and "CFG scale: 7," in info
    config = (data_dir / "config.json").read_text()
    assert '"sd_model_checkpoint": "second.safetensors [' in config
    with pytest.raises(Exception, match="not in the list of choices"):
        client.predict("second.safetensors", api_name="/change_checkpoint")  # titles carry the hash


def test_styles_and_token_counter_from_the_ui(own_server):
    from gradio_client import Client

    url, data_dir, _ = own_server
    client = Client(url, verbose=False)
    client.predict("Framed", "{prompt}, white background", "blurry", api_name="/save_style")
    assert "Framed,\"{prompt}, white background\",blurry" in (data_dir / "styles.csv").read_text()
    _, info, _ = client.predict("a red circle", "", "Euler", "Automatic", 2, 7, 1, 64, 64, 1, 1, ["Framed"],
                                api_name="/txt2img")
    assert info.startswith("a red circle, white background\nNegative prompt: blurry\n")
    counter = client.predict("a red circle, " * 30 + "<lora:x:1>", 20, api_name="/token_counter")
    assert ">120/150<" in counter


def test_bad_input_is_reported_not_crashed(own_server):
    from gradio_client import Client

    url, _, _ = own_server
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="Nope"):  # Gradio refuses values outside the dropdown's choices
        client.predict("x", "", "Nope", "Automatic", 5, 7, 1, 64, 64, 1, 1, [], api_name="/txt2img")
    # a combination the sampler cannot do reaches our core and comes back as a readable message
    with pytest.raises(Exception, match="DDIM.*Automatic"):
        client.predict("x", "", "DDIM", "Karras", 5, 7, 1, 64, 64, 1, 1, [], api_name="/txt2img")


def test_server_binds_loopback_and_serves_the_page(own_server):
    import httpx

    url, _, log_path = own_server
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    models = httpx.get(url + "/sdapi/v1/sd-models", timeout=10).json()
    assert models[0]["title"].startswith("demo-shapes-sd1.safetensors [")
    assert "Running on local URL:  http://127.0.0.1:" in log_path.read_text()


def test_api_in_ui_mode_has_a1111_error_bodies_and_the_request_log(own_server):
    """With the UI, the API is mounted on Gradio's app after it started: its error handlers and --api-log's
    middleware must be there anyway (given to the app when it is made). Gradio's own routes keep their errors."""
    import httpx

    url, _, log_path = own_server
    response = httpx.post(f"{url}/sdapi/v1/txt2img", timeout=60, json={
        "prompt": "p", "width": 64, "height": 64, "steps": 2, "sampler_name": "Nope"})
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error", "detail", "body", "errors"} and "Nope" in response.json()["detail"]
    invalid = httpx.post(f"{url}/sdapi/v1/txt2img", timeout=60, json={"steps": "many"})
    assert invalid.status_code == 422 and set(invalid.json()) == {"error", "detail", "body", "errors"}
    missing = httpx.get(f"{url}/sdapi/v1/jobs/nope", timeout=60)
    assert missing.status_code == 404 and missing.json()["error"] == "ApiError"
    # each line is written once its answer has gone out: wait for the last request's line too
    expected = ("POST /sdapi/v1/txt2img 400", "GET /sdapi/v1/jobs/nope 404")
    deadline = time.time() + 10
    while not all(line in log_path.read_text(errors="replace") for line in expected) and time.time() < deadline:
        time.sleep(0.1)
    assert "POST /sdapi/v1/txt2img 400" in log_path.read_text(errors="replace")
    assert "GET /sdapi/v1/jobs/nope 404" in log_path.read_text(errors="replace")
    outside = httpx.get(f"{url}/no-such-page", timeout=60)  # not the API's: FastAPI's own body, and not logged
    assert outside.status_code == 404 and "error" not in outside.json()
    assert "/no-such-page" not in log_path.read_text(errors="replace")


def test_sigterm_with_the_ui_interrupts_the_job_and_exits_0(own_server):
    """Graceful shutdown when Gradio serves the page (its own server loop, unlike --nowebui): the running job is
    interrupted and still answered, and the process exits with status 0. The last test of this module's server."""
    import httpx

    url, data_dir, log_path = own_server
    process = server_process(data_dir)
    answer: dict[str, httpx.Response | Exception] = {}

    def generate() -> None:
        try:
            answer["response"] = httpx.post(f"{url}/sdapi/v1/txt2img", timeout=60, json={
                "prompt": "a red circle", "width": 64, "height": 64, "steps": 150, "sampler_name": "Euler"})
        except httpx.HTTPError as e:
            answer["response"] = e

    job = threading.Thread(target=generate)
    job.start()
    deadline = time.time() + 60
    while httpx.get(f"{url}/sdapi/v1/progress?skip_current_image=true", timeout=10).json()["state"][
            "sampling_step"] < 1:
        assert time.time() < deadline, "the job never started sampling"
        time.sleep(0.05)
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    assert time.time() - sent < 15
    job.join(10)
    response = answer["response"]
    assert isinstance(response, httpx.Response) and response.status_code == 200, response
    assert response.json()["images"] == []  # interrupted inside its only batch
    log = log_path.read_text(errors="replace")
    assert "SIGTERM received" in log and "server stopped" in log


def test_unknown_flag_is_a_clear_error():
    result = subprocess.run([sys.executable, "webui.py", "--no-such-flag"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "COMMANDLINE_ARGS": ""})
    assert result.returncode == 2
    assert "--no-such-flag" in result.stderr and "--port" in result.stderr


def test_api_only_server_with_ckpt_flag(tmp_path, tiny_checkpoints):
    """--nowebui serves only the API (A1111: port 7861 by default); --ckpt adds and loads a file from anywhere."""
    import httpx

    outside = tmp_path / "elsewhere" / "my-sd2.safetensors"
    outside.parent.mkdir()
    outside.write_bytes(tiny_checkpoints["sd2"].read_bytes())
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with running_webui(data_dir, "--nowebui", "--ckpt", str(outside)) as (url, _):
        models = httpx.get(f"{url}/sdapi/v1/sd-models", timeout=30).json()
        titles = [m["title"] for m in models]
        assert any(t.startswith("my-sd2.safetensors [") for t in titles)
        response = httpx.post(f"{url}/sdapi/v1/txt2img", timeout=60,
                              json={"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 5})
        assert response.status_code == 200
        info = response.json()["info"]
        assert '"sd_model_name": "my-sd2"' in info and '"seed": 5' in info
        assert httpx.get(f"{url}/", timeout=5).status_code == 404  # no UI
        assert httpx.post(f"{url}/sdapi/v1/txt2img", timeout=30,
                          json={"prompt": "x", "sampler_name": "Bogus"}).status_code == 400
