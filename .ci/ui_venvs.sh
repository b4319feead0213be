#!/usr/bin/env bash
# Build the venvs the browser tests run `python -m fpcore ui` in: one per gradio version the
# hosts ship (A1111 v1.10: gradio 3.41.2; Forge: gradio 4.40.0), pinned as ../shared/RIGS.md says,
# with the project installed. Also installs Debian's chromium and playwright (never
# `playwright install`: it downloads a browser). Prints the env vars tests/test_ui_browser.py reads.
#   usage: .ci/ui_venvs.sh [PREFIX]     (default PREFIX=/tmp/fpcore-ui)
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${1:-${FPCORE_UI_VENVS:-/tmp/fpcore-ui}}"
LOG="$PREFIX.log"
: >"$LOG"
quiet() {  # run a step, its output to $LOG; show the log if it fails
    "$@" >>"$LOG" 2>&1 || { tail -n 60 "$LOG" >&2; echo "ui_venvs: failed: $*" >&2; return 1; }
}

if ! [ -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        quiet apt-get update -qq
        DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -qq chromium fonts-dejavu-core
    else
        echo "ui_venvs: /usr/bin/chromium missing and not root; the browser tests will skip" >&2
    fi
fi

make_venv() {  # name, pins...
    local dir="$PREFIX-$1"; shift
    if ! [ -x "$dir/bin/python" ] || ! "$dir/bin/python" -c "import gradio" 2>/dev/null; then
        quiet python3 -m venv "$dir"
        quiet "$dir/bin/python" -m pip install -q --upgrade pip
        quiet "$dir/bin/python" -m pip install -q "$@"
    fi
}
install_project() {  # name, extra pins: the project as it is in this tree, with its dependencies
    local py="$PREFIX-$1/bin/python"; shift
    quiet "$py" -m pip install -q --force-reinstall --no-deps .
    quiet "$py" -m pip install -q . "$@"
}

# A1111's pins (without them 3.41.2 pages fail at request time)
make_venv g3 gradio==3.41.2 fastapi==0.94.0 httpx==0.24.1 httpcore==0.15 &
pid3=$!
# Forge's pins (without them 4.40.0 fails at import)
make_venv g4 gradio==4.40.0 fastapi==0.104.1 pydantic==2.8.2 httpx==0.24.1 huggingface-hub==0.26.2 "numpy<2" &
pid4=$!
wait "$pid3"
wait "$pid4"
# one after the other: both builds use ./build
install_project g3
install_project g4 "numpy<2"   # as in Forge
echo "export FPCORE_UI_PYTHON_G3=$PREFIX-g3/bin/python"
echo "export FPCORE_UI_PYTHON_G4=$PREFIX-g4/bin/python"
