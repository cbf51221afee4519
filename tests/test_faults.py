"""Faults on the real server (`webui.py --api --nowebui` on loopback): SIGKILL while saving images and settings,
a restart on the same data folder, a client that drops its connection mid-job, a corrupt checkpoint selected
through the API, and a graceful SIGTERM with a job running and another queued.

One data folder goes through all of it in file order (each server start costs seconds on a small machine): the
first server is killed, the second starts on what it left and ends with the SIGTERM test.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.servers import running_webui, server_process

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".avif", ".gif"}
SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _images(folder: Path) -> list[Path]:
    return [p for p in _files(folder) if p.suffix.lower() in IMAGE_SUFFIXES]


def _assert_complete_image(path: Path) -> None:
    with Image.open(path) as image:
        image.load()  # decodes every byte: a truncated file raises here
        assert image.size == (64, 64), path
        assert "Steps: 1" in image.info["parameters"], path


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> dict:
    """Run a large saving job while settings are being rewritten, SIGKILL the server as soon as the first image
    file appears, and return what was on disk right after the kill."""
    data_dir = tmp_path_factory.mktemp("faults-data")
    outputs = data_dir / "outputs"
    written_qualities: list[int] = []
    with running_webui(data_dir, "--api", "--nowebui") as (url, _log):
        process = server_process(data_dir)
        assert requests.post(f"{url}/sdapi/v1/options", json={"jpeg_quality": 50}, timeout=30).status_code == 200
        stop = threading.Event()

        def generate() -> None:
            try:  # the answer never comes: the server dies under it
                requests.post(f"{url}/sdapi/v1/txt2img", timeout=300, json={
                    **SMALL, "steps": 1, "prompt": "a red circle", "seed": 1, "batch_size": 16, "n_iter": 8,
                    "save_images": True, "send_images": False})
            except requests.RequestException:
                pass

        def rewrite_settings() -> None:
            # config.json is rewritten (temp + fsync + rename) over and over, so the kill may land in a write
            quality = 51
            while not stop.is_set() and quality < 100:
                try:
                    requests.post(f"{url}/sdapi/v1/options", json={"jpeg_quality": quality}, timeout=10)
                except requests.RequestException:
                    return
                written_qualities.append(quality)
                quality += 1

        threads = [threading.Thread(target=generate, daemon=True), threading.Thread(target=rewrite_settings,
                                                                                     daemon=True)]
        for thread in threads:
            thread.start()
        deadline = time.time() + 240
        while not (outputs.exists() and _images(outputs)):
            assert time.time() < deadline, "no image was saved"
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)  # right after the first file is published: the batch is being saved
        process.wait(30)
        stop.set()
        snapshot = {path: path.read_bytes() for path in _files(outputs)}
        config = (data_dir / "config.json").read_bytes()
    for thread in threads:
        thread.join(30)
    return {"data_dir": data_dir, "files": snapshot, "config": config,
            "qualities": [50, *written_qualities, written_qualities[-1] + 1 if written_qualities else 51]}


def test_sigkill_while_saving_leaves_only_complete_images_and_intact_settings(killed):
    files = killed["files"]
    images = [path for path in files if path.suffix.lower() in IMAGE_SUFFIXES]
    assert 1 <= len(images) < 16 * 8  # killed in the middle of the job
    for path in images:
        _assert_complete_image(path)
    # anything else is a hidden temp file or a sequence claim the saver left when it was killed, never an image name
    others = [path.name for path in files if path not in images]
    assert all(name.startswith((".tmp-", ".reserve-")) for name in others), others
    assert all(name.endswith(".tmp") for name in others if name.startswith(".tmp-")), others
    # settings: a complete JSON file holding one of the values the API wrote (the last or the one in flight)
    config = json.loads(killed["config"])
    assert config["jpeg_quality"] in killed["qualities"]
    assert config["sd_model_checkpoint"].startswith("demo-shapes-sd1.safetensors")


@pytest.fixture(scope="module")
def restarted(killed):
    """The server started again on the killed one's data folder, with a corrupt checkpoint added beside the model."""
    data_dir = killed["data_dir"]
    corrupt = data_dir / "models" / "Stable-diffusion" / "corrupt.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1024, 1024], "data_offsets": [0, 4 * 1024 * 1024]}})
    corrupt.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\x00" * 1000)  # a cut-off download
    with running_webui(data_dir, "--api", "--nowebui") as (url, log_path):
        yield url, data_dir, log_path, server_process(data_dir)


def _txt2img(url: str, timeout: float = 120, **overrides) -> requests.Response:
    return requests.post(f"{url}/sdapi/v1/txt2img", json={**SMALL, "prompt": "a blue square", "seed": 3,
                                                           **overrides}, timeout=timeout)


def test_restart_after_sigkill_keeps_settings_numbers_and_cleans_leftovers(killed, restarted):
    url, data_dir, _, _ = restarted
    options = requests.get(f"{url}/sdapi/v1/options", timeout=30).json()
    assert options["jpeg_quality"] == json.loads(killed["config"])["jpeg_quality"]
    before = [path for path in killed["files"] if path.suffix == ".png"]
    response = _txt2img(url, steps=1, save_images=True)
    assert response.status_code == 200, response.text
    after = _images(data_dir / "outputs")
    new = [path for path in after if path not in before]
    assert len(new) == 1 and set(before) <= set(after)  # nothing lost or overwritten
    numbers = sorted(int(path.name.split("-")[0]) for path in after)
    assert numbers[-1] == max(int(p.name.split("-")[0]) for p in before) + 1 and len(set(numbers)) == len(numbers)
    for path in after:
        with Image.open(path) as image:
            image.load()
    # the killed process's temp files were removed when the new one first saved into the folder
    assert [p.name for p in _files(data_dir / "outputs") if p.name.startswith(".")] == []


def _progress(url: str) -> dict:
    return requests.get(f"{url}/sdapi/v1/progress?skip_current_image=true", timeout=30).json()


def test_client_dropping_its_connection_mid_job_leaves_the_server_ready(restarted):
    url, _, _, process = restarted
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({**SMALL, "prompt": "a green triangle", "steps": 12, "send_images": True}).encode()
    raw = socket.create_connection((host, int(port)), timeout=30)
    raw.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: application/json"
                b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    deadline = time.time() + 60
    while not _progress(url)["state"]["job"]:
        assert time.time() < deadline, "the job never started"
        time.sleep(0.05)
    # an abrupt close (RST, as a killed client or a dropped network gives), while the job samples
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    # a client that gives up waiting (read timeout) while its job is still queued behind the first
    with pytest.raises(requests.exceptions.ReadTimeout):
        _txt2img(url, timeout=0.5, steps=6)
    response = _txt2img(url, prompt="a red circle", seed=7)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["all_seeds"] == [7] and len(response.json()["images"]) == 1
    with Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))) as image:
        assert image.size == (64, 64)
    assert process.is_running()
    deadline = time.time() + 30
    while _progress(url)["state"]["job"]:
        assert time.time() < deadline
        time.sleep(0.05)


def test_selecting_a_corrupt_checkpoint_is_refused_and_the_previous_model_keeps_working(restarted):
    url, _, _, _ = restarted
    response = requests.post(f"{url}/sdapi/v1/options", json={"sd_model_checkpoint": "corrupt.safetensors"},
                             timeout=60)
    assert 400 <= response.status_code < 600
    assert "corrupt.safetensors" in response.text and "outside the file" in response.text
    options = requests.get(f"{url}/sdapi/v1/options", timeout=30).json()
    assert options["sd_model_checkpoint"].startswith("demo-shapes-sd1.safetensors")
    response = _txt2img(url, seed=11)
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["info"])["sd_model_name"] == "demo-shapes-sd1"


def test_sigterm_interrupts_the_job_fails_the_queue_and_exits_0(restarted):
    url, data_dir, log_path, process = restarted
    answers: dict[str, tuple[float, int, str]] = {}

    def call(key: str, **overrides) -> None:
        try:
            response = _txt2img(url, timeout=60, **overrides)
            answers[key] = (time.time(), response.status_code, response.text)
        except requests.RequestException as e:
            answers[key] = (time.time(), -1, repr(e))

    running = threading.Thread(target=call, args=("running",), kwargs={"steps": 150, "save_images": True})
    running.start()
    deadline = time.time() + 60
    while _progress(url)["state"]["sampling_step"] < 1:
        assert time.time() < deadline, "the long job never started sampling"
        time.sleep(0.05)
    queued = threading.Thread(target=call, args=("queued",), kwargs={"seed": 99, "force_task_id": "task(queued)"})
    queued.start()
    while "task(queued)" not in requests.get(f"{url}/sdapi/v1/pending-tasks", timeout=30).json()["tasks"]:
        assert time.time() < deadline, "the second job never reached the queue"
        time.sleep(0.05)
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    exit_code = process.wait(15)
    exited = time.time()
    running.join(10)
    queued.join(10)
    assert exit_code == 0
    assert exited - sent < 10
    # the running job was interrupted and still answered, before the process ended
    done_at, status, text = answers["running"]
    assert status == 200, text
    assert done_at - sent < 10
    assert json.loads(text)["images"] == []  # stopped inside its only batch: no image
    # the queued job was refused with a message, not left hanging or reset
    _, status, text = answers["queued"]
    assert status >= 500 and "shutting down" in text, (status, text)
    log = log_path.read_text(errors="replace")
    assert "SIGTERM received" in log and "server stopped" in log
    assert [p.name for p in _files(data_dir / "outputs") if p.name.startswith(".")] == []  # no temp file left


# --- the shutdown pieces, in process (fast): queue closing, task records, the interrupt that outlives a new job ---

def test_closing_the_queue_refuses_waiters_in_order_and_leaves_the_holder_alone():
    """The job runner's queue (A1111's queue_lock is a turn in it) at shutdown."""
    from modules.runner import JobRunner, QueueLock
    from modules.state import State
    from modules.tasks import QueueClosed, TaskRegistry

    runner = JobRunner(State(), TaskRegistry())
    lock = QueueLock(runner)
    lock.acquire()  # the running job
    errors: list[str] = []

    def wait(name: str) -> None:
        try:
            lock.acquire()
            errors.append(f"{name} ran")
            lock.release()
        except QueueClosed as e:
            errors.append(f"{name}: {e}")

    waiters = [threading.Thread(target=wait, args=(f"w{i}",)) for i in range(3)]
    for thread in waiters:
        thread.start()
    deadline = time.time() + 10
    while len(runner.queued()) < 3:  # all three wait their turn
        assert time.time() < deadline
        time.sleep(0.01)
    runner.close("shutting down")
    for thread in waiters:
        thread.join(5)
    assert sorted(errors) == ["w0: shutting down", "w1: shutting down", "w2: shutting down"]
    assert not runner.wait_idle(0.05)  # the holder still runs
    latecomer = threading.Thread(target=wait, args=("late",))
    latecomer.start()
    latecomer.join(5)
    assert errors[-1] == "late: shutting down"  # refused at once, while the holder still runs
    lock.release()
    assert runner.wait_idle(1) and not lock.locked()
    runner.reopen()  # the refused turns do not block a later one
    with lock:
        assert lock.locked()
    assert not lock.locked()


def test_closing_the_task_registry_fails_queued_tasks_and_refuses_new_ones():
    from modules.tasks import DONE, FAILED, RUNNING, QueueClosed, TaskRegistry

    registry = TaskRegistry()
    running, queued, done = registry.add(None, "txt2img"), registry.add(None, "txt2img"), registry.add(None, "x")
    registry.start(running)
    registry.start(done)
    registry.finish(done)
    assert registry.close("server stopping") == [queued]
    assert (queued.status, queued.error) == (FAILED, "server stopping")
    assert running.status == RUNNING and done.status == DONE
    with pytest.raises(QueueClosed, match="server stopping"):
        registry.add(None, "txt2img")


def test_shutdown_interrupt_outlives_the_next_jobs_begin():
    from modules.state import State

    state = State()
    state.stop_all()
    state.begin("txt2img")  # a job that got the queue just before it closed stops at its first step
    assert state.interrupted and state.busy
