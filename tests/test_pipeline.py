"""End to end: the real stage commands from dvc.yaml on a tiny generated demo cohort."""
import json
import shutil

import h5py
import numpy as np
import pytest
import yaml

from conftest import ROOT, STAGES, run_stage


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    return tiny_pipeline, yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_pipeline_produces_real_metrics(pipeline):
    work, _ = pipeline
    metrics = json.loads((work / "metrics/evaluate/metrics.json").read_text())
    assert metrics["counts"]["windows"] > 0 and metrics["counts"]["positives"] > 0
    for level in ["window", "voted"]:
        for scorer in ["ttm", "map_lr", "context_lr", "cnn"]:
            m = metrics[level][scorer]
            assert 0 <= m["auroc"] <= 1 and m["auroc_ci_low"] <= m["auroc"] <= m["auroc_ci_high"]
            assert {"auprc", "sensitivity", "specificity", "ppv", "f1", "brier", "ece"} <= set(m)
        for baseline in ["map_lr", "context_lr", "cnn"]:
            gain = metrics[level][f"gain_over_{baseline}"]
            assert gain["auroc"] == pytest.approx(metrics[level]["ttm"]["auroc"] - metrics[level][baseline]["auroc"])
    assert set(metrics["cohort"]) == {"train", "val", "test"}
    assert any(key.startswith("sex=") for key in metrics["subgroups"])
    for plot in ["roc_ttm", "roc_map_lr", "roc_cnn", "calibration_before", "calibration_after", "confusion"]:
        assert (work / f"metrics/evaluate/plots/sklearn/{plot}.json").exists()
    assert (work / "metrics/evaluate/plots/custom/score_histogram.json").exists()
    windows = json.loads((work / "metrics/windows.json").read_text())
    assert all(windows[s]["horizons"]["5"]["positives"] > 0 for s in ["train", "val", "test"])


def test_report_is_written_for_a_clinician(pipeline):
    work, _ = pipeline
    report = (work / "metrics/report.md").read_text()
    for heading in ["## Source of data and participants", "## Outcome", "## Analysis", "## Results",
                    "### Subgroups", "## Limitations", "## Parameters that produced this report"]:
        assert heading in report
    assert "Simulated data" in report and "LR on current MAP" in report and "95 % CI" in report
    for image in ["roc.png", "reliability.png"]:
        assert f"evaluate/plots/images/{image}" in report
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
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: model.weights_dir=")
    assert "Traceback" not in result.stderr
