"""A1111's `modules.paths_internal`: the WebUI's folders by A1111's names, for extensions (nothing in the core uses it).

Fixed names (the code's own folders): `script_path` (the repo root), `modules_path`, `sd_configs_path`,
`sd_default_config`, `sd_model_file`, `default_sd_model_file`, `extensions_builtin_dir`, `config_states_dir`, `cwd`,
`normalized_filepath`.

Names that follow the flags, computed on every access (so they are right whenever they are read):
`data_path` (--data-dir), `models_path` (--models-dir, else DATA/models), `extensions_dir` (DATA/extensions),
`default_output_dir` (DATA/outputs). They come from `shared.cmd_opts` once the application is initialised; while
extensions' `preload(parser)` run, from the command line being parsed (`cmd_args.preload_args`); before that, from
sys.argv and COMMANDLINE_ARGS; with no flags, the repo root. `from modules.paths_internal import models_path` copies
the value at import time, as in A1111; read `paths_internal.models_path` to follow later changes.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

modules_path = os.path.dirname(os.path.realpath(__file__))
script_path = os.path.dirname(modules_path)
sd_configs_path = os.path.join(script_path, "configs")
sd_default_config = os.path.join(sd_configs_path, "sd1")  # our configs are diffusers folders, one per family
sd_model_file = os.path.join(script_path, "model.ckpt")
default_sd_model_file = sd_model_file
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
config_states_dir = os.path.join(script_path, "config_states")
cwd = os.getcwd()

_DYNAMIC = ("data_path", "models_path", "extensions_dir", "default_output_dir")


def normalized_filepath(filepath: str) -> str:
    return str(Path(filepath).absolute())


def _flags() -> Any:
    """The namespace with data_dir/models_dir this process uses now (see the module docstring)."""
    from modules import cmd_args  # light: argparse only

    if cmd_args.preload_args is not None:
        return cmd_args.preload_args
    shared = sys.modules.get("modules.shared")
    cmd_opts = getattr(shared, "cmd_opts", None) if shared is not None else None
    if cmd_opts is not None:
        return cmd_opts
    try:
        env = shlex.split(os.environ.get("COMMANDLINE_ARGS", ""))
    except ValueError:
        env = []
    return cmd_args.preparse_args([*sys.argv[1:], *env])


def current_paths() -> dict[str, str]:
    """The flag-dependent names and their values now."""
    flags = _flags()
    data = os.path.abspath(flags.data_dir)
    models = os.path.abspath(getattr(flags, "models_dir", None) or os.path.join(data, "models"))
    return {"data_path": data, "models_path": models, "extensions_dir": os.path.join(data, "extensions"),
            "default_output_dir": os.path.join(data, "outputs")}


def __getattr__(name: str) -> str:
    if name in _DYNAMIC:
        return current_paths()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_DYNAMIC])
