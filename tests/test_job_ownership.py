"""Interrupt/Skip reach only the job of the session that asks; a queued job can be interrupted before it starts;
progress carries an ETA. Real threads and the real queue lock."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from modules.processing import Job
from modules.state import ProgressEvent, State

SMALL = {"width": 64, "height": 64, "steps": 2, "do_not_save_samples": True, "do_not_save_grid": True}


def test_interrupt_from_another_session_does_not_touch_the_running_job():
    state = State()
    state.begin("txt2img", 1, owner="alice")
    state.interrupt(owner="bob")
    state.skip(owner="bob")
    assert not state.interrupted and not state.skipped
    state.skip(owner="alice")
    state.interrupt(owner="alice")
    assert state.interrupted and state.skipped


def test_interrupt_without_owner_is_the_api_and_stops_any_job():
    state = State()
    state.begin("txt2img", 1, owner="alice")
    state.interrupt()
    assert state.interrupted


def test_interrupt_with_nothing_queued_does_not_cancel_a_later_job():
    state = State()
    state.interrupt(owner="bob")  # nothing of bob's running or waiting
    state.enqueue("bob")
    assert state.dequeue("bob") is False


def test_eta_from_progress():
    state = State()
    assert state.eta() is None
    state.begin("txt2img", 1)
    state.time_start = time.time() - 10
    state.on_progress(ProgressEvent(job_no=0, job_count=1, step=5, total_steps=10, latent=None))
    # progress 0.51 after 10 s: about 9.6 s to go
    assert state.eta() == pytest.approx(10 / 0.51 - 10, abs=0.2)


def test_queued_job_interrupted_by_its_owner_never_runs(app):
    from modules.shared import JobInterrupted

    outcome: dict[str, object] = {}

    def queued() -> None:
        try:
            outcome["processed"] = app.run_job(Job(prompt="a red circle", seed=1, **SMALL), owner="bob")
        except JobInterrupted as e:
            outcome["error"] = str(e)

    app.queue_lock.acquire()  # another job is running
    worker = threading.Thread(target=queued)
    worker.start()
    deadline = time.time() + 10
    while not app.state.waiting.get("bob") and time.time() < deadline:
        time.sleep(0.01)
    app.state.interrupt(owner="alice")  # someone else's click changes nothing
    assert app.state.cancelled == set()
    app.state.interrupt(owner="bob")
    app.queue_lock.release()
    worker.join(30)
    assert outcome == {"error": "Interrupted before it started."}
    assert app.state.waiting == {} and app.state.cancelled == set()
    processed = app.run_job(Job(prompt="a red circle", seed=1, **SMALL), owner="bob")  # the next one runs
    assert len(processed.images) == 1


def test_progress_bar_ignores_other_sessions_jobs(app):
    from modules.ui.common import progress_bar

    calls: list[tuple] = []

    def progress(value, desc="", unit=""):
        calls.append((value, desc))

    with progress_bar(progress, owner="alice"):
        app.run_job(Job(prompt="p", seed=1, **SMALL), owner="bob")
        assert calls == []
        app.run_job(Job(prompt="p", seed=1, **SMALL), owner="alice")
    assert calls and calls[-1][0] == (2, 2)
    assert calls[-1][1].startswith("Batch 1/1 · step 2/2")


def _fail_once_with_oom(model):
    """Fault injection through torch's own hook API: the UNet's next forward raises CUDA's out-of-memory error."""
    def hook(module, args):
        handle.remove()
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    handle = model.unet.register_forward_pre_hook(hook)


def test_out_of_memory_fails_alone_with_a_clear_error_then_the_next_job_runs(app):
    import gradio as gr

    from modules.api import ApiError, generate
    from modules.api.models import Txt2ImgRequest
    from modules.ui import txt2img

    _fail_once_with_oom(app.models.get())
    with pytest.raises(ApiError) as caught:
        generate(Txt2ImgRequest(prompt="p", width=64, height=64, steps=2), img2img=False)
    assert caught.value.status_code == 503 and "Out of memory" in caught.value.detail
    assert generate(Txt2ImgRequest(prompt="p", width=64, height=64, steps=2), img2img=False)["images"]
    assert not app.queue_lock.locked() and app.state.job == ""

    _fail_once_with_oom(app.models.get())
    args = ("p", "", "Euler", "Automatic", 2, 7, 1, 64, 64, 1, 1, [], False, "Latent", 0, 0.7, 2, 0, 0,
            txt2img.SAME_SAMPLER, txt2img.SAME_SCHEDULER, "", "", -1, 0, 0, 0)
    with pytest.raises(gr.Error, match="Out of memory.*still running"):
        list(txt2img.generate(*args, request=None))
    assert list(txt2img.generate(*args, request=None))[-1][0]  # images of the next job
