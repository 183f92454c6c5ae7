import numpy as np
import pytest

from lib.calibration import TemperatureScaler, youden_threshold
from lib.errors import PipelineError
from lib.metrics import classification_metrics, expected_calibration_error


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    scaler = TemperatureScaler().fit(true_logits * 3, y)  # overconfident by 3x
    assert abs(scaler.temperature - 3) < 0.2


def test_calibrator_state_depends_only_on_the_data_it_is_fitted_on():
    rng = np.random.default_rng(1)
    val_logits, val_y = rng.normal(0, 1, 500), rng.integers(0, 2, 500)
    first = TemperatureScaler().fit(val_logits, val_y).temperature
    rng.normal(0, 5, 500)  # "test" data changing has no path into fit()
    assert TemperatureScaler().fit(val_logits, val_y).temperature == first
    with pytest.raises(PipelineError, match="single class"):
        TemperatureScaler().fit(val_logits, np.zeros(500))


def test_ece_on_known_inputs():
    assert expected_calibration_error([0, 1], [0.0, 1.0], 10) == 0
    assert expected_calibration_error([0, 0, 0, 0], [0.25] * 4, 10) == pytest.approx(0.25)
    # two bins: p=0.2 with 50% positives (gap .3), p=0.9 with 100% positives (gap .1)
    assert expected_calibration_error([0, 1, 1, 1], [0.2, 0.2, 0.9, 0.9], 10) == pytest.approx(0.2)


def test_threshold_and_classification_metrics():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.7, 0.9])
    assert youden_threshold(y, p) == pytest.approx(0.7)
    m = classification_metrics(y, p, 0.7)
    assert m["auroc"] == 1.0 and m["sensitivity"] == 1.0 and m["specificity"] == 1.0 and m["tp"] == 2
