#!/usr/bin/env bash
# Every owed GPU check in one call, for a GPU machine lent for ~15 minutes without network.
#
#   bash scripts/gpu_check.sh OUT_DIR            # on the GPU machine (H100/H200, Python 3.12)
#   bash scripts/gpu_check.sh --dry-run OUT_DIR  # here: the same steps on the CPU at tiny shapes
#
# Steps (each under its own time cap; the GPU caps sum to 470 s, < 8 minutes in all): install the carried wheels
# (scripts/download_gpu_wheels.sh fills wheels/gpu/), the GPU-marked tests, then the GPU
# benchmarks: mix_sample, linear_logprobs (eager / liger / Cut Cross-Entropy), paged
# attention, engine pair generation on LLaVA-1.5-7B shapes (random weights) against the
# transformers baselines, a DPO step with LoRA on 7B shapes. Writes
# OUT_DIR/bench/results/<bench>_<device>.md, OUT_DIR/gpu_check.log (everything printed) and
# OUT_DIR/summary.md (one line per step: ok / failed / timed out, seconds). A failed or
# timed-out step does not stop the others; the exit status is 1 if any step failed.
set -uo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
if [[ $# -ne 1 ]]; then
    echo "usage: $0 [--dry-run] OUT_DIR" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mkdir -p "$1" && cd "$1" && pwd)"
mkdir -p "$OUT/bench/results"
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/summary.md"
: >"$LOG"
cd "$ROOT"

if [[ $DRY -eq 1 ]]; then
    PY="${PYTHON:-$ROOT/.venv/bin/python}"
    export TRITON_INTERPRET=1
    DEVICE=cpu-dryrun
    CAP_SCALE=${CAP_SCALE:-4}  # the caps are sized for the GPU; a shared 2-core CPU is slower
else
    CAP_SCALE=1
    PY="${PYTHON:-python3}"
    DEVICE=""
fi
export PYTHONUNBUFFERED=1
START=$(date +%s)
FAILED=0

log() { echo "$*" | tee -a "$LOG"; }

# step NAME CAP_SECONDS COMMAND...: run under a cap, everything into the log, one summary line
step() {
    local name=$1 cap=$(( $2 * CAP_SCALE )); shift 2
    local t0=$(date +%s) rc status
    log ""
    log "=== $name (cap ${cap}s): $*"
    timeout --kill-after=10 "$cap" "$@" >>"$LOG" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status="TIMED OUT"; FAILED=1 ;;
        *) status="FAILED (exit $rc)"; FAILED=1 ;;
    esac
    local took=$(( $(date +%s) - t0 ))
    log "=== $name: $status in ${took}s"
    echo "| $name | $status | ${took} | ${cap} |" >>"$SUMMARY"
}

{
    echo "# gpu_check $( [[ $DRY -eq 1 ]] && echo '--dry-run ' )$(date -u +%FT%TZ)"
    echo
    echo "| step | status | seconds | cap |"
    echo "|---|---|---|---|"
} >"$SUMMARY"

# judgefree's import layout (pyproject's package-dir: judgefree.kernels is kernels/, ...) as a
# folder of links, for when an editable install is impossible (no setuptools offline)
package_farm() {
    local farm="$OUT/pkg/judgefree" entry
    rm -rf "$OUT/pkg" && mkdir -p "$farm"
    for entry in "$ROOT"/judgefree/*; do ln -s "$entry" "$farm/"; done
    for entry in kernels engine generation store curate train evaluation pipeline assets testing cli; do
        ln -s "$ROOT/$entry" "$farm/$entry"
    done
}

# -- 1. environment and the carried wheels ------------------------------------------------------
if [[ $DRY -eq 1 ]]; then
    step "wheels (dry run: listed, not installed)" 20 bash -c "ls -1 '$ROOT/wheels/gpu' 2>/dev/null || echo 'no wheels/gpu folder (scripts/download_gpu_wheels.sh fills it)'"
    package_farm
    LINKS_CHECK="import importlib; mods = [importlib.import_module('judgefree.' + m) for m in 'kernels engine generation store curate train evaluation pipeline assets testing cli'.split()]; assert all(m.__file__.startswith('$OUT/pkg') for m in mods), [m.__file__ for m in mods]; print('judgefree imports from', mods[0].__file__)"
    # -S: no site (the venv's editable install would win); run from $OUT: the checkout's own
    # judgefree/ folder must not shadow the links (the packages export lazily: no torch needed)
    step "package links import" 30 bash -c 'cd "$1" && PYTHONPATH="$1/pkg" "$2" -S -c "$3"' _ "$OUT" "$PY" "$LINKS_CHECK"
else
    # --no-index: the GPU machine has no network; --no-deps: torch, transformers, triton are there.
    step "install wheels" 30 bash -c "nvidia-smi; '$PY' -m pip install --no-index --no-deps '$ROOT'/wheels/gpu/*.whl"
    if ! timeout 60 "$PY" -m pip install --no-index --no-deps --no-build-isolation -e "$ROOT" >>"$LOG" 2>&1; then
        log "editable install failed: importing judgefree through links in $OUT/pkg"
        package_farm
        export PYTHONPATH="$OUT/pkg${PYTHONPATH:+:$PYTHONPATH}"
        export PYTHONSAFEPATH=1  # pytest -m: the checkout's judgefree/ (cwd) must not shadow the links
    fi
fi
step "versions" 15 "$PY" -c "import sys, torch, triton, transformers; print(sys.version); print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__); print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
if [[ -z "$DEVICE" ]]; then
    # "NVIDIA H200" -> h200, "NVIDIA H100 80GB HBM3" -> h100
    DEVICE=$("$PY" -c "import re, torch; n = torch.cuda.get_device_name().lower(); m = re.search(r'[a-z]\d{2,4}', n.replace('nvidia', '')); print(m.group(0) if m else re.sub(r'\W+', '-', n))" 2>>"$LOG" || echo gpu)
fi
log "device tag: $DEVICE"
RES="$OUT/bench/results"

# -- 2. the GPU-marked tests (FMA hazard at T 0.7/1.3, bf16 paths, CUDA-graph decode, KV sizing) ----
if [[ $DRY -eq 1 ]]; then
    step "gpu tests (collected; they skip without CUDA)" 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/kernels tests/engine
else
    step "gpu tests" 80 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
fi

# -- 3. kernel benchmarks -----------------------------------------------------------------------
if [[ $DRY -eq 1 ]]; then
    # mix_sample and paged_attention have no shape options: on the CPU they run their small CPU
    # tables, timed once (a dry run's times mean nothing; every line of the table is still run)
    step "mix_sample" 90 "$PY" bench/mix_sample.py --rounds 1 --out "$RES/mix_sample_$DEVICE.md"
    step "linear_logprobs" 60 "$PY" bench/linear_logprobs.py --device cpu --n 64 --shapes 32:1000 --repeats 1 --warmup 0 --out "$RES/linear_logprobs_$DEVICE.md"
    step "paged_attention" 60 "$PY" bench/paged_attention.py --rounds 1 --calls 1 --out "$RES/paged_attention_$DEVICE.md"
else
    step "mix_sample" 30 "$PY" bench/mix_sample.py --out "$RES/mix_sample_$DEVICE.md"
    step "linear_logprobs" 50 "$PY" bench/linear_logprobs.py --device cuda --out "$RES/linear_logprobs_$DEVICE.md"
    step "paged_attention" 25 "$PY" bench/paged_attention.py --out "$RES/paged_attention_$DEVICE.md"
fi

# -- 4. engine pair generation vs the transformers baselines ------------------------------------
if [[ $DRY -eq 1 ]]; then
    step "generate" 120 "$PY" bench/generate.py --tiny-only --images 2 --new-tokens 4 --rounds 1 --baseline-images 1 --workdir "$OUT/work-generate" --out "$RES/generate_$DEVICE.md"
else
    # 7B shapes: 48 pairs x 64 tokens for the engine, small subsets for the slow baselines
    step "generate (LLaVA-1.5-7B shapes)" 170 "$PY" bench/generate.py --gpu --images 48 --new-tokens 64 --rounds 3 --baseline-images 2 --batched-images 16 --workdir "$OUT/work-generate" --out "$RES/generate_$DEVICE.md"
fi

# -- 5. one DPO step with LoRA ------------------------------------------------------------------
if [[ $DRY -eq 1 ]]; then
    # short sequences (16 + 32 tokens): the dry run shows the step runs both systems and writes its table
    step "dpo" 120 "$PY" bench/dpo.py --device cpu --shape llama-tiny --prompt-len 16 --response-len 32 --steps 1 --warmup 0 --systems ours,eager --workdir "$OUT/work-dpo" --out "$RES/dpo_$DEVICE.md"
else
    step "dpo (LoRA, LLaVA-1.5-7B shapes)" 70 "$PY" bench/dpo.py --device cuda --shape llava-7b --steps 3 --warmup 1 --systems ours,eager --workdir "$OUT/work-dpo" --out "$RES/dpo_$DEVICE.md"
fi

rm -rf "$OUT/work-generate" "$OUT/work-dpo" "$OUT/pkg"  # checkpoints (large, rebuilt on demand), links
TOTAL=$(( $(date +%s) - START ))
echo "" >>"$SUMMARY"
echo "total ${TOTAL}s on $DEVICE; results in bench/results/*_$DEVICE.md; full output in gpu_check.log" >>"$SUMMARY"
log ""
log "gpu_check: total ${TOTAL}s, $( [[ $FAILED -eq 0 ]] && echo 'every step ok' || echo 'some step failed (summary.md)' )"
cat "$SUMMARY"
exit $FAILED
