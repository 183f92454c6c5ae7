"""Stage train: TTM r2 (frozen, partly unfrozen and/or with LoRA adapters) + hypotension head.

usage: python stages/train.py [--nproc-per-node N] <windows_dir> <embeddings_dir> <checkpoint> <live_dir>

`--nproc-per-node N` (dvc.yaml passes train.nproc_per_node): N > 1 runs the stage again under
torchrun with N processes (DDP: nccl on CUDA, gloo on CPU); `torchrun ... stages/train.py` works too.

Training can be watched while it runs: dvclive writes `<live_dir>` as each epoch ends (`dvc plots
show`, VS Code's DVC extension), and one line per epoch goes to the log. A killed run leaves
`<checkpoint>.resume` (state after the last finished epoch) and the log of the epochs it finished;
rerunning the stage with the same params and inputs continues from it, the same log included,
and ends with the same result.
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from dvclive import Live

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


def launch_processes(argv) -> list:
    """The arguments without `--nproc-per-node N`; with N > 1 outside torchrun, the stage is run
    again under torchrun (`python -m torch.distributed.run`), whose exit status is this one's."""
    if not argv or argv[0] != "--nproc-per-node":
        return argv
    n, argv = int(argv[1]), argv[2:]
    if n > 1 and "WORLD_SIZE" not in os.environ:
        print(f"train: {n} processes under torchrun (train.nproc_per_node)", flush=True)
        os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  f"--nproc_per_node={n}", __file__, *argv])
    return argv


class EpochLog:
    """One line per epoch on stdout and the epoch's metrics in dvclive's directory as it ends."""

    def __init__(self, live: Live, epochs: int, warmup_epochs: int):
        self.live, self.epochs, self.warmup_epochs = live, epochs, warmup_epochs
        self.last = time.monotonic()

    def __call__(self, record: dict, replayed: bool = False) -> None:
        for key, value in record.items():
            if key not in ("epoch", "phase"):
                self.live.log_metric(key, value)
        self.live.next_step()
        now = time.monotonic()
        seconds, self.last = now - self.last, now
        warmup = record.get("phase") == "warmup"
        of = self.warmup_epochs if warmup else self.epochs
        val = "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_"))
        print(f"{'warm-up ' if warmup else ''}epoch {record['epoch']}/{of}  train_loss {record['train_loss']:.4f}  "
              f"{val}  lr {record['lr']:.2e}  " + ("(from the resume state)" if replayed else f"{seconds:.1f} s"),
              flush=True)


def main(argv):
    keep_heap_bounded()   # freed memory goes back to the OS while the stage streams (lib/core/memory.py)
    argv = launch_processes(argv)
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
    # The pretrained backbone's size (LoRA's adapters are new weights, not part of it), and what trains in it
    n_backbone = sum(x.numel() for name, x in model.backbone.named_parameters() if "lora_" not in name)
    n_backbone_trainable = sum(x.numel() for x in model.backbone.parameters() if x.requires_grad)
    if rank == 0:
        print(f"mode {t.finetune.mode}, task {t.train.task}: trainable parameters {n_trainable:,} of {n_total:,}"
              f" ({100 * n_trainable / n_total:.1f} %; {n_backbone_trainable:,} in the backbone, "
              f"{100 * n_backbone_trainable / n_backbone:.1f} % of its {n_backbone:,}); "
              f"{world_size} process(es) on {device}")

    inputs = [windows_dir / "train.h5", windows_dir / "val.h5", embeddings_dir / "train.h5", embeddings_dir / "val.h5"]
    resume_path = checkpoint.with_name(checkpoint.name + ".resume")
    started = time.time()
    # dvclive writes straight into live_dir as each epoch ends, so a run can be watched (and a killed
    # one leaves the epochs it finished); a resumed run replays its saved epochs into a fresh log.
    live = Live(live_dir, dvcyaml=False, save_dvc_exp=False) if rank == 0 else None
    log_epoch = EpochLog(live, t.train.epochs, t.finetune.head_warmup_epochs) if rank == 0 else None
    summary = fit(model, splits["train"], splits["val"], t, device, resume_path=resume_path,
                  fingerprint=fingerprint(cfg, inputs, world_size), log_epoch=log_epoch, rank=rank,
                  world_size=world_size)
    if rank == 0:
        summary.update(mode=t.finetune.mode, task=t.train.task, trainable_parameters=n_trainable,
                       total_parameters=n_total, backbone_parameters=n_backbone,
                       backbone_trainable_parameters=n_backbone_trainable, horizon_min=t.train.horizon_min,
                       context_features=",".join(model.context) or "none")
        # Wall time is printed, not logged: metrics must be identical across identical runs.
        kept = "the warm-up head (no fine-tuning epoch beat it on val)" if summary.get("kept") == "warmup" \
            else f"epoch {summary['best_epoch']}"
        print(f"train: {time.time() - started:.1f} s, {summary['epochs_run']} epochs; kept {kept}, "
              f"best {summary['monitor']} {summary['best_' + summary['monitor']]:.4f}")
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
