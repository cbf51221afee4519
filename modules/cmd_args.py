"""Command-line flags, with A1111's names and meanings.

`parse_args()` reads sys.argv plus the COMMANDLINE_ARGS environment variable (appended, as A1111 does), lets
extensions add flags first (their `preload(parser)`), and fills the path defaults from --data-dir/--models-dir so
callers always get absolute paths.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence

logger = logging.getLogger("webui")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_UI_PORT = 7860
DEFAULT_API_ONLY_PORT = 7861

ArgAdder = Callable[[argparse.ArgumentParser], None]

# While extensions' preload(parser) run: the early flags (--data-dir, --models-dir, ...) read from the command line,
# so `modules.paths` gives a preload the folders this start-up will use. None otherwise.
preload_args: argparse.Namespace | None = None


class WebuiArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose unknown-flag error also lists every valid flag."""

    def valid_flags(self) -> list[str]:
        # flags accepted only for A1111 compatibility (help suppressed) are not offered as suggestions
        return sorted(
            option for action in self._actions for option in action.option_strings
            if option.startswith("--") and action.help != argparse.SUPPRESS
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
    server.add_argument("--gradio-auth-path", type=str, default=None,
                        help="file with UI logins (user:pass, comma- or line-separated), added to --gradio-auth")
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
    for kind in ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "ScuNET"):
        paths.add_argument(f"--{kind.lower()}-models-path", type=str, default=None,
                           help=f"folder of {kind} upscaler models (default: MODELS_DIR/{kind})")
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
    device.add_argument("--compile", action="store_true",
                        help="torch.compile the UNet and VAE decoder with CUDA graphs (also a setting)")

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
    behaviour.add_argument(
        "--check-extensions", nargs="*", metavar="PATH_OR_GIT_URL", default=None,
        help="read extensions statically (the installed ones, or the given folders / git URLs), report the A1111 "
             "names and packages each lacks here and whether it should work, then exit",
    )

    # A1111 users often keep these in COMMANDLINE_ARGS, and extensions read them (`shared.cmd_opts.ui_config_file`,
    # `.hide_ui_dir_config`, `.codeformer_models_path` ...): every A1111 v1.10 flag is accepted, with A1111's default.
    compat = parser.add_argument_group("accepted for A1111 compatibility (no effect)")
    for flag in (
        "--xformers", "--opt-sdp-attention", "--opt-sdp-no-mem-attention", "--opt-split-attention",
        "--disable-opt-split-attention", "--lowram", "--skip-python-version-check", "--skip-version-check",
        "--skip-install", "--update-all-extensions", "--reinstall-xformers", "--reinstall-torch", "--update-check",
        "--no-tests", "--no-progressbar-hiding", "--allow-code", "--always-batch-cond-uncond", "--unload-gfpgan",
        "--force-enable-xformers", "--xformers-flash-attention", "--deepdanbooru", "--opt-sub-quad-attention",
        "--opt-split-attention-invokeai", "--opt-split-attention-v1", "--show-negative-prompt", "--hide-ui-dir-config",
        "--gradio-debug", "--opt-channelslast", "--autolaunch", "--use-textbox-seed", "--disable-console-progressbars",
        "--enable-console-prompts", "--ui-debug-mode", "--administrator", "--no-gradio-queue",
        "--no-download-sd-model", "--add-stop-route", "--api-server-stop", "--skip-load-model-at-start",
        "--unix-filenames-sanitization", "--no-prompt-history",
    ):
        compat.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    compat.add_argument("--gradio-queue", action="store_true", default=True, help=argparse.SUPPRESS)
    compat.add_argument("--disable-tls-verify", action="store_false", default=None, help=argparse.SUPPRESS)
    for flag, kind, default in (
        ("--tests", str, None), ("--config", str, None), ("--gfpgan-dir", str, None), ("--gfpgan-model", str, None),
        ("--max-batch-count", int, 16), ("--textual-inversion-templates-dir", str, None),
        ("--localizations-dir", str, None), ("--ngrok", str, None), ("--ngrok-region", str, "us"),
        ("--codeformer-models-path", str, None), ("--gfpgan-models-path", str, None),
        ("--bsrgan-models-path", str, None), ("--clip-models-path", str, None), ("--sub-quad-q-chunk-size", int, 1024),
        ("--sub-quad-kv-chunk-size", int, None), ("--sub-quad-chunk-threshold", int, None),
        ("--ui-config-file", str, None), ("--ui-settings-file", str, None), ("--gradio-img2img-tool", str, None),
        ("--gradio-inpaint-tool", str, None), ("--theme", str, None), ("--tls-keyfile", str, None),
        ("--tls-certfile", str, None), ("--subpath", str, None), ("--timeout-keep-alive", int, 30),
        ("--filenames-max-length", int, 128), ("--lyco-dir-backcompat", str, None),
    ):
        compat.add_argument(flag, type=kind, default=default, help=argparse.SUPPRESS)
    compat.add_argument("--gradio-allowed-path", action="append", default=[], help=argparse.SUPPRESS)
    # names other extensions' preload.py files add (LyCORIS's --lyco-dir, ...), read by extensions with getattr:
    # defaults only, no flag, so an extension that adds the flag itself still can
    parser.set_defaults(lyco_dir=None, controlnet_dir=None, disable_queue=False, use_openvino=False)

    return parser


# A1111's module-level parser (extensions call `cmd_args.parser.parse_known_args()`): the one of the last start-up
# parse, with the extensions' preload flags; the built-in flags before that.
parser: argparse.ArgumentParser = build_parser()


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
        **{f"{kind.lower()}_models_path": os.path.join(args.models_dir, kind)
           for kind in ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "ScuNET", "Codeformer", "GFPGAN", "BSRGAN")},
        # A1111's defaults of flags accepted for compatibility (extensions read them)
        "config": os.path.join(REPO_ROOT, "configs", "v1-inference.yaml"),
        "gfpgan_dir": os.path.join(args.data_dir, "GFPGAN"),
        "textual_inversion_templates_dir": os.path.join(REPO_ROOT, "textual_inversion_templates"),
        "localizations_dir": os.path.join(REPO_ROOT, "localizations"),
        "ui_config_file": os.path.join(args.data_dir, "ui-config.json"),
        "ui_settings_file": os.path.join(args.data_dir, "config.json"),
        "lyco_dir_backcompat": os.path.join(args.models_dir, "LyCORIS"),
        "lyco_dir": os.path.join(args.models_dir, "LyCORIS"),
        "controlnet_dir": os.path.join(args.models_dir, "ControlNet"),
    }
    for name, default in defaults.items():
        setattr(args, name, os.path.abspath(getattr(args, name) or default))
    for name in ("ckpt", "vae_path"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    args.styles_file = [os.path.abspath(path) for path in args.styles_file] or [
        os.path.join(args.data_dir, "styles.csv")
    ]


def preparse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The flags needed before the full parse (where extensions live, which are disabled), read leniently: anything
    else, or a malformed value, is ignored here and reported by the full parse."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    pre.add_argument("--data-dir", type=str, default=REPO_ROOT)
    pre.add_argument("--models-dir", type=str, default=None)
    pre.add_argument("--disable-all-extensions", action="store_true")
    pre.add_argument("--disable-extra-extensions", action="store_true")
    try:
        args = pre.parse_known_args(list(argv))[0]
    except (argparse.ArgumentError, SystemExit):
        args = pre.parse_known_args([])[0]
    args.data_dir = os.path.abspath(args.data_dir)
    args.models_dir = os.path.abspath(args.models_dir or os.path.join(args.data_dir, "models"))
    return args


def _read_extension_settings(data_dir: str) -> tuple[set[str], str]:
    """(disabled_extensions, disable_all_extensions) from DATA_DIR/config.json; defaults when unreadable."""
    try:
        with open(os.path.join(data_dir, "config.json"), encoding="utf8") as file:
            settings = json.load(file)
        disabled = settings.get("disabled_extensions") or []
        return {str(name) for name in disabled}, str(settings.get("disable_all_extensions") or "none")
    except (OSError, ValueError, AttributeError, TypeError):
        return set(), "none"


def preload_files(pre: argparse.Namespace) -> list[str]:
    """The `preload.py` of every enabled extension: `extensions-builtin/*`, then `DATA_DIR/extensions/*`, each
    alphabetically. Enabled as `modules.extensions.list_extensions` decides: --disable-all-extensions (or the setting
    "all") gives none, --disable-extra-extensions (or "extra") only built-ins, `disabled_extensions` is skipped."""
    disabled, disable_all = _read_extension_settings(pre.data_dir)
    if pre.disable_all_extensions or disable_all == "all":
        return []
    extra_too = not pre.disable_extra_extensions and disable_all != "extra"
    roots = [os.path.join(REPO_ROOT, "extensions-builtin")] + ([os.path.join(pre.data_dir, "extensions")]
                                                               if extra_too else [])
    found = []
    for root in roots:
        if not os.path.isdir(root):
            continue
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name, "preload.py")
            if not name.startswith(".") and name not in disabled and os.path.isfile(path):
                found.append(path)
    return found


def extension_preloader(path: str) -> ArgAdder:
    """`preload(parser)` of one extension's preload.py (loaded when called, so an import error is caught too)."""

    def preload(parser: argparse.ArgumentParser) -> None:
        extension = os.path.basename(os.path.dirname(path))
        digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
        slug = re.sub(r"\W", "_", extension)
        spec = importlib.util.spec_from_file_location(f"webui_preload_{slug}_{digest}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if callable(getattr(module, "preload", None)):
            module.preload(parser)

    preload.__qualname__ = f"preload of {path}"
    return preload


def parse_args(
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    extra_arg_adders: Sequence[ArgAdder] = (),
    preload_extensions: bool = True,
) -> argparse.Namespace:
    """Parse argv (default sys.argv[1:]) followed by COMMANDLINE_ARGS; exits with status 2 on unknown flags.

    Before parsing, every enabled extension's `preload(parser)` (see `preload_files`; skipped when
    `preload_extensions` is False) and then each of `extra_arg_adders` may add flags. One that fails (on import or
    while adding) is logged with its file and the others go on: a broken extension must not stop start-up."""
    global preload_args
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ

    global parser
    parser = build_parser()
    env_args = environ.get("COMMANDLINE_ARGS", "")
    try:
        argv += shlex.split(env_args)
    except ValueError as error:
        parser.error(f"cannot split COMMANDLINE_ARGS ({error}): {env_args!r}")

    pre = preparse_args(argv)
    adders = [(path, extension_preloader(path)) for path in (preload_files(pre) if preload_extensions else [])]
    adders += [(None, add_args) for add_args in extra_arg_adders]
    preload_args = pre
    try:
        for path, add_args in adders:
            try:
                add_args(parser)
            except (Exception, SystemExit):
                logger.exception("an extension's preload(parser) failed%s; its flags are unavailable",
                                 f" ({path})" if path else "")
    finally:
        preload_args = None

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
