"""Stage evaluate: the only stage that reads the test split, once.

The model and every scorer the baselines stage fitted (lib.model.scorers) predict every labelled
test window; each is calibrated and thresholded with what its own fit on val chose (lib.eval.run runs
it, lib.eval.evaluation has the science). Writes

* `<live_dir>/metrics.json`: the headline numbers DVC tracks (per scorer AUROC with CI, AUPRC,
  Brier, ECE, backward AUROC, alarm figures; test subjects, windows, positives; null where n/a), by
  dvclive, with its plots in `<live_dir>/plots`;
* `<live_dir>/details.json`: everything (window level, voted, gains, backward (case-control)
  analysis, val ranking per scorer, subgroups, alarms, the cohort table; n/a as null with `na_reason`);
* `<report_md>`: the clinician's report, built from details.json and what produced the model;
* `<scores>` (clf): each scored test window's calibrated probability per scorer, with its subject
  and label, so that variants can be compared paired on the same windows (bench/ablation.py).

Only `evaluate.*`, `inference.*` and `train.device` are read from params.yaml: the horizon and the model
come from the checkpoint, the window duration and the label rule from the test windows file,
demographics from the cohort's own clinical table.

usage: python stages/evaluate.py <checkpoint> <calibrator_json> <val_scores> <baselines_dir> <windows_dir>
       <clinical_csv> <live_dir> <report_md> <scores_parquet>
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
from pathlib import Path
from typing import NamedTuple

from lib.core.errors import run_stage
from lib.core.memory import after_inference, keep_heap_bounded
from lib.core.params import Evaluate, Inference, Train, read_params
from lib.eval import run


class Config(NamedTuple):
    evaluate: Evaluate
    inference: Inference
    device: str


def config(params) -> Config:
    return Config(Evaluate.from_params(params), Inference.from_params(params), Train.pick(params, "device"))


def main(argv):
    keep_heap_bounded()   # freed memory goes back to the OS while the stage streams (lib/core/memory.py)
    checkpoint, calibrator_path, val_scores, baselines_dir, windows_dir, clinical_csv, live_dir, report_path, \
        scores = argv
    cfg = config(read_params())
    windows_dir = Path(windows_dir)
    splits = {split: windows_dir / f"{split}.h5" for split in ("train", "val", "test")}
    details, figures, provenance = run.evaluate(checkpoint, calibrator_path, val_scores, baselines_dir,
                                                splits["test"], splits["val"], clinical_csv, splits, cfg.evaluate,
                                                cfg.inference, cfg.device, after_inference=after_inference,
                                                scores_path=scores)
    run.write(live_dir, report_path, details, figures, provenance)


if __name__ == "__main__":
    run_stage(main)
