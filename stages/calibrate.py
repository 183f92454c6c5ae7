"""Stage calibrate: calibrator and decision threshold of the trained model, fitted on val only.

A model whose backbone stayed frozen (fm mode) is scored on the embed stage's cache of the val
windows, as training scored it (the same logits as running the backbone, without running it).
The val logits are written beside the calibrator: evaluate chooses the alarms' operating points
on them.

usage: python stages/calibrate.py <checkpoint> <val_h5> <val_embeddings_h5> <calibrator_json> <val_scores>
       <metrics_json>
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
from typing import NamedTuple

from lib.core.atomic import write_json
from lib.core.errors import run_stage
from lib.core.memory import keep_heap_bounded
from lib.core.params import Calibrate, Inference, Train, read_params
from lib.core.schema import MODEL
from lib.data.dataset import checkpoint_split
from lib.eval.calibration import fit_on_val, write_val_scores
from lib.model.inference import pick_device, predict
from lib.model.ttm import load_checkpoint


class Config(NamedTuple):
    calibrate: Calibrate
    inference: Inference
    device: str


def config(params) -> Config:
    return Config(Calibrate.from_params(params), Inference.from_params(params), Train.pick(params, "device"))


def main(argv):
    keep_heap_bounded()   # freed memory goes back to the OS while the stage streams (lib/core/memory.py)
    checkpoint, val_h5, val_embeddings, calibrator_path, val_scores, metrics_path = argv
    cfg = config(read_params())
    dev = pick_device(cfg.device)
    model, ckpt = load_checkpoint(checkpoint, dev, cfg.inference)
    val = checkpoint_split(model, ckpt, val_h5, embeddings_path=val_embeddings)
    fitted_on = {"split": "val", "windows": int(len(val)), "horizon_min": ckpt["horizon_min"]}
    if model.task == "reg":  # pressures in mmHg need no probability calibration
        write_json(calibrator_path, {"method": "none", "task": "reg", "fitted_on": fitted_on})
        write_val_scores(val_scores, [], {})
        write_json(metrics_path, {"task": "reg", "method": "none"})
        return
    logits = predict(model, val, dev)
    calibration, summary = fit_on_val(logits, val.targets, cfg.calibrate, fitted_on)
    calibration.save(calibrator_path)
    write_val_scores(val_scores, val.indices, {MODEL: logits})
    write_json(metrics_path, summary)


if __name__ == "__main__":
    run_stage(main)
