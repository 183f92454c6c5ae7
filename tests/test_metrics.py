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
    table = metrics.ClassifierTable(y, p, 0.5, metrics.Subjects(subjects))
    out = metrics.with_ci(table.metrics, n_subjects, 400, 0, width=table.width)
    assert out["auroc_ci_low"] <= out["auroc"] <= out["auroc_ci_high"]
    return out["auroc_ci_high"] - out["auroc_ci_low"]


def test_subject_bootstrap_ci_shrinks_with_more_subjects():
    widths = [_ci_width(n) for n in (10, 40, 160)]
    assert widths[0] > widths[1] > widths[2] > 0


def test_bootstrap_draws_whole_subjects_the_same_in_any_block_size():
    blocks = list(metrics.subject_bootstrap(3, 50, 0))
    assert all((block.sum(axis=1) == 3).all() for block in blocks)   # three subjects drawn per replicate
    small = np.concatenate(list(metrics.subject_bootstrap(3, 50, 0, width=metrics.BOOTSTRAP_ELEMENTS // 7)))
    np.testing.assert_array_equal(np.concatenate(blocks), small)     # blocks of 7: the same replicates


def _window_weighted(y, p, threshold, n_bins, weights):
    """The definition the tables must meet: every window weighted by its subject's count."""
    predicted = (p >= threshold).astype(float)
    tp, fp = weights @ (y * predicted), weights @ ((1 - y) * predicted)
    fn, tn = weights @ (y * (1 - predicted)), weights @ ((1 - y) * (1 - predicted))
    total = weights.sum(axis=1)
    gaps = {}
    for strategy in ("width", "mass"):
        bins = metrics.calibration_bins(p, n_bins, strategy)
        gaps[strategy] = sum(np.abs(weights[:, bins == b] @ (y - p)[bins == b]) for b in np.unique(bins))
    auroc, auprc = metrics.ranking_metrics(y, p, weights)
    return {"auroc": auroc, "auprc": auprc, "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp), "brier": weights @ (p - y) ** 2 / total, "ece": gaps["width"] / total,
            "ece_mass": gaps["mass"] / total}


def _cohort(n_subjects=30, per_subject=200, seed=3):
    rng = np.random.default_rng(seed)
    subjects = rng.permutation(np.repeat(np.arange(n_subjects) * 7 + 100, per_subject))   # unsorted ids
    risk = rng.normal(0, 1, n_subjects)[(subjects - 100) // 7]
    y = (rng.random(len(subjects)) < 1 / (1 + np.exp(2.5 - risk))).astype(float)
    p = np.clip(0.15 + 0.25 * y + 0.1 * risk + rng.normal(0, 0.15, len(y)), 0, 1)
    return subjects, y, np.round(p, 3)   # rounded: ties across subjects


def test_subject_tables_give_the_window_weighted_replicates():
    subjects, y, p = _cohort()
    who = metrics.Subjects(subjects)
    table = metrics.ClassifierTable(y, p, 0.4, who, 10)
    assert table.ranking.exact
    counts = next(metrics.subject_bootstrap(len(who), 200, 0))
    mine, definition = table.metrics(counts), _window_weighted(y, p, 0.4, 10, counts[:, who.row])
    for key in ("auroc", "auprc", "sensitivity", "specificity", "ppv"):
        np.testing.assert_array_equal(mine[key], definition[key], err_msg=key)   # exact: the same bits
    for key in ("brier", "ece", "ece_mass"):
        np.testing.assert_allclose(mine[key], definition[key], rtol=1e-12, atol=1e-15, err_msg=key)
    point = table.metrics(None)
    assert point == metrics.ClassifierTable(y, p, 0.4, who, 10).point
    assert {k: float(v[0]) for k, v in point.items()} == metrics.classification_metrics(y, p, 0.4, 10)


def test_score_grid_moves_ranking_replicates_by_less_than_1e3(monkeypatch):
    subjects, y, _ = _cohort(per_subject=400)
    p = np.clip(0.2 + 0.2 * y + np.random.default_rng(5).normal(0, 0.2, len(y)), 0, 1)   # all distinct
    who = metrics.Subjects(subjects)
    monkeypatch.setattr(metrics, "GRID_CELLS", 10**6)
    exact = metrics.RankingTable(y, p, who)
    monkeypatch.setattr(metrics, "GRID_ELEMENTS", 30 * 1600)   # ~1,100 cells for 12,000 windows
    monkeypatch.setattr(metrics, "MIN_CELLS", 10)
    grid = metrics.RankingTable(y, p, who)
    assert exact.exact and not grid.exact and grid.n_cells <= 1600 and 8 * grid.n_cells < exact.n_cells
    counts = next(metrics.subject_bootstrap(len(who), 300, 0))
    for a, b in zip(exact.metrics(counts), grid.metrics(counts)):   # AUROC, average precision
        assert np.abs(a - b).max() < 1e-3
        assert np.abs(np.percentile(a, [2.5, 97.5]) - np.percentile(b, [2.5, 97.5])).max() < 1e-3
    assert grid.metrics(None) == exact.metrics(None)   # point estimates stay exact


def test_auroc_within_bands_counts_only_same_band_pairs():
    rng = np.random.default_rng(2)
    subjects, y = np.repeat(np.arange(12), 25), (rng.random(300) < 0.3).astype(float)
    band, score = rng.integers(0, 4, 300), np.round(rng.random(300) + 0.3 * y, 1)
    table = metrics.RankingTable(y, score, metrics.Subjects(subjects), band)
    counts = next(metrics.subject_bootstrap(12, 5, 1))
    w = counts[:, metrics.Subjects(subjects).row]
    same = (band[:, None] == band[None, :]) & (y[:, None] == 1) & (y[None, :] == 0)
    win = np.where(score[:, None] > score[None, :], 1.0, np.where(score[:, None] == score[None, :], 0.5, 0.0))
    for row, weights in zip(table.metrics(counts)[0], w):
        pair_weight = np.outer(weights, weights) * same
        assert row == pytest.approx((pair_weight * win).sum() / pair_weight.sum(), abs=1e-12)


def test_error_table_equals_window_weighted_errors():
    rng = np.random.default_rng(4)
    subjects, errors = rng.integers(0, 15, 500), rng.normal(2, 6, 500)
    who = metrics.Subjects(subjects)
    table = metrics.ErrorTable(errors, who)
    counts = next(metrics.subject_bootstrap(len(who), 50, 0))
    definition = metrics.weighted_errors(errors, counts[:, who.row])
    for key, value in table.metrics(counts).items():
        np.testing.assert_allclose(value, definition[key], rtol=1e-10, err_msg=key)


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
    table = metrics.RankingTable(y, p, metrics.Subjects(subjects))
    out = metrics.with_ci(lambda c: {"auroc": table.metrics(c)[0]}, 20, 200, 0, width=table.n_cells)
    # P(subject 0 not drawn in 20 draws) = (19/20)^20 ~ 0.36
    assert 40 < out["auroc_ci_dropped"] < 100


def test_bootstrap_blocks_are_bounded_by_the_table_width(monkeypatch):
    """Memory of the CIs must not grow with the test set: each block of replicates times the widest
    table holds at most BOOTSTRAP_ELEMENTS entries, and all n_boot replicates still come out."""
    monkeypatch.setattr(metrics, "BOOTSTRAP_ELEMENTS", 1000)
    blocks = list(metrics.subject_bootstrap(20, 7, 0, width=600))   # blocks of 1 replicate
    assert all(len(b) == 1 for b in blocks) and sum(len(b) for b in blocks) == 7
