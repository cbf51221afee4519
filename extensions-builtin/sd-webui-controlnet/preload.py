"""The extension's command-line flags (its preload.py names), added before the command line is parsed."""

from __future__ import annotations

import argparse


def preload(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controlnet-dir", type=str, default=None,
                        help="Path to directory with ControlNet models (default: models/ControlNet)")
    parser.add_argument("--controlnet-annotator-models-path", type=str, default=None,
                        help="Path to directory with annotator model directories (default: "
                             "<controlnet-dir>/annotators)")
    parser.add_argument("--no-half-controlnet", action="store_true", default=None,
                        help="Do not switch the ControlNet models to 16-bit floats (only needed without --no-half)")
    parser.add_argument("--controlnet-loglevel", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="Set the log level (ControlNet)")
