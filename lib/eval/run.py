"""One evaluation of the frozen model and its baselines on a test windows file: what the evaluate stage
(the test split) and the external_evaluate stage (a second cohort) run.

The model and every scorer the baselines stage fitted (lib.model.scorers) predict every labelled test
window; each is calibrated and thresholded with what its own fit on val chose, and its alarms' operating
points are chosen on the val windows (lib.eval.evaluation has the science). `evaluate` returns the
detailed summary, the figures and the provenance; `write` puts them where DVC tracks them:

* `<live_dir>/metrics.json`: the headline numbers (lib.eval.evaluation.headline), by dvclive, with its
  plots in `<live_dir>/plots`;
* `<live_dir>/details.json`: everything (`Details.to_dict`);
* `<report_md>`: the clinician's report (lib.eval.report).
"""
import dataclasses
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from dvclive import Live

from lib.core.atomic import atomic_dir, atomic_path, write_json
from lib.core.errors import PipelineError
from lib.core.params import Evaluate, Inference
from lib.core.schema import map_ahead_column
from lib.data import windows_h5
from lib.data.dataset import checkpoint_split
from lib.eval import evaluation, report
from lib.eval.calibration import VAL_SCORES, Calibration, read_calibrations, read_val_scores
from lib.model.inference import pick_device, predict
from lib.model.scorers import MODEL, score_saved
from lib.model.ttm import load_checkpoint


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
    windows_rule: dict | None = None        # how the model's training windows were made (window_rule)


def predict_test(checkpoint, baselines_dir, test_h5, device_name: str,
                 inference: Inference | None = None, val_scores=None) -> TestPredictions:
    """The model and the baselines on the test windows: the only place evaluate touches lib.model. For clf
    with `val_scores` (the calibrate stage's file of the model's val logits; the baselines stage wrote its
    scorers' beside their calibration), the val logits the calibrators were fitted on, where the alarms'
    operating points are chosen: read, not predicted again."""
    dev = pick_device(device_name)
    model, ckpt = load_checkpoint(checkpoint, dev, inference)
    summary = ckpt.get("summary", {})
    horizon = float(ckpt.get("horizon_min", summary.get("horizon_min")))
    val, val_predictions = None, None
    if model.task == "clf" and val_scores is not None:   # read first: a bad file fails before any inference
        val, val_predictions = read_alarm_val_scores(val_scores, baselines_dir)
    test = checkpoint_split(model, ckpt, test_h5)
    outputs = predict(model, test, dev)
    forecasts = {}
    if model.task == "clf":
        horizons = windows_h5.attrs(test_h5)["params"]["horizons_min"]
        logits, forecasts = score_saved(baselines_dir, test_h5, horizon, dev, horizons)
        predictions = {MODEL: outputs, **logits}
    else:
        predictions = model.to_mmhg(torch.from_numpy(outputs)).numpy()
    return TestPredictions(model.task, horizon, test.indices, test.targets, predictions, forecasts,
                           dict(ckpt["config"]), dict(summary), val, val_predictions,
                           ckpt.get("windows"))


def read_alarm_val_scores(val_scores, baselines_dir) -> tuple:
    """(val rows, {scorer: val logits}): the model's (`val_scores`, the calibrate stage's) and the baselines'
    (their directory's VAL_SCORES), which must score the same val windows."""
    rows, model_val = read_val_scores(val_scores, "calibrate")
    baselines_rows, baselines_val = read_val_scores(Path(baselines_dir) / VAL_SCORES, "baselines")
    if not np.array_equal(rows, baselines_rows):
        raise PipelineError(f"{val_scores} and {Path(baselines_dir) / VAL_SCORES} score other val windows "
                            f"({len(rows)} and {len(baselines_rows)}); rerun dvc repro")
    return rows, {**model_val, **baselines_val}


def cohort_source(clinical: pd.DataFrame) -> str:
    """How the cohort was made (data.source), from the `source` column the cohort stage writes."""
    known = clinical["source"].dropna() if "source" in clinical else []
    return str(known.iloc[0]) if len(known) else "unknown"


def check_window_rule(rule: dict | None, test_h5) -> None:
    """The test windows must be cut, gated and scaled as the model's training windows were (its checkpoint's
    `windows` rule; the stride aside): one line naming the first key that differs."""
    if not rule:
        return
    found = windows_h5.window_rule(test_h5)
    for key in ("fs", "normalisation"):
        if key in rule and found.get(key) != rule[key]:
            raise PipelineError(f"{test_h5}: windows {key} {found.get(key)} differs from the model's training "
                                f"windows ({rule[key]}); rerun dvc repro")
    for key, value in rule.get("params", {}).items():
        if key != "stride" and found.get("params", {}).get(key) != value:
            raise PipelineError(f"{test_h5}: windows made with windows.{key}={found.get('params', {}).get(key)!r}, "
                                f"the model was trained on windows.{key}={value!r}; rerun dvc repro")


def recalibration_report(run: TestPredictions, calibrations: dict, ids, cfg: Evaluate, fraction: float) -> dict:
    """Each calibrator refitted (same method and threshold rule) on `fraction` of the cohort's subjects, drawn
    with evaluate.seed; the original and the refitted calibration both scored on the other subjects only (window
    level, with CIs): what recalibrating on a new hospital would buy. The forward analysis above is unchanged."""
    y = np.asarray(run.targets, dtype=np.float64)
    subjects = np.unique(ids.subjectid)
    rng = np.random.default_rng(cfg.seed)
    held = rng.choice(subjects, size=max(1, int(round(fraction * len(subjects)))), replace=False)
    fit = np.isin(ids.subjectid, held)
    scored = dataclasses.replace(ids, caseid=ids.caseid[~fit], subjectid=ids.subjectid[~fit], t_end=ids.t_end[~fit],
                                 timing={k: v[~fit] for k, v in ids.timing.items()})
    definition = {"fraction": fraction, "fit_subjects": int(len(held)),
                  "scored_subjects": int(len(subjects) - len(held)), "fit_windows": int(fit.sum()),
                  "scored_windows": int((~fit).sum())}
    if len(np.unique(y[fit])) < 2 or len(np.unique(y[~fit])) < 2:
        return {"definition": definition, "na_reason": "the held-out or the scored part has one class only"}
    refitted = {name: Calibration.fit(z[fit], y[fit], c.calibrator.method, c.threshold_rule,
                                      c.target_sensitivity or 0.8, {"external_subjects": int(len(held))})
                for name, (z, c) in ((n, (run.predictions[n], calibrations[n])) for n in run.predictions)}
    boot = evaluation.Bootstrap.from_config(cfg)
    out = {"definition": definition}
    reason = evaluation.na_reason_for(y[~fit], scored, cfg)
    for label, calib in (("original", calibrations), ("recalibrated", refitted)):
        level = evaluation.classification_report(
            y[~fit], {n: calib[n].predict_proba(z[~fit]) for n, z in run.predictions.items()},
            {n: calib[n].threshold for n in run.predictions}, scored, boot, cfg.ece_bins)
        out[label] = evaluation.gated(level, reason)
    return out


def evaluate(checkpoint, calibrator_path, val_scores, baselines_dir, test_h5, val_h5, clinical_csv,
             cohort_files: dict, cfg: Evaluate, inference: Inference, device: str, recalibrate_fraction: float = 0.0,
             after_inference=lambda: None, scores_path=None) -> tuple:
    """(Details, Figures, report.Provenance) of the frozen model and its baselines on `test_h5`; the alarms'
    operating points are chosen on the windows of `val_h5` from the val logits the calibrators were fitted on
    (`val_scores`: the calibrate stage's; the baselines stage's are in `baselines_dir`); `cohort_files` {split:
    windows file} are the report's cohort
    table and masking counts. `recalibrate_fraction` > 0 adds `recalibration_report` (an external cohort).
    `after_inference` runs once the predictions are made (the stage's memory policy, lib/core/memory.py).
    `scores_path` (clf): every scored window's calibrated probabilities are written there (`write_scores`)."""
    test_h5, val_h5 = Path(test_h5), Path(val_h5)
    run = predict_test(checkpoint, baselines_dir, test_h5, device, inference, val_scores)
    check_window_rule(run.windows_rule, test_h5)
    after_inference()
    clinical = evaluation.read_clinical(clinical_csv)
    ids = evaluation.read_test_windows(test_h5, run.indices)
    calibration = {}
    if run.task == "clf":
        calibrations = {MODEL: Calibration.load(calibrator_path),
                        **read_calibrations(Path(baselines_dir) / "calibration.json")}
        calibration = calibrations[MODEL].to_dict()
        summary, figures = evaluation.evaluate_classifier(run.targets, run.predictions, calibrations, ids,
                                                          cfg, clinical, horizon_min=run.horizon_min)
        val_ids = evaluation.read_test_windows(val_h5, run.val_indices)
        probabilities = {name: calibrations[name].predict_proba(z) for name, z in run.predictions.items()}
        summary.monitor, plots = evaluation.monitor_report(
            run.targets, probabilities, ids,
            {name: calibrations[name].predict_proba(z) for name, z in run.val_predictions.items()}, val_ids,
            {name: calibrations[name].threshold for name in run.predictions}, cfg)
        figures.plots += plots
        if recalibrate_fraction > 0:
            summary.recalibration = recalibration_report(run, calibrations, ids, cfg, recalibrate_fraction)
        if scores_path:
            write_scores(scores_path, ids, run.targets, probabilities)
    else:
        summary, figures = evaluation.evaluate_regressor(run.targets, run.predictions, ids, cfg)
    details = dataclasses.replace(summary, horizon_min=run.horizon_min, mode=run.train_summary.get("mode", "?"),
                                  cohort=evaluation.read_cohort_table(cohort_files, clinical, run.horizon_min),
                                  masking=evaluation.read_masking(cohort_files))
    if run.forecasts:
        minutes = sorted({m for per_minute in run.forecasts.values() for m in per_minute})
        actual = windows_h5.read_columns(test_h5, [map_ahead_column(m) for m in minutes])
        details.forecast = {
            name: evaluation.forecast_report(per_minute, {m: actual[map_ahead_column(m)][run.indices] for m in minutes},
                                             ids.subjectid, cfg)
            for name, per_minute in run.forecasts.items()}
    provenance = report.Provenance(source=cohort_source(clinical), window_s=ids.window_s,
                                   model=run.model_config, training=run.train_summary,
                                   windows={k: v for k, v in windows_h5.attrs(test_h5).items() if k != "masking"},
                                   calibration=calibration, evaluate=dataclasses.asdict(cfg))
    return details, figures, provenance


def write_scores(path, ids, labels, probabilities: dict) -> None:
    """One row per scored test window: who and when (subjectid, caseid, t_end_s), its label, and each
    scorer's calibrated probability (`probabilities` {scorer: per window}; Parquet, byte-reproducible).
    Variants scored on the same test split line up row by row, so they can be compared paired, on the
    same bootstrap replicates (bench/ablation.py), without reading the test split again."""
    frame = pd.DataFrame({"subjectid": ids.subjectid, "caseid": ids.caseid, "t_end_s": ids.t_end,
                          "label": labels.astype(np.int8),
                          **{name: p.astype(np.float32) for name, p in probabilities.items()}})
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write(live_dir, report_path, details, figures, provenance, **report_extra) -> None:
    """metrics.json (the headline) and plots by dvclive, details.json, and the report (`report_extra`:
    write_report's keyword arguments)."""
    link_dir = os.path.relpath(Path(live_dir) / "plots" / "images", Path(report_path).parent)
    with atomic_dir(live_dir) as tmp:
        live = Live(str(tmp), dvcyaml=False, save_dvc_exp=False)
        images = report.write_figures(live, figures, Path(live.plots_dir) / "images", link_dir)
        live.summary = evaluation.headline(details)
        live.end()
        write_json(tmp / "details.json", details.to_dict())
    report.write_report(report_path, details, provenance, images, **report_extra)
