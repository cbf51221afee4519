"""Command-line flags, with A1111's names and meanings.

`parse_args()` reads sys.argv plus the COMMANDLINE_ARGS environment variable (appended, as A1111 does), lets
extensions add flags first (their `preload(parser)`), and fills the path defaults from --data-dir/--models-dir so
callers always get absolute paths.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence

logger = logging.getLogger("webui")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_UI_PORT = 7860
DEFAULT_API_ONLY_PORT = 7861

ArgAdder = Callable[[argparse.ArgumentParser], None]


class WebuiArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose unknown-flag error also lists every valid flag."""

    def valid_flags(self) -> list[str]:
        return sorted(
            option for action in self._actions for option in action.option_strings if option.startswith("--")
        )

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}. Valid flags: {', '.join(self.valid_flags())}")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    """The parser with every built-in flag; extensions may add more before parsing."""
    # allow_abbrev=False: a typo such as --list must fail instead of silently meaning --listen.
    parser = WebuiArgumentParser(
        prog="webui.py",
        usage="%(prog)s [flags]  (see --help; COMMANDLINE_ARGS is appended to the flags)",
        description="Stable Diffusion WebUI (A1111-compatible flags).",
        allow_abbrev=False,
    )

    server = parser.add_argument_group("server")
    server.add_argument("--port", type=int, default=None, help="port to serve on (default 7860; 7861 with --nowebui)")
    server.add_argument("--listen", action="store_true", help="listen on 0.0.0.0 so other machines can connect")
    server.add_argument("--server-name", type=str, default=None, help="host name or address to bind to")
    server.add_argument("--share", action="store_true", help="ask gradio for a public share link (needs internet)")
    server.add_argument("--api", action="store_true", help="serve the REST API (/sdapi/v1) beside the UI")
    server.add_argument("--nowebui", action="store_true", help="serve only the REST API, no UI (port 7861)")
    server.add_argument("--api-log", action="store_true", help="log every API request")
    server.add_argument("--api-auth", type=str, default=None, help="HTTP basic auth for the API: u:p[,u2:p2]")
    server.add_argument("--gradio-auth", type=str, default=None, help="login for the UI: user:pass[,user2:pass2]")
    server.add_argument("--cors-allow-origins", type=str, default=None, help="comma-separated origins allowed by CORS")
    server.add_argument("--cors-allow-origins-regex", type=str, default=None, help="regex of origins allowed by CORS")
    server.add_argument(
        "--allowed-hosts", type=str, default=None, help="comma-separated Host header values to accept (others get 400)"
    )
    server.add_argument("--freeze-settings", action="store_true", help="make all settings read-only")

    paths = parser.add_argument_group("paths")
    paths.add_argument("--data-dir", type=str, default=REPO_ROOT, help="base folder for user data (default: repo root)")
    paths.add_argument("--models-dir", type=str, default=None, help="base folder for models (default: DATA_DIR/models)")
    paths.add_argument("--ckpt", type=str, default=None, help="checkpoint file to add to the list and load at start")
    paths.add_argument("--ckpt-dir", type=str, default=None, help="folder of Stable Diffusion checkpoints")
    paths.add_argument("--vae-dir", type=str, default=None, help="folder of VAE files")
    paths.add_argument("--vae-path", type=str, default=None, help="VAE file to use for every model")
    paths.add_argument("--embeddings-dir", type=str, default=None, help="folder of textual inversion embeddings")
    paths.add_argument("--lora-dir", type=str, default=None, help="folder of LoRA networks")
    paths.add_argument("--hypernetwork-dir", type=str, default=None, help="folder of hypernetworks")
    paths.add_argument(
        "--styles-file", type=str, action="append", default=[], help="styles CSV file; repeat for several"
    )

    device = parser.add_argument_group("device and precision")
    device.add_argument("--no-half", action="store_true", help="keep the model in float32")
    device.add_argument("--no-half-vae", action="store_true", help="keep the VAE in float32")
    device.add_argument("--bf16", action="store_true", help="use bfloat16 instead of float16 on CUDA")
    device.add_argument(
        "--precision", choices=["full", "half", "autocast"], default="autocast", help="evaluate at this precision"
    )
    device.add_argument("--upcast-sampling", action="store_true", help="upcast sampling math to float32")
    device.add_argument(
        "--use-cpu", nargs="+", default=[], metavar="MODULE", help="run these modules on the CPU ('all' for every one)"
    )
    device.add_argument("--device-id", type=str, default=None, help="CUDA device index to use")
    device.add_argument("--skip-torch-cuda-test", action="store_true", help="start even when CUDA is not usable")
    device.add_argument("--medvram", action="store_true", help="keep only the active model part on the GPU")
    device.add_argument("--medvram-sdxl", action="store_true", help="--medvram, only for SDXL models")
    device.add_argument("--lowvram", action="store_true", help="offload layer by layer (slow, least VRAM)")
    device.add_argument("--disable-nan-check", action="store_true", help="do not check outputs for NaNs")

    behaviour = parser.add_argument_group("models and extensions")
    behaviour.add_argument("--no-hashing", action="store_true", help="do not compute sha256 of checkpoints")
    behaviour.add_argument(
        "--disable-safe-unpickle",
        action="store_true",
        help="accepted for compatibility; .ckpt/.pt files are always loaded with the safe loader",
    )
    behaviour.add_argument(
        "--enable-insecure-extension-access",
        action="store_true",
        help="allow installing extensions even when reachable from other machines",
    )
    behaviour.add_argument("--disable-all-extensions", action="store_true", help="load no extensions at all")
    behaviour.add_argument("--disable-extra-extensions", action="store_true", help="load only built-in extensions")

    # A1111 users often keep these in COMMANDLINE_ARGS; accept them so they do not stop startup.
    compat = parser.add_argument_group("accepted for A1111 compatibility (no effect)")
    for flag in (
        "--xformers",
        "--opt-sdp-attention",
        "--opt-sdp-no-mem-attention",
        "--opt-split-attention",
        "--disable-opt-split-attention",
        "--lowram",
        "--skip-python-version-check",
        "--skip-version-check",
        "--skip-install",
    ):
        compat.add_argument(flag, action="store_true", help=argparse.SUPPRESS)

    return parser


def _resolve_paths(args: argparse.Namespace) -> None:
    """Fill unset path flags from --data-dir / --models-dir and make every path absolute."""
    args.data_dir = os.path.abspath(args.data_dir)
    args.models_dir = os.path.abspath(args.models_dir or os.path.join(args.data_dir, "models"))
    defaults = {
        "ckpt_dir": os.path.join(args.models_dir, "Stable-diffusion"),
        "vae_dir": os.path.join(args.models_dir, "VAE"),
        "lora_dir": os.path.join(args.models_dir, "Lora"),
        "hypernetwork_dir": os.path.join(args.models_dir, "hypernetworks"),
        "embeddings_dir": os.path.join(args.data_dir, "embeddings"),
    }
    for name, default in defaults.items():
        setattr(args, name, os.path.abspath(getattr(args, name) or default))
    for name in ("ckpt", "vae_path"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    args.styles_file = [os.path.abspath(path) for path in args.styles_file] or [
        os.path.join(args.data_dir, "styles.csv")
    ]


def parse_args(
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    extra_arg_adders: Sequence[ArgAdder] = (),
) -> argparse.Namespace:
    """Parse argv (default sys.argv[1:]) followed by COMMANDLINE_ARGS; exits with status 2 on unknown flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ

    parser = build_parser()
    for add_args in extra_arg_adders:
        # A broken extension preload must not stop the webui from starting.
        try:
            add_args(parser)
        except Exception:
            logger.exception("an extension's preload(parser) failed; its flags are unavailable")

    env_args = environ.get("COMMANDLINE_ARGS", "")
    try:
        argv += shlex.split(env_args)
    except ValueError as error:
        parser.error(f"cannot split COMMANDLINE_ARGS ({error}): {env_args!r}")

    args = parser.parse_args(argv)
    _resolve_paths(args)
    return args


def server_port(args: argparse.Namespace) -> int:
    """The port to serve on: --port, else 7861 with --nowebui, else 7860."""
    if args.port is not None:
        return args.port
    return DEFAULT_API_ONLY_PORT if args.nowebui else DEFAULT_UI_PORT


def server_name(args: argparse.Namespace) -> str:
    """The address to bind: --server-name, else 0.0.0.0 with --listen, else 127.0.0.1."""
    if args.server_name:
        return args.server_name
    return "0.0.0.0" if args.listen else "127.0.0.1"


def extension_access_allowed(args: argparse.Namespace) -> bool:
    """A1111 rule: installing extensions is refused when others can reach the server, unless explicitly enabled."""
    exposed = bool(args.share or args.listen or args.server_name)
    return args.enable_insecure_extension_access or not exposed
