"""Stage calibrate: temperature scaling and the decision threshold, fitted on the val split only.

usage: python stages/calibrate.py <checkpoint> <val_h5> <calibrator_json> <metrics_json>
"""
import sys
from pathlib import Path

from scipy.special import expit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import calibration, params  # noqa: E402
from lib.atomic import write_json  # noqa: E402
from lib.errors import PipelineError, run_stage  # noqa: E402
from lib.metrics import expected_calibration_error  # noqa: E402
from lib.model import load_checkpoint  # noqa: E402
from lib.training import checkpoint_split, pick_device, predict  # noqa: E402


def main(argv):
    checkpoint, val_h5, calibrator_path, metrics_path = argv
    p = params.load("calibrate", "train")
    if p["calibrate"]["method"] != "temperature":
        raise PipelineError(f"calibrate.method={p['calibrate']['method']!r}: only 'temperature' is implemented")
    device = pick_device(p["train"]["device"])
    model, ckpt = load_checkpoint(checkpoint, device)
    val = checkpoint_split(model, ckpt, val_h5)
    fitted_on = {"split": "val", "windows": int(len(val)), "horizon_min": ckpt["horizon_min"]}
    if model.task == "reg":  # pressures in mmHg need no probability calibration
        write_json(calibrator_path, {"method": "none", "task": "reg", "fitted_on": fitted_on})
        write_json(metrics_path, {"task": "reg", "method": "none"})
        return
    logits = predict(model, val, device)
    y = val.targets
    scaler = calibration.TemperatureScaler().fit(logits, y)
    calibrated = scaler.predict_proba(logits)
    threshold = calibration.youden_threshold(y, calibrated)
    calibration.save_calibrator(calibrator_path, scaler, threshold, fitted_on)
    bins = p["calibrate"]["ece_bins"]
    write_json(metrics_path, {"temperature": scaler.temperature, "threshold": threshold,
                              "val_ece_before": expected_calibration_error(y, expit(logits), bins),
                              "val_ece_after": expected_calibration_error(y, calibrated, bins)})


if __name__ == "__main__":
    run_stage(main)
