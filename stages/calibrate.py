"""Stage calibrate: calibrator and decision threshold of the trained model, fitted on val only.

usage: python stages/calibrate.py <checkpoint> <val_h5> <calibrator_json> <metrics_json>
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import params  # noqa: E402
from lib.atomic import write_json  # noqa: E402
from lib.calibration import fit_on_val  # noqa: E402
from lib.errors import run_stage  # noqa: E402
from lib.model import load_checkpoint  # noqa: E402
from lib.training import checkpoint_split, pick_device, predict  # noqa: E402


def main(argv):
    checkpoint, val_h5, calibrator_path, metrics_path = argv
    p = params.load("calibrate", "train")
    device = pick_device(p["train"]["device"])
    model, ckpt = load_checkpoint(checkpoint, device)
    val = checkpoint_split(model, ckpt, val_h5)
    fitted_on = {"split": "val", "windows": int(len(val)), "horizon_min": ckpt["horizon_min"]}
    if model.task == "reg":  # pressures in mmHg need no probability calibration
        write_json(calibrator_path, {"method": "none", "task": "reg", "fitted_on": fitted_on})
        write_json(metrics_path, {"task": "reg", "method": "none"})
        return
    calibration, summary = fit_on_val(predict(model, val, device), val.targets, p["calibrate"], fitted_on)
    calibration.save(calibrator_path)
    write_json(metrics_path, summary)


if __name__ == "__main__":
    run_stage(main)
