"""Start the WebUI: parse flags, set up settings and models, serve the Gradio app (and the API with --api)."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every config and tokenizer ships with the project
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

from modules import cmd_args  # noqa: E402


def __getattr__(name: str):
    """A1111's `from webui import wrap_gradio_gpu_call` (some extensions): the queue wrappers, imported on use so
    that `webui.py --help` / `--check-extensions` start without torch."""
    if name in ("wrap_gradio_gpu_call", "wrap_queued_call", "queue_lock"):
        from modules import call_queue

        return getattr(call_queue, name)
    raise AttributeError(f"module 'webui' has no attribute {name!r}")

log = logging.getLogger("webui")

SHUTDOWN_MESSAGE = "The server is shutting down; the job was not run."
SHUTDOWN_GRACE_S = 20.0  # the running job stops at its next sampling step; past this the process is ended anyway
exit_status = 0  # the process's status once `main` returns: 1 when a shutdown had to cut a job off


class GracefulShutdown:
    """SIGTERM/SIGINT: stop taking jobs, fail the queued ones, interrupt the running one, let it write its files and
    its answer, then stop the server so that `main` returns and the process exits with status 0.

    The signal handler only records the signal and starts a thread: the handler runs on the main thread between
    two bytecodes, possibly while that thread holds a lock the shutdown needs (the state's, the queue's). A second
    signal ends the process at once (status 1), as a second Ctrl+C does elsewhere."""

    def __init__(self) -> None:
        self.requested = threading.Event()   # a signal came
        self.stop_serving = threading.Event()  # the job queue is drained: the server may close now
        self.on_stop_serving: list[Callable[[], None]] = []  # run in the shutdown thread once it may close

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.handle_signal)

    def handle_signal(self, sig: int, frame: object = None) -> None:
        if self.requested.is_set():
            os.write(2, b"second signal: exiting now\n")
            os._exit(1)
        self.requested.set()
        threading.Thread(target=self._drain, args=(signal.Signals(sig).name,), name="shutdown", daemon=True).start()

    def _drain(self, signal_name: str) -> None:
        global exit_status
        from modules import shared

        log.info("%s received: shutting down (queued jobs fail, the running job is interrupted)", signal_name)
        watchdog = threading.Timer(SHUTDOWN_GRACE_S, self._give_up)
        watchdog.daemon = True
        watchdog.start()
        failed = shared.runner.close(SHUTDOWN_MESSAGE)  # every queued item fails with it and none is taken
        shared.state.stop_all()
        if failed:
            log.info("%d queued job(s) failed: %s", len(failed), ", ".join(t.id for t in failed))
        # wait for the running job (saving included) to end, so that its files are complete and closed
        if not shared.runner.wait_idle(SHUTDOWN_GRACE_S - 5):
            exit_status = 1  # a job was cut off: say so to the supervisor
            log.warning("the running job did not stop in time; closing the server anyway")
        self.stop_serving.set()
        for callback in self.on_stop_serving:
            callback()

    @staticmethod
    def _give_up() -> None:
        log.error("shutdown took longer than %.0f s: exiting without waiting further", SHUTDOWN_GRACE_S)
        logging.shutdown()
        os._exit(1)


def serve_api(app, host: str, port: int, shutdown: GracefulShutdown) -> None:
    """`api.serve_app` with our shutdown: uvicorn's own signal handling would stop accepting and then wait for a
    long job to finish on its own; ours interrupts it and fails the queue first."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            shutdown.handle_signal(sig, frame)  # not super(): uvicorn would re-raise the signal after it stops

    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5))
    shutdown.on_stop_serving.append(lambda: setattr(server, "should_exit", True))
    server.run()


def security_middleware(args):
    from starlette.middleware import Middleware

    from modules.security import SecurityMiddleware, middleware_kwargs

    return Middleware(SecurityMiddleware, **middleware_kwargs(args))


def exposure_warnings(args, host: str) -> list[str]:
    """What is reachable from the network without a login: the UI (no --gradio-auth) and, separately, the API
    (--api or --nowebui without --api-auth), which a UI login does not protect."""
    if not (args.listen or args.share or args.server_name):
        return []
    ui_open = not args.nowebui and not (args.gradio_auth or getattr(args, "gradio_auth_path", None))
    api_open = (args.api or args.nowebui) and not args.api_auth
    if ui_open:
        return [f"  WARNING: the server is reachable from the network ({host}) and has no login.\n"
                "  Anyone who can reach it can generate images and change settings.\n"
                "  Add --gradio-auth user:pass (and --api-auth user:pass) to require one."]
    if api_open:
        return [f"  WARNING: the API (/sdapi) is reachable from the network ({host}) and has no login.\n"
                "  Anyone who can reach it can generate images and change settings.\n"
                "  Add --api-auth user:pass to require one."]
    return []


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = cmd_args.parse_args(argv)
    if args.check_extensions is not None:  # read extensions statically, report, exit (starts nothing)
        from modules import extension_check, extensions

        user_dir = extensions.extension_dirs(args.data_dir)[1]
        installed = [os.path.join(user_dir, n) for n in sorted(os.listdir(user_dir))
                     if os.path.isdir(os.path.join(user_dir, n)) and not n.startswith(".")] \
            if os.path.isdir(user_dir) else []
        sys.exit(extension_check.main(args.check_extensions or installed))

    from modules import extensions, script_callbacks, scripts, shared, ui

    shared.initialize(args)
    extensions.run_install_scripts_at_start(shared.opts, shared.cmd_opts)  # only new or changed install.py
    scripts.load_scripts(extensions.enabled_paths(shared.opts, shared.cmd_opts))
    shared.models.listeners.append(script_callbacks.model_loaded_callback)
    shared.models.get()  # load the model before serving so the first click is fast and errors show now
    host, port = cmd_args.server_name(args), cmd_args.server_port(args)
    for warning in exposure_warnings(args, host):
        log.warning("\n%s\n%s\n%s", "!" * 78, warning, "!" * 78)
    if args.nowebui:
        from modules import api

        # A1111 registers extension settings only when it builds the UI; API-only scripts read them too
        script_callbacks.ensure_ui_settings()
        app = api.create_api_app()
        script_callbacks.app_started_callback(None, app)
        print(f"Running on local URL:  http://{host}:{port} (API only)", flush=True)
        print("Startup complete.", flush=True)  # routes are set up; the port opens right after
        serve_api(app, host, port, GracefulShutdown())
        log.info("server stopped")
        return
    from modules import auth, extension_status
    from modules.ui import page_assets

    try:
        credentials = auth.credentials_from_flags(args.gradio_auth, getattr(args, "gradio_auth_path", None))
    except ValueError as e:
        sys.exit(f"error: {e}")
    script_callbacks.before_ui_callback()
    demo = ui.create_ui()
    # the page loads the JavaScript/CSS of extensions whose Python loaded (an incompatible one's would only throw)
    extension_css = ""
    extension_head = page_assets.page_head(shared.opts, shared.cmd_opts, extension_filter=lambda e:
                                           extension_status.page_files_wanted(e.name))
    # GPU work is serialised by shared.runner; Gradio's queue lets several sessions wait their turn in order
    demo.queue(default_concurrency_limit=4)
    fastapi_kwargs = {"middleware": [security_middleware(args)]}
    if args.api:
        from modules import api

        # the API's error handlers and request log must be there before the app starts: Starlette takes no
        # middleware and ignores handlers added once it serves (api.mount, after launch, only adds routes)
        extra = api.app_kwargs(ui=True)
        fastapi_kwargs = {"middleware": [*fastapi_kwargs["middleware"], *extra["middleware"]],
                          "exception_handlers": extra["exception_handlers"]}
    app, local_url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True,
                                    app_kwargs=fastapi_kwargs,
                                    css=ui.CSS + extension_css, js=ui.CTRL_ENTER_JS, head=extension_head,
                                    share=False, footer_links=[],
                                    auth=auth.limited_checker(credentials) if credentials else None)
    if args.api:
        api.mount(app)
    page_assets.mount(app)  # the extensions' JavaScript/CSS files, `opts` and /internal/progress for the page
    script_callbacks.app_started_callback(demo, app)
    print(f"Running on local URL:  http://{host}:{port}", flush=True)
    print("Startup complete.", flush=True)  # the UI, the API and the extensions are all served now
    shutdown = GracefulShutdown()
    shutdown.install()
    while demo.is_running and not shutdown.stop_serving.wait(0.2):
        pass
    demo.close()  # stops Gradio's queue and its server thread (which waits up to 5 s for open answers)
    log.info("server stopped")


if __name__ == "__main__":
    main(sys.argv[1:])
    # The server has stopped and every job has ended, so all files are written and closed. The interpreter's own
    # teardown (torch, diffusers, thousands of modules) takes seconds on a busy machine and would make a supervisor
    # waiting for the exit give up: run the atexit hooks (log flushing, extensions' cleanup) and leave.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_status)
