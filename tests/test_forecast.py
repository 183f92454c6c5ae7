"""TTM forecaster of the MAP trend, zero-shot and fine-tuned (lib/model/forecast.py), on the shipped weights."""
import numpy as np
import pytest
import torch
from conftest import WEIGHTS

from lib.core.errors import PipelineError
from lib.model.forecast import (
    finetune_forecaster,
    forecast,
    forecast_at,
    freeze_forecaster,
    load_forecaster,
    model_inputs,
    risk_score,
    shifted_pairs,
    steps_for,
)

STEP_S = 10
STEPS = steps_for(15, STEP_S)   # 90


@pytest.fixture(scope="module")
def model():
    return load_forecaster(WEIGHTS, STEPS)


def _rows(n=12, seed=0):
    rng = np.random.default_rng(seed)
    x = (80 + np.cumsum(rng.normal(0, 0.5, (n, 512)), axis=1)).astype(np.float32)
    observed = np.ones_like(x, dtype=bool)
    observed[::3, :300] = False              # cases shorter than the context: leading bins unobserved
    x[~observed] = 0.0                       # as trend_series fills them
    observed[1, 400:410] = False             # an interior gap
    return x, observed


@pytest.mark.parametrize("softness", [0.0, 2.0])
def test_risk_score_monotone(softness):
    rng = np.random.default_rng(0)
    f = rng.normal(75, 5, (200, STEPS))
    base = risk_score(f, STEP_S, 10, softness_mmhg=softness)
    k = steps_for(10, STEP_S)
    for _ in range(50):
        g = f.copy()
        j = rng.integers(0, k, len(f))
        g[np.arange(len(f)), j] -= rng.uniform(0, 3, len(f))
        assert (risk_score(g, STEP_S, 10, softness_mmhg=softness) >= base).all()
    g = f.copy()
    g[np.arange(len(f)), f[:, :k].argmin(axis=1)] -= 0.5            # lowering the minimum: strictly higher
    assert (risk_score(g, STEP_S, 10, softness_mmhg=softness) > base).all()
    g = f.copy()
    g[:, k:] -= 50                                                 # bins after e + h do not count
    np.testing.assert_array_equal(risk_score(g, STEP_S, 10, softness_mmhg=softness), base)
    np.testing.assert_allclose(risk_score(f, STEP_S, 10), 65.0 - f[:, :k].min(axis=1))
    if softness:
        assert (risk_score(f, STEP_S, 10, softness_mmhg=softness) >= risk_score(f, STEP_S, 10)).all()


def test_forecast_at_and_horizons():
    f = np.tile(np.arange(STEPS, dtype=np.float32), (3, 1))
    assert forecast_at(f, STEP_S, 5)[0] == 29 and forecast_at(f, STEP_S, 15)[0] == 89
    assert forecast_at(f, 5, 5)[0] == 59
    with pytest.raises(ValueError):
        forecast_at(f, STEP_S, 16)
    with pytest.raises(ValueError):
        risk_score(f, 5, 10)                 # 120 bins of 5 s needed, 90 available


def test_shape_and_prediction_filter_length(model):
    x, observed = _rows()
    out = forecast(model, x, observed, batch_size=64)
    assert out.shape == (len(x), STEPS) and out.dtype == np.float32 and np.isfinite(out).all()
    assert model.config.prediction_filter_length == STEPS
    full = forecast(load_forecaster(WEIGHTS, 96), x, observed, batch_size=64)
    assert full.shape == (len(x), 96)
    np.testing.assert_allclose(out, full[:, :STEPS], rtol=0, atol=1e-5)
    with pytest.raises(PipelineError):
        load_forecaster(WEIGHTS, 97)


def test_batch_size_does_not_change_outputs(model):
    x, observed = _rows(40)
    ref = forecast(model, x, observed, batch_size=40)
    for bs in (1, 7, 16):
        np.testing.assert_allclose(forecast(model, x, observed, batch_size=bs), ref, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(forecast(model, x, observed, batch_size=7), forecast(model, x, observed, 7))
    frozen = freeze_forecaster(model, example_batch=8)
    np.testing.assert_allclose(forecast(frozen, x, observed, batch_size=16), ref, rtol=0, atol=1e-4)


def test_constant_series_forecasts_flat(model):
    x = np.full((3, 512), 72.0, dtype=np.float32)
    observed = np.ones_like(x, dtype=bool)
    observed[1, :400] = False                # a case's first ~19 min: zeros before, masked
    x[1, :400] = 0.0
    observed[2, 200:260] = False             # an interior gap (forward-filled)
    out = forecast(model, x, observed)
    assert np.abs(out - 72.0).max() < 1.0


def test_linear_decline_continues_down(model):
    """A steady decline of the last 17-33 min (a shorter case: earlier bins unobserved) continues downward.

    (Zero-shot TTM forecasts a perfect ramp spanning the whole 85-min context flat, at its last value:
    measured, not asserted.)"""
    x = np.zeros((2, 512), dtype=np.float32)
    observed = np.zeros_like(x, dtype=bool)
    for row, n in enumerate((100, 200)):
        x[row, -n:] = np.linspace(95, 75, n)
        observed[row, -n:] = True
    out = forecast(model, x, observed)
    ahead = forecast_at(out, STEP_S, 5)
    assert (ahead < x[:, -1] - 1.0).all()
    assert (forecast_at(out, STEP_S, 10) < x[:, -1] - 1.0).all()


def test_unobserved_rows_and_leads(model):
    x, observed = _rows(4)
    observed[2] = False
    out = forecast(model, x, observed)
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, axis=0)).all()
    vals, mask, any_obs = model_inputs(x, observed, lead="mean")
    assert np.array_equal(mask, observed) and not any_obs[2]
    lead = np.cumsum(observed[0]) == 0
    np.testing.assert_allclose(vals[0, lead], x[0, observed[0]].mean(), rtol=1e-5)
    np.testing.assert_array_equal(vals[0, ~lead], x[0, ~lead])
    hold, _, _ = model_inputs(x, observed, lead="hold")
    np.testing.assert_array_equal(hold[0, lead], x[0, np.argmax(observed[0])])
    np.testing.assert_array_equal(model_inputs(x, observed, lead="zero")[0], x)


def test_shifted_pairs_use_only_the_row_and_keep_targets_aligned():
    """The pairs fine-tuning learns from: context = the row shifted right by `steps`, target = its last
    `steps` bins. Catches an off-by-one between context and target (the model would learn to copy
    the present into the future) and pairs without a current MAP or with a mostly-missing target."""
    rows = np.tile(np.arange(512, dtype=np.float32), (4, 1))
    rows[1, 511 - 96] = np.nan            # no current MAP at the context's end: dropped
    rows[2, -50:] = np.nan                # target half unobserved: dropped
    rows[3, -5:] = np.nan                 # 95 % observed: kept, the gap masked
    series, observed, target, target_observed = shifted_pairs(rows, 96)
    assert len(series) == 2
    np.testing.assert_array_equal(series[0, 96:], np.arange(416))      # the same bins, 96 later
    assert not observed[0, :96].any() and observed[0, 96:].all()
    np.testing.assert_array_equal(target[0], np.arange(416, 512))
    assert target_observed[1, -5:].sum() == 0 and target_observed[1, :-5].all() and np.isfinite(target).all()


def test_finetuning_learns_what_zero_shot_cannot_and_is_deterministic():
    """Series that always fall 12 mmHg right after a flat stretch: zero-shot TTM forecasts flat, the
    fine-tuned decoder/head must learn the fall (val MAE at most half of zero-shot's) with the
    backbone untouched, and the same seed must give the same weights."""
    def rows(n, seed):
        rng = np.random.default_rng(seed)
        level = rng.uniform(70, 95, (n, 1))
        out = level + rng.normal(0, 0.5, (n, 512))
        out[:, -96:] -= 12
        out[:, :200] = np.nan
        return out.astype(np.float32)

    def tuned(epochs):
        model = load_forecaster(WEIGHTS, 96)
        backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        summary = finetune_forecaster(model, shifted_pairs(rows(256, 0), 96), shifted_pairs(rows(64, 1), 96),
                                      epochs=epochs, lr=3e-3, patience=2, seed=0)
        assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in backbone.items())
        return model, summary

    model, summary = tuned(4)
    assert summary["val_mae_zero_shot"] > 8
    assert summary["val_mae_finetuned"] < 0.5 * summary["val_mae_zero_shot"], summary
    again, _ = tuned(4)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
