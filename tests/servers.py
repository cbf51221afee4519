"""Start the real WebUI (webui.py's `main` in a process of its own on a free loopback port) for end-to-end tests.

Servers are forked from tests/zygote.py, a process that imported torch, diffusers, Gradio ... once: about thirty
servers a run would each spend ~8 s of CPU importing them again. Everything of this program still starts afresh in
each server. WEBUI_TEST_ZYGOTE=0 starts each one as `python webui.py` instead.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
READY_LINE = "Startup complete."


class ServerProcess:
    """A started server: its pid, signals, and its exit status (from `<log>.exit` for a forked one)."""

    def __init__(self, pid: int, log_path: Path, popen: subprocess.Popen | None = None) -> None:
        self.pid = pid
        self.log_path = log_path
        self.popen = popen
        self._process = psutil.Process(pid)

    def poll(self) -> int | None:
        """The exit status once it has ended (a forked server killed by a signal: -1), else None."""
        if self.popen is not None:
            return self.popen.poll()
        try:
            if self._process.is_running() and self._process.status() != psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:  # ended between the two questions
            pass
        exit_file = Path(str(self.log_path) + ".exit")
        return int(exit_file.read_text()) if exit_file.is_file() else -1

    def is_running(self) -> bool:
        return self.poll() is None

    def send_signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the end; its exit status. Raises subprocess.TimeoutExpired after `timeout` seconds."""
        if self.popen is not None:
            return self.popen.wait(timeout=timeout)
        deadline = None if timeout is None else time.time() + timeout
        while (status := self.poll()) is None:
            if deadline is not None and time.time() > deadline:
                raise subprocess.TimeoutExpired(f"webui.py (pid {self.pid})", timeout)
            time.sleep(0.05)
        exit_file = Path(str(self.log_path) + ".exit")
        for _ in range(20):  # the status is written just before the process ends
            if status != -1 or exit_file.is_file():
                break
            time.sleep(0.05)
            status = int(exit_file.read_text()) if exit_file.is_file() else -1
        return status


class _Zygote:
    """tests/zygote.py, started on first use in this (xdist worker) process."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def fork(self, argv: list[str], env: dict[str, str], log_path: Path) -> int:
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                self.process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "zygote.py")], cwd=ROOT,
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                atexit.register(self.process.kill)
                json.loads(self.process.stdout.readline())  # {"ready": true} once the imports are done
            request = {"argv": argv, "cwd": str(ROOT), "env": env, "log": str(log_path)}
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            return int(json.loads(self.process.stdout.readline())["pid"])


_ZYGOTE = _Zygote()
_SERVERS: dict[str, ServerProcess] = {}  # data folder -> its running server


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
    argv = ["--data-dir", str(data_dir), "--port", str(port), *flags]
    Path(str(log_path) + ".exit").unlink(missing_ok=True)
    if os.environ.get("WEBUI_TEST_ZYGOTE", "1") != "0":
        log_path.write_text("")
        process = ServerProcess(_ZYGOTE.fork(argv, env, log_path), log_path)
    else:
        with open(log_path, "w") as log:
            popen = subprocess.Popen([sys.executable, "webui.py", *argv], cwd=ROOT, env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
        process = ServerProcess(popen.pid, log_path, popen)
    _SERVERS[os.path.realpath(data_dir)] = process
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
        _SERVERS.pop(os.path.realpath(data_dir), None)


def server_process(data_dir: Path) -> ServerProcess:
    """The server `running_webui` started for `data_dir` (send_signal, wait -> exit status, is_running)."""
    process = _SERVERS.get(os.path.realpath(data_dir))
    if process is None:
        pytest.fail(f"no server process for {data_dir}")
    return process
