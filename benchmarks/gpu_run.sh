#!/usr/bin/env bash
# The GPU check in one command: the test suite on the GPU (pytest --device cuda), then the timings
# (benchmarks/gpu_timing.py), then one report: $OUT/gpu_report.json and $OUT/gpu_report.md (also printed).
#
#   OUT=gpu_out BUDGET_S=480 bash benchmarks/gpu_run.sh
#   REHEARSE=1 OUT=/tmp/rehearsal bash benchmarks/gpu_run.sh      # the same on CPU at tiny shapes (CI runs this)
#
# Environment (every path comes from here; none is assumed):
#   OUT         results folder (default: gpu_run_out)                 WORK   scratch folder (default: $OUT/work)
#   BUDGET_S    seconds for tests + timings (default 480)             TEST_SHARE  the tests' share (default 0.5)
#   PYTEST_ARGS what pytest runs, split on spaces (default: -m "not slow"; a rehearsal: one small kernel test)
#   SECTIONS    gpu_timing.py sections (default: kernels,training,e2e)
#   WHEELS      optional folder of wheels installed offline first (for an image that lacks the pinned packages),
#               and of triton_cache.tgz, Triton's compiled kernels from an earlier run on the same image
#               (compiling fla's kernels took most of a fresh H200's budget); the cache comes back as
#               $OUT/triton_cache.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-gpu_run_out}"
WORK="${WORK:-$OUT/work}"
BUDGET_S="${BUDGET_S:-480}"
TEST_SHARE="${TEST_SHARE:-0.5}"
SECTIONS="${SECTIONS:-kernels,training,e2e}"
mkdir -p "$OUT" "$WORK"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$WORK/triton_cache}"
if [[ "${REHEARSE:-0}" == "1" ]]; then
  DEVICE=cpu TIMING_ARGS=(--rehearse)
  DEFAULT_PYTEST=(tests/kernels/test_backends_on_device.py -k "delta_rule and fp32 and random")
else
  DEVICE=cuda TIMING_ARGS=()
  DEFAULT_PYTEST=(-m "not slow")
fi
start=$(date +%s)
{
  echo "gpu_run: $(date -u +%FT%TZ) device=$DEVICE budget=${BUDGET_S}s out=$OUT"
  if [[ -n "${WHEELS:-}" ]]; then
    [[ -f "$WHEELS/triton_cache.tgz" ]] && mkdir -p "$TRITON_CACHE_DIR" && tar xzf "$WHEELS/triton_cache.tgz" -C "$TRITON_CACHE_DIR"
    if compgen -G "$WHEELS/*.whl" > /dev/null; then
      python3 -m pip install -q --no-index --no-deps --target "$WORK/site" "$WHEELS"/*.whl \
        || echo "gpu_run: WARNING: wheel install failed; running with the image's packages"
      export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
  fi
  python3 -c "import lrnn_lm.kernels" 2> /dev/null || python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . \
    || echo "gpu_run: WARNING: could not install lrnn_lm"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

  test_s=$(python3 -c "print(int($BUDGET_S * $TEST_SHARE))")
  if [[ -n "${PYTEST_ARGS:-}" ]]; then read -r -a PYTEST <<< "$PYTEST_ARGS"; else PYTEST=("${DEFAULT_PYTEST[@]}"); fi
  timeout -k 10 "$test_s" python3 -m pytest -q --device "$DEVICE" "${PYTEST[@]}" --junitxml="$OUT/pytest.xml" \
    > "$OUT/pytest.log" 2>&1
  echo "gpu_run: pytest exit status $? after $(($(date +%s) - start)) s (124: stopped by its ${test_s} s limit)"
  tail -3 "$OUT/pytest.log"

  left=$((BUDGET_S - ($(date +%s) - start)))
  # No item starts in the last 20 s; the hard limit stops one that runs over.
  timeout -k 10 "$((left > 30 ? left : 30))" python3 benchmarks/gpu_timing.py --out "$OUT" --work "$WORK/e2e" \
    --sections "$SECTIONS" --budget-s "$((left > 40 ? left - 20 : 20))" "${TIMING_ARGS[@]}"
  echo "gpu_run: gpu_timing exit status $?"
  if [[ -d "$TRITON_CACHE_DIR" && "$DEVICE" == cuda ]]; then
    tar czf "$OUT/triton_cache.tgz" -C "$TRITON_CACHE_DIR" . 2> /dev/null && echo "gpu_run: saved $OUT/triton_cache.tgz"
  fi
  # Its exit status is the run's (pipefail): 0 when tests passed and no test or timing item failed.
  python3 benchmarks/gpu_report.py "$OUT"
} 2>&1 | tee "$OUT/gpu_run.log"
