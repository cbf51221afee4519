# shellcheck shell=bash
# Shared set-up steps for webui.sh and run_tests.sh. Source it; it only defines functions.
# Safe under `set -euo pipefail`; every step is idempotent so restarts are fast.
#
# Environment knobs (all optional):
#   python_cmd     interpreter used to create the venv (default: python3.11, else python3)
#   VENV_DIR       where the venv lives (default: <repo>/venv)
#   TORCH_COMMAND  command that installs torch, run with eval inside the venv
#                  (e.g. "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu")

WEBUI_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${VENV_DIR:-$WEBUI_ROOT/venv}"

webui_log() {
    printf '[webui-setup] %s\n' "$*" >&2
}

webui_die() {
    printf '[webui-setup] error: %s\n' "$*" >&2
    exit 1
}

# Pick the interpreter that creates the venv; Python 3.11+ is needed (numpy 2.4 and gradio 6).
webui_find_python() {
    local candidate
    for candidate in ${python_cmd:-} python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then
            WEBUI_BASE_PYTHON="$candidate"
            break
        fi
    done
    if [[ -z "${WEBUI_BASE_PYTHON:-}" ]]; then
        webui_die "python3 not found. Install Python 3.11 with venv support (Debian/Ubuntu: apt-get install python3 python3-venv) and run this script again."
    fi
    if ! "$WEBUI_BASE_PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
        webui_die "$WEBUI_BASE_PYTHON is $("$WEBUI_BASE_PYTHON" -V 2>&1); Python 3.11 or newer is required (set python_cmd=/path/to/python3.11)."
    fi
}

# Create the venv when missing, then put it first on PATH (what `activate` does, without its prompt logic).
webui_activate_venv() {
    if [[ ! -x "$VENV_DIR/bin/python" ]]; then
        webui_find_python
        webui_log "creating virtual environment in $VENV_DIR with $WEBUI_BASE_PYTHON"
        "$WEBUI_BASE_PYTHON" -m venv "$VENV_DIR" \
            || webui_die "could not create $VENV_DIR (Debian/Ubuntu: apt-get install python3-venv)."
    fi
    if ! "$VENV_DIR/bin/python" -c '' >/dev/null 2>&1; then
        webui_die "the virtual environment in $VENV_DIR is broken (moved or its Python was removed); delete it and run again."
    fi
    export VIRTUAL_ENV="$VENV_DIR"
    export PATH="$VENV_DIR/bin:$PATH"
    unset PYTHONHOME
    hash -r
}

webui_install_torch() {
    if python -c 'import torch, torchvision' >/dev/null 2>&1; then
        return 0
    fi
    if [[ -n "${TORCH_COMMAND:-}" ]]; then
        webui_log "installing torch with TORCH_COMMAND: $TORCH_COMMAND"
        eval "$TORCH_COMMAND" || webui_die "TORCH_COMMAND failed: $TORCH_COMMAND"
    else
        # One pair for every machine: torchvision is needed by spandrel (Extras upscalers), and the CPU-only torch
        # builds have no matching torchvision here. PyPI's torch 2.14.1 is the CUDA build, so GPU users get CUDA;
        # it runs on CPU too. CPU-only users who want a smaller install can set TORCH_COMMAND
        # (e.g. "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu").
        webui_log "installing torch==2.14.1 and torchvision==0.29.1"
        python -m pip install torch==2.14.1 torchvision==0.29.1 \
            || webui_die "pip could not install torch==2.14.1 torchvision==0.29.1"
    fi
    python -c 'import torch' || webui_die "torch was installed but cannot be imported; see the pip output above."
}

webui_file_sha256() {
    python -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
}

# pip install -r FILE, skipped when FILE is unchanged since the last successful install (stamp in the venv).
webui_install_requirements() {
    local requirements_file="$1"
    local stamp_file
    stamp_file="$VENV_DIR/.$(basename "$requirements_file" .txt).sha256"
    local current_hash
    current_hash="$(webui_file_sha256 "$requirements_file")"
    if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$current_hash" ]]; then
        return 0
    fi
    webui_log "installing $(basename "$requirements_file")"
    python -m pip install -r "$requirements_file" || webui_die "pip could not install $requirements_file"
    printf '%s\n' "$current_hash" >"$stamp_file"
}

# The whole runtime set-up: venv, torch, requirements.txt.
webui_prepare_environment() {
    webui_activate_venv
    webui_install_torch
    webui_install_requirements "$WEBUI_ROOT/requirements.txt"
}
