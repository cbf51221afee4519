"""A1111's `modules.api.api` and `modules.api.models` names, through what they do: base64 image coding, URL
checks, script/sampler lookups, an extension's route added with `Api.add_api_route` behind --api-auth, and the
route methods extensions call directly."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from PIL import Image

from modules.api import api, models


def _image_with_info() -> Image.Image:
    image = Image.new("RGB", (8, 6), (10, 200, 30))
    image.putpixel((0, 0), (255, 0, 0))
    image.info["parameters"] = "a frog\nSteps: 3, Seed: 1"
    return image


def test_encode_and_decode_round_trip_keeps_pixels_and_parameters(app):
    encoded = api.encode_pil_to_base64(_image_with_info())
    assert isinstance(encoded, bytes)  # A1111 returns bytes
    raw = base64.b64decode(encoded)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = api.decode_base64_to_image(encoded.decode())
    assert decoded.size == (8, 6) and decoded.getpixel((0, 0)) == (255, 0, 0)
    assert decoded.info["parameters"] == "a frog\nSteps: 3, Seed: 1"
    with_prefix = api.decode_base64_to_image("data:image/png;base64," + encoded.decode())
    assert with_prefix.getpixel((1, 1)) == (10, 200, 30)


def test_encode_follows_the_samples_format_setting(app):
    app.opts.set("samples_format", "jpg")
    try:
        raw = base64.b64decode(api.encode_pil_to_base64(_image_with_info()))
    finally:
        app.opts.set("samples_format", "png")
    assert raw[:3] == b"\xff\xd8\xff"  # JPEG
    assert Image.open(io.BytesIO(raw)).size == (8, 6)


def test_decode_refuses_bad_data_and_local_urls(app, network_guard):
    with pytest.raises(HTTPException) as bad:
        api.decode_base64_to_image("not base64 at all!")
    assert bad.value.status_code == 400
    with pytest.raises(HTTPException, match="local resource"):
        api.decode_base64_to_image("http://127.0.0.1:9/secret.png")
    assert not api.verify_url("http://localhost/x.png")
    assert not api.verify_url("http://10.1.2.3/x.png")
    assert api.verify_url("http://8.8.8.8/x.png")  # a global address (nothing is fetched)
    assert network_guard.attempts == []


def test_script_and_sampler_lookups():
    class Titled:
        def __init__(self, title):
            self._title = title

        def title(self):
            return self._title

    assert api.script_name_to_index("x/y/z plot", [Titled("Prompt matrix"), Titled("X/Y/Z plot")]) == 1
    with pytest.raises(HTTPException) as missing:
        api.script_name_to_index("nope", [Titled("Prompt matrix")])
    assert missing.value.status_code == 422 and "Script 'nope' not found" in missing.value.detail
    assert api.validate_sampler_name("Euler a") == "Euler a"
    assert api.validate_sampler_name("k_euler_a") == "k_euler_a"
    with pytest.raises(HTTPException) as unknown:
        api.validate_sampler_name("Nonexistent sampler")
    assert unknown.value.status_code == 400


def test_add_api_route_puts_an_extension_route_behind_api_auth(app):
    app.cmd_opts.api_auth = "user:secret"
    try:
        fastapi_app = FastAPI()
        extension_api = api.Api(fastapi_app, app.queue_lock)
        extension_api.add_api_route("/my-ext/ping", lambda: {"pong": True}, methods=["GET"])
        client = TestClient(fastapi_app)
        assert client.get("/my-ext/ping").status_code == 401
        assert client.get("/my-ext/ping", auth=("user", "wrong")).status_code == 401
        answer = client.get("/my-ext/ping", auth=("user", "secret"))
        assert answer.status_code == 200 and answer.json() == {"pong": True}
    finally:
        app.cmd_opts.api_auth = None
    open_app = FastAPI()
    api.Api(open_app, app.queue_lock).add_api_route("/open", lambda: {"ok": 1}, methods=["GET"])
    assert TestClient(open_app).get("/open").json() == {"ok": 1}


def test_text2imgapi_answers_a1111s_response_model(tiny_app):
    request = models.StableDiffusionTxt2ImgProcessingAPI(prompt="a blue cube", width=64, height=64, steps=2,
                                                         sampler_name="Euler", seed=3)
    response = api.Api(FastAPI()).text2imgapi(request)
    assert isinstance(response, models.TextToImageResponse)
    image = api.decode_base64_to_image(response.images[0])
    assert image.size == (64, 64)
    assert "a blue cube" in image.info["parameters"] and "Seed: 3" in response.info
    assert response.parameters["prompt"] == "a blue cube"
    with tiny_app.queue_lock:  # an extension's own queue turn (agent-scheduler): runs inside it, no deadlock
        inside = api.Api(FastAPI()).text2imgapi(request)
    assert inside.images[0] == response.images[0]  # same seed: the same image
    progress = api.Api(FastAPI()).progressapi()
    assert isinstance(progress, models.ProgressResponse) and progress.progress == 0


def test_upscaler_to_index_and_response_models(app):
    assert api.upscaler_to_index("lanczos") == 1
    with pytest.raises(HTTPException) as unknown:
        api.upscaler_to_index("nope")
    assert unknown.value.status_code == 400 and "Lanczos" in unknown.value.detail
    assert models.StableDiffusionImg2ImgProcessingAPI is models.Img2ImgRequest
    assert models.PNGInfoResponse(info="x", items={"a": 1}).items == {"a": 1}
