"""Stage cv: mean ± SD over the cross-validation folds (cv_fold@k outputs).

usage: python stages/cv.py <folds_dir> <metrics_json>
"""
import json
import sys
from pathlib import Path

import numpy as np

from lib.core import config as params
from lib.core.atomic import write_json
from lib.core.errors import PipelineError, run_stage

NOT_AVERAGED = {"enabled", "fold", "inner_val_fold", "tp", "fp", "tn", "fn"}


def summarise(folds: list) -> dict:
    """{metric: {mean, sd, folds: [...]}} over the numeric metrics every fold reports."""
    keys = [k for k in folds[0] if k not in NOT_AVERAGED and all(isinstance(f.get(k), (int, float)) for f in folds)]
    out = {}
    for key in keys:
        values = np.array([f[key] for f in folds], dtype=float)
        out[key] = {"mean": float(np.nanmean(values)), "sd": float(np.nanstd(values, ddof=1)),
                    "folds": [float(v) for v in values]}
    return out


def main(argv):
    folds_dir, metrics_path = Path(argv[0]), argv[1]
    cv = params.load("cv")["cv"]
    paths = [folds_dir / f"fold_{k}.json" for k in cv["folds"]]
    try:
        folds = [json.loads(p.read_text()) for p in paths]
    except (OSError, ValueError) as err:
        raise PipelineError(f"{folds_dir}: fold results missing or corrupt ({err}); rerun dvc repro cv_fold") from err
    if not cv["enabled"]:
        write_json(metrics_path, {"enabled": False})
        return
    write_json(metrics_path, {"enabled": True, "n_folds": len(folds), **summarise(folds)})


if __name__ == "__main__":
    run_stage(main)
