"""Stage train: TTM r2 (frozen, partly unfrozen and/or with LoRA adapters) + hypotension head.

usage: python stages/train.py <windows_dir> <embeddings_dir> <checkpoint> <live_dir>
       torchrun --nproc_per_node=N stages/train.py ...   (DDP: nccl on CUDA, gloo on CPU)

A killed run leaves `<checkpoint>.resume` (state after the last finished epoch); rerunning the
stage with the same params and inputs continues from it and ends with the same result.
"""
import contextlib
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from dvclive import Live

from lib.core.atomic import atomic_dir
from lib.core.config import EmbeddingConfig, ModelConfig, TrainConfig
from lib.core.errors import run_stage
from lib.core.memory import keep_heap_bounded
from lib.core.params import read_params
from lib.data import windows_h5
from lib.data.dataset import load_split
from lib.model import ttm
from lib.model.inference import pick_device
from lib.model.training import fit


class Config(NamedTuple):
    model: ModelConfig
    embedding: EmbeddingConfig
    train: TrainConfig


def config(params) -> Config:
    return Config(ModelConfig.from_params(params), EmbeddingConfig.from_params(params), TrainConfig.from_params(params))


def fingerprint(cfg: Config, files, world_size: int) -> str:
    """What a resumable state must match: the params and the exact input files."""
    settings = [dataclasses.asdict(c) for c in cfg]
    digest = hashlib.sha256(json.dumps([settings, world_size], sort_keys=True, default=str).encode())
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
    keep_heap_bounded()   # freed memory goes back to the OS while the stage streams (lib/core/memory.py)
    windows_dir, embeddings_dir, checkpoint, live_dir = Path(argv[0]), Path(argv[1]), Path(argv[2]), argv[3]
    cfg = config(read_params())
    t = cfg.train
    torch.manual_seed(t.train.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    rank, world_size, device = distributed(t.train.device)

    model = ttm.build_model(cfg.model)
    # The train split's per-channel statistics (used when model.input_scaling is train_zscore).
    model.set_input_stats(windows_h5.attrs(windows_dir / "train.h5")["normalisation"])
    splits = {name: load_split(windows_dir / f"{name}.h5", t.train.task, t.train.horizon_min, model.channels,
                               model.context, embeddings_dir / f"{name}.h5", cfg.embedding.cache_key(),
                               for_training=True)
              for name in ["train", "val"]}
    n_trainable = sum(x.numel() for x in ttm.trainable_parameters(model).values())
    n_total = sum(x.numel() for x in model.parameters())
    if rank == 0:
        print(f"mode {t.finetune.mode}, task {t.train.task}: trainable parameters {n_trainable:,} of {n_total:,}"
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

        summary = fit(model, splits["train"], splits["val"], t, device, resume_path=resume_path,
                      fingerprint=fingerprint(cfg, inputs, world_size), log_epoch=log_epoch if rank == 0 else None,
                      rank=rank, world_size=world_size)
        if rank == 0:
            summary.update(mode=t.finetune.mode, task=t.train.task, trainable_parameters=n_trainable,
                           total_parameters=n_total, horizon_min=t.train.horizon_min,
                           context_features=",".join(model.context) or "none")
            # Wall time is printed, not logged: metrics must be identical across identical runs.
            print(f"train: {time.time() - started:.1f} s, best epoch {summary['best_epoch']} of "
                  f"{summary['epochs_run']}")
            for key, value in summary.items():
                live.summary[key] = value
            live.end()
            ttm.save_checkpoint(checkpoint, model.cpu(), cfg.model,
                                {"summary": summary, "horizon_min": t.train.horizon_min,
                                 "windows": windows_h5.window_rule(windows_dir / "train.h5")})
    if rank == 0:
        resume_path.unlink(missing_ok=True)
        resume_path.with_suffix(".warmup.resume").unlink(missing_ok=True)
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    run_stage(main)
