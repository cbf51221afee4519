"""Closing a browser tab cancels that tab's jobs (Gradio's unload event → `runner.cancel_owner(session)`), while the
API's async jobs, which have no owner, run on. A real server, a real Chromium page, the demo model."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.servers import running_webui
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")]

STEPS, BATCH_COUNT = 150, 4  # 600 steps: far longer than the few seconds the cancel may take


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A server of this module's own: the test closes a session on it and reads its log."""
    with running_webui(tmp_path_factory.mktemp("tab-close"), "--api") as (url, log_path):
        yield url, log_path


def poll(what: Callable[[], Any], timeout: float, message: str) -> Any:
    """`what()` once it is truthy (checked every 0.1 s), else fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(message)


def fill_txt2img(page: Any, prompt: str, steps: int, batch_count: int) -> None:
    """The txt2img fields of a loaded page: a 64x64 job of `steps` x `batch_count` steps."""
    page.locator("#txt2img_prompt textarea").fill(prompt)
    for elem_id, value in (("width", 64), ("height", 64), ("steps", steps), ("batch_count", batch_count)):
        field = page.locator(f"#txt2img_{elem_id} input[type=number]")
        field.fill(str(value))
        field.press("Tab")


def test_closing_the_tab_cancels_its_running_job_only(server: tuple[str, Path]) -> None:
    """Tab A's long job runs; tab B's short job and an API job wait behind it. Closing A stops A's job within
    seconds (cancelled, not done) and B's and the API's jobs then run to the end: the unload handler's owner is
    exactly the session the generate handler queued A's job under."""
    from playwright.sync_api import sync_playwright

    url, log_path = server
    api = f"{url}/sdapi/v1"

    def get(path: str) -> dict[str, Any]:
        return requests.get(f"{api}/{path}", timeout=10).json()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab_a, tab_b = context.new_page(), context.new_page()
        for page in (tab_a, tab_b):  # two tabs of one browser: two Gradio sessions
            page.goto(url, wait_until="load")
            page.wait_for_selector("#txt2img_prompt textarea")
        fill_txt2img(tab_a, "a long job nobody will see", STEPS, BATCH_COUNT)
        tab_a.locator("#txt2img_generate").click()
        long_job = poll(lambda: get("pending-tasks")["running"], 30, "tab A's txt2img never started")
        poll(lambda: get("progress")["state"]["sampling_step"] > 0, 20, "tab A's job never sampled")
        fill_txt2img(tab_b, "a short job of another tab", 2, 1)
        tab_b.locator("#txt2img_generate").click()
        poll(lambda: len(get("pending-tasks")["tasks"]) == 1, 20, "tab B's job was never queued")
        # no owner: closing a tab must leave it alone
        api_job = requests.post(f"{api}/jobs", json={"type": "txt2img", "prompt": "a red circle", "steps": 2,
                                                     "width": 64, "height": 64, "seed": 1}, timeout=30).json()
        assert api_job["status"] == "queued" and len(get("pending-tasks")["tasks"]) == 2
        tab_a.close()
        closed = time.monotonic()

        record = poll(lambda: (r := get(f"jobs/{long_job}"))["status"] in ("cancelled", "done", "failed") and r,
                      10, "the closed tab's job still runs 10 s later")
        stopped_after = time.monotonic() - closed
        assert record["status"] == "cancelled", record
        tab_b.locator("#txt2img_gallery img").first.wait_for(timeout=60000)
        done = poll(lambda: (r := get(f"jobs/{api_job['id']}"))["status"] in ("done", "failed", "cancelled") and r,
                    60, "the API job never finished")
        browser.close()
    assert stopped_after < 10
    assert done["status"] == "done" and len(done["result"]["images"]) == 1, done
    assert get("pending-tasks")["running"] is None
    log = log_path.read_text(errors="replace")
    assert log.count("A browser tab was closed: cancelled its") == 1 and f"txt2img {long_job}" in log
