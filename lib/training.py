"""One training loop for both modes (nanoGPT-style).

* Foundation-model mode (no LoRA): the backbone is frozen, so each window's features are
  computed once and cached; epochs train the head on the cache (fast path).
* LoRA mode: adapters on the backbone train with the head; each epoch draws
  `windows_per_epoch` training windows (seeded) and runs them through the backbone.

The backbone always runs in eval mode (TTM's own 0.4 dropout off, so features are
deterministic); only LoRA's dropout is active while training. The best epoch is chosen on
validation AUROC; the test split is never read here.
"""
import copy
import math

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from lib import windows_h5
from lib.errors import PipelineError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"train.device={name}: CUDA is not available on this machine (use auto or cpu)")
    return torch.device(name)


def set_mode(model: nn.Module, training: bool) -> None:
    """Backbone in eval mode always; head and LoRA dropout follow `training`."""
    model.eval()
    if training:
        model.head.train()
        for name, module in model.named_modules():
            if "lora_dropout" in name:
                module.train()


@torch.no_grad()
def window_features(model, h5_path, batch_size: int, device, indices) -> np.ndarray:
    """Raw (unstandardised) features of the windows at `indices` of a split file, streamed in chunks."""
    set_mode(model, False)
    out = np.zeros((len(indices), model.head.in_features), dtype=np.float32)
    for start, chunk in tqdm(windows_h5.iter_signal_chunks(h5_path, batch_size, indices),
                             total=math.ceil(len(out) / batch_size), desc=f"embed {h5_path}", unit="batch", disable=None):
        out[start:start + len(chunk)] = model.features(torch.from_numpy(chunk).to(device)).cpu().numpy()
    return out


@torch.no_grad()
def predict_logits(model, h5_path, batch_size: int, device, indices=None) -> np.ndarray:
    """Logits for the windows at `indices` (sorted; default all) of a split file, in file order."""
    set_mode(model, False)
    logits = []
    for _, chunk in windows_h5.iter_signal_chunks(h5_path, batch_size, indices):
        logits.append(model(torch.from_numpy(chunk).to(device)).cpu().numpy())
    return np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32)


def fit_scaler(model, train_features: np.ndarray) -> None:
    """Standardise features with the train split's mean/std (never val or test)."""
    mean = train_features.mean(axis=0)
    std = train_features.std(axis=0)
    model.feature_mean.copy_(torch.from_numpy(mean))
    model.feature_std.copy_(torch.from_numpy(np.where(std > 1e-6, std, 1.0)))


def _auroc(y, logits):
    return float(roc_auc_score(y, logits)) if len(np.unique(y)) == 2 else float("nan")


def train_model(model, train_path, val_path, label_column: str, *, epochs: int, batch_size: int, lr: float,
                weight_decay: float, grad_clip: float, windows_per_epoch: int, seed: int,
                device, log_epoch=None) -> dict:
    """Train in place; restores the best epoch's weights (val AUROC). Returns a summary."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    idx_train, y_train = windows_h5.labelled(train_path, label_column)
    idx_val, y_val = windows_h5.labelled(val_path, label_column)
    for name, y in [("train", y_train), ("val", y_val)]:
        if len(np.unique(y)) < 2:
            raise PipelineError(f"{name} split has only one class ({int(y.sum())} positives in {len(y)} "
                                "windows): cannot train a classifier; use more cases or another split seed")

    train_features = window_features(model, train_path, 512, device, idx_train)
    fit_scaler(model, train_features)
    lora = any("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    val_features = None if lora else torch.from_numpy(window_features(model, val_path, 512, device, idx_val))
    cached = None if lora else torch.from_numpy(train_features)

    params = [p for p in model.parameters() if p.requires_grad]
    n_per_epoch = len(y_train) if not lora else min(windows_per_epoch, len(y_train))
    steps = epochs * math.ceil(n_per_epoch / batch_size)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1))
    # Class imbalance: weight positives by the negative/positive ratio of the train split.
    pos_weight = torch.tensor((1 - y_train.mean()) / y_train.mean(), device=device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    best = {"val_auroc": -1.0}
    for epoch in range(epochs):
        set_mode(model, True)
        if lora:
            idx = np.sort(rng.choice(len(y_train), size=n_per_epoch, replace=False))
            inputs = torch.from_numpy(np.concatenate([c for _, c in windows_h5.iter_signal_chunks(
                train_path, 1024, indices=idx_train[idx])]))
            targets = torch.from_numpy(y_train[idx])
        else:
            inputs, targets = cached, torch.from_numpy(y_train)
        order = torch.from_numpy(rng.permutation(len(targets)))
        total = 0.0
        for start in tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                          leave=False, disable=None):
            batch = order[start:start + batch_size]
            x, y = inputs[batch].to(device), targets[batch].to(device)
            logits = model(x) if lora else model.head_logits(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)

        with torch.no_grad():
            set_mode(model, False)
            val_logits = (model.head_logits(val_features.to(device)).cpu().numpy() if not lora
                          else predict_logits(model, val_path, 512, device, idx_val))
            val_loss = float(loss_fn(torch.from_numpy(val_logits).to(device), torch.from_numpy(y_val).to(device)))
        record = {"epoch": epoch + 1, "train_loss": total / len(order), "val_loss": val_loss,
                  "val_auroc": _auroc(y_val, val_logits)}
        if log_epoch:
            log_epoch(record)
        if record["val_auroc"] > best["val_auroc"]:
            best = {**record, "state": copy.deepcopy(model.state_dict())}
    model.load_state_dict(best.pop("state"))
    set_mode(model, False)
    return {"best_epoch": best["epoch"], "best_val_auroc": best["val_auroc"], "best_val_loss": best["val_loss"],
            "n_train_windows": int(len(y_train)), "n_val_windows": int(len(y_val)),
            "train_positive_rate": float(y_train.mean()), "lora": lora}
