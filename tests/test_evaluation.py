import numpy as np
import pandas as pd
import pytest

from lib.eval import evaluation


def windows(n_subjects=12, per_subject=40, seed=0):
    rng = np.random.default_rng(seed)
    subjects = np.repeat(np.arange(n_subjects), per_subject)
    ids = evaluation.TestWindows(caseid=subjects + 100, subjectid=subjects,
                                 t_end=np.tile(np.arange(per_subject) * 2.048 + 4.096, n_subjects), window_s=4.096)
    y = (rng.random(len(subjects)) < 0.3).astype(float)
    return y, ids, rng


def test_model_gain_is_paired_and_zero_against_itself():
    y, ids, rng = windows()
    good = np.clip(0.3 + 0.4 * (y - 0.3) + rng.normal(0, 0.15, len(y)), 0, 1)
    weak = np.clip(0.3 + rng.normal(0, 0.15, len(y)), 0, 1)
    boot = evaluation.Bootstrap(n=200, seed=0)
    out = evaluation.classification_report(y, {"ttm": good, "same": good, "weak": weak},
                                           {"ttm": 0.4, "same": 0.4, "weak": 0.4}, ids, boot, 10)
    assert out["gain_over_same"] == {k: 0.0 for k in out["gain_over_same"]}
    gain = out["gain_over_weak"]
    assert gain["auroc"] == pytest.approx(out["ttm"]["auroc"] - out["weak"]["auroc"]) and gain["auroc_ci_low"] > 0


def test_hard_voting_thresholds_at_a_majority():
    y, ids, rng = windows(2, 5)
    scores = {"ttm": rng.random(len(y))}
    voted, thresholds = evaluation.voted(scores, {"ttm": 0.3}, ids, "hard")
    assert thresholds == {"ttm": 0.5} and set(np.unique(voted["ttm"])) <= {0.0, 0.5, 1.0}
    _, soft_thresholds = evaluation.voted(scores, {"ttm": 0.3}, ids, "soft")
    assert soft_thresholds == {"ttm": 0.3}


def test_subgroups_from_the_clinical_table():
    clinical = pd.DataFrame({"caseid": [1, 2, 3, 4], "sex": ["F", "M", "F", None], "age": [30.0, 50.0, 70.0, 65.0],
                             "asa": [1.0, 2.0, 4.0, np.nan]})
    groups = evaluation.subgroups(clinical, np.array([1, 1, 2, 3, 4]), [40, 65])
    assert list(groups["sex"]) == ["F", "F", "M", "F", "unknown"]
    assert list(groups["age"]) == ["<40", "<40", "40-64", ">=65", ">=65"]
    assert list(groups["asa"]) == ["1", "1", "2", "3+", "unknown"]


def test_regression_report_applies_aami_and_bhs():
    _, ids, rng = windows(20, 10)
    targets = rng.normal(80, 10, (len(ids.caseid), 1))
    out = evaluation.regression_report(targets, targets + rng.normal(1, 3, targets.shape), ["map"], ids,
                                       evaluation.Bootstrap(n=100))["map"]
    assert out["aami_pass"] and out["bhs_grade"] == "A" and not out["aami_subjects_ok"]   # 20 < 85 subjects
    assert out["me_ci_low"] < out["me"] < out["me_ci_high"]
