import json

import numpy as np
import torch

from lib.model import baselines


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
    assert set(summary) == set(calibrations) == set(baselines.BASELINES)
    assert all(c["fitted_on"]["split"] == "val" for c in calibrations.values())
    assert summary["cnn"]["epochs_run"] >= 1 and summary["cnn"]["n_train_windows"] > 0
    for name in ["map_lr.joblib", "context_lr.joblib", "cnn.pt"]:
        assert (work / "models/baselines" / name).stat().st_size > 0
