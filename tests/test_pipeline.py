"""End to end: the real stage commands from dvc.yaml on a tiny generated demo cohort."""
import json

import h5py
import pytest
import yaml

from conftest import ROOT, STAGES, run_stage


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline):
    return tiny_pipeline, yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_pipeline_produces_real_metrics(pipeline):
    work, _ = pipeline
    metrics = json.loads((work / "metrics/evaluate/metrics.json").read_text())
    assert 0 <= metrics["test/auroc"] <= 1 and metrics["test/windows"] > 0 and metrics["test/positives"] > 0
    assert (work / "metrics/evaluate/plots/sklearn/roc.json").exists()
    windows = json.loads((work / "metrics/windows.json").read_text())
    assert all(windows[s]["horizons"]["5"]["positives"] > 0 for s in ["train", "val", "test"])


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
        mentions = "test.h5" in stage["cmd"] or any("test.h5" in str(d) for d in stage.get("deps", []))
        assert mentions == (name == "evaluate"), name


def test_calibration_is_fitted_on_val(pipeline):
    work, _ = pipeline
    calibrator = json.loads((work / "models/calibrator.json").read_text())
    assert calibrator["fitted_on"]["split"] == "val" and calibrator["temperature"] > 0


def test_dvc_yaml_runs_the_stages_in_this_order(pipeline):
    _, dvc = pipeline
    assert list(dvc["stages"]) == STAGES


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
