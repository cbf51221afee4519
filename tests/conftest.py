"""Shared fixtures: offline environment, tiny checkpoints of every family, an initialised app in a temp dir."""

from __future__ import annotations

import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TQDM_DISABLE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One tiny random checkpoint per family, in the original single-file layout, made once per session."""
    from modules.models.tiny import write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny-checkpoints")
    made: dict[str, Path] = {}
    for family in ("sd1", "sd1-inpaint", "sd2", "sd2-v", "sd2-inpaint", "sdxl", "sdxl-refiner", "sdxl-inpaint"):
        base = "sd2" if family == "sd2-v" else family
        made[family] = write_tiny_checkpoint(base, folder / f"tiny-{family}.safetensors", seed=1,
                                             v_prediction=family == "sd2-v")
    return made


class NetworkGuard:
    """Fails any connection attempt to a non-loopback address, recording it."""

    def __init__(self) -> None:
        self.attempts: list[object] = []
        self._original = socket.socket.connect

    def __enter__(self) -> NetworkGuard:
        guard = self

        def connect(sock, address):  # noqa: ANN001
            host = address[0] if isinstance(address, tuple) else str(address)
            if isinstance(address, tuple) and host not in ("127.0.0.1", "::1", "localhost"):
                guard.attempts.append(address)
                raise OSError(f"network access attempted during an offline test: {address}")
            return guard._original(sock, address)

        socket.socket.connect = connect
        return self

    def __exit__(self, *exc: object) -> None:
        socket.socket.connect = self._original


@pytest.fixture
def network_guard():
    with NetworkGuard() as guard:
        yield guard


@pytest.fixture
def app(tmp_path, monkeypatch):
    """An initialised application (settings, model manager) whose data dir is a temp folder."""
    from modules import cmd_args, shared

    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"], environ={})
    shared.initialize(args)
    yield shared
    shared.models.unload()
