"""Stage baselines: logistic regression on current MAP, on the context features, and a 1-D CNN on
the raw windows, trained on train and calibrated on val exactly like the model (test is not read).

usage: python stages/baselines.py <windows_dir> <out_dir> <metrics_json>
"""
import sys
from pathlib import Path

import joblib
import torch

from lib.model import baselines
from lib.core import config as params
from lib.data import windows_h5
from lib.core.atomic import atomic_dir, write_json
from lib.eval.calibration import fit_on_val
from lib.core.errors import PipelineError, run_stage
from lib.model.ttm import save_torch
from lib.model.training import load_split, pick_device, predict, train_model

KEYS = ["cnn_epochs", "cnn_batch_size", "cnn_lr", "cnn_windows_per_epoch", "cnn_early_stopping_patience"]
CONTEXT = baselines.LOGISTIC_FEATURES["context_lr"]


def main(argv):
    windows_dir, out_dir, metrics_path = Path(argv[0]), argv[1], argv[2]
    p = params.load("baselines", "calibrate", "train", "model")
    b, t = p["baselines"], p["train"]
    params.require(b, "baselines", KEYS)
    with atomic_dir(out_dir) as tmp:
        if t["task"] != "clf":  # the baselines are hypotension classifiers
            write_json(tmp / "calibration.json", {})
            write_json(metrics_path, {"task": t["task"], "baselines": "none (classification baselines only)"})
            return
        torch.manual_seed(t["seed"])
        torch.use_deterministic_algorithms(True, warn_only=True)
        device = pick_device(t["device"])
        channels = list(p["model"]["input_channels"])
        split = {name: load_split(windows_dir / f"{name}.h5", "clf", float(t["horizon_min"]), channels, CONTEXT)
                 for name in ["train", "val"]}
        train, val = split["train"], split["val"]
        for name, s in split.items():
            if len(set(s.targets)) < 2:
                raise PipelineError(f"baselines: the {name} split has one class only at train.horizon_min="
                                    f"{t['horizon_min']}; cannot train a classifier")
        fitted_on = {"split": "val", "windows": int(len(val)), "horizon_min": float(t["horizon_min"])}
        calibrations, summary = {}, {}
        for name in baselines.LOGISTIC_FEATURES:
            pipeline = baselines.logistic_baseline().fit(baselines.logistic_inputs(name, train.context), train.targets)
            joblib.dump(pipeline, tmp / f"{name}.joblib")
            val_logits = baselines.logistic_logits(pipeline, baselines.logistic_inputs(name, val.context))
            calibration, summary[name] = fit_on_val(val_logits, val.targets, p["calibrate"], fitted_on)
            calibrations[name] = calibration.to_dict()

        cnn = baselines.WindowCNN(channels)
        cnn.set_input_stats(windows_h5.attrs(windows_dir / "train.h5")["normalisation"])
        summary["cnn"] = train_model(
            cnn, train, val, epochs=b["cnn_epochs"], batch_size=b["cnn_batch_size"], grad_accum_steps=1,
            lr=b["cnn_lr"], weight_decay=t["weight_decay"], grad_clip=t["grad_clip"], schedule="cosine",
            warmup_frac=t["warmup_frac"], early_stopping_patience=b["cnn_early_stopping_patience"],
            monitor="val_auroc", amp=t["amp"], windows_per_epoch=b["cnn_windows_per_epoch"], seed=t["seed"],
            device=device)
        save_torch(tmp / "cnn.pt", {"channels": channels, "state": cnn.cpu().state_dict()})
        calibration, calibrated = fit_on_val(predict(cnn, val, "cpu"), val.targets, p["calibrate"], fitted_on)
        summary["cnn"].update(calibrated)
        calibrations["cnn"] = calibration.to_dict()
        write_json(tmp / "calibration.json", calibrations)
    write_json(metrics_path, summary)


if __name__ == "__main__":
    run_stage(main)
