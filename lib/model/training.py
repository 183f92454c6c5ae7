"""Training the TTM model as the train section says, in either mode (the train stage and each CV fold).

* fm mode: the backbone is frozen, so each window's embeddings come from the embed stage's cache
  and every epoch trains the head on them (the fast path).
* ft mode: unfrozen blocks / LoRA adapters train with the head; each epoch draws
  `windows_per_epoch` training windows (seeded by epoch) and runs them through the backbone.
  The head is first warmed up on the cached embeddings with the backbone frozen (LP-FT, Kumar
  et al., ICLR 2022: a random head's gradients would otherwise distort the pretrained features).

The backbone runs in eval mode (TTM's own 0.4 dropout off); the head's and LoRA's dropout train.
The loop itself is lib.model.loop.train_model. The test split is never read here.
"""
import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler

from lib.core.config import TrainConfig
from lib.data.dataset import Split, without_embeddings
from lib.model.loop import train_model


def fit(model, train: Split, val: Split, cfg: TrainConfig, device, *, resume_path=None, **loop_extra) -> dict:
    """Train `model` as the model/finetune/train sections say; returns the loop's summary.

    `train`/`val` carry the frozen backbone's cached embeddings. The head's input scaling is fitted
    on train's; in fm mode training runs on them. In ft mode the head is first warmed up on them
    (LP-FT), then windows go through the training backbone. `resume_path` (optional) keeps state
    after every epoch, the warm-up's next to it. `loop_extra`: train_model's fingerprint, log_epoch,
    rank and world_size.
    """
    fit_scalers(model, train)
    resume_path = Path(resume_path) if resume_path else None
    warmup = cfg.finetune.head_warmup_epochs if cfg.finetune.mode == "ft" else 0
    if warmup:  # LP-FT: the head first learns on the frozen backbone's cached embeddings
        with backbone_frozen(model):
            warm = train_model(model, train, val, dataclasses.replace(cfg.loop, epochs=warmup), device,
                               resume_path=resume_path and resume_path.with_suffix(".warmup.resume"), **loop_extra)
        # ft: the backbone trains, its embeddings change every step, so windows go through it.
        train, val = without_embeddings(train), without_embeddings(val)
    summary = train_model(model, train, val, cfg.loop, device, resume_path=resume_path, **loop_extra)
    if warmup:
        summary.update(head_warmup_epochs=warmup, head_warmup_best_val=warm[f"best_{cfg.loop.monitor}"])
    return summary


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
