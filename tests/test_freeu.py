"""The built-in FreeU script (extensions-builtin/freeu): switched per job on the diffusers UNet, with Forge's infotext
keys; a job without it is unchanged afterwards. Through the real API-only server and the demo model."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
from PIL import Image

SMALL = {"prompt": "a red circle on a white background", "width": 64, "height": 64, "steps": 3,
         "sampler_name": "Euler", "seed": 11}
STRONG = [True, 1.6, 1.8, 0.5, 0.3]  # enabled, b1, b2, s1, s2


def generate(url: str, **extra) -> tuple[np.ndarray, str]:
    body = requests.post(f"{url}/sdapi/v1/txt2img", json={**SMALL, **extra}, timeout=120)
    body.raise_for_status()
    data = body.json()
    image = Image.open(io.BytesIO(base64.b64decode(data["images"][0]))).convert("RGB")
    return np.asarray(image, dtype=np.int16), data["info"]


@pytest.mark.timeout(240)
def test_freeu_changes_the_image_writes_infotext_and_switches_off_again(webui_api_server):
    url, _, _ = webui_api_server
    scripts = requests.get(f"{url}/sdapi/v1/scripts", timeout=30).json()
    assert "freeu integrated" in scripts["txt2img"] and "freeu integrated" in scripts["img2img"]
    plain, plain_info = generate(url)
    assert "freeu" not in plain_info
    freeu, freeu_info = generate(url, alwayson_scripts={"FreeU Integrated": {"args": STRONG}})
    assert "freeu_enabled: True" in freeu_info and "freeu_b1: 1.6" in freeu_info and "freeu_s2: 0.3" in freeu_info
    assert np.abs(freeu - plain).mean() > 2.0  # the backbone/skip scaling really acts on the UNet
    again, _ = generate(url)
    assert np.array_equal(again, plain)  # the next job without FreeU is the plain image again
