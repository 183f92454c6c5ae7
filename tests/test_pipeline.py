"""End to end: the real stage commands from dvc.yaml on a tiny generated demo cohort."""
import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, STAGES, run_stage

from lib.core.errors import PipelineError
from lib.core.schema import MODEL, label_column
from lib.data import windows_h5
from lib.data.dataset import checkpoint_split
from lib.eval import report
from lib.eval.calibration import read_val_scores
from lib.eval.run import read_alarm_val_scores
from lib.model.inference import predict
from lib.model.ttm import load_checkpoint


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    return tiny_pipeline, yaml.safe_load((ROOT / "dvc.yaml").read_text())


SCORERS = ["ttm", "map_lr", "context_lr", "trend_lr", "cnn", "ttm_zeroshot"]
HEADLINE = "metrics/evaluate/metrics.json"     # DVC metrics: the headline numbers only
DETAILS = "metrics/evaluate/details.json"      # a plain output: what report.md is built from
EXTERNAL_HEADLINE = "metrics/external/metrics.json"   # the same keys, on the external cohort


def _test_labels(work):
    """Labels and subjects of the test split's windows labelled at the trained horizon."""
    horizon = torch.load(work / "models/model.pt", map_location="cpu", weights_only=False)["horizon_min"]
    with h5py.File(work / "data/windows/test.h5", "r") as f:
        y, subjects = f[label_column(horizon)][:], f["subjectid"][:]
    return y[y >= 0], subjects[y >= 0]


def test_headline_metrics_are_few_and_match_the_test_split(pipeline):
    work, _ = pipeline
    head = json.loads((work / HEADLINE).read_text())
    details = json.loads((work / DETAILS).read_text())
    assert set(head) == {*SCORERS, "map_alarm", "test", "ttm_zeroshot_forecast"}
    assert set(head["ttm_zeroshot_forecast"]) == {f"mae_{h:g}min" for h in (5, 10, 15)}
    alarm = {"event_sensitivity", "false_alarms_per_hour", "lead_time_min"}
    assert set(head["map_alarm"]) == alarm
    for scorer in SCORERS:
        m = head[scorer]
        window = {"auroc", "auroc_backward", *(("auroc_ci_low", "auroc_ci_high", "auprc", "brier", "ece")
                                                if scorer == "ttm" else ())}
        assert set(m) == window | alarm
        if details["window"][scorer].get("na_reason"):   # too few test subjects: null, the reason in details
            assert all(m[k] is None for k in window - {"auroc_backward"})
        elif scorer == "ttm":
            assert m["auroc_ci_low"] <= m["auroc"] <= m["auroc_ci_high"]
        assert {k: m[k] for k in window - {"auroc_backward"}} == \
            {k: details["window"][scorer][k] for k in window - {"auroc_backward"}}
        assert m["auroc_backward"] == details["backward"].get("window", {}).get(scorer, {}).get("auroc")
        assert {k: m[k] for k in alarm} == {k: details["alarms"]["scorers"][scorer]["val_threshold"][k] for k in alarm}
    y, subjects = _test_labels(work)
    assert head["test"] == {"windows": len(y), "positives": int((y == 1).sum()),
                            "subjects": len(np.unique(subjects))}
    assert head["test"]["positives"] > 0 and details["cohort"]["test"]["windows"] == len(y)


def test_details_hold_every_level_gain_and_subgroup(pipeline):
    work, _ = pipeline
    details = json.loads((work / DETAILS).read_text())
    for level in ["window", "voted"]:
        for scorer in SCORERS:
            m = details[level][scorer]
            assert {"auprc", "sensitivity", "specificity", "ppv", "f1", "brier", "ece"} <= set(m)
        for baseline in SCORERS[1:]:
            gain = details[level][f"gain_over_{baseline}"]
            if gain.get("na_reason"):
                assert gain["auroc"] is None and details[level]["ttm"]["auroc"] is None
            else:
                assert gain["auroc"] == pytest.approx(details[level]["ttm"]["auroc"]
                                                      - details[level][baseline]["auroc"])
    # the backward (case-control) analysis: from the windows' event timing columns, or n/a with the reason
    assert "definition" in details["backward"] and ("window" in details["backward"] or details["backward"]["na_reason"])
    assert set(details["val_ranking"]) == set(SCORERS)
    assert set(details["cohort"]) == {"train", "val", "test"}
    n_subjects = details["counts"]["subjects"]
    assert sum(g["subjects"] for k, g in details["subgroups"].items() if k.startswith("sex=")) == n_subjects
    for plot in ["calibration_before", "calibration_after"]:
        assert (work / f"metrics/evaluate/plots/sklearn/{plot}.json").exists()
    for plot in ["roc_ttm", "roc_map_lr", "roc_cnn", "precision_recall", "confusion", "score_histogram"]:
        assert (work / f"metrics/evaluate/plots/custom/{plot}.json").exists()
    # every evaluate plot file named in dvc.yaml's top-level plots exists (`dvc plots show` draws them all)
    named = [path for entry in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"] if isinstance(entry, dict)
             for spec in entry.values() if isinstance(spec, dict) and isinstance(spec.get("y"), dict)
             for path in spec["y"] if path.startswith("metrics/evaluate/")]
    assert named and all((work / path).exists() for path in named), [p for p in named if not (work / p).exists()]


def test_dvc_tracks_only_the_headline_as_metrics(pipeline):
    """`dvc exp show` stays readable: the only DVC metrics are evaluate's headline and the CV summary,
    and the headline is a few numbers per scorer; the details are an output."""
    work, dvc = pipeline
    declared = {next(iter(m)) for st in dvc["stages"].values() for m in st.get("do", st).get("metrics", [])}
    assert declared == {HEADLINE, EXTERNAL_HEADLINE, "metrics/cv.json"}
    assert {DETAILS: {"cache": False}} in dvc["stages"]["evaluate"]["outs"]

    def leaves(d):
        return sum(leaves(v) for v in d.values()) if isinstance(d, dict) else 1

    # the model x 7 (with backward AUROC) and 5 baselines x 2 (AUROC, backward), each scorer's 3 alarm figures and
    # the MAP alarm's, the test counts, the forecast MAE at 3 horizons: at most ~45 columns in `dvc exp show`
    n = leaves(json.loads((work / HEADLINE).read_text()))
    assert n == 7 + 5 * 2 + 7 * 3 + 3 + 3 <= 45


def test_report_is_built_from_the_details_and_the_artifacts(pipeline):
    work, _ = pipeline
    text = (work / "metrics/report.md").read_text()
    details = json.loads((work / DETAILS).read_text())
    for heading in ["## Source of data and participants", "## Outcome", "## Analysis", "## Results",
                    "### Subgroups", "## Limitations", "## What produced this model and report"]:
        assert heading in text
    assert "Simulated data" in text and "Source: `demo`" in text   # the tiny cohort is the demo one
    for scorer in SCORERS:
        assert f"| {report.SCORER_NAMES[scorer]} | {report._fmt(details['window'][scorer], 'auroc')} |" in text
    rule = windows_h5.attrs(work / "data/windows/test.h5")["params"]
    assert report.label_rule(details["horizon_min"], {"params": rule}) in text
    ckpt = torch.load(work / "models/model.pt", map_location="cpu", weights_only=False)
    assert f"best_epoch: {ckpt['summary']['best_epoch']}" in text and "weights_dir: " in text
    assert "clinical_csv" not in text   # params.yaml is no longer dumped
    for image in ["roc.png", "reliability.png"]:
        assert f"evaluate/plots/images/{image}" in text
        assert (work / "metrics/evaluate/plots/images" / image).stat().st_size > 1000


def test_test_windows_overlap_as_evaluate_says(pipeline):
    work, _ = pipeline
    params = yaml.safe_load((work / "params.yaml").read_text())
    with h5py.File(work / "data/windows/test.h5", "r") as f:
        assert f.attrs["stride"] == round(512 * (1 - params["evaluate"]["overlap"]))
        t_end = f["t_end_s"][:][f["caseid"][:] == f["caseid"][0]]
    assert (abs(float(min(t_end[1:] - t_end[:-1])) - 256 / 125) < 1e-3)


def test_windows_files_hold_labelled_subject_disjoint_windows(pipeline):
    work, _ = pipeline
    subjects = {}
    for split in ["train", "val", "test"]:
        with h5py.File(work / f"data/windows/{split}.h5", "r") as f:
            assert f["signals"].shape[1:] == (3, 512) and f["signals"].chunks[0] == 256
            for h in ["5", "10", "15"]:
                assert set(f[f"label_{h}min"][:]) <= {-1, 0, 1}
            assert ((f["label_5min"][:] >= 0) | (f["label_10min"][:] >= 0) | (f["label_15min"][:] >= 0)).all()
            subjects[split] = set(f["subjectid"][:])
    assert not (subjects["train"] & subjects["test"]) and not (subjects["val"] & subjects["test"])
    assert not (subjects["train"] & subjects["val"])


def test_only_evaluate_reads_the_test_split(pipeline):
    _, dvc = pipeline
    for name, stage in dvc["stages"].items():
        if name == "windows":   # writes it
            continue
        stage = stage.get("do", stage)
        deps = [str(d) for d in stage.get("deps", [])]
        reads_test = "test.h5" in stage["cmd"] or any(d == "data/windows" or "test.h5" in d for d in deps)
        assert reads_test == (name == "evaluate"), name


def test_calibration_is_fitted_on_val(pipeline):
    work, _ = pipeline
    calibrator = json.loads((work / "models/calibrator.json").read_text())
    assert calibrator["fitted_on"]["split"] == "val" and calibrator["method"] == "platt"
    assert calibrator["threshold_rule"] == "youden" and 0 < calibrator["threshold"] < 1


def test_calibrate_scores_val_on_the_cached_embeddings_as_the_backbone_would(pipeline):
    """fm mode: the val logits calibrate fitted on, from the embed stage's cache, are the whole model's on the
    val windows bit for bit; the baselines' val logits cover the same windows, every scorer's. evaluate
    chooses the alarms' operating points on these instead of predicting val again."""
    work, _ = pipeline
    rows, scores = read_val_scores(work / "models/val_scores.parquet", "calibrate")
    model, ckpt = load_checkpoint(work / "models/model.pt")
    val = checkpoint_split(model, ckpt, work / "data/windows/val.h5")
    assert val.embeddings is None and ckpt["summary"]["mode"] == "fm"
    np.testing.assert_array_equal(rows, val.indices)
    np.testing.assert_array_equal(scores[MODEL], predict(model, val, "cpu"))
    baseline_rows, baseline_scores = read_val_scores(work / "models/baselines/val_scores.parquet", "baselines")
    np.testing.assert_array_equal(baseline_rows, rows)
    assert set(baseline_scores) == set(json.loads((work / "models/baselines/calibration.json").read_text()))


def test_val_scores_of_other_windows_are_refused_in_one_line(pipeline, tmp_path):
    work, _ = pipeline
    shutil.copytree(work / "models", tmp_path / "models")
    frame = pd.read_parquet(tmp_path / "models/baselines/val_scores.parquet")
    frame.iloc[1:].to_parquet(tmp_path / "models/baselines/val_scores.parquet", index=False)
    with pytest.raises(PipelineError, match="score other val windows"):
        read_alarm_val_scores(tmp_path / "models/val_scores.parquet", tmp_path / "models/baselines")


def test_calibrators_do_not_change_when_the_test_split_changes(pipeline, tmp_path):
    """calibrate and baselines fitted again with a scrambled test split give identical artifacts."""
    work, _ = pipeline
    for name in ["params.yaml"]:
        (tmp_path / name).write_bytes((work / name).read_bytes())
    shutil.copytree(work / "data", tmp_path / "data", symlinks=True)
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.pt").write_bytes((work / "models/model.pt").read_bytes())
    with h5py.File(tmp_path / "data/windows/test.h5", "r+") as f:
        f["signals"][:] = np.random.default_rng(0).normal(size=f["signals"].shape)
        f["label_5min"][:] = 1 - np.clip(f["label_5min"][:], 0, 1)
    for stage in ["calibrate", "baselines"]:
        assert run_stage(stage, tmp_path).returncode == 0
    assert (tmp_path / "models/calibrator.json").read_bytes() == (work / "models/calibrator.json").read_bytes()
    assert (tmp_path / "models/baselines/calibration.json").read_bytes() == \
        (work / "models/baselines/calibration.json").read_bytes()


def test_dvc_yaml_runs_the_stages_in_this_order(pipeline):
    _, dvc = pipeline
    assert list(dvc["stages"]) == [*STAGES, "cv_fold", "cv"]


def test_missing_weights_stop_train_with_one_line(pipeline, tmp_path):
    work, _ = pipeline
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["model"]["weights_dir"] = str(work / "no-weights")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data").symlink_to(work / "data")
    result = run_stage("train", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and str(work / "no-weights") in line   # names what the user set
    assert not (tmp_path / "models/model.pt").exists()


def test_external_validation_scores_the_frozen_model_on_a_disjoint_second_hospital(pipeline):
    """The external stages: a second hospital with no training subject, windows cut by the training rule and
    normalisation, the same headline keys, and a report with internal and external side by side."""
    work, _ = pipeline
    internal = pd.read_csv(work / "data/cohort/clinical.csv")
    external = pd.read_csv(work / "data/external/cohort/clinical.csv")
    assert len(external) and not set(internal["subjectid"]) & set(external["subjectid"])
    assert (external["age"] >= 60).all()
    rule = windows_h5.window_rule(work / "data/windows/test.h5")
    outside = windows_h5.window_rule(work / "data/external/windows/test.h5")
    assert outside == rule   # the test split's rule, stride and the train split's normalisation included
    assert windows_h5.attrs(work / "data/external/windows/test.h5")["stride"] == \
        windows_h5.attrs(work / "data/windows/test.h5")["stride"]
    head, inside = (json.loads((work / path).read_text()) for path in (EXTERNAL_HEADLINE, HEADLINE))
    assert {k: set(v) for k, v in head.items()} == {k: set(v) for k, v in inside.items()}
    text = (work / "metrics/external/report.md").read_text()
    assert text.startswith("# External validation") and "## Internal and external validation, side by side" in text
    assert "| internal test |" in text and "| external |" in text and "external/plots/images" not in text
