"""Stage calibrate: calibrator and decision threshold of the trained model, fitted on val only.

usage: python stages/calibrate.py <checkpoint> <val_h5> <calibrator_json> <metrics_json>
"""
import sys
from pathlib import Path

from lib.core import config as params
from lib.core.atomic import write_json
from lib.eval.calibration import fit_on_val
from lib.core.errors import run_stage
from lib.model.ttm import load_checkpoint
from lib.model.training import checkpoint_split, pick_device, predict


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
