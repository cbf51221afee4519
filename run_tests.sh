#!/usr/bin/env bash
# Run the test suite: the same set-up as webui.sh plus requirements-test.txt and a browser, then pytest.
# Arguments are passed to pytest (e.g. `bash run_tests.sh -k options -x`). Exits with pytest's status.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# shellcheck source=tools/install.sh
source tools/install.sh

webui_prepare_environment
webui_install_requirements "$WEBUI_ROOT/requirements-test.txt"

# Browser tests drive Debian's chromium through playwright (no browser download); they skip without it.
if [[ ! -x /usr/bin/chromium ]]; then
    if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
        webui_log "installing chromium with apt-get"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
            webui_log "note: apt-get could not install chromium; browser tests will be skipped"
        fi
    else
        webui_log "note: /usr/bin/chromium missing and cannot apt-get install it (needs root and apt-get); browser tests will be skipped"
    fi
fi

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
exec python -m pytest "${test_paths[@]}" -q -p no:cacheprovider --durations=30 "$@"
