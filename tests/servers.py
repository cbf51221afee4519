"""Start the real WebUI (webui.py in a subprocess on a free loopback port) for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
READY_LINE = "Startup complete."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_webui(data_dir: Path, *flags: str) -> Iterator[tuple[str, Path]]:
    """Yields (url, log path) once the server accepts connections; stops it afterwards."""
    port = free_port()
    env = {**os.environ, "COMMANDLINE_ARGS": "--use-cpu all"}
    log_path = data_dir / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "webui.py", "--data-dir", str(data_dir), "--port", str(port),
                                    *flags], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            if process.poll() is not None:
                pytest.fail(f"server exited early:\n{log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    pass
            except OSError:
                time.sleep(0.5)
                continue
            # the port opens before the API is mounted on it: webui.py prints this line once everything is served
            if READY_LINE in log_path.read_text(errors="replace"):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"server did not start:\n{log_path.read_text()[-3000:]}")
        yield f"http://127.0.0.1:{port}", log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def server_process(data_dir: Path) -> psutil.Process:
    """The webui.py process `running_webui` started for `data_dir` (it does not hand out its Popen)."""
    for child in psutil.Process().children(recursive=True):
        try:
            if str(data_dir) in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    pytest.fail(f"no server process for {data_dir}")
