import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from lib.eval import metrics


def test_ece_on_known_inputs():
    assert metrics.expected_calibration_error([0, 1], [0.0, 1.0], 10) == 0
    assert metrics.expected_calibration_error([0, 0, 0, 0], [0.25] * 4, 10) == pytest.approx(0.25)
    # two bins: p=0.2 with 50% positives (gap .3), p=0.9 with 100% positives (gap .1)
    assert metrics.expected_calibration_error([0, 1, 1, 1], [0.2, 0.2, 0.9, 0.9], 10) == pytest.approx(0.2)


def test_weighted_ranking_metrics_equal_sklearn_with_sample_weight():
    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.1).astype(int)
    p = np.round(rng.random(3000) * 0.6 + 0.3 * y, 2)   # many ties
    weights = rng.integers(0, 3, (4, 3000)).astype(float)
    auroc, auprc = metrics.ranking_metrics(y, p, weights)
    for i, w in enumerate(weights):
        assert auroc[i] == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)
        assert auprc[i] == pytest.approx(average_precision_score(y, p, sample_weight=w), abs=1e-12)


def test_classification_metrics_on_hand_built_predictions():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.7, 0.9])
    m = metrics.classification_metrics(y, p, 0.5)
    assert m["auroc"] == 1.0 and (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 2, 0)
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(2 / 3)
    assert m["ppv"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(0.8) and m["accuracy"] == 0.8
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))


def _ci_width(n_subjects: int) -> float:
    rng = np.random.default_rng(1)
    subjects = np.repeat(np.arange(n_subjects), 50)
    y = (rng.random(len(subjects)) < 0.3).astype(float)
    p = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, len(y)), 0, 1)
    out = metrics.with_ci(lambda w: metrics.weighted_classification(y, p, 0.5, w), len(y), subjects, 400, 0)
    assert out["auroc_ci_low"] <= out["auroc"] <= out["auroc_ci_high"]
    return out["auroc_ci_high"] - out["auroc_ci_low"]


def test_subject_bootstrap_ci_shrinks_with_more_subjects():
    widths = [_ci_width(n) for n in (10, 40, 160)]
    assert widths[0] > widths[1] > widths[2] > 0


def test_bootstrap_resamples_subjects_not_windows():
    subjects = np.array([7, 7, 7, 9, 9, 3])
    for weights in metrics.subject_bootstrap(subjects, 50, 0):
        assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 3] == weights[:, 4]).all()
        assert (weights[:, [0, 3, 5]].sum(axis=1) == 3).all()   # three subjects drawn per replicate


def test_aami_and_bhs_on_hand_built_errors():
    assert metrics.aami_pass(4.9, 7.9) and metrics.aami_pass(-5.0, 8.0)
    assert not metrics.aami_pass(5.1, 3.0) and not metrics.aami_pass(0.0, 8.1)
    # 60 % within 5, 85 % within 10, 95 % within 15 mmHg: exactly grade A
    errors = np.r_[np.full(60, 4.0), np.full(25, -9.0), np.full(10, 14.0), np.full(5, 30.0)]
    assert metrics.bhs_grade(errors) == "A"
    assert metrics.bhs_grade(np.r_[errors[:59], 6.0, errors[60:]]) == "B"    # 59 % within 5
    assert metrics.bhs_grade(np.full(10, 20.0)) == "D"
    assert metrics.bhs_shares(errors) == {"within_5": 60.0, "within_10": 85.0, "within_15": 95.0}


def test_regression_errors_with_weights():
    errors = np.array([1.0, -3.0, 2.0])
    out = metrics.weighted_errors(errors, np.array([[1, 1, 1], [2, 0, 1]], dtype=float))
    assert out["mae"][0] == pytest.approx(2.0) and out["me"][0] == pytest.approx(0.0)
    assert out["sd"][0] == pytest.approx(np.std(errors, ddof=1))
    assert out["me"][1] == pytest.approx(4 / 3)      # windows 1, 1, 3 → errors 1, 1, 2


def test_soft_voting_averages_the_overlapping_past_windows():
    # case 1: windows of 4 s ending every 2 s (50 % overlap); case 2 starts anew
    scores = [0.2, 0.6, 1.0, 0.0, 0.9]
    cases = [1, 1, 1, 1, 2]
    t_end = [4.0, 6.0, 8.0, 14.0, 6.0]       # 14.0: a gap (windows dropped by quality gates)
    voted = metrics.vote(scores, cases, t_end, 4.0, "soft")
    np.testing.assert_allclose(voted, [0.2, 0.4, 0.8, 0.0, 0.9])


def test_hard_voting_counts_thresholded_votes_in_input_order():
    scores = np.array([0.9, 0.1, 0.8, 0.2])
    cases = np.array([5, 5, 5, 5])
    t_end = np.array([6.0, 2.0, 4.0, 8.0])   # unsorted input
    voted = metrics.vote(scores, cases, t_end, 4.0, "hard", threshold=0.5)
    np.testing.assert_allclose(voted, [1.0, 0.0, 0.5, 0.5])   # t=2: {0}; t=4: {0,1}; t=6: {1,1}; t=8: {1,0}
    np.testing.assert_array_equal(metrics.vote(scores, cases, t_end, 4.0, "none"), scores)


def test_voting_never_uses_a_later_window():
    scores = np.array([0.0, 0.0, 1.0])
    voted = metrics.vote(scores, [1, 1, 1], [2.0, 4.0, 6.0], 4.0, "soft")
    assert voted[1] == 0.0 and voted[2] == 0.5


def test_equal_mass_ece_resolves_small_probabilities():
    # every probability < 0.1: equal-width bins lump them in one bin, where over- and under-prediction cancel
    p = np.r_[np.full(500, 0.01), np.full(500, 0.09)]
    y = np.zeros(1000)
    y[:45], y[500:505] = 1, 1     # observed 0.09 where 0.01 is predicted, 0.01 where 0.09 is
    assert metrics.expected_calibration_error(y, p, 10) == pytest.approx(0.0, abs=1e-12)
    assert metrics.expected_calibration_error(y, p, 10, "mass") == pytest.approx(0.08)


def test_calibration_slope_and_intercept_of_logistic_recalibration():
    rng = np.random.default_rng(0)
    z = rng.normal(-2, 1.5, 40000)
    y = (rng.random(len(z)) < 1 / (1 + np.exp(-z))).astype(float)
    calibrated = metrics.calibration_slope(y, 1 / (1 + np.exp(-z)))
    assert calibrated["calibration_slope"] == pytest.approx(1, abs=0.05)
    assert calibrated["calibration_intercept"] == pytest.approx(0, abs=0.05)
    extreme = metrics.calibration_slope(y, 1 / (1 + np.exp(-2 * z)))   # overconfident: slope 1/2
    assert extreme["calibration_slope"] == pytest.approx(0.5, abs=0.03)
    assert np.isnan(metrics.calibration_slope(np.zeros(5), np.full(5, 0.2))["calibration_slope"])


def test_statistics_say_when_they_cannot_speak():
    subjects, y = np.repeat(np.arange(12), 3), np.zeros(36)
    y[[0, 3, 6]] = 1                                            # 3 subjects with a positive window
    assert metrics.na_reason(subjects, y, 10, 5) == "3 subjects with a positive window (< 5)"
    assert metrics.na_reason(subjects[:6], y[:6], 10, 5) == "2 subjects (< 10)"
    assert metrics.na_reason(subjects, y, 10, 3) is None and metrics.na_reason(subjects, None, 10, 5) is None
    assert metrics.blank({"windows": 3, "auroc": 0.6}, "why", keep=("windows",)) == \
        {"windows": 3, "auroc": None, "na_reason": "why"}


def test_bootstrap_counts_the_replicates_it_drops():
    subjects = np.arange(20)
    y = (subjects == 0).astype(float)                           # one positive subject: often not drawn
    p = np.linspace(0, 1, 20)
    out = metrics.with_ci(lambda w: {"auroc": metrics.ranking_metrics(y, p, w)[0]}, 20, subjects, 200, 0)
    # P(subject 0 not drawn in 20 draws) = (19/20)^20 ~ 0.36
    assert 40 < out["auroc_ci_dropped"] < 100


def test_bootstrap_blocks_are_bounded_by_the_window_count(monkeypatch):
    """Memory of the CIs must not grow with the test set (evaluate hit 2.1 GB at 4x the demo with
    fixed blocks of 100 replicates): each weight matrix holds at most BOOTSTRAP_ELEMENTS entries,
    and all n_boot replicates still come out."""
    monkeypatch.setattr(metrics, "BOOTSTRAP_ELEMENTS", 1000)
    subjects = np.repeat(np.arange(20), 30)   # 600 windows -> blocks of 1 replicate
    blocks = list(metrics.subject_bootstrap(subjects, 7, 0))
    assert all(b.size <= 1000 for b in blocks) and sum(len(b) for b in blocks) == 7
    assert all(b.sum() == 600 for block in blocks for b in block)   # each replicate redraws 20 subjects x 30
