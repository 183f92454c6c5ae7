"""Training the TTM model as the train section says, in either mode (the train stage and each CV fold).

* fm mode: the backbone is frozen, so each window's embeddings come from the embed stage's cache
  and every epoch trains the head on them (the fast path).
* ft mode: unfrozen blocks / LoRA adapters train with the head; each epoch draws
  `windows_per_epoch` training windows (seeded by epoch) and runs them through the backbone.
  The head is first warmed up on the cached embeddings with the backbone frozen (LP-FT, Kumar
  et al., ICLR 2022: a random head's gradients would otherwise distort the pretrained features);
  the warm-up's best head stays a candidate, kept when no fine-tuning epoch beats it on val.

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
from lib.core.errors import PipelineError
from lib.data.dataset import Split, without_embeddings
from lib.model.engines import require_eager
from lib.model.loop import train_model
from lib.model.ttm import trained_state

SCALER_BATCH = 4096   # windows per read while fitting the head's input scaling


def fit(model, train: Split, val: Split, cfg: TrainConfig, device, *, resume_path=None, **loop_extra) -> dict:
    """Train `model` as the model/finetune/train sections say; returns the loop's summary.

    `train`/`val` carry the frozen backbone's cached embeddings. The head's input scaling is fitted
    on train's; in fm mode training runs on them. In ft mode the head is first warmed up on them
    (LP-FT), then windows go through the training backbone. `resume_path` (optional) keeps state
    after every epoch, the warm-up's next to it. `loop_extra`: train_model's fingerprint, log_epoch,
    rank and world_size. A model run by an inference engine is refused before anything changes.
    """
    require_eager(model)
    fit_scalers(model, train)
    resume_path = Path(resume_path) if resume_path else None
    warmup = cfg.finetune.head_warmup_epochs if cfg.finetune.mode == "ft" else 0
    candidate, log_epoch = None, loop_extra.pop("log_epoch", None)
    if warmup:  # LP-FT: the head first learns on the frozen backbone's cached embeddings
        with backbone_frozen(model):
            warm = train_model(model, train, val, dataclasses.replace(cfg.loop, epochs=warmup), device,
                               resume_path=resume_path and resume_path.with_suffix(".warmup.resume"),
                               log_epoch=log_epoch and warmup_log(log_epoch), **loop_extra)
        # The warm-up's best head (on the untouched backbone) competes with the fine-tuning epochs,
        # so LP-FT never returns a model worse on val than its own first phase.
        candidate = ({"epoch": 0, **{k[len("best_"):]: v for k, v in warm.items() if k.startswith("best_val_")}},
                     trained_state(model))
        # ft: the backbone trains, its embeddings change every step, so windows go through it.
        train, val = without_embeddings(train), without_embeddings(val)
    summary = train_model(model, train, val, cfg.loop, device, resume_path=resume_path, log_epoch=log_epoch,
                          candidate=candidate, **loop_extra)
    if warmup:
        summary.update(head_warmup_epochs=warmup, head_warmup_best_val=warm[f"best_{cfg.loop.monitor}"],
                       kept="warmup" if summary["best_epoch"] == 0 else "finetuned")
    return summary


def warmup_log(log_epoch):
    """The warm-up's epochs go to the same log, marked as the warm-up's."""
    return lambda record, **kw: log_epoch({**record, "phase": "warmup"}, **kw)


def fit_scalers(model, train: Split, batch: int = SCALER_BATCH) -> None:
    """Head-input (and, for reg, target) standardisation from the train split (never val or test).

    Fitted on the train split's cached embeddings, the frozen backbone's, i.e. the model's at the
    start of training, streamed `batch` windows at a time (running sums: memory bounded by the
    batch, the mean and std those of the whole split). NaN (missing context) is ignored by the
    fit and imputed with the mean in the model.
    """
    if train.embeddings is None:
        raise PipelineError("fit_scalers: the train split has no cached embeddings (run the embed stage)")
    moments = RunningMoments()
    for start, x in train.chunks(batch):
        moments.update(model.head_features(x, torch.from_numpy(train.context[start:start + len(x)])).numpy())
    mean, scale = moments.mean_scale()
    model.feature_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
    model.feature_std.copy_(torch.from_numpy(scale.astype(np.float32)))
    if model.task == "reg":
        targets = StandardScaler().fit(train.targets.astype(np.float64))
        model.target_mean.copy_(torch.from_numpy(targets.mean_.astype(np.float32)))
        model.target_std.copy_(torch.from_numpy(targets.scale_.astype(np.float32)))


class RunningMoments:
    """Per-column mean and standard deviation over row chunks, NaN ignored, as StandardScaler().fit
    on all the rows at once (np.nanmean, np.nanstd; a constant column's scale is 1): float64 counts,
    means and sums of squared deviations merged chunk by chunk (Chan et al.'s parallel update;
    StandardScaler.partial_fit gives NaN for a column whose first chunk is all NaN)."""

    def __init__(self):
        self.n = self.mean = self.m2 = 0.0

    def update(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64)
        seen = ~np.isnan(rows)
        n = seen.sum(axis=0).astype(np.float64)
        mean = np.where(seen, rows, 0.0).sum(axis=0) / np.maximum(n, 1)
        m2 = np.where(seen, (rows - mean) ** 2, 0.0).sum(axis=0)
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / np.maximum(total, 1)
        self.m2 = self.m2 + m2 + delta ** 2 * self.n * n / np.maximum(total, 1)
        self.n = total

    def mean_scale(self) -> tuple:
        """(mean, std); NaN for a column without a value, 1 as the std of a constant column."""
        n = np.asarray(self.n, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean, var = np.where(n > 0, self.mean, np.nan), self.m2 / n
        eps = np.finfo(np.float64).eps
        constant = var <= n * eps * var + (n * mean * eps) ** 2   # sklearn's test of a constant feature
        return mean, np.where(constant, 1.0, np.sqrt(var))


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
