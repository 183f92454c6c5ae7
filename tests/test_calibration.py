import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from lib.core.errors import PipelineError
from lib.eval.calibration import (
    Calibration,
    IsotonicCalibrator,
    PlattScaler,
    TemperatureScaler,
    choose_threshold,
    make_calibrator,
    youden_threshold,
)


def overconfident(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(-1, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-true_logits))).astype(int)
    return true_logits, y


def test_temperature_scaling_recovers_a_known_temperature():
    true_logits, y = overconfident()
    assert TemperatureScaler().fit(true_logits * 3, y).temperature == pytest.approx(3, abs=0.2)


def test_platt_scaling_recovers_a_slope_and_a_shift():
    true_logits, y = overconfident()
    platt = PlattScaler().fit(true_logits * 2 + 1.5, y)        # logit = (z - 1.5) / 2
    assert platt.slope == pytest.approx(0.5, abs=0.03) and platt.intercept == pytest.approx(-0.75, abs=0.08)


def test_a_scorer_that_ranks_val_backwards_is_recorded_never_flattened(capsys):
    true_logits, y = overconfident()
    calibration = Calibration.fit(-true_logits, y, "platt", "youden", 0.8, {"split": "val"})
    slope = calibration.calibrator.slope
    assert slope == pytest.approx(-1, abs=0.05)   # kept: calibration inverts the scorer's ranking, openly
    p = calibration.predict_proba(np.array([-1.0, 0.0, 1.0]))
    assert p[0] > p[1] > p[2]
    assert calibration.ranks_backwards and calibration.val_auroc < 0.5
    assert calibration.backwards() == {"ranks_backwards": True, "val_auroc": calibration.val_auroc, "slope": slope}
    assert "ranks val windows backwards" in capsys.readouterr().out
    summary = calibration.summary(-true_logits, y, 15)
    assert summary["ranks_backwards"] and summary["val_auroc"] < 0.5 and summary["slope"] < 0
    assert {"val_ece_mass_before", "val_ece_mass_after"} <= set(summary)
    state = Calibration.from_dict(calibration.to_dict())   # the artifact carries it to evaluate
    assert state.ranks_backwards and state.val_auroc == calibration.val_auroc
    # temperature scaling cannot invert; it flattens, and the record says why
    temperature = Calibration.fit(-true_logits, y, "temperature", "youden", 0.8, {"split": "val"})
    assert temperature.ranks_backwards and "slope" not in temperature.backwards()
    forward = Calibration.fit(true_logits, y, "platt", "youden", 0.8, {"split": "val"})
    assert not forward.ranks_backwards and forward.val_auroc > 0.5


def test_isotonic_matches_sklearn_and_round_trips():
    true_logits, y = overconfident(3000)
    iso = IsotonicCalibrator().fit(true_logits, y)
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(true_logits, y)
    grid = np.linspace(-12, 12, 500)
    np.testing.assert_allclose(iso.predict_proba(grid), reference.predict(grid))
    restored = IsotonicCalibrator(**iso.to_dict())
    np.testing.assert_array_equal(restored.predict_proba(grid), iso.predict_proba(grid))


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_calibration_artifact_round_trip_and_val_ece_improves(method):
    true_logits, y = overconfident()
    logits = true_logits * 3 + 2
    calibration = Calibration.fit(logits, y, method, "youden", 0.8, {"split": "val"})
    restored = Calibration.from_dict(calibration.to_dict())
    np.testing.assert_array_equal(restored.predict_proba(logits), calibration.predict_proba(logits))
    assert restored.threshold == calibration.threshold
    summary = calibration.summary(logits, y, 15)
    # temperature cannot undo the shift (+2), only the spread; platt and isotonic undo both
    assert summary["val_ece_after"] < summary["val_ece_before"] / (1 if method == "temperature" else 3)


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_calibrator_state_depends_only_on_the_data_it_is_fitted_on(method):
    rng = np.random.default_rng(1)
    val_logits = rng.normal(0, 1, 500)
    val_y = (rng.random(500) < 1 / (1 + np.exp(-2 * val_logits))).astype(int)
    # "test" windows of another distribution (shifted, inversely labelled): were any of them to reach
    # the fit, the state would change, as fitting on val + test shows
    test_logits = rng.normal(2, 3, 500)
    test_y = (rng.random(500) < 1 / (1 + np.exp(test_logits))).astype(int)
    first = Calibration.fit(val_logits, val_y, method, "youden", 0.8, {"split": "val"}).to_dict()
    again = Calibration.fit(val_logits.copy(), val_y.copy(), method, "youden", 0.8, {"split": "val"}).to_dict()
    leaked = Calibration.fit(np.r_[val_logits, test_logits], np.r_[val_y, test_y], method, "youden", 0.8,
                             {"split": "val"}).to_dict()
    assert again == first and leaked != first
    with pytest.raises(PipelineError, match="single class"):
        make_calibrator(method).fit(val_logits, np.zeros(500))


def test_the_sensitivity_rule_keeps_its_target_in_the_artifact():
    true_logits, y = overconfident(3000)
    youden = Calibration.fit(true_logits, y, "platt", "youden", 0.8, {}).to_dict()
    assert "target_sensitivity" not in youden   # the default artifact is unchanged
    state = Calibration.fit(true_logits, y, "platt", "sensitivity", 0.9, {}).to_dict()
    restored = Calibration.from_dict(state)
    assert state["target_sensitivity"] == 0.9 and restored.target_sensitivity == 0.9
    assert restored.to_dict() == state


def test_threshold_rules():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.3, 0.7, 0.8, 0.9])
    assert youden_threshold(y, p) == pytest.approx(0.7)
    assert choose_threshold(y, p, "sensitivity", 1.0) == pytest.approx(0.3)    # all 4 positives caught
    assert choose_threshold(y, p, "sensitivity", 0.75) == pytest.approx(0.7)     # 3 of 4 suffice
    with pytest.raises(PipelineError, match="calibrate.threshold_rule='f1'"):
        choose_threshold(y, p, "f1", 0.8)
    with pytest.raises(PipelineError, match="calibrate.method='beta'"):
        make_calibrator("beta")
