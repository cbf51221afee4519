#!/usr/bin/env bash
# Start the WebUI: create venv/ when missing, install torch and requirements.txt when needed, run webui.py.
# Arguments are passed to webui.py; COMMANDLINE_ARGS is read by webui.py itself.
# Knobs: python_cmd, VENV_DIR, TORCH_COMMAND (see tools/install.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=tools/install.sh
source tools/install.sh

webui_prepare_environment
exec python webui.py "$@"
