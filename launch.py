"""A1111's `launch` module: what extensions' `install.py` and scripts import (`launch.run_pip`, `launch.is_installed`,
`launch.args` …), re-exported from `modules.launch_utils` as A1111 does. `python launch.py [flags]` starts the WebUI
like `python webui.py`.

Importable both inside the running WebUI and in an install.py subprocess (the repo root is on its PYTHONPATH), and
cheap to import: no torch, no gradio.
"""

from __future__ import annotations

import os
import sys
from typing import Any

if __package__ in (None, "") and os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from modules import launch_utils  # noqa: E402  (after the repo root is importable)

python = launch_utils.python
git = launch_utils.git
index_url = launch_utils.index_url
dir_repos = launch_utils.dir_repos
script_path = launch_utils.script_path
default_command_live = launch_utils.default_command_live

commit_hash = launch_utils.commit_hash
git_tag = launch_utils.git_tag
run = launch_utils.run
is_installed = launch_utils.is_installed
repo_dir = launch_utils.repo_dir
run_pip = launch_utils.run_pip
run_python = launch_utils.run_python
check_run_python = launch_utils.check_run_python
run_git = launch_utils.run_git
git_clone = launch_utils.git_clone
git_pull_recursive = launch_utils.git_pull_recursive
version_check = launch_utils.version_check
list_extensions = launch_utils.list_extensions
run_extension_installer = launch_utils.run_extension_installer
run_extensions_installers = launch_utils.run_extensions_installers
requirements_met = launch_utils.requirements_met
prepare_environment = launch_utils.prepare_environment
configure_for_tests = launch_utils.configure_for_tests
start = launch_utils.start


def __getattr__(name: str) -> Any:
    """`launch.args` and `launch.skip_install` follow the flags of the process reading them."""
    if name in ("args", "skip_install"):
        return getattr(launch_utils, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    prepare_environment()
    start()


if __name__ == "__main__":
    main()
