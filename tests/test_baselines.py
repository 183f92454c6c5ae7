import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from lib.core.config import BaselinesConfig, ForecastFinetune, LoopConfig
from lib.core.schema import CHANNELS, CONTEXT, MAP_NOW, OBSERVED, TREND_BLOCK
from lib.data import windows_h5
from lib.eval.calibration import Calibration
from lib.model import baselines, scorers

ROOT = Path(__file__).resolve().parents[1]


def test_logistic_baseline_on_map_learns_that_low_pressure_comes_first():
    rng = np.random.default_rng(0)
    current_map = rng.normal(75, 10, (2000, 1))
    y = (rng.random(2000) < 1 / (1 + np.exp((current_map[:, 0] - 68) / 3))).astype(int)
    pipeline = baselines.logistic_baseline().fit(current_map, y)
    logits = baselines.logistic_logits(pipeline, np.array([[60.0], [75.0], [90.0]]))
    assert logits[0] > logits[1] > logits[2]
    # a missing value is imputed (median), not an error
    assert np.isfinite(baselines.logistic_logits(pipeline, np.array([[np.nan]]))).all()


def test_cnn_sees_the_absolute_level_through_train_statistics():
    cnn = baselines.WindowCNN(["abp", "ppg"]).eval()
    cnn.set_input_stats({"fitted_on": "train", "channels": ["abp", "ppg", "ecg"], "mean": [80.0, 0.0, 0.0],
                         "std": [15.0, 1.0, 1.0]})
    assert cnn.input_mean.tolist() == [80.0, 0.0]
    x = torch.randn(4, 2, 512)
    with torch.no_grad():
        assert cnn(x, None).shape == (4,)
        assert not torch.allclose(cnn(x + torch.tensor([[30.0], [0.0]])), cnn(x))


def test_baselines_stage_trains_on_train_and_calibrates_on_val(tiny_pipeline):
    work = tiny_pipeline
    summary = json.loads((work / "metrics/baselines.json").read_text())
    calibrations = json.loads((work / "models/baselines/calibration.json").read_text())
    default = set(scorers.REGISTRY) - {"ttm_finetuned"}   # trend.finetune is off by default
    assert set(summary) == set(calibrations) == default
    assert all(c["fitted_on"]["split"] == "val" and c["fitted_on"]["horizon_min"] > 0 for c in calibrations.values())
    assert summary["cnn"]["epochs_run"] >= 1 and summary["cnn"]["n_train_windows"] > 0
    for name in ["map_lr.joblib", "context_lr.joblib", "cnn.pt"]:
        assert (work / "models/baselines" / name).stat().st_size > 0


def write_windows(path, n, seed):
    """Windows whose current MAP decides the label (low pressure → hypotension soon); their trend view
    is 85 min of MAP drifting to the current value (the first 40 min unobserved) and a flat HR."""
    rng = np.random.default_rng(seed)
    current_map = rng.normal(80, 12, n).astype(np.float32)
    trend = np.full((n, 3, 512), np.nan, dtype=np.float32)
    trend[:, 0, 240:] = current_map[:, None] + np.linspace(6, 0, 272) * rng.normal(1, 0.3, (n, 1))
    trend[:, 1, 240:] = 70
    columns = {"label_5min": np.int8, **{name: np.float32 for name in CONTEXT}}
    signals = rng.normal(size=(n, 3, 512)).astype(np.float32)
    signals[:, 0] += current_map[:, None]
    arrays = {"signals": signals, TREND_BLOCK: trend.astype(np.float16),
              "label_5min": (current_map < 70).astype(np.int8), "map": current_map,
              "map_slope": rng.normal(size=n), "hr": rng.normal(70, 5, n), "pp": rng.normal(45, 5, n),
              **{flag: (rng.random(n) > 0.1).astype(np.float32) for flag in OBSERVED.values()},
              "caseid": np.arange(n) // 20, "subjectid": np.arange(n) // 20}
    for channel, flag in OBSERVED.items():   # a masked channel is NaN in the file
        signals[arrays[flag] == 0, CHANNELS.index(channel)] = np.nan
    arrays[MAP_NOW] = current_map
    columns[MAP_NOW] = np.float32
    with windows_h5.WindowWriter(path, CHANNELS, 512, columns, {}, {TREND_BLOCK: ((3, 512), np.float16)}) as writer:
        writer.append(arrays)


def write_calibrations(directory, val_logits: dict, y, horizon_min: float) -> None:
    """calibration.json as the baselines stage writes it (each scorer calibrated on val, at the horizon)."""
    fitted_on = {"split": "val", "windows": len(y), "horizon_min": horizon_min}
    states = {name: Calibration.fit(z, y, "platt", "youden", 0.8, fitted_on).to_dict()
              for name, z in val_logits.items()}
    (Path(directory) / "calibration.json").write_text(json.dumps(states))


def test_every_baseline_trains_on_train_and_scores_val(tmp_path):
    write_windows(tmp_path / "train.h5", 300, 0)
    write_windows(tmp_path / "val.h5", 100, 1)
    loop = LoopConfig(epochs=1, batch_size=64, lr=1e-3, windows_per_epoch=128, seed=0)
    cfg = BaselinesConfig(task="clf", horizon_min=5.0, channels=("abp", "ppg"), cnn_loop=loop, device="cpu",
                          weights_dir=str(ROOT / "models/ttm-r2-512-96"),
                          forecast_finetune=ForecastFinetune(enabled=True, windows=128, epochs=1))
    train, val = baselines.load_baseline_splits(tmp_path, cfg)
    stats = {"fitted_on": "train", "channels": list(CHANNELS), "mean": [80.0, 0.0, 0.0], "std": [12.0, 1.0, 1.0]}
    fitted, val_logits, summaries = scorers.fit_scorers(train, val, cfg, stats, torch.device("cpu"))
    assert list(fitted) == list(val_logits) == list(summaries) == list(scorers.REGISTRY)
    assert all(len(z) == len(val) for z in val_logits.values())
    for name in ("map_lr", "trend_lr", "ttm_zeroshot", "ttm_finetuned"):   # low pressure now / forecast → soon
        assert roc_auc_score(val.targets, val_logits[name]) > 0.9, name
    assert summaries["ttm_zeroshot"]["trained"] is False
    assert summaries["ttm_finetuned"]["train_pairs"] > 0 and summaries["ttm_finetuned"]["epochs_run"] == 1
    assert summaries["cnn"]["epochs_run"] == 1 and summaries["map_lr"] == {}
    scorers.save_scorers(tmp_path, fitted)
    write_calibrations(tmp_path, val_logits, val.targets, cfg.horizon_min)
    again, forecasts = scorers.score_saved(tmp_path, tmp_path / "val.h5", 5.0, "cpu", [5, 15])
    assert list(again) == list(scorers.REGISTRY)
    for name in scorers.REGISTRY:   # the fine-tuned weights too: saved and loaded, not the zero-shot ones
        np.testing.assert_array_equal(again[name], val_logits[name])
    assert set(forecasts) == {"ttm_zeroshot", "ttm_finetuned"}
    for per_minute in forecasts.values():
        assert set(per_minute) == {5, 15} and all(f.shape == (len(val),) for f in per_minute.values())
    # the forecast of a MAP drifting down to its current value stays near it
    assert np.median(np.abs(forecasts["ttm_zeroshot"][5] - val.context[:, 0])) < 5
