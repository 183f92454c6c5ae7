"""Zero-shot TTM r2 forecaster of the MAP trend, used as a hypotension scorer.

Input: the trend view of a past-only 1-Hz MAP trace (`lib.signal.trend.trend_series`: one row of
512 `step_s`-second bin means per window end, and its `observed` mask). TTM r2 512-96 forecasts the
next 96 bins; `load_forecaster` keeps the first `steps` of them (`prediction_filter_length`).
Forecast bin i is the mean MAP over seconds [e' + i*step_s, e' + (i+1)*step_s), e' = floor(e).

Checkpoint facts (granite-tsfm 0.3.1, models/ttm-r2-512-96/config.json):
* `resolution_prefix_tuning` is false: this checkpoint has no frequency-token embedding
  (`freq_mod`), its forward ignores `freq_token`, so none is passed. `load_forecaster` refuses a
  checkpoint that would need one.
* `prediction_filter_length` only slices the head's output (TinyTimeMixerForPredictionHead.forward:
  `forecast[:, :prediction_filter_length]`; forecast channel mixing, the one place built from it,
  is off). granite-tsfm's `get_model` passes it to `from_pretrained`; the project's loader
  (`lib.model.ttm.load_ttm`) takes no such argument, so `load_forecaster` loads with it and then
  sets the same attributes `from_pretrained(..., prediction_filter_length=steps)` would have set
  (config, model, head). Tested equal to slicing the full 96-step output.
* `scaling: std` (RevIN): each row is standardised by the mean/std of its *observed* bins
  (`past_observed_mask`), forecast in that scale and mapped back. A flat series therefore forecasts
  flat at its level, and the absolute level is kept (unlike a classifier on scaled embeddings).
  The mask does not stop the *values* of unobserved bins from reaching the mixer: they enter as
  (value - loc) / scale, and the scaler's std is sqrt(var + 1e-5), so for a flat-ish row
  trend_series' 0.0 before the first observed bin (the case had not started, or the line was not
  yet in) becomes a huge standardised input (-80 mmHg / a few mmHg). Unobserved bins *before the
  first observed bin* of a row are therefore handed to TTM at the row's observed mean
  (`lead="mean"`, default: 0 after scaling, i.e. a neutral, flat pre-history; every bin of a row
  lies before e, so this stays past-only), still masked out of the scaling statistics.
  `lead="hold"` uses the first observed bin's value instead, `lead="zero"` passes trend_series'
  zeros as they are (granite-tsfm's zero padding). On 100 simulated cases (step_s 10) "mean" gave
  the lowest MAE and the best AUROC of the three. Interior gaps keep trend_series' forward fill.
  A row with no observed bin gets a NaN forecast.

Scores. `risk_score` = threshold - min(forecast over (e, e+h]) (or a soft minimum): lower forecast
MAP, higher score, in mmHg; monotone, not a probability (calibration on val happens elsewhere).
"""
import math

import numpy as np
import torch

from lib.core.errors import PipelineError
from lib.core.params import TTM_CONTEXT
from lib.model.engines import torchscript_freeze
from lib.model.ttm import load_ttm
from lib.signal import trend

LEADS = ("hold", "zero", "mean")
FORECAST_BATCH = 1024
# Rows per call of the frozen forecaster: on 2 cores 64 runs 1.5x faster than 1024 (the small batch
# stays in the CPU's caches, as engines.BACKBONE_BATCH). Batch size and tracing change the forecasts by
# float rounding at most (tests/test_forecast.py); on the demo's val rows not at all.
FROZEN_BATCH = 64


def steps_for(horizon_min: float, step_s: int) -> int:
    """Forecast bins needed to reach `horizon_min` minutes ahead at `step_s`-second bins."""
    return int(math.ceil(float(horizon_min) * 60.0 / int(step_s) - 1e-9))


def load_forecaster(weights_dir, steps: int):
    """TTM r2 (512-96) from `weights_dir` via `lib.model.ttm.load_ttm`, RevIN on, eval mode, with
    `prediction_filter_length = steps` (1..prediction_length), e.g. `steps_for(15, 10)` = 90."""
    model = load_ttm(weights_dir, revin=True)
    cfg = model.config
    if getattr(cfg, "resolution_prefix_tuning", False):
        raise PipelineError(f"{weights_dir}: this TTM expects frequency tokens (resolution_prefix_tuning); "
                            "the forecaster supports the r2 512-96 checkpoint without them")
    if cfg.context_length != TTM_CONTEXT:
        raise PipelineError(f"{weights_dir}: context_length {cfg.context_length}, expected {TTM_CONTEXT}")
    if getattr(cfg, "enable_forecast_channel_mixing", False):
        raise PipelineError(f"{weights_dir}: forecast channel mixing is on; prediction_filter_length cannot be "
                            "set after loading")
    steps = int(steps)
    if not 1 <= steps <= cfg.prediction_length:
        raise PipelineError(f"forecast steps={steps}: must be 1-{cfg.prediction_length} (the checkpoint's "
                            "prediction_length); use larger step_s bins for longer horizons")
    # What from_pretrained(..., prediction_filter_length=steps) sets (module doc).
    cfg.prediction_filter_length = steps
    model.prediction_filter_length = steps
    model.head.prediction_filter_length = steps
    return model.eval()


def model_inputs(series: np.ndarray, observed: np.ndarray, lead: str = "mean") -> tuple:
    """(values float32 (n, L), observed bool (n, L), any_observed (n,)) as handed to TTM (module doc)."""
    if lead not in LEADS:
        raise ValueError(f"lead={lead!r}: expected one of {', '.join(LEADS)}")
    x = np.array(series, dtype=np.float32, copy=True)
    m = np.asarray(observed, dtype=bool)
    if x.ndim != 2 or x.shape != m.shape:
        raise ValueError(f"series {x.shape} and observed {m.shape} must be the same (n, context) shape")
    any_obs = m.any(axis=1)
    if lead != "zero" and len(x):
        before_first = np.cumsum(m, axis=1) == 0
        if lead == "hold":
            first = x[np.arange(len(x)), np.argmax(m, axis=1)]
            fill = first[:, None]
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                fill = (np.where(m, x, 0.0).sum(axis=1) / m.sum(axis=1)).astype(np.float32)[:, None]
        x = np.where(before_first & any_obs[:, None], fill, x).astype(np.float32)
    return x, m, any_obs


def forecast(model, series: np.ndarray, observed: np.ndarray, batch_size: int = FORECAST_BATCH,
             lead: str = "mean") -> np.ndarray:
    """Zero-shot forecasts (n, steps) float32 in the series' units (mmHg) for rows of `trend_series`.

    `series`/`observed`: (n, 512). Batched under torch.inference_mode; the model must be in eval mode
    (dropout off), so the result is deterministic (batch size changes it by float rounding only).
    `model` is `load_forecaster`'s, or `freeze_forecaster`'s traced version of it.
    """
    x, m, any_obs = model_inputs(series, observed, lead)
    if x.shape[1] != TTM_CONTEXT:
        raise ValueError(f"series has {x.shape[1]} bins per row; TTM r2 512-96 needs {TTM_CONTEXT}")
    batch_size = max(int(batch_size), 1)
    parts = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[i:i + batch_size])[..., None]
            mb = torch.from_numpy(m[i:i + batch_size])[..., None]
            parts.append(_predict(model, xb, mb)[..., 0].numpy())
    steps = forecast_steps(model)
    out = np.concatenate(parts) if parts else np.zeros((0, steps), dtype=np.float32)
    out[~any_obs] = np.nan
    return out.astype(np.float32, copy=False)


def forecast_steps(model) -> int:
    """Forecast bins the model returns per row (its `prediction_filter_length`)."""
    return int(getattr(model, "steps", None) or model.config.prediction_filter_length or model.config.prediction_length)


def _predict(model, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    if isinstance(model, _Frozen):
        return model(x, observed)
    return model(past_values=x, past_observed_mask=observed).prediction_outputs


class _Frozen:
    """A TorchScript-traced, frozen forecaster (`freeze_forecaster`): call (x, observed) -> (n, steps, 1)."""

    def __init__(self, scripted, steps: int):
        self.scripted, self.steps = scripted, steps

    def __call__(self, x, observed):
        return self.scripted(x, observed)


class _Outputs(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, observed: torch.Tensor):
        return self.model(past_values=x, past_observed_mask=observed).prediction_outputs


def freeze_forecaster(model, example_batch: int = 64):
    """TorchScript trace + freeze of `load_forecaster`'s model for CPU inference with fixed weights
    (`engines.torchscript_freeze`, as `HypotensionModel.freeze_for_inference` does for the backbone);
    use it with `forecast`."""
    traced = torchscript_freeze(_Outputs(model).eval(), torch.randn(example_batch, TTM_CONTEXT, 1))
    return _Frozen(traced, forecast_steps(model))


def horizon_slice(step_s: int, horizon_min: float, n_steps: int) -> slice:
    """Forecast bins covering (e, e + horizon]: bins 0 .. steps_for(horizon_min, step_s) - 1."""
    k = steps_for(horizon_min, step_s)
    if not 1 <= k <= n_steps:
        raise ValueError(f"horizon {horizon_min:g} min at step_s={step_s} needs {k} forecast bins; "
                         f"the forecast has {n_steps}")
    return slice(0, k)


def risk_score(forecast: np.ndarray, step_s: int, horizon_min: float, threshold: float = 65.0,
               softness_mmhg: float = 0.0) -> np.ndarray:
    """Hypotension score per row: threshold - (soft) minimum of the forecast over (e, e + h].

    Higher = more at risk, in mmHg below the threshold (> 0: the forecast dips under it). With
    `softness_mmhg` = 0 the plain minimum (lowering the minimum bin raises the score 1:1, other bins
    do not move it); with s > 0 the soft minimum -s * log(sum exp(-f / s)) (<= min, strictly
    monotone in every bin). Never decreases when any forecast bin in the horizon is lowered.
    NaN forecast rows give NaN.
    """
    f = np.asarray(forecast, dtype=np.float64)
    window = f[:, horizon_slice(step_s, horizon_min, f.shape[1])]
    if softness_mmhg > 0:
        s = float(softness_mmhg)
        lo = window.min(axis=1, keepdims=True)
        soft_min = lo[:, 0] - s * np.log(np.exp(-(window - lo) / s).sum(axis=1))
        return threshold - soft_min
    return threshold - window.min(axis=1)


def forecast_at(forecast: np.ndarray, step_s: int, minutes: float) -> np.ndarray:
    """Forecast MAP of the bin ending at e' + `minutes` (bin steps_for(minutes, step_s) - 1, covering
    seconds [e' + 60*minutes - step_s, e' + 60*minutes) when step_s divides it): compare with
    `trend_series(trace, e + 60*minutes, step_s, 1)` for the MAE."""
    f = np.asarray(forecast)
    k = steps_for(minutes, step_s)
    if not 1 <= k <= f.shape[1]:
        raise ValueError(f"{minutes:g} min ahead at step_s={step_s} is forecast bin {k}; the forecast has "
                         f"{f.shape[1]}")
    return f[:, k - 1]


# Fine-tuning: IBM's few-shot recipe for TTM (granite-tsfm's TTM getting-started notebook): backbone
# frozen, decoder and forecast head trained on a small share of the data with OneCycleLR and early
# stopping on validation loss.
FINETUNE_BATCH = 64
MIN_TARGET_OBSERVED = 0.8   # training pairs need this share of their target bins observed


def shifted_pairs(rows: np.ndarray, steps: int) -> tuple:
    """Forecasting pairs from stored MAP trend rows (n, context), NaN = unobserved, all in the past.

    A row's last `steps` bins are the target; the bins before them, shifted right by `steps` (its
    first `steps` bins unobserved), are the context: the trend view the same case had `steps` bins
    earlier. Nothing after the window's end is used, so any split's windows can supply pairs; the
    bins before the shifted context are simply unobserved, as before the start of any recording.
    Returns (series, observed, target, target_observed) for the pairs whose last context bin (the
    current MAP) is observed and whose target is >= MIN_TARGET_OBSERVED observed.
    """
    rows = np.asarray(rows, dtype=np.float32)
    n, width = rows.shape
    if not 1 <= steps < width:
        raise ValueError(f"steps={steps}: must be 1-{width - 1} for rows of {width} bins")
    context = np.full_like(rows, np.nan)
    context[:, steps:] = rows[:, :-steps]
    target = rows[:, -steps:]
    target_observed = np.isfinite(target)
    keep = np.isfinite(context[:, -1]) & (target_observed.mean(axis=1) >= MIN_TARGET_OBSERVED)
    series, observed = trend.fill_unobserved(context[keep])
    return series, observed, np.nan_to_num(target[keep]), target_observed[keep]


def _masked_mse(model, series, observed, target, target_observed) -> torch.Tensor:
    out = model(past_values=series[..., None], past_observed_mask=observed[..., None]).prediction_outputs[..., 0]
    return ((out - target) ** 2 * target_observed).sum() / target_observed.sum().clamp(min=1)


def _tensors(pairs, lead="mean"):
    x, m, _ = model_inputs(pairs[0], pairs[1], lead)
    return (torch.from_numpy(x), torch.from_numpy(m), torch.from_numpy(pairs[2].astype(np.float32)),
            torch.from_numpy(pairs[3].astype(np.float32)))


def forecast_errors(model, pairs) -> dict:
    """{"mse", "mae"} (mmHg², mmHg) of the model's forecast over the observed target bins of `pairs`."""
    x, m, y, ym = _tensors(pairs)
    se = ae = 0.0
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(x), FORECAST_BATCH):
            out = _predict(model, x[i:i + FORECAST_BATCH, :, None], m[i:i + FORECAST_BATCH, :, None])[..., 0]
            diff = (out - y[i:i + FORECAST_BATCH]) * ym[i:i + FORECAST_BATCH]
            se, ae = se + float((diff ** 2).sum()), ae + float(diff.abs().sum())
    n = max(float(ym.sum()), 1.0)
    return {"mse": se / n, "mae": ae / n}


def finetune_forecaster(model, train_pairs, val_pairs, epochs: int, lr: float, patience: int, seed: int) -> dict:
    """Fine-tune `load_forecaster`'s model in place on `shifted_pairs`: backbone frozen, decoder and
    head trained (AdamW, OneCycleLR to `lr`) on the masked MSE in mmHg; after each epoch the val pairs'
    MSE decides (early stopping after `patience` epochs without improvement). The weights kept are
    the best on val, the untrained ones included: fine-tuning never ends worse than zero-shot on val.
    Deterministic for a seed on the CPU. Returns the run's summary (val MAE zero-shot vs fine-tuned)."""
    if len(train_pairs[0]) == 0 or len(val_pairs[0]) == 0:
        raise PipelineError("trend.finetune: no train or val window has an observed MAP trend to learn from")
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    x, m, y, ym = _tensors(train_pairs)
    steps_per_epoch = -(-len(x) // FINETUNE_BATCH)
    generator = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))   # dropout in the decoder and head
    optimiser = torch.optim.AdamW(trainable, lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=max(epochs, 1) * steps_per_epoch)
    zero_shot = forecast_errors(model, val_pairs)
    best, best_state, best_epoch, history = zero_shot["mse"], _state(model), 0, []
    for epoch in range(1, epochs + 1):
        model.train()
        model.backbone.eval()
        for batch in torch.randperm(len(x), generator=generator).split(FINETUNE_BATCH):
            loss = _masked_mse(model, x[batch], m[batch], y[batch], ym[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
        val = forecast_errors(model, val_pairs)
        history.append({"epoch": epoch, **val})
        if val["mse"] < best:
            best, best_state, best_epoch = val["mse"], _state(model), epoch
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return {"train_pairs": int(len(x)), "val_pairs": int(len(val_pairs[0])), "epochs_run": len(history),
            "best_epoch": best_epoch, "val_mae_zero_shot": zero_shot["mae"],
            "val_mae_finetuned": forecast_errors(model, val_pairs)["mae"], "history": history}


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
