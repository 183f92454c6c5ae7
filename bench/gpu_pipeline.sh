#!/usr/bin/env bash
# The whole pipeline once on a lent GPU machine (no dvc, no network there): installs the wheels carried
# in .whl/, checks the environment, then runs bench/gpu_pipeline.py (its docstring says what it measures).
#
# usage, in the repository root on the device (the `run` tool; carry [".whl"]):
#   bash bench/gpu_pipeline.sh [N_CASES=220] [more bench/gpu_pipeline.py args, e.g. --skip-cv]
# env: OUT (results; default /tmp/gpu_out), BUDGET_S (seconds this script may take in all, default 570:
#      the running stage is killed at BUDGET_S - 15 s so the JSON and the table are still written; give
#      `run` a timeout_s of at least BUDGET_S + 20).
# In $OUT: gpu_pipeline_<N>.json, gpu_pipeline_<N>.log (this output), stages_<N>.log, evaluate_metrics_<N>.json,
#      report_<N>.md.
set -uo pipefail
N=${1:-220}
shift $(( $# > 0 ? 1 : 0 ))
OUT=${OUT:-/tmp/gpu_out}
BUDGET_S=${BUDGET_S:-570}
REQUIRE_CUDA=${REQUIRE_CUDA-1}   # REQUIRE_CUDA= (empty) lets the check pass without a GPU (a dry run elsewhere)
mkdir -p "$OUT"
PY=python3

main() {
  echo "== $(date -u +%FT%TZ) gpu_pipeline: $N cases, budget ${BUDGET_S} s, $(nproc) CPUs"
  nvidia-smi -L || echo "WARNING: nvidia-smi -L failed"
  echo "== installing .whl/*.whl into /tmp/site"
  ls .whl/*.whl >/dev/null 2>&1 || { echo "FATAL: no wheels in .whl/ (call run with carry [\".whl\"])"; return 3; }
  rm -rf /tmp/site /tmp/dvcstub
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "FATAL: pip install of .whl/*.whl failed"; return 3; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  # datasets 2.14.4 (the pin) subclasses pyarrow.PyExtensionType, gone in pyarrow >= 21: then datasets 2.15.0,
  # the first release without it (granite-tsfm only imports datasets; the pipeline never calls it)
  if ! err=$($PY -c "import datasets" 2>&1); then
    echo "datasets 2.14.4 does not import here ($(echo "$err" | tail -1)); installing .whl/alt (datasets 2.15.0)"
    rm -rf /tmp/site/datasets /tmp/site/datasets-*.dist-info
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/alt/*.whl || { echo "FATAL: pip install of .whl/alt failed"; return 3; }
  fi
  # dvclive imports dvc, which is not there: a stand-in that reports "no DVC repository" (after /tmp/site)
  $PY bench/gpu_pipeline.py --write-dvc-stub /tmp/dvcstub || return 3
  export PYTHONPATH=$PYTHONPATH:/tmp/dvcstub
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DVC_NO_ANALYTICS=1 DVC_STUDIO_OFFLINE=1 \
         MPLBACKEND=Agg MPLCONFIGDIR=/tmp/mpl PYTHONUNBUFFERED=1
  echo "python $($PY -V 2>&1 | cut -d' ' -f2) at $(command -v $PY); PYTHONPATH=$PYTHONPATH"
  local left=$(( BUDGET_S - SECONDS - 15 ))
  $PY bench/gpu_pipeline.py --n-cases "$N" --out "$OUT" ${REQUIRE_CUDA:+--require-cuda} --deadline-s "$left" "$@"
}

main "$@" 2>&1 | tee "$OUT/gpu_pipeline_${N}.log"
exit "${PIPESTATUS[0]}"
