#!/usr/bin/env bash
# Wheels the GPU machine lacks (it has Python 3.12, torch 2.11, Triton 3.6, transformers,
# peft, timm, pytest, but no network), downloaded here for CPython 3.12 / manylinux x86-64 into
# wheels/gpu/ (git-ignored), where scripts/gpu_check.sh installs them from with --no-index.
#
#   bash scripts/download_gpu_wheels.sh [DEST]      # default wheels/gpu
#
# --no-deps on purpose: their heavy needs (torch, triton, torchvision, huggingface_hub,
# safetensors, timm) are on the GPU machine, and resolving them would pull gigabytes; the
# pure-Python needs are listed by name. Versions are the ones this checkout's .venv runs (so
# the GPU run uses what the tests here passed with), else the newest on PyPI.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${1:-$ROOT/wheels/gpu}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$DEST"

# name: what needs it
PACKAGES=(
    liger-kernel        # linear_logprobs benchmark baseline (fused linear cross-entropy); DPO loss
    open_clip_torch     # curate: CLIP scoring
    cut-cross-entropy   # linear_logprobs benchmark baseline (Apple's CCE)
    inflect             # evaluation: CHAIR singularises words
    more-itertools      # inflect's
    typeguard           # inflect's
    ftfy                # open_clip's tokenizer
    wcwidth             # ftfy's
    regex               # open_clip's tokenizer (compiled: a cp312 manylinux wheel)
    pysbd               # curate: sentence boundaries
)

specs=()
for name in "${PACKAGES[@]}"; do
    version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
    specs+=("${name}${version:+==$version}")
done
echo "downloading into $DEST: ${specs[*]}"
"$PY" -m pip download --no-deps --only-binary=:all: --dest "$DEST" \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    "${specs[@]}"
ls -l "$DEST"
du -sh "$DEST"
