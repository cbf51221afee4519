"""The job runner: one queue and one worker for every kind of GPU work (real threads, real jobs, a real server)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
import time

import pytest
import requests
from PIL import Image

from modules.runner import JobCancelled, JobRunner
from modules.state import State
from modules.tasks import QueueClosed, TaskRegistry
from tests.servers import running_webui


def _runner() -> JobRunner:
    return JobRunner(State(), TaskRegistry())


def _wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.mark.unit
def test_items_run_one_at_a_time_in_arrival_order_on_one_worker():
    runner = _runner()
    log: list[tuple[str, str, str]] = []
    gate = threading.Event()

    def work(name: str):
        def run() -> str:
            log.append((name, "start", threading.current_thread().name))
            if name == "first":
                gate.wait(10)
            log.append((name, "end", threading.current_thread().name))
            return name.upper()
        return run

    futures = [runner.submit(kind, work(name)) for kind, name in
               (("txt2img", "first"), ("extras", "second"), ("model-merge", "third"))]
    _wait_until(lambda: len(runner.queued()) == 2)
    assert [t.label for t in runner.queued()] == ["extras", "model-merge"]
    assert [runner.position(f.task.id) for f in futures] == [None, 0, 1]
    assert runner.current().id == futures[0].task.id
    gate.set()
    assert [f.result(10) for f in futures] == ["FIRST", "SECOND", "THIRD"]
    assert [entry[:2] for entry in log] == [("first", "start"), ("first", "end"), ("second", "start"),
                                             ("second", "end"), ("third", "start"), ("third", "end")]
    assert {entry[2] for entry in log} == {"job-runner (device 0)"}
    assert all(f.task.status == "done" for f in futures)


@pytest.mark.unit
def test_an_error_reaches_the_caller_and_the_worker_goes_on():
    runner = _runner()

    def broken() -> None:
        raise ValueError("width must be between 8 and 8192")

    with pytest.raises(ValueError, match="width must be"):
        runner.run("txt2img", broken)
    assert runner.run("txt2img", lambda: 42) == 42
    failed = runner.tasks.get(list(runner.tasks._tasks)[0])
    assert failed.status == "failed" and "width must be" in failed.error


@pytest.mark.unit
def test_a_turn_holds_the_device_and_nested_work_runs_inline():
    runner = _runner()
    order: list[str] = []
    with runner.turn("model-switch"):
        later = runner.submit("txt2img", lambda: order.append("job"))
        time.sleep(0.2)
        assert order == [] and runner.position(later.task.id) == 0  # waits behind the turn
        # work asked for by the holder of the turn is part of it: no deadlock
        assert runner.run("txt2img", lambda: "inline") == "inline"
        order.append("turn")
    later.result(10)
    assert order == ["turn", "job"]
    # a job's own nested submission (a script calling process_images) runs inside it too
    assert runner.run("txt2img", lambda: runner.run("txt2img", lambda: "nested")) == "nested"


@pytest.mark.unit
def test_cancelled_while_queued_never_runs_and_a_running_one_is_interrupted():
    runner = _runner()
    ran: list[str] = []
    release = threading.Event()

    def long_job() -> str:
        while not runner.state.interrupted and not release.is_set():
            time.sleep(0.01)
        return "stopped" if runner.state.interrupted else "finished"

    running = runner.submit("txt2img", long_job)
    queued = runner.submit("extras", lambda: ran.append("extras"))
    _wait_until(lambda: running.task.status == "running")
    runner.cancel(queued.task.id)
    runner.cancel(running.task.id)
    assert running.result(10) == "stopped"
    with pytest.raises(JobCancelled):
        queued.result(10)
    assert ran == [] and queued.task.status == "cancelled" and running.task.status == "cancelled"


@pytest.mark.unit
def test_close_fails_queued_items_and_refuses_new_ones():
    runner = _runner()
    release = threading.Event()
    running = runner.submit("txt2img", lambda: release.wait(10))
    queued = runner.submit("img2img", lambda: "never")
    _wait_until(lambda: running.task.status == "running")
    failed = runner.close("The server is shutting down")
    assert [t.id for t in failed] == [queued.task.id]
    with pytest.raises(QueueClosed):
        runner.submit("extras", lambda: None)
    with pytest.raises(QueueClosed):
        with runner.turn():
            pass
    release.set()
    assert running.result(10) is True
    with pytest.raises(QueueClosed, match="shutting down"):
        queued.result(10)
    assert runner.wait_idle(10)


@pytest.mark.integration
def test_generation_extras_and_merge_at_the_same_time_take_turns(app, tiny_checkpoints):
    """Real jobs of three kinds, asked for at once from three threads: each waits in the one queue with its place,
    and they run one after another on the worker."""
    import shutil

    from modules import postprocessing
    from modules.processing import Job
    from modules.ui import merger

    shutil.copy(tiny_checkpoints["sd1"], app.cmd_opts.ckpt_dir)
    app.models.refresh()
    app.models.get()
    outcome: dict[str, object] = {}
    periods: dict[str, list[float]] = {}

    def timed(name, fn):
        def run():
            outcome[name] = fn()
            task = next(t for t in app.tasks._tasks.values() if t.label == name)
            periods[name] = [task.started, task.finished]
        return run

    size = {"width": 64, "height": 64, "steps": 2, "do_not_save_grid": True}
    name = app.models.registry.titles()[0]
    threads = [
        threading.Thread(target=timed("txt2img", lambda: app.run_job(Job(prompt="a red circle", seed=1, **size)))),
        threading.Thread(target=timed("extras", lambda: app.run_extras_job(postprocessing.ExtrasRequest(
            image=Image.new("RGB", (32, 32), "red"), upscaling_resize=2, extras_upscaler_1="Lanczos")))),
        threading.Thread(target=timed("model-merge", lambda: merger.merge(
            name, "", "", "No interpolation", 0.3, False, "merged", "safetensors", None, "", True, False, False,
            "{}"))),
    ]
    with app.queue_lock:  # something else holds the device while the three arrive
        for thread in threads:
            thread.start()
            _wait_until(lambda n=len([t for t in threads if t.ident]): len(app.runner.queued()) == n)
        queue = app.runner.queued()
        assert [t.label for t in queue] == ["txt2img", "extras", "model-merge"]
        assert [app.runner.position(t.id) for t in queue] == [0, 1, 2]
    for thread in threads:
        thread.join(60)
    assert len(outcome["txt2img"].images) == 1
    assert outcome["extras"].images[0].size == (64, 64)
    assert outcome["model-merge"][0].startswith("Checkpoint saved to ")
    spans = sorted(periods.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans  # never two at once


# --- through the API of a real server --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def api_url(tmp_path_factory):
    with running_webui(tmp_path_factory.mktemp("runner-api"), "--api", "--nowebui") as (url, _log):
        yield url


def _long_job(url: str, steps: int = 400, **extra) -> str:
    body = {"type": "txt2img", "prompt": "a red circle", "steps": steps, "width": 64, "height": 64,
            "sampler_name": "Euler", "save_images": False, **extra}
    answer = requests.post(f"{url}/sdapi/v1/jobs", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def _status(url: str, job_id: str) -> dict:
    return requests.get(f"{url}/sdapi/v1/jobs/{job_id}", timeout=30).json()


@pytest.mark.integration
def test_override_settings_never_show_in_the_global_options(api_url):
    before = requests.get(f"{api_url}/sdapi/v1/options", timeout=30).json()
    overrides = {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337}
    job = _long_job(api_url, steps=150, override_settings=overrides, override_settings_restore_afterwards=True)
    _wait_until(lambda: _status(api_url, job)["status"] == "running", 60)
    during = requests.get(f"{api_url}/sdapi/v1/options", timeout=30).json()
    assert _status(api_url, job)["status"] == "running"  # read while the job ran with its overrides
    assert during["CLIP_stop_at_last_layers"] == before["CLIP_stop_at_last_layers"] == 1
    assert during["eta_noise_seed_delta"] == before["eta_noise_seed_delta"] == 0
    _wait_until(lambda: _status(api_url, job)["status"] == "done", 120)
    info = json.loads(_status(api_url, job)["result"]["info"])
    assert "Clip skip: 2" in info["infotexts"][0] and "ENSD: 31337" in info["infotexts"][0]  # the job used them
    after = requests.get(f"{api_url}/sdapi/v1/options", timeout=30).json()
    assert after["CLIP_stop_at_last_layers"] == 1 and after["eta_noise_seed_delta"] == 0


@pytest.mark.integration
def test_api_requests_of_every_kind_wait_in_one_queue_with_their_place(api_url):
    blocker = _long_job(api_url)
    _wait_until(lambda: _status(api_url, blocker)["status"] == "running", 60)
    png = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(png, format="PNG")
    answers: dict[str, requests.Response] = {}

    def extras() -> None:
        answers["extras"] = requests.post(f"{api_url}/sdapi/v1/extra-single-image", timeout=120, json={
            "image": base64.b64encode(png.getvalue()).decode(), "upscaling_resize": 2, "upscaler_1": "Lanczos"})

    def txt2img() -> None:
        answers["txt2img"] = requests.post(f"{api_url}/sdapi/v1/txt2img", timeout=120, json={
            "prompt": "a blue square", "steps": 2, "width": 64, "height": 64, "force_task_id": "task(queued-gen)"})

    threads = [threading.Thread(target=extras), threading.Thread(target=txt2img)]
    threads[0].start()
    _wait_until(lambda: len(requests.get(f"{api_url}/sdapi/v1/pending-tasks", timeout=30).json()["queue"]) == 1)
    threads[1].start()
    _wait_until(lambda: len(requests.get(f"{api_url}/sdapi/v1/pending-tasks", timeout=30).json()["queue"]) == 2)
    pending = requests.get(f"{api_url}/sdapi/v1/pending-tasks", timeout=30).json()
    assert pending["running"] == blocker
    assert [(q["type"], q["position"]) for q in pending["queue"]] == [("extras", 0), ("txt2img", 1)]
    progress = requests.get(f"{api_url}/sdapi/v1/progress", params={"id_task": "task(queued-gen)"}, timeout=30).json()
    assert progress["queued"] is True and progress["queue_position"] == 1
    requests.delete(f"{api_url}/sdapi/v1/jobs/{blocker}", timeout=30)
    for thread in threads:
        thread.join(120)
    assert answers["extras"].status_code == 200 and answers["txt2img"].status_code == 200
    image = Image.open(io.BytesIO(base64.b64decode(answers["extras"].json()["image"])))
    assert image.size == (32, 32)


@pytest.mark.integration
def test_a_client_that_hangs_up_cancels_its_queued_job(api_url):
    blocker = _long_job(api_url)
    _wait_until(lambda: _status(api_url, blocker)["status"] == "running", 60)
    host, port = api_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps({"prompt": "a green triangle", "steps": 2, "width": 64, "height": 64,
                       "force_task_id": "task(hung-up)"})
    connection.request("POST", "/sdapi/v1/txt2img", body=body, headers={"Content-Type": "application/json"})
    _wait_until(lambda: _status(api_url, "task(hung-up)").get("status") == "queued", 30)
    connection.close()  # the client goes away without reading the answer
    _wait_until(lambda: _status(api_url, "task(hung-up)")["status"] == "cancelled", 30)
    assert _status(api_url, blocker)["status"] == "running"  # someone else's job is not touched
    requests.delete(f"{api_url}/sdapi/v1/jobs/{blocker}", timeout=30)
    _wait_until(lambda: _status(api_url, blocker)["status"] == "cancelled", 60)
    # the async job API's jobs run on although nobody waits on a connection
    job = _long_job(api_url, steps=2)
    _wait_until(lambda: _status(api_url, job)["status"] == "done", 60)


@pytest.mark.unit
def test_closing_a_tab_cancels_only_that_sessions_work():
    runner = _runner()
    release = threading.Event()

    def long_job() -> str:
        while not runner.state.interrupted and not release.is_set():
            time.sleep(0.01)
        return "stopped" if runner.state.interrupted else "finished"

    alice_running = runner.submit("txt2img", long_job, owner="alice")
    api_job = runner.submit("txt2img", lambda: "api")  # no owner: the API's
    alice_queued = runner.submit("extras", lambda: "never", owner="alice")
    bob_queued = runner.submit("img2img", lambda: "bob", owner="bob")
    _wait_until(lambda: alice_running.task.status == "running")
    cancelled = runner.cancel_owner("alice")
    assert {t.id for t in cancelled} == {alice_running.task.id, alice_queued.task.id}
    assert alice_running.result(10) == "stopped"
    with pytest.raises(JobCancelled):
        alice_queued.result(10)
    assert api_job.result(10) == "api" and bob_queued.result(10) == "bob"
    assert runner.state.waiting == {}


@pytest.mark.unit
def test_a_job_past_its_timeout_is_stopped_and_says_why():
    runner = _runner()
    steps: list[int] = []

    def long_job() -> str:
        for step in range(1000):
            if runner.state.interrupted:
                return f"partial after {len(steps)} steps"
            steps.append(step)
            time.sleep(0.01)
        return "finished"

    future = runner.submit("txt2img", long_job, timeout=0.3)
    assert future.result(10).startswith("partial after")  # what it made so far is still returned
    assert 5 < len(steps) < 500
    assert future.task.status == "failed" and future.task.error.startswith("Timed out after 0.3 s")
    assert runner.submit("txt2img", lambda: "next", timeout=5).result(10) == "next"  # the next one runs


@pytest.mark.unit
def test_queue_lock_behaves_like_a1111s_lock():
    from modules.runner import QueueLock

    runner = _runner()
    lock = QueueLock(runner)
    release = threading.Event()
    busy = runner.submit("txt2img", lambda: release.wait(10))
    _wait_until(lambda: busy.task.status == "running")
    started = time.time()
    assert lock.acquire(blocking=False) is False and time.time() - started < 1  # gives up at once
    assert lock.acquire(timeout=0.2) is False
    assert runner.queued() == []  # the turns it gave up left the queue
    release.set()
    assert lock.acquire(timeout=10) is True
    other = threading.Thread(target=lock.release)  # any thread may release, as with threading.Lock
    other.start()
    other.join(10)
    assert not lock.locked()


@pytest.mark.unit
def test_a_future_cancelled_while_queued_never_runs():
    runner = _runner()
    release = threading.Event()
    ran: list[str] = []
    busy = runner.submit("txt2img", lambda: release.wait(10))
    queued = runner.submit("extras", lambda: ran.append("extras"))
    assert queued.cancel() is True
    release.set()
    busy.result(10)
    assert runner.wait_idle(10) and ran == [] and queued.task.status == "cancelled"
