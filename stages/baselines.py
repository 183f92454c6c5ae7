"""Stage baselines: every scorer of the registry (lib.model.scorers.REGISTRY: logistic regressions,
a 1-D CNN on the raw windows, TTM MAP forecasters), trained on train and calibrated on val exactly
like the model (test is not read). calibration.json records what each was fitted on (its horizon),
val_scores.parquet the val logits each was calibrated on.

usage: python stages/baselines.py <windows_dir> <out_dir> <metrics_json>
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
from pathlib import Path
from typing import NamedTuple

import torch

from lib.core.atomic import atomic_dir, write_json
from lib.core.config import BaselinesConfig
from lib.core.errors import run_stage
from lib.core.memory import keep_heap_bounded
from lib.core.params import Calibrate, read_params
from lib.data import windows_h5
from lib.eval.calibration import VAL_SCORES, fit_on_val, write_val_scores
from lib.model import baselines, scorers
from lib.model.inference import pick_device


class Config(NamedTuple):
    baselines: BaselinesConfig
    calibrate: Calibrate


def config(params) -> Config:
    return Config(BaselinesConfig.from_params(params), Calibrate.from_params(params))


def main(argv):
    keep_heap_bounded()   # freed memory goes back to the OS while the stage streams (lib/core/memory.py)
    windows_dir, out_dir, metrics_path = Path(argv[0]), argv[1], argv[2]
    cfg = config(read_params())
    b = cfg.baselines
    with atomic_dir(out_dir) as tmp:
        if b.task != "clf":  # the baselines are hypotension classifiers
            write_json(tmp / "calibration.json", {})
            write_json(metrics_path, {"task": b.task, "baselines": "none (classification baselines only)"})
            return
        torch.use_deterministic_algorithms(True, warn_only=True)
        train, val = baselines.load_baseline_splits(windows_dir, b)
        stats = windows_h5.attrs(windows_dir / "train.h5")["normalisation"]
        fitted, val_logits, summary = scorers.fit_scorers(train, val, b, stats, pick_device(b.device))
        scorers.save_scorers(tmp, fitted)
        fitted_on = {"split": "val", "windows": int(len(val)), "horizon_min": b.horizon_min}
        calibrations = {}
        for name, logits in val_logits.items():
            calibration, calibrated = fit_on_val(logits, val.targets, cfg.calibrate, fitted_on)
            summary[name].update(calibrated)
            calibrations[name] = calibration.to_dict()
        write_json(tmp / "calibration.json", calibrations)
        write_val_scores(tmp / VAL_SCORES, val.indices, val_logits)   # evaluate's alarm operating points
    write_json(metrics_path, summary)


if __name__ == "__main__":
    run_stage(main)
