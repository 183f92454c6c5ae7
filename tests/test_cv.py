import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import ROOT

from lib.core.errors import PipelineError
from lib.data.splits import fold_of_each_window


def test_folds_keep_each_subject_whole_and_are_stratified():
    rng = np.random.default_rng(0)
    subjects = np.repeat(np.arange(30), rng.integers(20, 60, 30))
    y = (rng.random(len(subjects)) < np.repeat(rng.random(30) * 0.4, np.bincount(subjects))).astype(int)
    folds = fold_of_each_window(y, subjects, 5, 7)
    for s in np.unique(subjects):
        assert len(np.unique(folds[subjects == s])) == 1
    assert set(folds) == set(range(5))
    rates = [y[folds == k].mean() for k in range(5)]
    assert max(rates) - min(rates) < 0.15
    np.testing.assert_array_equal(folds, fold_of_each_window(y, subjects, 5, 7))
    with pytest.raises(PipelineError, match="cv.n_folds=40"):
        fold_of_each_window(y, subjects, 40, 7)


def run(cmd, cwd):
    return subprocess.run([sys.executable, *cmd], cwd=cwd, capture_output=True, text=True)


def test_cross_validation_stages_report_mean_and_sd(tiny_pipeline, tmp_path):
    params = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())
    params["cv"].update(enabled=True, n_folds=3, folds=[0, 1, 2])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data").symlink_to(tiny_pipeline / "data")
    for k in range(3):
        done = run([str(ROOT / "stages/cv_fold.py"), str(k), "data/windows", "data/embeddings",
                    f"metrics/cv/fold_{k}.json"], tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    assert run([str(ROOT / "stages/cv.py"), "metrics/cv", "metrics/cv.json"], tmp_path).returncode == 0
    folds = [json.loads((tmp_path / f"metrics/cv/fold_{k}.json").read_text()) for k in range(3)]
    assert [f["inner_val_fold"] for f in folds] == [1, 2, 0]
    # fold 0: trains on fold 2's subjects, early-stops/calibrates on fold 1's, scores fold 0's
    n_subjects = sum(f["held_out_subjects"] for f in folds)
    assert folds[0]["train_subjects"] + folds[0]["held_out_subjects"] + folds[1]["held_out_subjects"] == n_subjects
    summary = json.loads((tmp_path / "metrics/cv.json").read_text())
    assert summary["enabled"] and summary["n_folds"] == 3
    assert summary["auroc"]["mean"] == pytest.approx(np.mean([f["auroc"] for f in folds]))
    assert summary["auroc"]["sd"] == pytest.approx(np.std([f["auroc"] for f in folds], ddof=1))
    # a DVC metrics file, a column per number in `dvc exp show`: the headline metrics' mean and SD only
    assert set(summary) == {"enabled", "n_folds", "auroc", "auprc", "brier", "ece"}
    assert all(set(summary[k]) == {"mean", "sd"} for k in ["auroc", "auprc", "brier", "ece"])

    params["cv"].update(enabled=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert run([str(ROOT / "stages/cv_fold.py"), "0", "data/windows", "data/embeddings", "off.json"],
               tmp_path).returncode == 0
    assert json.loads((tmp_path / "off.json").read_text()) == {"enabled": False, "fold": 0}
    params["cv"].update(folds=[0, 1])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad = run([str(ROOT / "stages/cv_fold.py"), "0", "data/windows", "data/embeddings", "x.json"], tmp_path)
    assert bad.returncode == 2 and "cv.folds=[0, 1]" in bad.stderr.strip().splitlines()[-1]
