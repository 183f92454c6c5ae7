"""Data for the model and one training loop for every mode (nanoGPT-style).

* fm mode: the backbone is frozen, so each window's embeddings come from the embed stage's cache
  and epochs train the head on them (the fast path).
* ft mode: unfrozen blocks / LoRA adapters train with the head; each epoch draws
  `windows_per_epoch` training windows (seeded by epoch) and runs them through the backbone.
  The head is first warmed up on the cached embeddings with the backbone frozen (LP-FT, Kumar
  et al., ICLR 2022: a random head's gradients would otherwise distort the pretrained features).

The backbone runs in eval mode (TTM's own 0.4 dropout off); the head's and LoRA's dropout train.
AdamW, cosine (with linear warm-up) or one-cycle schedule, gradient clipping and accumulation,
AMP on CUDA, early stopping and best-epoch selection on val. The state is saved after every
epoch so a killed run resumes where it stopped and ends with the same result. Under torchrun the
model is wrapped in DDP and a DistributedSampler shards every epoch; `batch_size` is global.
The test split is never read here.
"""
import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from lib.data import windows_h5
from lib.core.errors import PipelineError
from lib.model.ttm import CHANNELS, REG_TARGETS, save_torch, trained_state

SCHEDULES = ("cosine", "onecycle")
INFERENCE_BATCH = 512


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"train.device={name}: CUDA is not available on this machine (use auto or cpu)")
    return torch.device(name)


def autocast(device: torch.device, amp: str):
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op on CPU or with amp=off."""
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


@dataclass
class Split:
    """The windows of one split the model uses: file rows, targets, context, cached embeddings."""

    path: Path                  # windows HDF5 file
    indices: np.ndarray         # rows of that file (sorted)
    targets: np.ndarray         # clf: labels (n,); reg: SBP/DBP/MAP in mmHg (n, 3)
    context: np.ndarray         # (n, k) past-only context features, NaN where missing
    channels: list
    embeddings: np.ndarray | None = None   # (n, channels, d_model + 2) from the embed stage (fm mode)

    def __len__(self):
        return len(self.indices)

    def windows(self, positions) -> np.ndarray:
        """Signals (len(positions), channels, length) of the windows at `positions`, in that order."""
        positions = np.asarray(positions)
        order = np.argsort(positions, kind="stable")
        rows = self.indices[positions[order]]
        unique, inverse = np.unique(rows, return_inverse=True)
        picked = np.concatenate([chunk for _, chunk in windows_h5.iter_signal_chunks(self.path, 4096, unique)])
        out = np.empty((len(positions), *picked.shape[1:]), dtype=np.float32)
        out[order] = picked[inverse]
        return out[:, channel_index(self.channels)]

    def inputs(self, positions) -> torch.Tensor:
        """What the model's forward takes: cached embeddings (fm) or windows (ft)."""
        x = self.embeddings[positions] if self.embeddings is not None else self.windows(positions)
        return torch.from_numpy(np.ascontiguousarray(x))


def channel_index(channels) -> list:
    return [CHANNELS.index(c) for c in channels]


def require_both_classes(name: str, y: np.ndarray, where: str = "") -> None:
    """A classifier needs positives and negatives in its train and val splits."""
    if len(np.unique(y)) < 2:
        raise PipelineError(f"{name} split has only one class ({int(np.sum(y))} positives in {len(y)} windows"
                            f"{where}): cannot train a classifier; use more cases or another split seed")


def load_split(path, task: str, horizon_min: float, channels, context, embeddings_path=None,
               embedding_settings: dict | None = None, for_training: bool = False) -> Split:
    """A split's usable windows: labelled at the horizon (clf) or with finite pressures (reg).

    `for_training`: a classifier's split must hold both classes (checked before the embeddings load).
    """
    path = Path(path)
    columns = windows_h5.read_columns(path, [*context, *(REG_TARGETS if task == "reg" else ())])
    if task == "clf":
        idx, targets = windows_h5.labelled(path, windows_h5.label_column(horizon_min))
        if for_training:
            require_both_classes(path.stem, targets, f" of {path} at train.horizon_min={horizon_min:g}")
    else:
        targets = np.stack([columns[name] for name in REG_TARGETS], axis=1).astype(np.float32)
        idx = np.flatnonzero(np.isfinite(targets).all(axis=1))
        targets = targets[idx]
    ctx = np.stack([columns[name][idx] for name in context], axis=1).astype(np.float32) if context else \
        np.zeros((len(idx), 0), dtype=np.float32)
    split = Split(path, idx, targets, ctx, list(channels))
    if embeddings_path is not None:
        split.embeddings = windows_h5.read_embeddings(embeddings_path, path, idx, embedding_settings or {})[:, channel_index(channels)]
    return split


def checkpoint_split(model, ckpt: dict, path) -> Split:
    """A split's windows as the trained model uses them (its task, horizon, channels and context)."""
    return load_split(path, model.task, ckpt["horizon_min"], model.channels, model.context)


def fit_scalers(model, train: Split) -> None:
    """Head-input (and, for reg, target) standardisation from the train split (never val or test).

    Fitted on the train split's cached embeddings, the frozen backbone's, i.e. the model's at the
    start of training. NaN (missing context) is ignored by the fit and imputed with the mean in the model.
    """
    features = model.head_features(torch.from_numpy(train.embeddings), torch.from_numpy(train.context)).numpy()
    scaler = StandardScaler().fit(features.astype(np.float64))
    model.feature_mean.copy_(torch.from_numpy(scaler.mean_.astype(np.float32)))
    model.feature_std.copy_(torch.from_numpy(scaler.scale_.astype(np.float32)))
    if model.task == "reg":
        targets = StandardScaler().fit(train.targets.astype(np.float64))
        model.target_mean.copy_(torch.from_numpy(targets.mean_.astype(np.float32)))
        model.target_std.copy_(torch.from_numpy(targets.scale_.astype(np.float32)))


def set_mode(model: nn.Module, training: bool) -> None:
    """Backbone in eval mode always; head and LoRA dropout follow `training`."""
    model.eval()
    if training:
        model.head.train()
        for name, module in model.named_modules():
            if "lora_dropout" in name:
                module.train()


@torch.no_grad()
def predict(model, split: Split, device, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Raw outputs for every window of `split`: logits (n,) for clf, standardised pressures (n, 3) for reg."""
    set_mode(model, False)
    cached = split.embeddings is not None
    chunks = ((start, split.embeddings[start:start + batch_size]) for start in range(0, len(split), batch_size)) \
        if cached else windows_h5.iter_signal_chunks(split.path, batch_size, split.indices)
    outputs = []
    for start, chunk in tqdm(chunks, total=math.ceil(len(split) / batch_size), desc=f"predict {split.path.name}",
                             unit="batch", leave=False, disable=None):
        x = torch.from_numpy(np.ascontiguousarray(chunk if cached else chunk[:, channel_index(split.channels)]))
        ctx = torch.from_numpy(split.context[start:start + len(chunk)])
        outputs.append(model(x.to(device), ctx.to(device), from_embeddings=cached).float().cpu())
    if not outputs:
        return np.zeros((0,) if model.task == "clf" else (0, len(REG_TARGETS)), dtype=np.float32)
    return torch.cat(outputs).numpy()


def make_loss(model, train: Split, device):
    """clf: BCE with positives weighted by the train split's negative/positive ratio; reg: MSE on z-scores."""
    if model.task == "clf":
        pos_weight = torch.tensor((1 - train.targets.mean()) / train.targets.mean(), device=device)
        return nn.BCEWithLogitsLoss(pos_weight=pos_weight), lambda y: y
    mean, std = model.target_mean.to(device), model.target_std.to(device)
    return nn.MSELoss(), lambda y: (y - mean) / std


def val_record(model, val: Split, loss_fn, standardise, device) -> dict:
    outputs = torch.from_numpy(predict(model, val, device)).to(device)
    targets = torch.from_numpy(val.targets).to(device)
    record = {"val_loss": float(loss_fn(outputs, standardise(targets)))}
    if model.task == "clf":  # train_model has checked that val holds both classes
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


@contextlib.contextmanager
def backbone_frozen(model):
    """Temporarily freeze the backbone's trainable parameters (the head warm-up of LP-FT)."""
    trainable = [p for p in model.backbone.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


MONITORS = {"clf": ("val_auroc", "val_loss"), "reg": ("val_loss", "val_mae")}


def resolve_monitor(task: str, monitor: str) -> str:
    """train.monitor: `auto` is val_auroc for clf and val_loss for reg."""
    chosen = MONITORS[task][0] if monitor == "auto" else monitor
    if chosen not in MONITORS[task]:
        raise PipelineError(f"params.yaml: train.monitor={chosen!r} with train.task={task}: expected auto or "
                            f"one of {', '.join(MONITORS[task])}")
    return chosen


def improved(value: float, best: float | None, monitor: str) -> bool:
    if best is None:
        return not math.isnan(value)
    return value > best if monitor == "val_auroc" else value < best


def train_model(model, train: Split, val: Split, *, epochs: int, batch_size: int, grad_accum_steps: int, lr: float,
                weight_decay: float, grad_clip: float, schedule: str, warmup_frac: float,
                early_stopping_patience: int, monitor: str, amp: str, windows_per_epoch: int, seed: int, device,
                resume_path=None, fingerprint: str = "", log_epoch=None, rank: int = 0, world_size: int = 1) -> dict:
    """Train in place and restore the best epoch's weights (on `monitor`). Returns a summary.

    `resume_path`: the state after each finished epoch is saved there (rank 0); when it exists with
    the same `fingerprint` (params and inputs), training continues from it.
    """
    torch.manual_seed(seed)
    model.to(device)
    if model.task == "clf":
        for name, y in [("train", train.targets), ("val", val.targets)]:
            require_both_classes(name, y)
    if batch_size % world_size:
        raise PipelineError(f"train.batch_size={batch_size} is not divisible by the {world_size} processes")
    cached = train.embeddings is not None
    net = model
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    params = [p for p in model.parameters() if p.requires_grad]
    n_per_epoch = len(train) if cached or windows_per_epoch <= 0 else min(windows_per_epoch, len(train))
    micro_per_rank = batch_size // world_size
    micro_steps = math.ceil(math.ceil(n_per_epoch / world_size) / micro_per_rank)
    steps_per_epoch = math.ceil(micro_steps / grad_accum_steps)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = make_schedule(optimizer, schedule, lr, epochs * steps_per_epoch, warmup_frac)
    amp_context, grad_scaler = autocast(device, amp)
    loss_fn, standardise = make_loss(model, train, device)

    state = {"epoch": 0, "history": [], "best": None, "best_state": None, "bad_epochs": 0}
    resume_path = Path(resume_path) if resume_path else None
    if resume_path and resume_path.is_file():
        saved = load_resume_state(resume_path, fingerprint)
        if saved is not None:
            model.load_state_dict(saved["model"], strict=False)
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            if grad_scaler is not None and saved.get("grad_scaler"):
                grad_scaler.load_state_dict(saved["grad_scaler"])
            torch.set_rng_state(saved["rng"])
            if saved.get("cuda_rng") and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(saved["cuda_rng"])
            state = saved["loop"]
            print(f"resuming after epoch {state['epoch']} from {resume_path}")
            for record in state["history"]:
                if log_epoch:
                    log_epoch(record)

    while state["epoch"] < epochs and not (early_stopping_patience and state["bad_epochs"] >= early_stopping_patience):
        epoch = state["epoch"]
        set_mode(model, True)
        # The epoch's windows: all (fm) or a draw seeded by (seed, epoch), so a resumed run draws the same.
        positions = np.arange(len(train)) if n_per_epoch == len(train) else \
            np.sort(np.random.default_rng([seed, epoch]).choice(len(train), n_per_epoch, replace=False))
        sampler = DistributedSampler(positions, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        mine = positions[np.fromiter(iter(sampler), dtype=np.int64)]
        inputs, context = train.inputs(mine), torch.from_numpy(train.context[mine])
        targets = torch.from_numpy(train.targets[mine])
        total, seen = 0.0, 0
        batches = range(0, len(mine), micro_per_rank)
        for step, start in enumerate(tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                                          disable=None if rank == 0 else True)):
            sl = slice(start, start + micro_per_rank)
            x, ctx, y = inputs[sl].to(device), context[sl].to(device), targets[sl].to(device)
            last_micro = (step + 1) % grad_accum_steps == 0 or step == len(batches) - 1
            sync = contextlib.nullcontext() if last_micro or world_size == 1 else net.no_sync()
            with sync:
                with amp_context():
                    out = net(x, ctx, from_embeddings=cached)
                loss = loss_fn(out.float(), standardise(y))
                backward = loss / grad_accum_steps
                (grad_scaler.scale(backward) if grad_scaler else backward).backward()
            total, seen = total + loss.item() * len(y), seen + len(y)
            if last_micro:
                if grad_scaler:
                    grad_scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, grad_clip)
                if grad_scaler:
                    grad_scaler.step(optimizer)
                    grad_scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()

        record = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "lr": scheduler.get_last_lr()[0],
                  **val_record(model, val, loss_fn, standardise, device)}
        if log_epoch:
            log_epoch(record)
        state["history"].append(record)
        state["epoch"] = epoch + 1
        if improved(record[monitor], state["best"] and state["best"][monitor], monitor):
            state["best"], state["best_state"], state["bad_epochs"] = record, trained_state(model), 0
        else:
            state["bad_epochs"] += 1
        if resume_path and rank == 0:
            save_resume_state(resume_path, fingerprint, model, optimizer, scheduler, grad_scaler, state)

    if state["best_state"] is None:
        raise PipelineError(f"train: {monitor} was undefined in every epoch; check the val split's labels")
    model.load_state_dict(state["best_state"], strict=False)
    set_mode(model, False)
    best = state["best"]
    summary = {"best_epoch": best["epoch"], "epochs_run": state["epoch"],
               "early_stopped": state["epoch"] < epochs, "monitor": monitor,
               **{f"best_{k}": v for k, v in best.items() if k.startswith("val_")},
               "n_train_windows": int(len(train)), "n_val_windows": int(len(val))}
    if model.task == "clf":
        summary["train_positive_rate"] = float(train.targets.mean())
    return summary


def save_resume_state(path, fingerprint, model, optimizer, scheduler, grad_scaler, loop_state) -> None:
    save_torch(path, {"fingerprint": fingerprint, "model": trained_state(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "grad_scaler": grad_scaler.state_dict() if grad_scaler else None,
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None, "loop": loop_state})


def load_resume_state(path, fingerprint: str):
    """The saved state, or None (with a line saying why) when it is unreadable or from other params/inputs."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        print(f"ignoring resume state {path}: unreadable ({type(err).__name__}); training from the start")
        return None
    if saved.get("fingerprint") != fingerprint:
        print(f"ignoring resume state {path}: it belongs to other params or inputs; training from the start")
        return None
    return saved


def fit(model, train: Split, val: Split, p: dict, monitor: str, device, resume_path=None, **loop_extra) -> dict:
    """Train `model` as params.yaml's model/finetune/train sections say (the train stage and CV folds).

    `train`/`val` carry the frozen backbone's cached embeddings. The head's input scaling is fitted
    on train's; in fm mode training runs on them. In ft mode the head is first warmed up on them
    (LP-FT), then windows go through the training backbone. `resume_path` (optional) keeps state
    after every epoch, the warm-up's next to it.
    """
    ft, t = p["finetune"], p["train"]
    fit_scalers(model, train)
    loop = dict(batch_size=t["batch_size"], grad_accum_steps=t["grad_accum_steps"], lr=t["lr"],
                weight_decay=t["weight_decay"], grad_clip=t["grad_clip"], schedule=t["schedule"],
                warmup_frac=t["warmup_frac"], early_stopping_patience=t["early_stopping_patience"],
                monitor=monitor, amp=t["amp"], windows_per_epoch=ft["windows_per_epoch"], seed=t["seed"],
                device=device, **loop_extra)
    resume_path = Path(resume_path) if resume_path else None
    warmup = ft["head_warmup_epochs"] if ft["unfreeze_last_n_blocks"] > 0 or ft["lora"] else 0
    if warmup:  # LP-FT: the head first learns on the frozen backbone's cached embeddings
        with backbone_frozen(model):
            warm = train_model(model, train, val, epochs=warmup,
                               resume_path=resume_path and resume_path.with_suffix(".warmup.resume"), **loop)
        # ft: the backbone trains, its embeddings change every step, so windows go through it.
        train, val = dataclasses.replace(train, embeddings=None), dataclasses.replace(val, embeddings=None)
    summary = train_model(model, train, val, epochs=t["epochs"], resume_path=resume_path, **loop)
    if warmup:
        summary.update(head_warmup_epochs=warmup, head_warmup_best_val=warm[f"best_{monitor}"])
    return summary


def subset(split: Split, positions) -> Split:
    """The windows of `split` at `positions` (e.g. one cross-validation fold)."""
    positions = np.sort(np.asarray(positions))
    return dataclasses.replace(split, indices=split.indices[positions], targets=split.targets[positions],
                               context=split.context[positions],
                               embeddings=None if split.embeddings is None else split.embeddings[positions])
