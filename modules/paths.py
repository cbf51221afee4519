"""A1111's `modules.paths`, for extensions: the same names as `modules.paths_internal` (A1111 keeps both modules),
plus `sd_path` and the `paths` dict of A1111's bundled repositories.

This WebUI bundles no `repositories/` (the models run on diffusers), so `sd_path` is the repo root and `paths` is
empty. `data_path`, `models_path`, `extensions_dir` and `default_output_dir` follow the flags on every access (see
`modules.paths_internal`). Nothing in the core uses this module.
"""

from __future__ import annotations

import sys

from modules import paths_internal
from modules.paths_internal import (  # noqa: F401 (re-exported for extensions)
    config_states_dir,
    cwd,
    default_sd_model_file,
    extensions_builtin_dir,
    modules_path,
    normalized_filepath,
    script_path,
    sd_configs_path,
    sd_default_config,
    sd_model_file,
)

if script_path not in sys.path:  # A1111 puts the repo root first so `import modules...` works from anywhere
    sys.path.insert(0, script_path)

sd_path = script_path
paths: dict[str, str] = {}


def __getattr__(name: str) -> str:
    if name in paths_internal._DYNAMIC:
        return paths_internal.current_paths()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *paths_internal._DYNAMIC])
