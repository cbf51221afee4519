"""A1111's `modules.shared_cmd_options`: `parser` (the command line's argparse parser, with extensions' preload
flags) and `cmd_opts` (the parsed flags, the same object as `shared.cmd_opts`)."""

from __future__ import annotations

from typing import Any

from modules import cmd_args


def __getattr__(name: str) -> Any:
    if name == "cmd_opts":
        from modules import shared

        return shared.cmd_opts if shared.cmd_opts is not None else cmd_args.parse_args([])
    if name == "parser":
        return cmd_args.build_parser()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
