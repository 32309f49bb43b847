#!/usr/bin/env bash
# One prepared run for a GPU machine that is lent for a few minutes: the device
# check, the GPU benchmark (reduced sizes, then full sizes in float32) and the
# real-hardware tests, within 10 minutes,
# every output in one folder. Run it from the repository root:
#
#     bash tools/gpu_session.sh [OUT_DIR]        # default: gpu-results/
#
# It installs nbsparse with the cu12 extra (numba-cuda with the CUDA 12 compiler
# wheels, and CuPy) into the current Python unless NBSPARSE_SKIP_INSTALL=1.
# Each step has its own time limit and the script goes on after a failure; the
# exit status is that of the first failed step. summary.txt lists each step.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-results}"
mkdir -p "$OUT"
export NUMBA_ENABLE_CUDASIM=0
export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0   # the tests' grids are tiny on purpose
PY="${PYTHON:-python}"
status=0

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}

: >"$OUT/summary.txt"
{ nvidia-smi || true; "$PY" --version; git rev-parse HEAD || true; } >"$OUT/machine.txt" 2>&1
if [ "${NBSPARSE_SKIP_INSTALL:-0}" != 1 ]; then
    step install 150 "$PY" -m pip install --quiet -e ".[cu12,test]"
    "$PY" -m pip list 2>/dev/null | grep -iE "numba|cupy|cuda|torch|numpy" >>"$OUT/machine.txt"
fi
# Most telling first: correctness of every op, then the timings, then the tests.
# (The resource report needs no GPU: python -m nbsparse.bench --cuda-resources, anywhere.)
# The full-size benchmark comes last: its NumPy reference results alone take one
# to two minutes per dtype on one core (h_softmax_grad's full mode most of it).
step check 60 "$PY" -m nbsparse check --device cuda
step bench-quick 90 "$PY" -m nbsparse.bench --device cuda --quick --repeat 10 --json "$OUT/bench-quick.json"
step bench-topk 40 "$PY" -m nbsparse.bench --device cuda --topk --quick --repeat 10 --json "$OUT/bench-topk.json"
step tests 150 "$PY" -m pytest -q -m "cuda or gpu" -p no:cacheprovider --junitxml="$OUT/tests.xml"
step bench 150 "$PY" -m nbsparse.bench --device cuda --dtype float32 --repeat 10 --json "$OUT/bench.json"
echo "results in $OUT/ (first failure: exit $status)"
exit "$status"
