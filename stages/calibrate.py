"""Stage calibrate: calibrator and decision threshold of the trained model, fitted on val only.

usage: python stages/calibrate.py <checkpoint> <val_h5> <calibrator_json> <metrics_json>
"""
from typing import NamedTuple

from lib.core.atomic import write_json
from lib.core.config import CalibrateConfig, InferenceConfig, device, read_params
from lib.core.errors import run_stage
from lib.data.dataset import checkpoint_split
from lib.eval.calibration import fit_on_val
from lib.model.inference import pick_device, predict
from lib.model.ttm import load_checkpoint


class Config(NamedTuple):
    calibrate: CalibrateConfig
    inference: InferenceConfig
    device: str


def config(params) -> Config:
    return Config(CalibrateConfig.from_params(params), InferenceConfig.from_params(params), device(params))


def main(argv):
    checkpoint, val_h5, calibrator_path, metrics_path = argv
    cfg = config(read_params())
    dev = pick_device(cfg.device)
    model, ckpt = load_checkpoint(checkpoint, dev, cfg.inference)
    val = checkpoint_split(model, ckpt, val_h5)
    fitted_on = {"split": "val", "windows": int(len(val)), "horizon_min": ckpt["horizon_min"]}
    if model.task == "reg":  # pressures in mmHg need no probability calibration
        write_json(calibrator_path, {"method": "none", "task": "reg", "fitted_on": fitted_on})
        write_json(metrics_path, {"task": "reg", "method": "none"})
        return
    calibration, summary = fit_on_val(predict(model, val, dev), val.targets, cfg.calibrate, fitted_on)
    calibration.save(calibrator_path)
    write_json(metrics_path, summary)


if __name__ == "__main__":
    run_stage(main)
