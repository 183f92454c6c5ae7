import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from lib.core.errors import PipelineError
from lib.core.params import Evaluate
from lib.core.schema import REG_TARGETS
from lib.eval import backward, evaluation, metrics, report
from lib.eval.calibration import Calibration
from lib.signal.labels import describe_rule


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


def test_subgroups_and_cohort_of_a_two_column_table_are_unknown():
    clinical = pd.DataFrame({"caseid": [1, 2], "subjectid": [10, 20]})
    groups = evaluation.subgroups(clinical, np.array([1, 2, 2]), [40, 65])
    assert {k: set(v) for k, v in groups.items()} == {"sex": {"unknown"}, "age": {"unknown"}, "asa": {"unknown"}}
    cohort = evaluation.cohort_table({"test": {"caseid": np.array([1, 2]), "subjectid": np.array([10, 20]),
                                               "label_5min": np.array([0, 1])}}, clinical, 5)["test"]
    assert (cohort["cases"], cohort["windows"], cohort["positives"]) == (2, 2, 1)
    assert all(np.isnan(cohort[k]) for k in ("age_mean", "age_sd", "female_pct", "asa_3plus_pct"))


SCORERS = ("ttm", "map_lr", "backwards", "val_backwards")


def scored_split(ids, y, rng):
    """Logits of a model, a weak baseline and two that rank backwards (calibrated below: `backwards` on
    val the right way round, so it ranks backwards on test only; `val_backwards` on val as it is)."""
    signal = 2.5 * (y - 0.3)
    return {"ttm": signal + rng.normal(0, 1, len(y)), "map_lr": 0.5 * signal + rng.normal(0, 1.5, len(y)),
            "backwards": -signal + rng.normal(0, 1, len(y)), "val_backwards": -signal + rng.normal(0, 1, len(y))}


def event_timing(y, rng):
    """The windows' event timing columns: positives end 4-5 min before an onset; negatives are near an
    event (ambiguous), far from one, or in a recording without any; MAP around 80 mmHg."""
    n = len(y)
    near = rng.random(n) < 0.4
    onset = np.where(y == 1, rng.uniform(240, 300, n), np.where(near, rng.uniform(400, 1000, n), np.nan))
    distance = np.where(np.isfinite(onset), onset, np.where(rng.random(n) < 0.5, np.nan, rng.uniform(1200, 3000, n)))
    return {"next_onset_s": onset, "event_distance_s": distance, "map_now": rng.normal(82, 6, n)}


@pytest.fixture(scope="module")
def classifier():
    """evaluate_classifier on synthetic test windows, each scorer calibrated on its own val split."""
    y_val, _, rng = windows(12, 40, seed=1)
    val = scored_split(None, y_val, rng)
    val["backwards"] = -val["backwards"]
    calibrations = {name: Calibration.fit(val[name], y_val, "platt", "youden", 0.8, {"split": "val"})
                    for name in SCORERS}
    y, ids, rng = windows(16, 40, seed=2)
    logits = scored_split(ids, y, rng)
    ids.timing = event_timing(y, rng)
    clinical = pd.DataFrame({"caseid": np.unique(ids.caseid), "subjectid": np.unique(ids.subjectid)})
    cfg = Evaluate(bootstrap=100, ece_bins=10)
    summary, figures = evaluation.evaluate_classifier(y, logits, calibrations, ids, cfg, clinical, horizon_min=5.0)
    yield y, ids, logits, calibrations, cfg, summary, figures
    for fig in figures.images.values():
        plt.close(fig)


def test_evaluate_classifier_scores_every_scorer_as_its_val_fit_chose(classifier):
    y, ids, logits, calibrations, cfg, summary, figures = classifier
    assert summary.task == "clf" and summary.counts == evaluation.counts(y, ids)
    assert set(summary.window) == {*SCORERS, "gain_over_map_lr", "gain_over_backwards",
                                      "gain_over_val_backwards"}
    for name in SCORERS:
        point = metrics.classification_metrics(y, calibrations[name].predict_proba(logits[name]),
                                               calibrations[name].threshold, cfg.ece_bins)
        stats = summary.window[name]
        for key in metrics.CLF_METRICS:
            assert stats[key] == pytest.approx(point[key], abs=1e-12, nan_ok=True)
        for key in ("auroc", "brier", "accuracy"):   # means over subjects (ECE's bootstrap is biased upwards)
            assert stats[f"{key}_ci_low"] <= stats[key] <= stats[f"{key}_ci_high"]
    raw = metrics.classification_metrics(y, 1 / (1 + np.exp(-logits["ttm"])), 0.5, cfg.ece_bins)
    assert summary.ece_before == raw["ece"] and summary.threshold == calibrations["ttm"].threshold
    assert summary.window["ttm"]["auroc"] > 0.8 and summary.window["backwards"]["auroc_ci_high"] < 0.5
    # ranking val backwards is recorded, and the kept negative Platt slope inverts the scorer on test
    assert summary.val_ranking["val_backwards"]["ranks_backwards"]
    assert summary.val_ranking["val_backwards"]["slope"] < 0 < summary.val_ranking["backwards"]["slope"]
    assert not summary.val_ranking["ttm"]["ranks_backwards"] and summary.window["val_backwards"]["auroc"] > 0.8
    assert 0.5 < summary.window["ttm"]["calibration_slope"] < 2   # calibrated on val of the same distribution
    assert summary.window["ttm"]["auroc_ci_dropped"] == 0 and summary.counts.positive_subjects == 16
    assert set(summary.voted) == set(summary.window)
    assert set(summary.subgroups) == {"sex=unknown", "age=unknown", "asa=unknown"}
    assert list(summary.to_dict()) == ["horizon_min", "mode", "task", "counts", "bootstrap", "voting", "overlap",
                                       "threshold", "calibration", "ece_before", "ece_mass_before", "brier_before",
                                       "val_ranking", "window", "voted", "backward", "subgroups", "cohort", "masking"]
    assert set(figures.images) == {"ROC", "Reliability before and after calibration"}
    assert {p.name for p in figures.plots} >= {f"roc_{n}" for n in SCORERS} | {"confusion", "score_histogram"}


def test_no_voting_leaves_the_voted_level_out(classifier):
    y, ids, logits, calibrations, cfg, _, _ = classifier
    clinical = pd.DataFrame({"caseid": [], "subjectid": []})
    summary, figures = evaluation.evaluate_classifier(y, logits, calibrations, ids,
                                                      Evaluate(bootstrap=10, voting="none"), clinical)
    assert summary.voted is None and summary.voting == "none" and "voted" not in summary.to_dict()
    for fig in figures.images.values():
        plt.close(fig)


def test_headline_holds_the_few_numbers_dvc_tracks(classifier):
    *_, summary, _ = classifier
    head = evaluation.headline(summary)
    assert set(head) == {*SCORERS, "test"}
    for name in SCORERS:
        assert set(head[name]) == ({"auroc", "auroc_ci_low", "auroc_ci_high", "auprc", "brier", "ece", "auroc_backward"}
                                   if name == "ttm" else {"auroc", "auroc_backward"})
        assert head[name]["auroc_backward"] == summary.backward["window"][name]["auroc"]
        assert {k: v for k, v in head[name].items() if k != "auroc_backward"} == \
            {k: summary.window[name][k] for k in head[name] if k != "auroc_backward"}
    assert head["test"] == {"subjects": summary.counts.subjects, "windows": summary.counts.windows,
                            "positives": summary.counts.positives}
    assert sum(len(v) for v in head.values()) == 7 + 3 * 2 + 3   # no monitor analyses here: no alarm keys


def test_evaluate_regressor_and_its_headline():
    _, ids, rng = windows(20, 10)
    targets = np.stack([rng.normal(m, 10, len(ids.caseid)) for m in (120, 70, 85)], axis=1)
    estimates = targets + rng.normal(2, 4, targets.shape)
    summary, figures = evaluation.evaluate_regressor(targets, estimates, ids, Evaluate(bootstrap=50))
    plt.close(figures.images["Bland-Altman"])
    assert summary.task == "reg" and set(summary.window) == set(REG_TARGETS) == set(summary.voted)
    assert list(summary.to_dict()) == ["horizon_min", "mode", "task", "counts", "bootstrap", "voting", "overlap",
                                       "window", "voted", "cohort", "masking"]   # no clf-only keys
    errors = estimates[:, 2] - targets[:, 2]
    assert summary.window["map"]["me"] == pytest.approx(errors.mean())
    assert summary.window["map"]["mae"] == pytest.approx(np.abs(errors).mean())
    head = evaluation.headline(summary)
    assert set(head) == {*REG_TARGETS, "test"} and set(head["test"]) == {"subjects", "windows"}
    assert all(len(head[t]) == 9 for t in REG_TARGETS)
    assert [p.name for p in figures.plots] == [f"bland_altman_{t}" for t in REG_TARGETS]
    n_subjects = len(np.unique(ids.subjectid))
    few, figures = evaluation.evaluate_regressor(targets, estimates, ids,
                                                 Evaluate(bootstrap=50, min_subjects=n_subjects + 1))
    plt.close(figures.images["Bland-Altman"])
    for level in ("window", "voted"):   # too few subjects: every error statistic is n/a, with the reason
        stats = getattr(few, level)
        assert all(stats[t]["mae"] is None and "min_subjects" in stats[t]["na_reason"] for t in REG_TARGETS)


def test_report_shows_what_produced_the_model_and_who_ranks_backwards(classifier, tmp_path):
    y, ids, _, calibrations, cfg, summary, _ = classifier
    clinical = pd.DataFrame({"caseid": np.unique(ids.caseid), "subjectid": np.unique(ids.subjectid)})
    cohort = evaluation.cohort_table({"test": {"caseid": ids.caseid, "subjectid": ids.subjectid, "label_5min": y}},
                                     clinical, 5)
    details = dataclasses.replace(summary, horizon_min=5.0, mode="fm", cohort=cohort)
    rule = {"map_threshold": 60.0, "label_min_valid": 0.9, "label_duration_s": 120, "length": 512}
    provenance = report.Provenance(source="local", window_s=4.096,
                                   model={"channels": ["ppg", "ecg"], "context_length": 256, "level_features": False},
                                   training={"mode": "fm", "best_epoch": 3},
                                   windows={"fs": 125, "params": rule, "stride": np.int64(256)},
                                   calibration=calibrations["ttm"].to_dict(), evaluate={"bootstrap": 100})
    report.write_report(tmp_path / "report.md", details, provenance, {})
    text = (tmp_path / "report.md").read_text()
    assert describe_rule(60.0, [5.0], 120, 0.9) in text and "below 60 mmHg throughout the 120 s" in text
    assert "PPG, ECG waveform windows of 4.1 s" in text and "context length 256 samples" in text
    assert "Simulated data" not in text and "Source: `local`" in text
    assert text.count("**Ranks backwards:** backwards:") == 2   # window level and voted
    assert "**Ranks val backwards:** val_backwards: val AUROC" in text and "calibration inverts its ranking" in text
    assert "| scorer | forward AUROC | backward AUROC |" in text and "Backward selection:" in text
    assert "calibration slope" in text and "ECE (equal mass)" in text
    assert "| test | 16 | 16 | 640 |" in text and "unknown (unknown) | unknown | unknown |" in text
    assert "best_epoch: 3" in text and "stride: 256" in text and "map_threshold: 60.0" in text
    assert "clinical_csv" not in text and "horizons_min" not in text   # params.yaml is not dumped


def test_the_cohort_clinical_table_needs_only_caseids(tmp_path):
    (tmp_path / "clinical.csv").write_text("caseid,subjectid,age,sex\n1,10,,\n2,20,70,F\n")
    table = evaluation.read_clinical(tmp_path / "clinical.csv")
    assert list(evaluation.subgroups(table, [1, 2], [40, 65])["sex"]) == ["unknown", "F"]
    (tmp_path / "bad.csv").write_text("subjectid\n1\n")
    with pytest.raises(PipelineError, match="caseid"):
        evaluation.read_clinical(tmp_path / "bad.csv")
    with pytest.raises(PipelineError, match="rerun dvc repro cohort"):
        evaluation.read_clinical(tmp_path / "missing.csv")


def test_backward_selection_keeps_clear_cases_and_clear_controls():
    onset = np.array([300, 240, 239, 301, np.nan, np.nan, 900, np.nan])
    distance = np.array([300, 240, 239, 301, 1200, np.nan, 900, 1199])
    map_now = np.array([70, 80, 80, 80, 75, 90, 90, 90])
    mask, y = backward.backward_selection(onset, distance, map_now, 5, 60, 20, 75)
    # 5 min ahead within 60 s: rows 0, 1 (MAP does not matter); far (>= 20 min or no event) with MAP >= 75: 4, 5
    assert list(np.flatnonzero(mask)) == [0, 1, 4, 5] and list(y) == [1, 1, 0, 0]


def test_backward_is_na_without_timing_and_statistics_are_na_with_too_few_subjects(classifier):
    y, ids, logits, calibrations, _, _, _ = classifier
    plain = evaluation.TestWindows(ids.caseid, ids.subjectid, ids.t_end, ids.window_s)
    clinical = pd.DataFrame({"caseid": np.unique(ids.caseid), "subjectid": np.unique(ids.subjectid),
                             "sex": ["F"] + ["M"] * 15})
    cfg = Evaluate(bootstrap=20, voting="none", min_subjects=10, min_positive_subjects=5)
    summary, figures = evaluation.evaluate_classifier(y, logits, calibrations, plain, cfg, clinical, horizon_min=5.0)
    for fig in figures.images.values():
        plt.close(fig)
    assert summary.backward["na_reason"] == backward.NO_TIMING and "window" not in summary.backward
    assert all(v["auroc_backward"] is None for k, v in evaluation.headline(summary).items() if k != "test")
    one = summary.subgroups["sex=F"]   # one subject: no zero-width CI, a reason instead
    assert one["auroc"] is None and one["auroc_ci_low"] is None and one["na_reason"].startswith("1 subject ")
    assert one["subjects"] == 1 and summary.subgroups["sex=M"]["auroc"] is not None
    few = windows(4, 40)
    summary, figures = evaluation.evaluate_classifier(
        few[0], scored_split(None, few[0], few[2]), calibrations, few[1], cfg,
        pd.DataFrame({"caseid": [], "subjectid": []}))
    for fig in figures.images.values():
        plt.close(fig)
    assert summary.window["ttm"]["auroc"] is None and summary.window["ttm"]["na_reason"] == "4 subjects (< 10)"
    assert evaluation.headline(summary)["ttm"]["auroc"] is None


def test_plot_curves_keep_a_fixed_size_and_the_curve():
    """dvclive's curves are git-tracked: thinned to PLOT_POINTS whatever the test set, they must still
    trace the same curve (ends kept, monotone, the same area)."""
    from sklearn.metrics import auc, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(60_000) < 0.05
    p = 1 / (1 + np.exp(-(rng.normal(size=y.size) + 1.5 * y)))
    roc = evaluation.curve_points("roc", y, p)
    pr = evaluation.curve_points("precision_recall", y, p)
    assert len(roc) <= evaluation.PLOT_POINTS and len(pr) <= evaluation.PLOT_POINTS
    fpr, tpr = np.array([q["fpr"] for q in roc]), np.array([q["tpr"] for q in roc])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1) and (np.diff(fpr) >= 0).all()
    assert auc(fpr, tpr) == pytest.approx(roc_auc_score(y, p), abs=0.002)
    assert roc[0]["threshold"] is None   # sklearn's +inf first threshold: JSON null, not Infinity
    recall = np.array([q["recall"] for q in pr])
    assert recall[0] == 1 and (np.diff(recall) <= 0).all()
