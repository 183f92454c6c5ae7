"""Stage evaluate: the only stage that reads the test split, once.

The model and the three baselines predict every labelled test window; each is calibrated and
thresholded with what its own fit on val chose. Writes dvclive metrics and plots (window level,
after overlap voting, gains over the baselines, subgroups; all with subject-bootstrap 95 % CIs)
and the clinician's report `metrics/report.md`.

usage: python stages/evaluate.py <checkpoint> <calibrator_json> <baselines_dir> <windows_dir> <live_dir> <report_md>
"""
import sys
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from scipy.special import expit

from lib.eval import evaluation
from lib.core import config as params
from lib.eval import report
from lib.data import windows_h5
from lib.core.atomic import atomic_dir
from lib.model.baselines import baseline_logits
from lib.eval.calibration import Calibration, read_calibrations
from lib.data.cohort import load_clinical
from lib.core.errors import PipelineError, run_stage
from lib.eval.metrics import VOTING, vote
from lib.model.ttm import REG_TARGETS, load_checkpoint
from lib.model.training import checkpoint_split, pick_device, predict

KEYS = ["ece_bins", "bootstrap", "ci_level", "seed", "overlap", "voting", "age_bands"]


def log_classification_plots(live, y, raw, probabilities: dict, thresholds: dict, bins: int) -> None:
    for name, p in probabilities.items():
        live.log_sklearn_plot("roc", y, p, name=f"roc_{name}")
    ttm = probabilities["ttm"]
    live.log_sklearn_plot("precision_recall", y, ttm, name="precision_recall")
    live.log_sklearn_plot("calibration", y, raw, name="calibration_before", n_bins=bins)
    live.log_sklearn_plot("calibration", y, ttm, name="calibration_after", n_bins=bins)
    live.log_sklearn_plot("confusion_matrix", y, (ttm >= thresholds["ttm"]).astype(int), name="confusion")
    edges = np.linspace(0, 1, 21)
    histogram = [{"score": f"{lo:.2f}", "negatives": int(n), "positives": int(q)} for lo, n, q in
                 zip(edges[:-1], np.histogram(ttm[y == 0], edges)[0], np.histogram(ttm[y == 1], edges)[0])]
    live.log_plot("score_histogram", histogram, x="score", y=["negatives", "positives"], template="bar_horizontal",
                  title="TTM calibrated score by class (test windows)")


def main(argv):
    checkpoint, calibrator_path, baselines_dir, windows_dir, live_dir, report_path = argv
    windows_dir = Path(windows_dir)
    p = params.load("evaluate", "train", "calibrate", "windows", "model", "data", "finetune")
    e = p["evaluate"]
    params.require(e, "evaluate", KEYS)
    if e["voting"] not in VOTING:
        raise PipelineError(f"params.yaml: evaluate.voting={e['voting']!r}: expected one of {', '.join(VOTING)}")
    boot = evaluation.Bootstrap(int(e["bootstrap"]), int(e["seed"]), float(e["ci_level"]))
    bins = int(e["ece_bins"])
    device = pick_device(p["train"]["device"])
    model, ckpt = load_checkpoint(checkpoint, device)
    horizon = ckpt["horizon_min"]
    test_h5 = windows_dir / "test.h5"
    test = checkpoint_split(model, ckpt, test_h5)
    outputs = predict(model, test, device)
    label = windows_h5.label_column(horizon)
    columns = windows_h5.read_columns(test_h5, ["caseid", "subjectid", "t_end_s", label])
    ids = evaluation.TestWindows(columns["caseid"][test.indices], columns["subjectid"][test.indices],
                                 columns["t_end_s"][test.indices], p["windows"]["length"] / p["windows"]["fs"])
    clinical = load_clinical(p["data"]["clinical_csv"])
    cohort = evaluation.cohort_table(
        {s: windows_h5.read_columns(windows_dir / f"{s}.h5", ["caseid", "subjectid", label]) for s in ["train", "val"]}
        | {"test": columns}, clinical, horizon)
    summary = {"task": model.task, "horizon_min": horizon, "mode": ckpt.get("summary", {}).get("mode", "?"),
               "counts": evaluation.counts(test.targets if model.task == "clf" else test.targets[:, 0], ids),
               "bootstrap": boot.n, "voting": e["voting"], "overlap": e["overlap"]}
    images = {}
    with atomic_dir(live_dir) as tmp:
        live = Live(str(tmp), dvcyaml=False, save_dvc_exp=False)
        image_dir = Path(live.plots_dir) / "images"
        if model.task == "clf":
            y = test.targets
            ttm = Calibration.load(calibrator_path)
            baselines = read_calibrations(Path(baselines_dir) / "calibration.json")
            logits = {"ttm": outputs, **baseline_logits(baselines_dir, test_h5, horizon, device)}
            calibrations = {"ttm": ttm, **baselines}
            probabilities = {name: calibrations[name].predict_proba(z) for name, z in logits.items()}
            thresholds = {name: c.threshold for name, c in calibrations.items()}
            raw = expit(outputs.astype(np.float64))
            before = evaluation.classification_report(y, {"ttm": raw}, {"ttm": 0.5}, ids, boot, bins)["ttm"]
            summary.update(threshold=ttm.threshold, calibration=ttm.calibrator.method,
                           ece_before=before["ece"], brier_before=before["brier"],
                           window=evaluation.classification_report(y, probabilities, thresholds, ids, boot, bins))
            if e["voting"] != "none":
                voted, voted_thresholds = evaluation.voted(probabilities, thresholds, ids, e["voting"])
                summary["voted"] = evaluation.classification_report(y, voted, voted_thresholds, ids, boot, bins)
            groups = evaluation.subgroups(clinical, ids.caseid, list(e["age_bands"]))
            summary["subgroups"] = evaluation.subgroup_report(y, probabilities["ttm"], ttm.threshold, groups, ids,
                                                              boot, bins)
            log_classification_plots(live, y, raw, probabilities, thresholds, bins)
            figures = {"ROC": report.roc_figure(y, probabilities, summary["window"]),
                       "Reliability before and after calibration": report.reliability_figure(
                           y, raw, probabilities["ttm"], bins)}
        else:
            pressures = model.to_mmhg(torch.from_numpy(outputs)).numpy()
            summary["window"] = evaluation.regression_report(test.targets, pressures, REG_TARGETS, ids, boot)
            if e["voting"] != "none":   # overlapping estimates of a pressure are averaged (soft or hard)
                voted = np.stack([vote(pressures[:, i], ids.caseid, ids.t_end, ids.window_s, "soft")
                                  for i in range(len(REG_TARGETS))], axis=1)
                summary["voted"] = evaluation.regression_report(test.targets, voted, REG_TARGETS, ids, boot)
            for i, name in enumerate(REG_TARGETS):
                mean, diff = (pressures[:, i] + test.targets[:, i]) / 2, pressures[:, i] - test.targets[:, i]
                step = max(1, len(mean) // 2000)   # a readable scatter: at most ~2,000 points
                live.log_plot(f"bland_altman_{name}", [{"mean": float(a), "difference": float(b)} for a, b in
                                                       zip(mean[::step], diff[::step])],
                              x="mean", y="difference", template="scatter", title=f"Bland-Altman {name.upper()}")
            figures = {"Bland-Altman": report.bland_altman_figure(test.targets, pressures, REG_TARGETS)}
        for caption, fig in figures.items():
            name = caption.split()[0].lower().replace("-", "_") + ".png"
            report.save_png(fig, image_dir / name)
            images[caption] = f"{Path(live_dir).name}/plots/images/{name}"
        for key, value in summary.items():
            live.summary[key] = value
        live.summary["cohort"] = cohort
        live.end()
    report.write_report(report_path, summary, cohort, p, images)


if __name__ == "__main__":
    run_stage(main)
