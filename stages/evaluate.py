"""Stage evaluate: the only stage that reads the test split, once.

The model and every scorer the baselines stage fitted (lib.model.scorers) predict every labelled
test window; each is calibrated and thresholded with what its own fit on val chose (lib.eval.evaluation
has the science). Writes

* `<live_dir>/metrics.json`: the headline numbers DVC tracks (per scorer AUROC with CI, AUPRC,
  Brier, ECE, backward AUROC; test subjects, windows, positives; null where n/a), by dvclive, with
  its plots in `<live_dir>/plots`;
* `<live_dir>/details.json`: everything (window level, voted, gains, backward (case-control)
  analysis, val ranking per scorer, subgroups, the cohort table; n/a as null with `na_reason`);
* `<report_md>`: the clinician's report, built from details.json and what produced the model.

Only `evaluate.*` and `train.device` are read from params.yaml: the horizon and the model come from
the checkpoint, the window duration and the label rule from the test windows file, demographics
from the cohort's own clinical table.

usage: python stages/evaluate.py <checkpoint> <calibrator_json> <baselines_dir> <windows_dir> <clinical_csv>
       <live_dir> <report_md>
"""
import dataclasses
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from dvclive import Live

from lib.core.atomic import atomic_dir, write_json
from lib.core.errors import run_stage
from lib.core.memory import keep_heap_bounded, map_large_blocks, release_freed_memory
from lib.core.params import Evaluate, Inference, Train, read_params
from lib.core.schema import map_ahead_column
from lib.data import windows_h5
from lib.data.dataset import checkpoint_split
from lib.eval import evaluation, report
from lib.eval.calibration import Calibration, read_calibrations
from lib.model.inference import pick_device, predict
from lib.model.scorers import MODEL, score_saved
from lib.model.ttm import load_checkpoint


class Config(NamedTuple):
    evaluate: Evaluate
    inference: Inference
    device: str


def config(params) -> Config:
    return Config(Evaluate.from_params(params), Inference.from_params(params), Train.pick(params, "device"))


class TestPredictions(NamedTuple):
    task: str
    horizon_min: float
    indices: np.ndarray      # rows of test.h5 the model scores (labelled at the horizon / finite pressures)
    targets: np.ndarray      # clf: labels; reg: reference SBP/DBP/MAP (mmHg)
    predictions: object      # clf: {scorer: logits}, the model's ("ttm") and each baseline's; reg: mmHg (n, 3)
    forecasts: dict          # clf: {minutes: the zero-shot forecaster's MAP forecast over that label minute}
    model_config: dict       # the checkpoint's config and train summary
    train_summary: dict
    val_indices: np.ndarray | None = None   # clf: the val windows the scorers' alarm thresholds are chosen on
    val_predictions: dict | None = None     # clf: {scorer: val logits}


def predict_test(checkpoint, baselines_dir, test_h5, device_name: str,
                 inference: Inference | None = None, val_h5=None) -> TestPredictions:
    """The model and the baselines on the test windows (and, for clf with `val_h5`, on the val windows,
    where the alarms' operating points are chosen): the only place evaluate touches lib.model."""
    dev = pick_device(device_name)
    model, ckpt = load_checkpoint(checkpoint, dev, inference)
    summary = ckpt.get("summary", {})
    horizon = float(ckpt.get("horizon_min", summary.get("horizon_min")))
    test = checkpoint_split(model, ckpt, test_h5)
    outputs = predict(model, test, dev)
    forecasts, val, val_predictions = {}, None, None
    if model.task == "clf":
        horizons = windows_h5.attrs(test_h5)["params"]["horizons_min"]
        logits, forecasts = score_saved(baselines_dir, test_h5, horizon, dev, horizons)
        predictions = {MODEL: outputs, **logits}
        if val_h5 is not None:
            val = checkpoint_split(model, ckpt, val_h5)
            val_predictions = {MODEL: predict(model, val, dev), **score_saved(baselines_dir, val_h5, horizon, dev)[0]}
    else:
        predictions = model.to_mmhg(torch.from_numpy(outputs)).numpy()
    return TestPredictions(model.task, horizon, test.indices, test.targets, predictions, forecasts,
                           dict(ckpt["config"]), dict(summary), None if val is None else val.indices, val_predictions)


def cohort_source(clinical: pd.DataFrame) -> str:
    """How the cohort was made (data.source), from the `source` column the cohort stage writes."""
    known = clinical["source"].dropna() if "source" in clinical else []
    return str(known.iloc[0]) if len(known) else "unknown"


def main(argv):
    keep_heap_bounded()   # freed memory goes back to the OS while the stage streams (lib/core/memory.py)
    checkpoint, calibrator_path, baselines_dir, windows_dir, clinical_csv, live_dir, report_path = argv
    cfg = config(read_params())
    test_h5 = Path(windows_dir) / "test.h5"
    run = predict_test(checkpoint, baselines_dir, test_h5, cfg.device, cfg.inference, Path(windows_dir) / "val.h5")
    # Inference is done: from here on, arrays per window and bootstrap blocks come and go, and memory
    # per window stays at what they hold with their blocks mmapped (lib/core/memory.py).
    release_freed_memory()
    map_large_blocks()
    clinical = evaluation.read_clinical(clinical_csv)
    ids = evaluation.read_test_windows(test_h5, run.indices)
    calibration = {}
    if run.task == "clf":
        calibrations = {MODEL: Calibration.load(calibrator_path),
                        **read_calibrations(Path(baselines_dir) / "calibration.json")}
        calibration = calibrations[MODEL].to_dict()
        summary, figures = evaluation.evaluate_classifier(run.targets, run.predictions, calibrations, ids,
                                                          cfg.evaluate, clinical, horizon_min=run.horizon_min)
        val_ids = evaluation.read_test_windows(Path(windows_dir) / "val.h5", run.val_indices)
        summary.monitor, plots = evaluation.monitor_report(
            run.targets, {name: calibrations[name].predict_proba(z) for name, z in run.predictions.items()}, ids,
            {name: calibrations[name].predict_proba(z) for name, z in run.val_predictions.items()}, val_ids,
            {name: calibrations[name].threshold for name in run.predictions}, cfg.evaluate)
        figures.plots += plots
    else:
        summary, figures = evaluation.evaluate_regressor(run.targets, run.predictions, ids, cfg.evaluate)
    details = dataclasses.replace(summary, horizon_min=run.horizon_min, mode=run.train_summary.get("mode", "?"),
                                  cohort=evaluation.read_cohort_table(windows_dir, clinical, run.horizon_min),
                                  masking=evaluation.read_masking(windows_dir))
    if run.forecasts:
        minutes = sorted({m for per_minute in run.forecasts.values() for m in per_minute})
        actual = windows_h5.read_columns(test_h5, [map_ahead_column(m) for m in minutes])
        details.forecast = {
            name: evaluation.forecast_report(per_minute, {m: actual[map_ahead_column(m)][run.indices] for m in minutes},
                                             ids.subjectid, cfg.evaluate)
            for name, per_minute in run.forecasts.items()}
    provenance = report.Provenance(source=cohort_source(clinical), window_s=ids.window_s,
                                   model=run.model_config, training=run.train_summary,
                                   windows={k: v for k, v in windows_h5.attrs(test_h5).items() if k != "masking"},
                                   calibration=calibration,
                                   evaluate=dataclasses.asdict(cfg.evaluate))
    link_dir = os.path.relpath(Path(live_dir) / "plots" / "images", Path(report_path).parent)
    with atomic_dir(live_dir) as tmp:
        live = Live(str(tmp), dvcyaml=False, save_dvc_exp=False)
        images = report.write_figures(live, figures, Path(live.plots_dir) / "images", link_dir)
        live.summary = evaluation.headline(details)
        live.end()
        write_json(tmp / "details.json", details.to_dict())
    report.write_report(report_path, details, provenance, images)


if __name__ == "__main__":
    run_stage(main)
