"""Stage evaluate: the only stage that reads the test split, once.

usage: python stages/evaluate.py <checkpoint> <calibrator_json> <test_h5> <live_dir>
"""
import sys
from pathlib import Path

import torch
from dvclive import Live
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import calibration, params, windows_h5  # noqa: E402
from lib.atomic import atomic_dir  # noqa: E402
from lib.errors import run_stage  # noqa: E402
from lib.metrics import classification_metrics, regression_metrics  # noqa: E402
from lib.model import REG_TARGETS, load_checkpoint  # noqa: E402
from lib.training import checkpoint_split, pick_device, predict  # noqa: E402


def log_classification(live, y, logits, calibrator_path, bins: int) -> None:
    scaler, threshold = calibration.load_calibrator(calibrator_path)
    raw, calibrated = expit(logits), scaler.predict_proba(logits)
    after = classification_metrics(y, calibrated, threshold, bins)
    before = classification_metrics(y, raw, 0.5, bins)
    for key, value in after.items():
        live.summary[f"test/{key}"] = value
    live.summary["test/ece_uncalibrated"] = before["ece"]
    live.summary["test/brier_uncalibrated"] = before["brier"]
    live.summary["test/threshold"] = threshold
    live.summary["test/positives"] = int(y.sum())
    live.log_sklearn_plot("roc", y, calibrated, name="roc")
    live.log_sklearn_plot("precision_recall", y, calibrated, name="precision_recall")
    live.log_sklearn_plot("calibration", y, raw, name="calibration_before", n_bins=bins)
    live.log_sklearn_plot("calibration", y, calibrated, name="calibration_after", n_bins=bins)
    live.log_sklearn_plot("confusion_matrix", y, (calibrated >= threshold).astype(int), name="confusion")


def main(argv):
    checkpoint, calibrator_path, test_h5, live_dir = argv
    p = params.load("evaluate", "train")
    bins = int(p["evaluate"]["ece_bins"])
    device = pick_device(p["train"]["device"])
    model, ckpt = load_checkpoint(checkpoint, device)
    test = checkpoint_split(model, ckpt, test_h5)
    outputs = predict(model, test, device)
    ids = {k: v[test.indices] for k, v in windows_h5.read_columns(test_h5, ["caseid", "subjectid"]).items()}

    with atomic_dir(live_dir) as tmp:
        live = Live(str(tmp), dvcyaml=False, save_dvc_exp=False)
        if model.task == "clf":
            log_classification(live, test.targets, outputs, calibrator_path, bins)
        else:
            pressures = model.to_mmhg(torch.from_numpy(outputs)).numpy()
            for key, value in regression_metrics(test.targets, pressures, REG_TARGETS).items():
                live.summary[f"test/{key}"] = value
        live.summary["test/task"] = model.task
        live.summary["test/horizon_min"] = ckpt["horizon_min"]
        live.summary["test/windows"] = int(len(test))
        live.summary["test/cases"] = int(len(set(ids["caseid"])))
        live.summary["test/subjects"] = int(len(set(ids["subjectid"])))
        live.end()


if __name__ == "__main__":
    run_stage(main)
