#!/usr/bin/env bash
# Run the test suite: the same set-up as webui.sh plus requirements-test.txt and a browser, then pytest.
# Arguments are passed to pytest (e.g. `bash run_tests.sh -k options -x`, `bash run_tests.sh -m unit`).
# Exits with pytest's status.
#
# Tests run in parallel with pytest-xdist, one worker per core (at most 4; WEBUI_TEST_WORKERS=N sets the number,
# 0 or 1 runs them in this process; `-n 0` among the arguments does too).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=tools/install.sh
source tools/install.sh

# Browser tests drive Debian's chromium through playwright (no browser download); they skip without it.
# apt-get runs in the background while pip installs the Python packages.
chromium_log="$(mktemp -t webui-chromium.XXXXXX)"
chromium_pid=""
if [[ ! -x /usr/bin/chromium ]]; then
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
        webui_log "installing chromium with apt-get (in the background)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >"$chromium_log" 2>&1 &
        chromium_pid=$!
    else
        webui_log "note: /usr/bin/chromium missing and cannot apt-get install it (needs root and apt-get); browser tests will be skipped"
    fi
fi

webui_prepare_environment
webui_install_requirements "$WEBUI_ROOT/requirements-test.txt"

if [[ -n "$chromium_pid" ]]; then
    if ! wait "$chromium_pid"; then
        tail -n 20 "$chromium_log" >&2 || true
        webui_log "note: apt-get could not install chromium; browser tests will be skipped"
    fi
fi
rm -f "$chromium_log"

export HF_HUB_OFFLINE=1
export GRADIO_ANALYTICS_ENABLED=False
# Run the whole tests/ folder unless the arguments already name test files or folders.
test_paths=(tests)
for arg in "$@"; do
    if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then
        test_paths=()
        break
    fi
done

# pytest-xdist: tests sharing a server or a module's models stay on one worker (xdist_group, set in
# tests/conftest.py, which also orders the work longest first: hence --no-loadscope-reorder).
workers="${WEBUI_TEST_WORKERS:-$(nproc 2>/dev/null || echo 1)}"
if ((workers > 4)); then
    workers=4
fi
xdist=()
if ((workers > 1)); then
    xdist=(-n "$workers" --dist loadgroup --no-loadscope-reorder)
fi
exec python -m pytest "${test_paths[@]}" -q -p no:cacheprovider --durations=30 "${xdist[@]}" "$@"
