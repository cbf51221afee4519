"""Start the WebUI: parse flags, set up settings and models, serve the Gradio app (and the API with --api)."""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every config and tokenizer ships with the project
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

from modules import cmd_args  # noqa: E402

log = logging.getLogger("webui")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = cmd_args.parse_args(argv)

    from modules import shared, ui

    shared.initialize(args)
    shared.models.get()  # load the model before serving so the first click is fast and errors show now
    host, port = cmd_args.server_name(args), cmd_args.server_port(args)
    if args.nowebui:
        from modules import api

        api.serve_api_only(host, port)
        return
    demo = ui.create_ui()
    demo.queue(default_concurrency_limit=1)
    app, local_url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True,
                                    css=ui.CSS, js=ui.CTRL_ENTER_JS, share=False, footer_links=[])
    if args.api:
        from modules import api

        api.mount(app)
    print(f"Running on local URL:  http://{host}:{port}", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main(sys.argv[1:])
