"""The bars the TTM model must clear, trained on the same train split and calibrated on the same val.

* `map_lr`     – logistic regression on the window's current MAP alone: the bar published
                 hypotension predictors must beat (hypotension soon is mostly low pressure now).
* `context_lr` – logistic regression on the past-only context features (MAP, MAP trend, HR, pulse
                 pressure; missing MAP trend imputed with the train median).
* `trend_lr`   – logistic regression on the classical trend features of the window's trend view
                 (current MAP, its 5-min slope, minimum and SD, current HR: `trend.classic_features`):
                 the bar a model of the trend must clear, not only current MAP.
* `cnn`        – a small 1-D CNN on the raw windows (the VitalDB example's approach), trained with
                 the same loop, loss and early stopping as the model (lib.model.loop.train_model).
* `ttm_zeroshot` – TTM r2 as what it was pre-trained to be: a zero-shot forecaster of the MAP trend
                 (`lib.model.forecast`); score = 65 mmHg minus the soft minimum of its forecast over
                 (e, e + h]. Nothing is trained; like every scorer it is calibrated on val.

Each outputs a logit (a score) per window; calibration and thresholds are then exactly the model's.
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
from lib.core.errors import PipelineError
from lib.core.schema import CONTEXT, MAP_NOW, TREND_BLOCK
from lib.data import windows_h5
from lib.data.dataset import Split, load_split
from lib.model import forecast as fc
from lib.model.inference import predict
from lib.model.loop import train_model
from lib.model.ttm import save_torch, set_input_stats
from lib.signal import trend

LOGISTIC_FEATURES = {"map_lr": ["map"], "context_lr": list(CONTEXT)}
FORECASTERS = ("ttm_zeroshot", "ttm_finetuned")   # ttm_finetuned: only with trend.finetune
BASELINES = (*LOGISTIC_FEATURES, "trend_lr", "cnn", *FORECASTERS)
NORMAL_MAP = 80.0   # ttm_zeroshot: a window with no MAP history at all scores as a normal pressure


def logistic_baseline() -> object:
    """Median imputation → standardisation → logistic regression (scikit-learn pipeline)."""
    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=1000))


def logistic_inputs(name: str, context: np.ndarray) -> np.ndarray:
    """The columns of a split's context matrix (ordered as LOGISTIC_FEATURES["context_lr"]) that
    logistic baseline `name` uses."""
    order = LOGISTIC_FEATURES["context_lr"]
    return context[:, [order.index(f) for f in LOGISTIC_FEATURES[name]]]


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
                            LOGISTIC_FEATURES["context_lr"], for_training=True) for name in ("train", "val"))


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
        self.finetuned = True
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
            f = fc.forecast(self.model, series, observed)
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


def train_baselines(train: Split, val: Split, cfg: BaselinesConfig, input_stats: dict, device) -> tuple:
    """Fit every baseline on `train` (the CNN early-stopping on `val`, from `input_stats`' z-scores).

    Returns ({name: fitted scikit-learn pipeline, WindowCNN (on the CPU) or ZeroShotForecaster},
    {name: val logits}, {name: training summary (the CNN's loop summary; {} for the others)}).
    """
    fitted, val_logits, summaries = {}, {}, {}
    for name in LOGISTIC_FEATURES:
        fitted[name] = logistic_baseline().fit(logistic_inputs(name, train.context), train.targets)
        val_logits[name], summaries[name] = logistic_logits(fitted[name], logistic_inputs(name, val.context)), {}
    fitted["trend_lr"] = logistic_baseline().fit(trend_inputs(train, cfg.trend_step_s), train.targets)
    val_logits["trend_lr"] = logistic_logits(fitted["trend_lr"], trend_inputs(val, cfg.trend_step_s))
    summaries["trend_lr"] = {}
    fitted["ttm_zeroshot"] = TrendForecaster(cfg.weights_dir, cfg.trend_step_s, cfg.forecast_softness_mmhg)
    summaries["ttm_zeroshot"] = {"trained": False, **fitted["ttm_zeroshot"].to_dict()}
    if cfg.forecast_finetune.enabled:
        fitted["ttm_finetuned"] = TrendForecaster(cfg.weights_dir, cfg.trend_step_s, cfg.forecast_softness_mmhg)
        summaries["ttm_finetuned"] = {**fitted["ttm_finetuned"].to_dict(), **fitted["ttm_finetuned"].fit(
            train, val, cfg.forecast_finetune, cfg.cnn_loop.seed)}
    for name in FORECASTERS:
        if name in fitted:
            val_logits[name] = fitted[name].score(val, cfg.horizon_min)[0]
    torch.manual_seed(cfg.cnn_loop.seed)   # the CNN's initial weights
    cnn = WindowCNN(cfg.channels)
    cnn.set_input_stats(input_stats)
    summaries["cnn"] = train_model(cnn, train, val, cfg.cnn_loop, device)
    fitted["cnn"] = cnn.cpu()
    val_logits["cnn"] = predict(cnn, val, "cpu")
    return fitted, val_logits, summaries


def save_baselines(directory, fitted: dict) -> None:
    """`<name>.joblib` per logistic baseline, `cnn.pt` (channels and weights) and per forecaster its
    settings (`ttm_zeroshot.json`) and fine-tuned weights (`ttm_finetuned.json` + `.pt`), as
    `baseline_logits` reads them."""
    import joblib

    directory = Path(directory)
    for name in (*LOGISTIC_FEATURES, "trend_lr"):
        joblib.dump(fitted[name], directory / f"{name}.joblib")
    for name in FORECASTERS:
        if name in fitted:
            fitted[name].save(directory, name)
    cnn = fitted["cnn"]
    save_torch(directory / "cnn.pt", {"channels": list(cnn.channels), "state": cnn.cpu().state_dict()})


def baseline_logits(directory, windows_path, horizon_min: float, device, forecast_minutes=()) -> tuple:
    """({baseline: logits}, {forecaster: {minutes: its mean MAP forecast over that label minute}}) on the
    labelled windows of `windows_path` (the model's windows, same order); `ttm_finetuned` only when
    the baselines stage fine-tuned it (trend.finetune)."""
    import joblib

    directory = Path(directory)
    try:
        saved = torch.load(directory / "cnn.pt", map_location="cpu", weights_only=False)
        cnn = WindowCNN(saved["channels"])
        cnn.load_state_dict(saved["state"])
        pipelines = {name: joblib.load(directory / f"{name}.joblib") for name in (*LOGISTIC_FEATURES, "trend_lr")}
        forecasters = {name: TrendForecaster.load(directory, name) for name in FORECASTERS
                       if (directory / f"{name}.json").exists()}
        if "ttm_zeroshot" not in forecasters:
            raise FileNotFoundError("ttm_zeroshot.json")
    except Exception as err:
        raise PipelineError(f"baselines in {directory} are missing or corrupt ({type(err).__name__}); "
                            "rerun dvc repro baselines") from err
    context = LOGISTIC_FEATURES["context_lr"]
    split = load_split(windows_path, "clf", horizon_min, cnn.channels, context)
    out = {name: logistic_logits(pipeline, logistic_inputs(name, split.context))
           for name, pipeline in pipelines.items() if name in LOGISTIC_FEATURES}
    out["trend_lr"] = logistic_logits(pipelines["trend_lr"], trend_inputs(split, forecasters["ttm_zeroshot"].step_s))
    out["cnn"] = predict(cnn.to(device), split, device)
    forecasts = {}
    for name, forecaster in forecasters.items():
        out[name], forecasts[name] = forecaster.score(split, horizon_min, forecast_minutes)
    return {name: out[name] for name in BASELINES if name in out}, forecasts
