"""The machinery of the bars the TTM model must clear (each a scorer of `lib.model.scorers`, where
they are registered, described and fitted): the logistic pipeline, the 1-D CNN on raw windows, the
trend features and the TTM MAP forecaster; all trained on the same train split and calibrated on
the same val as the model. Each outputs a logit (a score) per window; calibration and thresholds
are then exactly the model's.
"""
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from lib.core.config import BaselinesConfig, ForecastFinetune
from lib.core.schema import CONTEXT, MAP_NOW, TREND_BLOCK
from lib.data import windows_h5
from lib.data.dataset import Split, load_split
from lib.model import forecast as fc
from lib.model.ttm import save_torch, set_input_stats
from lib.signal import trend

NORMAL_MAP = 80.0   # ttm_zeroshot: a window with no MAP history at all scores as a normal pressure


def logistic_baseline() -> object:
    """Median imputation → standardisation → logistic regression (scikit-learn pipeline)."""
    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=1000))


def logistic_logits(pipeline, features: np.ndarray) -> np.ndarray:
    return pipeline.decision_function(features.astype(np.float64)).astype(np.float32)


class WindowCNN(nn.Module):
    """Three Conv1d → BatchNorm → ReLU blocks (max-pooled), global average pool, linear logit.

    Inputs are z-scored per channel with the train split's statistics, so the absolute pressure
    level (which defines hypotension) reaches the network; each channel comes with its observed mask
    (0 where its quality gates masked it), as TTM gets `past_observed_mask`. Its forward takes (windows, context)
    like the TTM model's, so `lib.model.loop.train_model` and `predict` drive it unchanged (it has
    no embeddings: its splits never carry any).
    """

    task = "clf"

    def __init__(self, channels, widths=(16, 32, 64), kernel: int = 7, dropout: float = 0.2):
        super().__init__()
        self.channels = list(channels)
        self.register_buffer("input_mean", torch.zeros(len(self.channels)))
        self.register_buffer("input_std", torch.ones(len(self.channels)))
        layers, width = [], 2 * len(self.channels)   # each channel and its observed mask
        for i, out in enumerate(widths):
            layers += [nn.Conv1d(width, out, kernel, padding=kernel // 2), nn.BatchNorm1d(out), nn.ReLU()]
            layers += [nn.MaxPool1d(4)] if i < len(widths) - 1 else [nn.AdaptiveAvgPool1d(1)]
            width = out
        # `head` is what trains (lib.model.inference.set_mode puts it in train mode); here it is all of it.
        self.head = nn.Sequential(*layers, nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, 1))

    def set_input_stats(self, stats: dict) -> None:
        set_input_stats(self, stats)

    def forward(self, windows: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        z = (windows - self.input_mean[:, None]) / self.input_std[:, None]
        # a masked channel (NaN) reads as its train mean, and an observed-mask channel per input says so
        return self.head(torch.cat([torch.nan_to_num(z, nan=0.0), torch.isfinite(z).to(z.dtype)], 1)).squeeze(-1)


def load_baseline_splits(windows_dir, cfg: BaselinesConfig) -> tuple:
    """(train, val): their labelled windows at the horizon, with every context feature; both classes in each."""
    return tuple(load_split(Path(windows_dir) / f"{name}.h5", "clf", cfg.horizon_min, cfg.channels,
                            CONTEXT, for_training=True) for name in ("train", "val"))


def trend_rows(split: Split, batch: int = 4096):
    """Yield (start, trend rows (b, TREND, context) float32, NaN = unobserved) of the split's windows, in order."""
    for start, rows in windows_h5.iter_signal_chunks(split.path, batch, split.indices, name=TREND_BLOCK):
        yield start, rows.astype(np.float32)


def trend_inputs(split: Split, step_s: int) -> np.ndarray:
    """`trend.classic_features` of every window of the split (n, 5), streamed chunk by chunk."""
    parts = [trend.classic_features(rows, step_s) for _, rows in trend_rows(split)]
    return np.concatenate(parts) if parts else np.zeros((0, len(trend.CLASSIC_FEATURES)))


class TrendForecaster:
    """TTM r2 512-96 forecasting each window's MAP trend view, and the hypotension score 65 mmHg
    minus the soft minimum of the forecast over (e, e + h] (`forecast.risk_score`): untrained
    (`ttm_zeroshot`) or with the decoder and head fine-tuned on train windows (`ttm_finetuned`,
    trend.finetune; `fit`).

    The forecast covers 96 bins (16 min at 10-s bins), so at each horizon h it also gives the mean
    forecast MAP over the label minute [e + h, e + h + 1 min), compared in evaluate with the MAP
    that followed (`map_<h>min`). A window without any observed MAP bin falls back to persistence
    (its current MAP), or to NORMAL_MAP when that is missing too.
    """

    def __init__(self, weights_dir, step_s: int, softness_mmhg: float, threshold: float = 65.0):
        self.weights_dir, self.step_s, self.softness, self.threshold = str(weights_dir), int(step_s), \
            float(softness_mmhg), float(threshold)
        self.model = fc.load_forecaster(weights_dir, fc.steps_for(96 * self.step_s / 60, self.step_s))
        self.finetuned = False
        self._frozen = None   # the TorchScript forecaster `score` runs, traced once the weights are final

    def frozen(self):
        """`self.model` traced and frozen (`forecast.freeze_forecaster`): the same forecasts, 1.5-2x faster."""
        if self._frozen is None:
            self._frozen = fc.freeze_forecaster(self.model.eval())
        return self._frozen

    def to_dict(self) -> dict:
        return {"weights_dir": self.weights_dir, "step_s": self.step_s, "softness_mmhg": self.softness,
                "threshold": self.threshold}

    def fit(self, train: Split, val: Split, cfg: ForecastFinetune, seed: int) -> dict:
        """Fine-tune on `shifted_pairs` of cfg.windows train windows' MAP rows, early-stopping on a
        quarter as many val windows' (both drawn once with `seed`, so memory is bounded whatever the
        cohort size). Returns the fine-tuning summary."""
        steps = fc.forecast_steps(self.model)
        pairs = [fc.shifted_pairs(map_rows(split, n, seed), steps)
                 for split, n in ((train, cfg.windows), (val, max(cfg.windows // 4, 64)))]
        summary = fc.finetune_forecaster(self.model, *pairs, cfg.epochs, cfg.lr, cfg.patience, seed)
        self.finetuned, self._frozen = True, None
        return summary

    def minute_bins(self, minutes: float) -> slice | None:
        lo, hi = minutes * 60 / self.step_s, (minutes * 60 + 60) / self.step_s
        n = fc.forecast_steps(self.model)
        return slice(int(round(lo)), int(round(hi))) if hi <= n and lo == int(lo) and hi == int(hi) else None

    def score(self, split: Split, horizon_min: float, minutes=()) -> tuple:
        """(scores (n,), {m: mean forecast MAP over [e + m, e + m + 1 min) (n,)} for the `minutes` the
        forecast covers) of the split's windows, streamed chunk by chunk."""
        scores, ahead = [], {m: [] for m in minutes if self.minute_bins(m) is not None}
        for _, rows in trend_rows(split):
            series, observed = trend.fill_unobserved(rows[:, 0])
            f = fc.forecast(self.frozen(), series, observed, batch_size=fc.FROZEN_BATCH)
            scores.append(fc.risk_score(f, self.step_s, horizon_min, self.threshold, self.softness))
            for m in ahead:
                ahead[m].append(f[:, self.minute_bins(m)].mean(axis=1))
        score = np.concatenate(scores) if scores else np.zeros(0)
        now = windows_h5.read_columns(split.path, [MAP_NOW])[MAP_NOW][split.indices]
        score = np.where(np.isfinite(score), score, self.threshold - np.nan_to_num(now, nan=NORMAL_MAP))
        return score.astype(np.float32), {m: np.concatenate(v) for m, v in ahead.items()}

    def save(self, directory, name: str) -> None:
        """`<name>.json` (the settings) and, when fine-tuned, `<name>.pt` (the weights)."""
        (Path(directory) / f"{name}.json").write_text(json.dumps(self.to_dict(), indent=1))
        if self.finetuned:
            save_torch(Path(directory) / f"{name}.pt", self.model.state_dict())

    @classmethod
    def load(cls, directory, name: str) -> "TrendForecaster":
        settings = json.loads((Path(directory) / f"{name}.json").read_text())
        forecaster = cls(settings["weights_dir"], settings["step_s"], settings["softness_mmhg"], settings["threshold"])
        weights = Path(directory) / f"{name}.pt"
        if weights.exists():
            forecaster.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            forecaster.finetuned = True
        forecaster.model.eval()
        return forecaster


def map_rows(split: Split, n: int, seed: int) -> np.ndarray:
    """The stored MAP trend rows (NaN = unobserved) of min(n, len(split)) of the split's windows,
    drawn without replacement with `seed`, in file order."""
    rng = np.random.default_rng(int(seed))
    positions = np.sort(rng.choice(len(split), size=min(int(n), len(split)), replace=False))
    rows = [chunk[:, 0] for _, chunk in windows_h5.iter_signal_chunks(split.path, 4096, split.indices[positions],
                                                                      name=TREND_BLOCK)]
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, 0), dtype=np.float32)
