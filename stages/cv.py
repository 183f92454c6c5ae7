"""Stage cv: mean ± SD over the cross-validation folds (cv_fold@k outputs).

cv.json is a DVC metrics file (a column each in `dvc exp show`), so it holds the headline
metrics' mean and SD only; every fold's full metrics stay in metrics/cv/fold_<k>.json.

usage: python stages/cv.py <folds_dir> <metrics_json>
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lib.core.atomic import write_json
from lib.core.errors import PipelineError, run_stage
from lib.core.params import CV, read_params

# clf folds report the first four, reg folds the last three.
SUMMARISED = ("auroc", "auprc", "brier", "ece", "sbp_mae", "dbp_mae", "map_mae")


class Config(NamedTuple):
    enabled: bool
    folds: tuple


def config(params) -> Config:
    return Config(*CV.pick(params, "enabled", "folds"))


def summarise(folds: list) -> dict:
    """{metric: {mean, sd}} over the folds, for the SUMMARISED metrics every fold reports."""
    out = {}
    for key in SUMMARISED:
        if all(isinstance(f.get(key), int | float) for f in folds):
            values = np.array([f[key] for f in folds], dtype=float)
            out[key] = {"mean": float(np.nanmean(values)), "sd": float(np.nanstd(values, ddof=1))}
    return out


def main(argv):
    folds_dir, metrics_path = Path(argv[0]), argv[1]
    cfg = config(read_params())
    paths = [folds_dir / f"fold_{k}.json" for k in cfg.folds]
    try:
        folds = [json.loads(p.read_text()) for p in paths]
    except (OSError, ValueError) as err:
        raise PipelineError(f"{folds_dir}: fold results missing or corrupt ({err}); rerun dvc repro cv_fold") from err
    if not cfg.enabled:
        write_json(metrics_path, {"enabled": False})
        return
    write_json(metrics_path, {"enabled": True, "n_folds": len(folds), **summarise(folds)})


if __name__ == "__main__":
    run_stage(main)
