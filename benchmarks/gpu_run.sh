#!/usr/bin/env bash
# The GPU check in one call: benchmarks/gpu_validate.py on a CUDA machine, results in $OUT.
#
# 1. Here, on a machine with pip and the package index, once (about 27 MB into .whl/, ignored by git):
#        bash benchmarks/gpu_run.sh fetch
#    It downloads, for CPython 3.12 on x86-64 Linux, the pinned packages the lent H200's image lacks (its image has
#    torch, triton, transformers 5.17, accelerate, tokenizers, pyarrow, pandas, sacrebleu; see
#    /work/.library/device/KINDS.md): fla, transformers 5.24 (our pin), datasets, lm-eval and their small missing
#    dependencies. mamba_ssm and causal_conv1d are not among them: PyPI has only their source (a CUDA build).
# 2. On the GPU machine (device tool: run with carry [".whl"] and timeout_s 540):
#        bash benchmarks/gpu_run.sh
#    Installs .whl/ offline into /tmp/site (nothing is fetched), installs this project (editable, offline), prints
#    the GPU, and runs gpu_validate.py with BUDGET_S (default 420 s; with the machine's start and the installs about
#    9 of a session's 15 device minutes, leaving a short rerun's worth). Files: $OUT/gpu_validate.json,
#    $OUT/gpu_validate.md (targets beside measured values), $OUT/gpu_run.log. The summary is also printed last.
#    A rerun of what failed or was skipped, e.g. (ONLY: fnmatch patterns over SECTION/ITEM; WEIGHTS: budget shares):
#        SECTIONS=kernel_timing,train_throughput BUDGET_S=150 bash benchmarks/gpu_run.sh
#        ONLY='kernel_correctness/ssd/triton,kernel_timing/ssd*' WEIGHTS=kernel_correctness=0.6 bash benchmarks/gpu_run.sh
# Triton's cache (compiled kernels and fla's autotuning results) comes back as $OUT/triton_cache.tgz (when under
# 16 MB) and is restored from .whl/triton_cache.tgz when carried: on a fresh H200 compiling and autotuning fla's
# kernels took most of the budget (about 55 s for DeltaNet's, 100 s for the SSD forward). Before the next call:
#        cp /work/.device/N/triton_cache.tgz .whl/
# It only helps on the same image (the cache is keyed by Triton version, GPU and kernel source).
# On any other CUDA machine with `pip install -r requirements.txt` done, the same command works (.whl/ is optional).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
  transformers==5.24.0 flash-linear-attention==0.6.0 fla-core==0.6.0 datasets==5.2.0 lm-eval==0.4.13
  dill==0.4.1 multiprocess==0.70.19 pytablewriter==1.2.1 DataProperty==1.1.1 mbstrdecoder==1.1.5
  pathvalidate==3.3.1 tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5 chardet==6.0.0.post1 pytz==2026.6
)

if [[ "${1:-}" == "fetch" ]]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  mkdir -p .whl
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}" || exit 1
  du -sh .whl
  exit 0
fi

OUT="${OUT:-gpu_validate_out}"
BUDGET_S="${BUDGET_S:-420}"
SECTIONS="${SECTIONS:-environment,kernel_correctness,kernel_timing,train_throughput,e2e_smoke,multi_gpu}"
mkdir -p "$OUT"
rm -f /tmp/gpu_validate_rc
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/triton_cache}"
{
  if [[ -f .whl/triton_cache.tgz ]]; then
    mkdir -p "$TRITON_CACHE_DIR" && tar xzf .whl/triton_cache.tgz -C "$TRITON_CACHE_DIR" \
      && echo "gpu_run: restored Triton's cache ($(du -sh "$TRITON_CACHE_DIR" | cut -f1)) from .whl/triton_cache.tgz"
  fi
  echo "gpu_run: $(date -u +%FT%TZ) $(uname -m) $(python3 --version 2>&1)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && echo "gpu_run: installed $(ls .whl | wc -l) wheels from .whl into /tmp/site" \
      || echo "gpu_run: WARNING: wheel install failed; running with the image's packages"
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if ! python3 -c "import lrnn_lm.kernels" 2> /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . \
      || python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . \
      || echo "gpu_run: WARNING: could not install lrnn_lm"
  fi
  python3 -c "import torch, transformers, lrnn_lm; print('gpu_run: torch', torch.__version__, 'transformers', \
transformers.__version__, 'lrnn_lm from', lrnn_lm.__file__)"
  # shellcheck disable=SC2086  # EXTRA_ARGS (e.g. "--rehearse" to try this script on a CPU) is split on purpose
  python3 benchmarks/gpu_validate.py --out "$OUT" --budget-s "$BUDGET_S" --sections "$SECTIONS" ${EXTRA_ARGS:-} \
    --only "${ONLY:-}" --weights "${WEIGHTS:-}" --work /tmp/gpu_validate_work
  echo $? > /tmp/gpu_validate_rc
  echo "gpu_run: gpu_validate exit status $(cat /tmp/gpu_validate_rc) (0: no section failed)"
  if [[ -d "$TRITON_CACHE_DIR" ]]; then
    tar czf /tmp/triton_cache.tgz -C "$TRITON_CACHE_DIR" . 2> /dev/null
    if (($(stat -c %s /tmp/triton_cache.tgz) < 16000000)); then
      cp /tmp/triton_cache.tgz "$OUT/" && echo "gpu_run: Triton's cache saved as \$OUT/triton_cache.tgz"
    else
      echo "gpu_run: Triton's cache is over 16 MB compressed; not saved"
    fi
  fi
} 2>&1 | tee "$OUT/gpu_run.log"
exit "$(cat /tmp/gpu_validate_rc 2> /dev/null || echo 1)"
