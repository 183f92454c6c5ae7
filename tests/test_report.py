"""report.md reads its own numbers: the paired gains in words, the calibration slope interpreted, the
title from the training mode, the limitations from the data source and the sizes, bin counts on the
reliability figure."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from lib.eval import evaluation, report


def gain(auroc=(0.01, 0.03), auprc=(-0.04, -0.01), brier=(-0.01, 0.02)) -> dict:
    """A gain_over_<scorer> entry with these CIs (point estimates at their middles)."""
    out = {}
    for key, (low, high) in {"auroc": auroc, "auprc": auprc, "brier": brier}.items():
        out.update({key: (low + high) / 2, f"{key}_ci_low": low, f"{key}_ci_high": high})
    return out


@pytest.mark.parametrize("low, high, lower_is_better, word", [
    (0.01, 0.03, False, "better"),
    (-0.04, -0.01, False, "worse"),
    (-0.01, 0.02, False, "not distinguishable"),
    (0.0, 0.02, False, "not distinguishable"),     # a CI that touches 0 does not exclude it
    (0.01, 0.03, True, "worse"),                   # Brier as model minus scorer: lower is better
    (-0.04, -0.01, True, "better"),
    (-0.01, 0.02, True, "not distinguishable"),
    (None, 0.02, False, "n/a"),
    (float("nan"), float("nan"), False, "n/a"),
])
def test_verdict_reads_the_ci_of_a_paired_difference(low, high, lower_is_better, word):
    assert report.verdict(low, high, lower_is_better) == word


def test_gain_verdicts_read_brier_as_stored_improvement():
    """details.json's Brier gain is the scorer's minus the model's: positive is already favourable."""
    level = {"ttm": {"auroc": 0.9}, "map_lr": {"auroc": 0.9},
             "gain_over_map_lr": gain(brier=(0.01, 0.03)), "gain_over_cnn": gain((-0.01, 0.02), (-0.01, 0.02),
                                                                               (-0.03, -0.01))}
    assert report.gain_verdicts(level) == {
        "map_lr": {"auroc": "better", "auprc": "worse", "brier": "better"},
        "cnn": {"auroc": "not distinguishable", "auprc": "not distinguishable", "brier": "worse"}}
    sentence = report.gain_summary(level)
    assert "**better** than LR on current MAP (AUROC, Brier)" in sentence
    assert "**worse** than LR on current MAP (AUPRC) and 1-D CNN on raw windows (Brier)" in sentence
    assert "2 of the 6 scorer-metric comparisons are not distinguishable" in sentence
    table = "\n".join(report._gain_table(level))
    assert "0.020 (0.010–0.030): better" in table and "(-0.040–-0.010): worse" in table
    assert report.gain_summary({"ttm": {}}) == ""


def test_gain_summary_says_when_nothing_is_better():
    sentence = report.gain_summary({"gain_over_map_lr": gain((-0.01, 0.02), (-0.01, 0.02), (-0.01, 0.02))})
    assert sentence.startswith("the TTM is better than no scorer on any metric; worse than no scorer")
    assert "3 of the 3" in sentence


def test_calibration_slope_is_read_in_words():
    extreme = report.calibration_reading(0.5912, -0.9208)   # the shipped demo run's
    assert "slope 0.59 < 1: predictions too extreme" in extreme and "overconfident" in extreme
    # the recalibration line crosses the diagonal at expit(-0.9208 / 0.4088) = 9.5 %
    assert "above 9.5 % are overestimated and those below underestimated" in extreme
    assert "a predicted 50 % goes with an observed 28 %" in extreme
    moderate = report.calibration_reading(1.6, 0.3)
    assert "slope 1.60 > 1: predictions too moderate" in moderate and "are underestimated" in moderate
    assert "risk overestimated throughout" in report.calibration_reading(1.02, -0.5)
    assert "risk underestimated throughout" in report.calibration_reading(0.97, 0.4)
    assert "neither over- nor underestimated" in report.calibration_reading(1.0, 0.02)
    assert "ranks backwards" in report.calibration_reading(-0.4, 0.1)
    assert report.calibration_reading(float("nan"), float("nan")).startswith("n/a")
    assert [report.slope_word(s) for s in (0.5, 0.95, 1.3, -1.0, None)] == \
        ["too extreme", "about right", "too moderate", "backwards", "n/a"]


def test_title_follows_the_training_mode():
    fm = {"unfreeze_last_n_blocks": 0, "lora": None, "hidden_dims": (256, 128)}
    assert report.model_title("fm", fm) == "TTM, frozen backbone + linear head"
    assert report.model_title("ft", {**fm, "unfreeze_last_n_blocks": 2}) == \
        "TTM, fine-tuned (last 2 mixer blocks unfrozen) + MLP head (gelu)"
    assert report.model_title("ft", {**fm, "lora": {"r": 8, "alpha": 16}}) == \
        "TTM, fine-tuned (LoRA adapters of rank 8) + MLP head (gelu)"
    assert report.model_title("?", {**fm, "unfreeze_last_n_blocks": 1}) == \
        "TTM, fine-tuned (last 1 mixer block unfrozen) + MLP head (gelu)"
    assert report.model_title("?", fm) == "TTM, frozen backbone + linear head"
    # head.type is independent of the mode: the config's head_type decides
    assert report.model_title("fm", {**fm, "head_type": "mlp", "activation": "relu"}) == \
        "TTM, frozen backbone + MLP head (relu)"
    assert report.model_title("ft", {**fm, "lora": {"r": 8}, "head_type": "linear"}) == \
        "TTM, fine-tuned (LoRA adapters of rank 8) + linear head"


def details(subjects=42, positive_subjects=18, train_subjects=48) -> evaluation.Details:
    counts = evaluation.Counts(windows=39865, positives=2184, cases=43, subjects=subjects,
                               positive_subjects=positive_subjects)
    cohort = {"train": {"cases": 50, "subjects": train_subjects, "positives": 1045},
              "val": {"cases": 20, "subjects": 20, "positives": 468}}
    return evaluation.Details(task="clf", counts=counts, bootstrap=1000, voting="soft", overlap=0.5,
                              window={"ttm": {"auroc": 0.89, "auroc_ci_low": 0.832, "auroc_ci_high": 0.937}},
                              mode="fm", cohort=cohort)


def test_limitations_come_from_the_source_and_the_sizes():
    demo = "\n".join(report.limitations("demo", details()))
    assert "Simulated recordings" in demo and "not how the model performs on patients" in demo
    assert "42 subjects (43 cases), 18 of them with a hypotension window, 2,184 positive of 39,865" in demo
    assert "CI spans 0.105, 0.832–0.937" in demo
    assert "50 train cases (48 subjects" in demo and "20 val cases (20 subjects)" in demo and "splits.fasttrack" in demo
    assert "Seoul National University Hospital" in report.limitations("vitaldb", details())[0]
    local = report.limitations("local", details(subjects=500, positive_subjects=200, train_subjects=2000))
    assert local == ["- One local cohort: no external validation."]
    assert "unknown" in report.limitations("unknown", details())[0]


def test_reliability_figure_counts_the_windows_per_bin():
    rng = np.random.default_rng(0)
    p = rng.beta(1, 8, 3000)
    y = (rng.random(3000) < p).astype(float)
    predicted, observed, windows = report.reliability_bins(y, p, 10)
    want_observed, want_predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(predicted, want_predicted)
    np.testing.assert_allclose(observed, want_observed)
    assert windows.sum() == 3000 and len(windows) == 10 and (windows > 0).sum() == len(predicted)
    fig = report.reliability_figure(y, np.clip(p * 2, 0, 1), p, 10)
    try:
        curves, counts = fig.axes
        assert counts.get_ylabel() == "windows per bin" and counts.get_yscale() == "log"
        labels = {t.get_text() for t in curves.texts}
        assert {f"{n:,}" for n in windows[windows > 0]} <= labels
    finally:
        plt.close(fig)
