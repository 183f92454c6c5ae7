"""The bars the TTM model must clear, trained on the same train split and calibrated on the same val.

* `map_lr`     – logistic regression on the window's current MAP alone: the bar published
                 hypotension predictors must beat (hypotension soon is mostly low pressure now).
* `context_lr` – logistic regression on the past-only context features (MAP, MAP trend, HR, pulse
                 pressure; missing MAP trend imputed with the train median).
* `cnn`        – a small 1-D CNN on the raw windows (the VitalDB example's approach), trained with
                 the same loop, loss and early stopping as the model (lib.model.loop.train_model).

Each outputs a logit per window; calibration and thresholds are then exactly the model's.
"""
from pathlib import Path

import numpy as np
import torch
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from lib.core.config import BaselinesConfig
from lib.core.errors import PipelineError
from lib.core.schema import CONTEXT
from lib.data.dataset import Split, load_split
from lib.model.inference import predict
from lib.model.loop import train_model
from lib.model.ttm import save_torch, set_input_stats

LOGISTIC_FEATURES = {"map_lr": ["map"], "context_lr": list(CONTEXT)}
BASELINES = (*LOGISTIC_FEATURES, "cnn")


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
    level (which defines hypotension) reaches the network. Its forward takes (windows, context)
    like the TTM model's, so `lib.model.loop.train_model` and `predict` drive it unchanged (it has
    no embeddings: its splits never carry any).
    """

    task = "clf"

    def __init__(self, channels, widths=(16, 32, 64), kernel: int = 7, dropout: float = 0.2):
        super().__init__()
        self.channels = list(channels)
        self.register_buffer("input_mean", torch.zeros(len(self.channels)))
        self.register_buffer("input_std", torch.ones(len(self.channels)))
        layers, width = [], len(self.channels)
        for i, out in enumerate(widths):
            layers += [nn.Conv1d(width, out, kernel, padding=kernel // 2), nn.BatchNorm1d(out), nn.ReLU()]
            layers += [nn.MaxPool1d(4)] if i < len(widths) - 1 else [nn.AdaptiveAvgPool1d(1)]
            width = out
        # `head` is what trains (lib.model.inference.set_mode puts it in train mode); here it is all of it.
        self.head = nn.Sequential(*layers, nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, 1))

    def set_input_stats(self, stats: dict) -> None:
        set_input_stats(self, stats)

    def forward(self, windows: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.head((windows - self.input_mean[:, None]) / self.input_std[:, None]).squeeze(-1)


def load_baseline_splits(windows_dir, cfg: BaselinesConfig) -> tuple:
    """(train, val): their labelled windows at the horizon, with every context feature; both classes in each."""
    return tuple(load_split(Path(windows_dir) / f"{name}.h5", "clf", cfg.horizon_min, cfg.channels,
                            LOGISTIC_FEATURES["context_lr"], for_training=True) for name in ("train", "val"))


def train_baselines(train: Split, val: Split, cfg: BaselinesConfig, input_stats: dict, device) -> tuple:
    """Fit every baseline on `train` (the CNN early-stopping on `val`, from `input_stats`' z-scores).

    Returns ({name: fitted scikit-learn pipeline or WindowCNN (on the CPU)}, {name: val logits},
    {name: training summary (the CNN's loop summary; {} for the logistic ones)}).
    """
    fitted, val_logits, summaries = {}, {}, {}
    for name in LOGISTIC_FEATURES:
        fitted[name] = logistic_baseline().fit(logistic_inputs(name, train.context), train.targets)
        val_logits[name], summaries[name] = logistic_logits(fitted[name], logistic_inputs(name, val.context)), {}
    torch.manual_seed(cfg.cnn_loop.seed)   # the CNN's initial weights
    cnn = WindowCNN(cfg.channels)
    cnn.set_input_stats(input_stats)
    summaries["cnn"] = train_model(cnn, train, val, cfg.cnn_loop, device)
    fitted["cnn"] = cnn.cpu()
    val_logits["cnn"] = predict(cnn, val, "cpu")
    return fitted, val_logits, summaries


def save_baselines(directory, fitted: dict) -> None:
    """`<name>.joblib` per logistic baseline and `cnn.pt` (channels and weights), as `baseline_logits` reads them."""
    import joblib

    directory = Path(directory)
    for name in LOGISTIC_FEATURES:
        joblib.dump(fitted[name], directory / f"{name}.joblib")
    cnn = fitted["cnn"]
    save_torch(directory / "cnn.pt", {"channels": list(cnn.channels), "state": cnn.cpu().state_dict()})


def baseline_logits(directory, windows_path, horizon_min: float, device) -> dict:
    """{baseline: logits} on the labelled windows of `windows_path` (the model's windows, same order)."""
    import joblib

    directory = Path(directory)
    try:
        saved = torch.load(directory / "cnn.pt", map_location="cpu", weights_only=False)
        cnn = WindowCNN(saved["channels"])
        cnn.load_state_dict(saved["state"])
        pipelines = {name: joblib.load(directory / f"{name}.joblib") for name in LOGISTIC_FEATURES}
    except Exception as err:
        raise PipelineError(f"baselines in {directory} are missing or corrupt ({type(err).__name__}); "
                            "rerun dvc repro baselines") from err
    context = LOGISTIC_FEATURES["context_lr"]
    split = load_split(windows_path, "clf", horizon_min, cnn.channels, context)
    out = {name: logistic_logits(pipeline, logistic_inputs(name, split.context))
           for name, pipeline in pipelines.items()}
    out["cnn"] = predict(cnn.to(device), split, device)
    return out
