"""Stage evaluate: the only stage that reads the test split, once.

usage: python stages/evaluate.py <checkpoint> <calibrator_json> <test_h5> <live_dir>
"""
import sys
from pathlib import Path

from dvclive import Live
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import calibration, params, windows_h5  # noqa: E402
from lib.atomic import atomic_dir  # noqa: E402
from lib.errors import run_stage  # noqa: E402
from lib.metrics import classification_metrics  # noqa: E402
from lib.model import load_checkpoint  # noqa: E402
from lib.training import pick_device, predict_logits  # noqa: E402


def main(argv):
    checkpoint, calibrator_path, test_h5, live_dir = argv
    p = params.load("evaluate", "train")
    bins = int(p["evaluate"]["ece_bins"])
    scaler, threshold = calibration.load_calibrator(calibrator_path)
    device = pick_device(p["train"]["device"])
    model, ckpt = load_checkpoint(checkpoint, device)
    idx, y = windows_h5.labelled(test_h5, windows_h5.label_column(ckpt["horizon_min"]))
    logits = predict_logits(model, test_h5, 512, device, idx)
    columns = {k: v[idx] for k, v in windows_h5.read_columns(test_h5, ["caseid", "subjectid"]).items()}
    raw, calibrated = expit(logits), scaler.predict_proba(logits)

    with atomic_dir(live_dir) as tmp:
        live = Live(str(tmp), dvcyaml=False, save_dvc_exp=False)
        after = classification_metrics(y, calibrated, threshold, bins)
        before = classification_metrics(y, raw, 0.5, bins)
        for key, value in after.items():
            live.summary[f"test/{key}"] = value
        live.summary["test/ece_uncalibrated"] = before["ece"]
        live.summary["test/brier_uncalibrated"] = before["brier"]
        live.summary["test/threshold"] = threshold
        live.summary["test/horizon_min"] = ckpt["horizon_min"]
        live.summary["test/windows"] = int(len(y))
        live.summary["test/positives"] = int(y.sum())
        live.summary["test/cases"] = int(len(set(columns["caseid"])))
        live.summary["test/subjects"] = int(len(set(columns["subjectid"])))
        live.log_sklearn_plot("roc", y, calibrated, name="roc")
        live.log_sklearn_plot("precision_recall", y, calibrated, name="precision_recall")
        live.log_sklearn_plot("calibration", y, raw, name="calibration_before", n_bins=bins)
        live.log_sklearn_plot("calibration", y, calibrated, name="calibration_after", n_bins=bins)
        live.log_sklearn_plot("confusion_matrix", y, (calibrated >= threshold).astype(int), name="confusion")
        live.end()


if __name__ == "__main__":
    run_stage(main)
