"""External validation's own logic: the recalibration on a held-out part of the external cohort, and the
side-by-side report section."""
import json

import numpy as np
import pytest

from lib.core.params import Evaluate
from lib.eval import evaluation, external
from lib.eval import run as run_module
from lib.eval.calibration import Calibration, PlattScaler
from lib.eval.report import Provenance


def _cohort(n_subjects=40, per_subject=60, shift=2.0, seed=0):
    """A scorer that ranks well but whose calibration (fitted elsewhere) overestimates risk by `shift` logits."""
    rng = np.random.default_rng(seed)
    subjects = np.repeat(np.arange(n_subjects), per_subject)
    y = (rng.random(len(subjects)) < 0.15).astype(np.float32)
    z = 2.0 * y + rng.normal(size=len(y)) - 2.0
    ids = evaluation.TestWindows(caseid=subjects + 1000, subjectid=subjects, t_end=np.tile(np.arange(per_subject) * 2.0,
                      n_subjects), window_s=4.096)
    run = run_module.TestPredictions("clf", 5.0, np.arange(len(y)), y, {"ttm": z}, {}, {}, {})
    calibration = Calibration(PlattScaler(1.0, shift), 0.5, "youden", {"split": "val"})
    return run, {"ttm": calibration}, ids


def test_recalibration_is_fitted_on_held_out_subjects_and_scored_on_the_others():
    run, calibrations, ids = _cohort()
    cfg = Evaluate(bootstrap=50, min_subjects=5, min_positive_subjects=2)
    out = run_module.recalibration_report(run, calibrations, ids, cfg, 0.5)
    d = out["definition"]
    assert d["fit_subjects"] == 20 and d["scored_subjects"] == 20
    assert d["fit_windows"] + d["scored_windows"] == len(run.targets) and d["scored_windows"] == 20 * 60
    before, after = out["original"]["ttm"], out["recalibrated"]["ttm"]
    assert before["calibration_in_the_large"] > 0.2            # the shifted calibrator overestimates risk
    assert abs(after["calibration_in_the_large"]) < 0.05       # refitted on other subjects of the same cohort
    assert after["brier"] < before["brier"]
    assert after["auroc"] == pytest.approx(before["auroc"])    # a monotone map leaves the ranking alone
    again = run_module.recalibration_report(run, calibrations, ids, cfg, 0.5)
    assert again["definition"] == d and again["recalibrated"]["ttm"]["brier"] == after["brier"]


def test_recalibration_with_one_class_in_a_part_is_na():
    run, calibrations, ids = _cohort(n_subjects=4, per_subject=5, seed=3)
    run = run._replace(targets=np.zeros_like(run.targets))
    out = run_module.recalibration_report(run, calibrations, ids, Evaluate(bootstrap=20), 0.5)
    assert "na_reason" in out and "recalibrated" not in out


def test_comparison_reads_the_drop_against_the_published_one():
    def details(auroc, low, high):
        window = {"ttm": {"auroc": auroc, "auroc_ci_low": low, "auroc_ci_high": high, "auprc": 0.4, "brier": 0.05,
                          "ece": 0.01, "calibration_in_the_large": 0.0, "calibration_slope": 1.0}}
        cohort = {"subjects": 40, "cases": 40, "windows": 1000, "positives": 100, "prevalence": 0.1, "age_mean": 60.0,
                  "age_sd": 10.0, "female_pct": 50.0, "asa_3plus_pct": 20.0}
        return {"window": window, "cohort": {"test": cohort, "external": cohort}, "horizon_min": 5.0}

    provenance = Provenance(source="demo", window_s=4.096, model={}, training={}, windows={})
    text = "\n".join(external.comparison(details(0.90, 0.85, 0.94), details(0.80, 0.74, 0.84), provenance))
    assert "moves -0.100 from internal to external (published at 5 min: -0.031)" in text and "do not overlap" in text
    assert "0.929 → MOVER 0.898" in text and "| TTM (this model) | 0.900 (0.850–0.940) | 0.800 (0.740–0.840) |" in text


def test_external_source_none_leaves_every_declared_output(tmp_path):
    """external.source: none turns the three stages into no-ops that still write what dvc.yaml declares."""
    import yaml
    from conftest import ROOT, run_stage, tiny_params

    params = tiny_params()
    params["external"]["source"] = "none"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("external_cohort", "external_windows", "external_evaluate"):
        result = run_stage(stage, tmp_path)
        assert result.returncode == 0, f"{stage}: {result.stderr[-2000:]}"
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage in ("external_cohort", "external_windows", "external_evaluate"):
        for entry in (*dvc[stage].get("outs", []), *dvc[stage].get("metrics", []), *dvc[stage].get("plots", [])):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            assert (tmp_path / path).exists(), f"{stage}: {path} missing"
    assert json.loads((tmp_path / "metrics/external/metrics.json").read_text()) == {"source": "none"}
    assert "External validation is off" in (tmp_path / "metrics/external/report.md").read_text()
