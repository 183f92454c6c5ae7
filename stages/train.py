"""Stage train: TTM r2 backbone (frozen, or with LoRA adapters) + hypotension head.

usage: python stages/train.py <windows_dir> <checkpoint> <live_dir>
"""
import sys
import time
from pathlib import Path

import torch
from dvclive import Live

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import model as ttm, params, windows_h5  # noqa: E402
from lib.atomic import atomic_dir  # noqa: E402
from lib.errors import run_stage  # noqa: E402
from lib.training import pick_device, train_model  # noqa: E402

TRAIN_KEYS = ["horizon_min", "seed", "epochs", "batch_size", "lr", "weight_decay", "grad_clip", "device"]


def main(argv):
    windows_dir, checkpoint, live_dir = Path(argv[0]), argv[1], argv[2]
    p = params.load("model", "finetune", "lora", "train")
    params.require(p["train"], "train", TRAIN_KEYS)
    params.require(p["model"], "model", ["weights_dir", "level_features", "input_scaling"])
    params.require(p["finetune"], "finetune", ["lora", "windows_per_epoch"])
    params.require(p["lora"], "lora", ["r", "alpha", "dropout", "target_modules"])
    t, ft = p["train"], p["finetune"]
    torch.manual_seed(t["seed"])
    torch.use_deterministic_algorithms(True, warn_only=True)
    config = {"weights_dir": p["model"]["weights_dir"], "n_channels": 3,
              "level_features": bool(p["model"]["level_features"]), "lora": p["lora"] if ft["lora"] else None,
              "input_scaling": p["model"]["input_scaling"]}
    model = ttm.build_model(**config)
    # The train split's per-channel statistics (used when model.input_scaling is train_zscore).
    model.set_input_stats(windows_h5.attrs(windows_dir / "train.h5")["normalisation"])
    horizon = float(t["horizon_min"])
    n_trainable = sum(x.numel() for x in ttm.trainable_parameters(model).values())
    n_total = sum(x.numel() for x in model.parameters())
    print(f"trainable parameters: {n_trainable:,} of {n_total:,}")
    device = pick_device(t["device"])

    started = time.time()
    with atomic_dir(live_dir) as tmp:
        live = Live(str(tmp), dvcyaml=False, save_dvc_exp=False)

        def log_epoch(record):
            for key in ["train_loss", "val_loss", "val_auroc"]:
                live.log_metric(key, record[key])
            live.next_step()

        summary = train_model(model, windows_dir / "train.h5", windows_dir / "val.h5",
                              windows_h5.label_column(horizon),
                              epochs=t["epochs"],
                              batch_size=t["batch_size"], lr=t["lr"], weight_decay=t["weight_decay"],
                              grad_clip=t["grad_clip"], windows_per_epoch=ft["windows_per_epoch"],
                              seed=t["seed"], device=device, log_epoch=log_epoch)
        summary.update(trainable_parameters=n_trainable, total_parameters=n_total, horizon_min=horizon)
        # Wall time is printed, not logged: metrics must be identical across identical runs.
        print(f"train: {time.time() - started:.1f} s")
        for key, value in summary.items():
            live.summary[key] = value
        live.end()
        ttm.save_checkpoint(checkpoint, model.cpu(), config, {"summary": summary, "horizon_min": horizon})


if __name__ == "__main__":
    run_stage(main)
