"""Stage train: TTM r2 (frozen, partly unfrozen and/or with LoRA adapters) + hypotension head.

usage: python stages/train.py <windows_dir> <embeddings_dir> <checkpoint> <live_dir>
       torchrun --nproc_per_node=N stages/train.py ...   (DDP: nccl on CUDA, gloo on CPU)

A killed run leaves `<checkpoint>.resume` (state after the last finished epoch); rerunning the
stage with the same params and inputs continues from it and ends with the same result.
"""
import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from dvclive import Live

from lib.model import ttm
from lib.core import config as params
from lib.data import windows_h5
from lib.core.atomic import atomic_dir
from lib.core.errors import PipelineError, run_stage
from lib.model.training import SCHEDULES, fit, load_split, pick_device, resolve_monitor

KEYS = {
    "model": ["weights_dir", "input_channels", "level_features", "input_scaling", "context_length"],
    "finetune": ["unfreeze_last_n_blocks", "lora", "windows_per_epoch", "head_warmup_epochs"],
    "lora": ["r", "alpha", "dropout", "target_modules"],
    "head": ["hidden_dims", "dropout"],
    "train": ["task", "horizon_min", "seed", "epochs", "batch_size", "grad_accum_steps", "lr", "weight_decay",
              "grad_clip", "schedule", "warmup_frac", "early_stopping_patience", "monitor", "amp", "device"],
}


def check(p) -> str:
    """Validate the train params; returns the metric early stopping and best-epoch selection use."""
    for section, keys in KEYS.items():
        params.require(p[section], section, keys)
    t = p["train"]
    for key in ["epochs", "batch_size", "grad_accum_steps"]:
        if not isinstance(t[key], int) or t[key] < 1:
            raise PipelineError(f"params.yaml: train.{key}={t[key]!r} must be a positive integer")
    if t["schedule"] not in SCHEDULES:
        raise PipelineError(f"params.yaml: train.schedule={t['schedule']!r}: expected one of {', '.join(SCHEDULES)}")
    if t["amp"] not in ("auto", "off"):
        raise PipelineError(f"params.yaml: train.amp={t['amp']!r}: expected auto (bf16/fp16 on CUDA) or off")
    if t["task"] not in ("clf", "reg"):
        raise PipelineError(f"params.yaml: train.task={t['task']!r}: expected clf or reg")
    return resolve_monitor(t["task"], t["monitor"])


def fingerprint(p, files, world_size: int) -> str:
    """What a resumable state must match: the params and the exact input files."""
    digest = hashlib.sha256(json.dumps([p, world_size], sort_keys=True, default=str).encode())
    for f in files:
        stat = Path(f).stat()
        digest.update(f"{f}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def distributed(device_name: str):
    """(rank, world_size, device); joins the torchrun process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world_size == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


def main(argv):
    windows_dir, embeddings_dir, checkpoint, live_dir = Path(argv[0]), Path(argv[1]), Path(argv[2]), argv[3]
    p = params.load(*KEYS)
    monitor = check(p)
    m, ft, t = p["model"], p["finetune"], p["train"]
    torch.manual_seed(t["seed"])
    torch.use_deterministic_algorithms(True, warn_only=True)
    rank, world_size, device = distributed(t["device"])

    mode = ttm.training_mode(ft["unfreeze_last_n_blocks"], bool(ft["lora"]))
    config = ttm.model_config(p)
    model = ttm.build_model(**config)
    # The train split's per-channel statistics (used when model.input_scaling is train_zscore).
    model.set_input_stats(windows_h5.attrs(windows_dir / "train.h5")["normalisation"])
    horizon = float(t["horizon_min"])
    splits = {name: load_split(windows_dir / f"{name}.h5", t["task"], horizon, model.channels, model.context,
                               embeddings_dir / f"{name}.h5", ttm.embedding_settings(m), for_training=True)
              for name in ["train", "val"]}
    n_trainable = sum(x.numel() for x in ttm.trainable_parameters(model).values())
    n_total = sum(x.numel() for x in model.parameters())
    if rank == 0:
        print(f"mode {mode}, task {t['task']}: trainable parameters {n_trainable:,} of {n_total:,}"
              f" ({100 * n_trainable / n_total:.1f} %); {world_size} process(es) on {device}")

    inputs = [windows_dir / "train.h5", windows_dir / "val.h5", embeddings_dir / "train.h5", embeddings_dir / "val.h5"]
    resume_path = checkpoint.with_name(checkpoint.name + ".resume")
    started = time.time()
    with atomic_dir(live_dir) if rank == 0 else contextlib.nullcontext() as tmp:  # only rank 0 writes
        live = Live(str(tmp), dvcyaml=False, save_dvc_exp=False) if rank == 0 else None

        def log_epoch(record):
            for key, value in record.items():
                if key != "epoch":
                    live.log_metric(key, value)
            live.next_step()

        summary = fit(model, splits["train"], splits["val"], p, monitor, device, resume_path=resume_path,
                      fingerprint=fingerprint(p, inputs, world_size), log_epoch=log_epoch if rank == 0 else None,
                      rank=rank, world_size=world_size)
        if rank == 0:
            summary.update(mode=mode, task=t["task"], trainable_parameters=n_trainable, total_parameters=n_total,
                           horizon_min=horizon, context_features=",".join(model.context) or "none")
            # Wall time is printed, not logged: metrics must be identical across identical runs.
            print(f"train: {time.time() - started:.1f} s, best epoch {summary['best_epoch']} of "
                  f"{summary['epochs_run']}")
            for key, value in summary.items():
                live.summary[key] = value
            live.end()
            ttm.save_checkpoint(checkpoint, model.cpu(), config, {"summary": summary, "horizon_min": horizon})
    if rank == 0:
        resume_path.unlink(missing_ok=True)
        resume_path.with_suffix(".warmup.resume").unlink(missing_ok=True)
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    run_stage(main)
