#!/usr/bin/env bash
# The GPU checks issue 13 owes, as one script for a device session (no GPU was lent when
# this was written): the mix_sample tests on the real fused arithmetic, the engine's staged
# copies, then the benchmark table. Usage: bash bench/mix_sample_gpu_checks.sh [OUT_DIR]
set -uo pipefail
out=${1:-bench/results}
p=${PYTHON:-.venv/bin/python}
py=$(cd "$(dirname "$p")" && pwd)/$(basename "$p")  # absolute, the venv kept
mkdir -p "$out"
out=$(cd "$out" && pwd)
status=0
$py -m pytest -q tests/kernels/test_mix_sample.py tests/kernels/test_mix_sample_hazard.py tests/kernels/test_mix_sample_candidates.py \
    tests/kernels/test_mix_sample_semantics.py tests/engine/test_staging.py tests/engine/test_engine_gpu.py \
    2>&1 | tail -30 | tee "$out/mix_sample_gpu_tests.txt" || status=1
(cd bench && $py mix_sample.py --out "$out/mix_sample_h200.md") || status=1
exit $status
