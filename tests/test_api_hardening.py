"""In-process checks of the API's pure pieces: the task registry's state machine, infotext values that do not
convert, job cancellation that must reach only its own job, image decoding errors, request validation, and the
start-up warning about an API reachable without a login. The HTTP behaviour is tested on the real servers in
test_api.py and test_server.py."""

from __future__ import annotations

import argparse
import base64

import pytest

from modules import tasks
from modules.tasks import CANCELLED, DONE, FAILED, RUNNING, TaskRegistry


def test_a_task_failed_by_close_never_starts_nor_becomes_done():
    registry = TaskRegistry()
    task = registry.add(None, "txt2img")
    registry.close("server stopping")
    assert task.status == FAILED
    assert registry.start(task) is False
    registry.finish(task, cancelled=True)  # what run_job does when start() refuses: the failure stays
    registry.finish(task)
    assert (task.status, task.error) == (FAILED, "server stopping")


def test_a_task_awaiting_its_result_is_done_only_with_it():
    registry = TaskRegistry()
    task = registry.add("job-1", "txt2img", awaits_result=True)
    assert registry.start(task)
    registry.finish(task)  # the job ran; the API has not stored its answer yet
    assert task.status == RUNNING and task.result is None and task.finished is not None
    registry.complete(task, {"images": []})
    assert task.status == DONE and task.result == {"images": []}
    failed = registry.add("job-2", "txt2img", awaits_result=True)
    registry.start(failed)
    registry.finish(failed, error="boom")
    assert failed.status == FAILED
    cancelled = registry.add("job-3", "txt2img", awaits_result=True)
    registry.start(cancelled)
    registry.finish(cancelled, cancelled=True)
    registry.complete(cancelled, {"images": []})
    assert cancelled.status == CANCELLED


def test_infotext_values_that_overflow_are_skipped():
    from modules.ui import paste

    values = paste.txt2img_values({"Batch size": "inf", "Steps": "1e400", "Seed": "-inf", "CFG scale": "5"})
    assert values == {"cfg_scale": 5}
    assert paste.seed_from_infotext("p\nSteps: 2, Seed: inf") is None


def test_cancel_interrupts_only_the_running_job_of_that_task(monkeypatch):
    from modules import api, shared
    from modules.runner import JobRunner
    from modules.state import State

    registry, state = TaskRegistry(), State()
    monkeypatch.setattr(shared, "tasks", registry)
    monkeypatch.setattr(shared, "state", state)
    monkeypatch.setattr(shared, "runner", JobRunner(state, registry))  # cancel goes through the job runner
    mine = registry.add("mine", "txt2img")
    registry.start(mine)  # the registry says running, but the sampler runs another task (it ends, the next begins)
    state.begin("txt2img", task_id="other")
    assert api.cancel_job("mine")["cancel_requested"] is True
    assert state.interrupted is False
    state.begin("txt2img", task_id="mine")
    api.cancel_job("mine")
    assert state.interrupted is True


@pytest.mark.parametrize("error", [SyntaxError("broken TIFF"), TypeError("broken TIFF")])
def test_broken_images_that_raise_syntax_or_type_errors_are_400(monkeypatch, error):
    from PIL import Image

    from modules import api

    class Broken:
        def load(self):
            raise error

    monkeypatch.setattr(Image, "open", lambda *a, **k: Broken())
    with pytest.raises(api.ApiError) as caught:
        api.decode_base64_image(base64.b64encode(b"II*\0whatever").decode(), "init_images[0]")
    assert caught.value.status_code == 400 and "not an image" in caught.value.detail


def test_nan_and_infinity_are_refused_in_every_field():
    from pydantic import ValidationError

    from modules.api import models

    for body in ({"cfg_scale": float("nan")}, {"cfg_scale": "Infinity"},
                 {"override_settings": {"CLIP_stop_at_last_layers": float("inf")}},
                 {"script_args": [1, [float("-inf")]]}):
        with pytest.raises(ValidationError):
            models.Txt2ImgRequest(**body)
    assert models.Txt2ImgRequest(cfg_scale=5.5).cfg_scale == 5.5


def test_build_job_value_errors_are_400(monkeypatch):
    from modules import api
    from modules.api import models

    def overflow(request, img2img):
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(api, "build_job", overflow)
    with pytest.raises(api.ApiError) as caught:
        api.generate(models.Txt2ImgRequest(), img2img=False)
    assert caught.value.status_code == 400
    with pytest.raises(api.ApiError) as caught:
        api.submit_job(models.JobRequest(type="txt2img"))
    assert caught.value.status_code == 400


def _flags(**kwargs) -> argparse.Namespace:
    defaults = {"listen": True, "share": False, "server_name": None, "nowebui": False, "api": False,
                "gradio_auth": None, "gradio_auth_path": None, "api_auth": None}
    return argparse.Namespace(**{**defaults, **kwargs})


def test_an_api_without_login_is_warned_about_even_when_the_ui_has_one():
    import webui

    def warned(**kwargs) -> str:
        return "\n".join(webui.exposure_warnings(_flags(**kwargs), "0.0.0.0"))

    assert "the server is reachable" in warned()
    assert warned(gradio_auth="a:b") == ""
    assert "the API (/sdapi) is reachable" in warned(gradio_auth="a:b", api=True)
    assert warned(gradio_auth="a:b", api=True, api_auth="c:d") == ""
    assert "the API (/sdapi) is reachable" in warned(nowebui=True, api=True)
    assert warned(nowebui=True, api_auth="c:d") == ""
    assert "the server is reachable" in warned(api=True, api_auth="c:d")  # the UI itself is open
    assert warned(listen=False, api=True) == ""


def test_registry_refuses_a_duplicate_id_of_a_live_task():
    registry = TaskRegistry()
    registry.add("same", "txt2img")
    with pytest.raises(ValueError, match="already queued or running"):
        registry.add("same", "txt2img")
    assert tasks.QUEUED == registry.get("same").status
