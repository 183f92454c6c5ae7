#!/usr/bin/env bash
# A pull request's review comment: what the branch changes in params and metrics against a base
# revision, as Markdown (dvc params diff --md, dvc metrics diff --md).
#
# usage: scripts/pr_report.sh [BASE] [--all-metrics] > pr_report.md      (BASE defaults to main)
#        make pr-report BASE=origin/main
#
# By default the metrics table keeps the headline rows (the TTM's test metrics and its gains over
# the baselines, window level and voted, and the val numbers of train/calibrate); --all-metrics
# lists every changed metric, subgroups and CI bounds included. Run it after `dvc repro` (or
# `dvc exp run`) so the workspace holds the branch's numbers.
set -euo pipefail
base="${1:-main}"
all="${2:-}"
headline='^\| (Path|---)|window\.(ttm|gain_over_[a-z_]+)\.(auroc|auprc|brier|sensitivity|specificity|ece)(_ci_low|_ci_high)?\b|voted\.ttm\.(auroc|auprc)\b|best_val_|val_ece_after|window\.(sbp|dbp|map)\.(mae|me|sd|bhs_grade|aami_pass)\b'

echo "## Params: this branch vs \`$base\`"
echo
params=$(dvc params diff "$base" --md)
echo "${params:-No params changed.}"
echo
echo "## Metrics: this branch vs \`$base\` (demo cohort, test split, 95 % CIs by subject bootstrap)"
echo
metrics=$(dvc metrics diff "$base" --md --precision 4)
if [ -z "$metrics" ]; then
  echo "No metrics changed."
elif [ "$all" = "--all-metrics" ]; then
  echo "$metrics"
else
  echo "$metrics" | grep -E "$headline" || echo "No headline metric changed (see --all-metrics)."
fi
echo
echo "Full report of this branch: \`metrics/report.md\`; plots: \`dvc plots diff $base\`."
