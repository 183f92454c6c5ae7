#!/usr/bin/env bash
# A pull request's review comment: what the branch changes in params and metrics against a base
# revision, as Markdown (dvc params diff --md, dvc metrics diff --md).
#
# usage: scripts/pr_report.sh [BASE] > pr_report.md      (BASE defaults to main)
#        make pr-report BASE=origin/main
#
# The metrics DVC tracks are the headline only (metrics/evaluate/metrics.json: per scorer AUROC with
# its 95 % CI, AUPRC, Brier, ECE; test counts), so the whole diff is the table. Everything else is in
# metrics/evaluate/details.json and metrics/report.md. Run it after `dvc repro` (or `dvc exp run`) so
# the workspace holds the branch's numbers. Each metric change is labelled against the run-to-run
# noise measured by reruns of one commit (scripts/metrics_noise.py).
set -euo pipefail
base="${1:-main}"

echo "## Params: this branch vs \`$base\`"
echo
params=$(dvc params diff "$base" --md)
echo "${params:-No params changed.}"
echo
echo "## Metrics: this branch vs \`$base\` (demo cohort, test split, 95 % CIs by subject bootstrap)"
echo
dvc metrics diff "$base" --json | python "$(dirname "$0")/metrics_noise.py"
echo
echo "Full report of this branch: \`metrics/report.md\`; plots: \`dvc plots diff $base\`."
