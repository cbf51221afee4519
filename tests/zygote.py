"""A process that has imported the server's heavy third-party libraries once and forks a fresh WebUI server for each
request of tests/servers.py (`running_webui`).

Each server is still `webui.main(argv)` in a process of its own, with its own data folder, flags, environment,
working directory and log file: only torch, diffusers, transformers, Gradio, FastAPI ... are already imported
(~8 s of CPU per server on the 2-core test machine; the suite starts about thirty servers). None of this program's
modules is imported here, so every server reads its settings, extensions and models itself, as at a real start.
Importing those libraries starts no thread, so forking is safe; the fork happens before anything else runs.

Protocol on stdin/stdout, one JSON line each way: {"argv", "cwd", "env", "log"} -> {"pid"}. A server's exit status
is written to `<log>.exit` when it ends by itself (SIGTERM, errors); one killed by a signal writes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

# what webui.py imports, directly or through modules/*, that costs time; nothing of this repository
import diffusers  # noqa: E402,F401
import fastapi  # noqa: F401
import gradio  # noqa: F401
import numpy  # noqa: F401
import PIL.Image  # noqa: F401
import safetensors.torch  # noqa: F401
import starlette  # noqa: F401
import torch  # noqa: F401
import torchvision  # noqa: F401
import transformers  # noqa: F401
import uvicorn  # noqa: F401
from diffusers import AutoencoderKL, ControlNetModel, DPMSolverMultistepScheduler, UNet2DConditionModel  # noqa: F401
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: F401


def _serve(request: dict) -> None:
    """In the forked child: become the server the request describes, then leave as webui.py's __main__ does."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the server waits for its own subprocesses (git, pip)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdin = open(os.devnull)  # noqa: SIM115 (the child's whole life)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["webui.py", *request["argv"]]
    sys.path.insert(0, request["cwd"])
    status = 1
    try:
        import atexit

        import webui

        webui.main(request["argv"])
        atexit._run_exitfuncs()
        status = webui.exit_status
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 (report anything, as the interpreter would)
        traceback.print_exc()
    finally:
        with open(request["log"] + ".exit", "w") as done:
            done.write(str(status))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # finished servers are reaped by the kernel
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _serve(request)
        print(json.dumps({"pid": pid}), flush=True)


if __name__ == "__main__":
    main()
