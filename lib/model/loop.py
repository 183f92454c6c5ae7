"""One training loop for every model and mode (nanoGPT spirit): read `train_model` top to bottom.

Each epoch draws its training windows (all, or `windows_per_epoch` seeded by (seed, epoch)),
runs them in micro-batches through the model (its head alone on cached embeddings, or the whole
model on windows), steps AdamW every `grad_accum_steps` micro-batches with gradient clipping and
a cosine (linear warm-up) or one-cycle schedule, AMP on CUDA, then scores val. Early stopping
keeps the best epoch's weights on the monitored val metric. The state is saved after every epoch,
so a killed run resumes where it stopped and ends with the same result. Under torchrun the model
is wrapped in DDP and a DistributedSampler shards every epoch; `batch_size` is global.
"""
import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from lib.core.config import LoopConfig
from lib.core.errors import PipelineError
from lib.data.dataset import Split, require_both_classes, subset
from lib.model.engines import require_eager
from lib.model.inference import autocast, predict, set_mode
from lib.model.ttm import save_torch, trained_state


def train_model(model, train: Split, val: Split, cfg: LoopConfig, device, *, resume_path=None, fingerprint: str = "",
                log_epoch=None, rank: int = 0, world_size: int = 1, candidate=None) -> dict:
    """Train in place and restore the best epoch's weights (on `cfg.monitor`). Returns a summary.

    `candidate` (record, trained state): a state that competes with the epochs, as the best so far
    before the first (LP-FT's warm-up head, record epoch 0); kept when no epoch beats it on val.
    `log_epoch(record, replayed=False)` is called as each epoch ends (replayed: from a resume state).

    Trains on `train`'s cached embeddings when it has them (the head alone), else on its windows.
    `resume_path`: the state after each finished epoch is saved there (rank 0); when it exists with
    the same `fingerprint` (params and inputs), training continues from it. A model run by an
    inference engine (lib.model.engines) is refused.
    """
    require_eager(model)
    torch.manual_seed(cfg.seed)
    model.to(device)
    check_splits(model, train, val, cfg, world_size)
    val_scored = val_sample(val, cfg.val_windows_per_epoch, cfg.seed, model.task)
    net = training_module(model, train, device, world_size)
    n_per_epoch = len(train) if train.embeddings is not None or cfg.windows_per_epoch <= 0 else \
        min(cfg.windows_per_epoch, len(train))
    opt = Optimiser.create(model, cfg, cfg.epochs * steps_per_epoch(n_per_epoch, cfg, world_size), device)
    loss = Loss.for_model(model, train, device)
    stopper, history = EarlyStopping(cfg.monitor, cfg.early_stopping_patience), []
    if candidate is not None:
        stopper.best, stopper.best_state = candidate
    resume_path = Path(resume_path) if resume_path else None
    if resume_path and resume_path.is_file():
        history = load_resume_state(resume_path, fingerprint, model, opt, stopper)
        for record in history:
            if log_epoch:
                log_epoch(record, replayed=True)

    while len(history) < cfg.epochs and not stopper.stopped:
        epoch = len(history)
        set_mode(model, True)
        mine = epoch_windows(len(train), n_per_epoch, cfg.seed, epoch, rank, world_size)
        train_loss = run_epoch(net, train, mine, loss, opt, cfg.batch_size // world_size, cfg.grad_accum_steps,
                               device, desc=f"epoch {epoch + 1}/{cfg.epochs}", show=rank == 0)
        record = {"epoch": epoch + 1, "train_loss": train_loss, "lr": opt.lr,
                  **val_record(model, val_scored, loss, device)}
        if log_epoch:
            log_epoch(record)
        history.append(record)
        stopper.update(record, model)
        if resume_path and rank == 0:
            save_resume_state(resume_path, fingerprint, model, opt, stopper, history)
    summary = finish(model, stopper, len(history), cfg, train, val, history[-1] if history else None)
    if len(val_scored) < len(val):
        summary["n_val_windows_per_epoch"] = int(len(val_scored))
    return summary


def check_splits(model, train: Split, val: Split, cfg: LoopConfig, world_size: int) -> None:
    if model.task == "clf":
        for name, y in [("train", train.targets), ("val", val.targets)]:
            require_both_classes(name, y)
    if cfg.batch_size % world_size:
        raise PipelineError(f"train.batch_size={cfg.batch_size} is not divisible by the {world_size} processes")


# The seed stream of the val sample, apart from the epochs' training draws ([seed, epoch]).
VAL_SAMPLE_STREAM = 1 << 20


def val_sample(val: Split, n: int, seed: int, task: str) -> Split:
    """The val windows each epoch's early-stopping record scores: all of them (`n` 0 or >= the
    split), or `n` drawn once, seeded, the same for every epoch and for LP-FT's warm-up, so every
    record (and the warm-up's candidate) is measured on the same windows. It bounds the cost of early
    stopping by the sample, not by the cohort; calibration and alarm thresholds still use all of val."""
    if n <= 0 or n >= len(val):
        return val
    sample = subset(val, np.random.default_rng([seed, VAL_SAMPLE_STREAM]).choice(len(val), n, replace=False))
    if task == "clf":
        require_both_classes("val", sample.targets, f" (its sample of {n} windows per epoch)")
    return sample


class _HeadOnEmbeddings(nn.Module):
    """`model.head_forward` as a module's forward, so DDP can wrap training on cached embeddings."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, embeddings: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.model.head_forward(embeddings, context)


def training_module(model, train: Split, device, world_size: int) -> nn.Module:
    """What a training step calls: the head on cached embeddings or the model on windows; in DDP
    under torchrun (gradients averaged over the processes)."""
    net = _HeadOnEmbeddings(model) if train.embeddings is not None else model
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return net


def steps_per_epoch(n_per_epoch: int, cfg: LoopConfig, world_size: int) -> int:
    micro_steps = math.ceil(math.ceil(n_per_epoch / world_size) / (cfg.batch_size // world_size))
    return math.ceil(micro_steps / cfg.grad_accum_steps)


def epoch_windows(n_train: int, n_per_epoch: int, seed: int, epoch: int, rank: int, world_size: int) -> np.ndarray:
    """This process's training windows (positions in the split) of `epoch`, in training order: all
    or a draw seeded by (seed, epoch), so a resumed run draws the same; shuffled by epoch."""
    positions = np.arange(n_train) if n_per_epoch == n_train else \
        np.sort(np.random.default_rng([seed, epoch]).choice(n_train, n_per_epoch, replace=False))
    sampler = DistributedSampler(positions, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return positions[np.fromiter(iter(sampler), dtype=np.int64)]


def run_epoch(net: nn.Module, train: Split, positions, loss, opt: "Optimiser", micro_batch: int,
              grad_accum_steps: int, device, desc: str = "epoch", show: bool = True) -> float:
    """One pass over the training windows at `positions` in micro-batches; an optimiser step after
    every `grad_accum_steps` of them and after the last. Returns the mean training loss.
    Each micro-batch's inputs are read from the split's file when it comes (memory: one batch)."""
    context, targets = torch.from_numpy(train.context[positions]), torch.from_numpy(train.targets[positions])
    ddp = isinstance(net, nn.parallel.DistributedDataParallel)
    total, seen = 0.0, 0
    batches = range(0, len(positions), micro_batch)
    for step, start in enumerate(tqdm(batches, desc=desc, unit="batch", disable=None if show else True)):
        sl = slice(start, start + micro_batch)
        x, ctx, y = train.inputs(positions[sl]).to(device), context[sl].to(device), targets[sl].to(device)
        last_micro = (step + 1) % grad_accum_steps == 0 or step == len(batches) - 1
        with contextlib.nullcontext() if last_micro or not ddp else net.no_sync():   # sync gradients on steps only
            with opt.amp_context():
                out = net(x, ctx)
            batch_loss = loss(out, y)
            opt.backward(batch_loss / grad_accum_steps)
        total, seen = total + batch_loss.item() * len(y), seen + len(y)
        if last_micro:
            opt.step()
    return total / max(seen, 1)


class Loss:
    """clf: BCE with positives weighted by the train split's negative/positive ratio; reg: MSE on
    targets standardised with the model's train statistics."""

    def __init__(self, fn: nn.Module, standardise):
        self.fn, self.standardise = fn, standardise

    @classmethod
    def for_model(cls, model, train: Split, device) -> "Loss":
        if model.task == "clf":
            pos_weight = torch.tensor((1 - train.targets.mean()) / train.targets.mean(), device=device)
            return cls(nn.BCEWithLogitsLoss(pos_weight=pos_weight), lambda y: y)
        mean, std = model.target_mean.to(device), model.target_std.to(device)
        return cls(nn.MSELoss(), lambda y: (y - mean) / std)

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.fn(outputs.float(), self.standardise(targets))


def val_record(model, val: Split, loss: Loss, device) -> dict:
    """The epoch's val metrics: loss, and AUROC (clf) or the mean absolute error in mmHg (reg)."""
    outputs = torch.from_numpy(predict(model, val, device)).to(device)
    targets = torch.from_numpy(val.targets).to(device)
    record = {"val_loss": float(loss(outputs, targets))}
    if model.task == "clf":  # check_splits has made sure val holds both classes
        record["val_auroc"] = float(roc_auc_score(val.targets, outputs.cpu().numpy()))
    else:
        record["val_mae"] = float((model.to_mmhg(outputs) - targets).abs().mean())
    return record


def make_schedule(optimizer, name: str, lr: float, total_steps: int, warmup_frac: float):
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 1))
    warmup = int(round(warmup_frac * total_steps))

    def factor(step):  # linear warm-up, then cosine decay to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class Optimiser:
    """AdamW on the trainable parameters, its LR schedule, gradient clipping, and AMP's autocast
    with (fp16 only) its gradient scaler."""

    params: list
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    grad_clip: float
    amp_context: object
    grad_scaler: object = None

    @classmethod
    def create(cls, model, cfg: LoopConfig, total_steps: int, device) -> "Optimiser":
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = make_schedule(optimizer, cfg.schedule, cfg.lr, total_steps, cfg.warmup_frac)
        amp_context, grad_scaler = autocast(device, cfg.amp)
        return cls(params, optimizer, scheduler, cfg.grad_clip, amp_context, grad_scaler)

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def backward(self, loss: torch.Tensor) -> None:
        (self.grad_scaler.scale(loss) if self.grad_scaler else loss).backward()

    def step(self) -> None:
        if self.grad_scaler:
            self.grad_scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        if self.grad_scaler:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler else None}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.grad_scaler is not None and state.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state["grad_scaler"])


def improved(value: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return not math.isnan(value)
    return value > best if monitor == "val_auroc" else value < best


@dataclass
class EarlyStopping:
    """The best epoch so far on `monitor` (its record and trained state) and the epochs since it;
    `patience` epochs without improvement stop training (0: never)."""

    monitor: str
    patience: int = 0
    best: dict | None = None
    best_state: dict | None = None
    bad_epochs: int = 0

    def update(self, record: dict, model) -> bool:
        """Score one epoch (keeping the model's state when it is the best); True when training should stop."""
        if improved(record[self.monitor], self.best and self.best[self.monitor], self.monitor):
            self.best, self.best_state, self.bad_epochs = record, trained_state(model), 0
        else:
            self.bad_epochs += 1
        return self.stopped

    @property
    def stopped(self) -> bool:
        return bool(self.patience) and self.bad_epochs >= self.patience


def finish(model, stopper: EarlyStopping, epochs_run: int, cfg: LoopConfig, train: Split, val: Split,
           last: dict | None = None) -> dict:
    """Restore the best epoch's weights; the summary of the run: the best epoch's val metrics and,
    beside them, the last epoch's (`last`, its record), so a reader sees how far val moved after the best."""
    if stopper.best_state is None:
        raise PipelineError(f"train: {cfg.monitor} was undefined in every epoch; check the val split's labels")
    model.load_state_dict(stopper.best_state, strict=False)
    set_mode(model, False)
    best = stopper.best
    summary = {"best_epoch": best["epoch"], "epochs_run": epochs_run, "early_stopped": epochs_run < cfg.epochs,
               "monitor": cfg.monitor, **{f"best_{k}": v for k, v in best.items() if k.startswith("val_")},
               **({"last_epoch": last["epoch"], **{f"last_{k}": v for k, v in last.items() if k.startswith("val_")}}
                  if last else {}),
               "n_train_windows": int(len(train)), "n_val_windows": int(len(val))}
    if model.task == "clf":
        summary["train_positive_rate"] = float(train.targets.mean())
    return summary


def save_resume_state(path, fingerprint: str, model, opt: Optimiser, stopper: EarlyStopping, history: list) -> None:
    """Everything a killed run needs to continue exactly: trained tensors, optimiser, RNG, loop state."""
    save_torch(path, {"fingerprint": fingerprint, "model": trained_state(model), **opt.state_dict(),
                      "rng": torch.get_rng_state(),
                      "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                      "history": history, "stopper": vars(stopper)})


def load_resume_state(path, fingerprint: str, model, opt: Optimiser, stopper: EarlyStopping) -> list:
    """Restore a saved state into `model`, `opt`, `stopper` and the RNGs; returns the epochs' history.
    An unreadable state or one from other params/inputs is ignored (with a line saying why): []."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        print(f"ignoring resume state {path}: unreadable ({type(err).__name__}); training from the start")
        return []
    if saved.get("fingerprint") != fingerprint:
        print(f"ignoring resume state {path}: it belongs to other params or inputs; training from the start")
        return []
    model.load_state_dict(saved["model"], strict=False)
    opt.load_state_dict(saved)
    torch.set_rng_state(saved["rng"])
    if saved.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    vars(stopper).update(saved["stopper"])
    print(f"resuming after epoch {len(saved['history'])} from {path}")
    return saved["history"]
