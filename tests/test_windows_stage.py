"""stages/windows.py on a handful of synthetic cases: determinism, train-only normalisation, skips."""
import json
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT
from sklearn.preprocessing import StandardScaler
from test_windowing import write_case

SPLIT_CASES = {"train": [1, 2, 3], "val": [4, 5], "test": [6]}
ARGS = ["cases.csv", "splits.json", "windows", "windows.json", "report"]


def make_cohort(work, broken=()):
    """Cases 1-6 (one subject each; different episodes and lengths); `broken` cases get a corrupt file."""
    rows = []
    for caseid in range(1, 7):
        path = work / "vital" / f"{caseid}.vital"
        path.parent.mkdir(exist_ok=True)
        if caseid in broken:
            path.write_bytes(b"not a vital file")
        else:
            write_case(path, minutes=14 + caseid, episode=(500 + 20 * caseid, 620 + 20 * caseid), seed=caseid)
        rows.append({"caseid": caseid, "subjectid": 100 + caseid, "path": str(path)})
    pd.DataFrame(rows).to_csv(work / "cases.csv", index=False)
    (work / "splits.json").write_text(json.dumps(SPLIT_CASES))


def run_windows(work, workers=2, **overrides):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["windows"].update(workers=workers, **overrides)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, str(ROOT / "stages" / "windows.py"), *ARGS], cwd=work,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    runs = []
    for workers in (1, 2):
        work = tmp_path_factory.mktemp(f"workers{workers}")
        make_cohort(work, broken=(3,))
        result = run_windows(work, workers)
        assert result.returncode == 0, result.stderr[-2000:]
        runs.append(work)
    return runs


def test_outputs_are_byte_identical_for_any_worker_count(two_runs):
    one, two = two_runs
    for name in ["train.h5", "val.h5", "test.h5", "normalisation.json"]:
        assert (one / "windows" / name).read_bytes() == (two / "windows" / name).read_bytes(), name
    assert (one / "windows.json").read_text() == (two / "windows.json").read_text()


def test_normalisation_statistics_come_from_train_only(two_runs):
    work = two_runs[0]
    with h5py.File(work / "windows/train.h5", "r") as f:
        x = f["signals"][:]
    expected = StandardScaler().fit(x.transpose(0, 2, 1).reshape(-1, 3))
    stats = json.loads((work / "windows/normalisation.json").read_text())
    assert stats["fitted_on"] == "train"
    np.testing.assert_allclose(stats["mean"], expected.mean_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["std"], expected.scale_, rtol=1e-5, atol=1e-5)
    for split in ["train", "val", "test"]:   # every split carries the train statistics, not its own
        with h5py.File(work / f"windows/{split}.h5", "r") as f:
            assert json.loads(f.attrs["normalisation"]) == stats


def test_val_and_test_data_never_change_the_statistics(two_runs, tmp_path):
    make_cohort(tmp_path, broken=(3,))
    for caseid in (4, 5, 6):   # different val/test recordings
        write_case(tmp_path / "vital" / f"{caseid}.vital", minutes=30, episode=(100, 200), seed=99)
    assert run_windows(tmp_path).returncode == 0
    assert ((tmp_path / "windows/normalisation.json").read_bytes()
            == (two_runs[0] / "windows/normalisation.json").read_bytes())


def test_metrics_count_skips_rejects_and_labels_per_horizon(two_runs):
    metrics = json.loads((two_runs[0] / "windows.json").read_text())
    assert metrics["train"]["skipped_cases"] == {"unreadable": 1} and metrics["train"]["cases_used"] == 2
    for split in ["train", "val", "test"]:
        assert set(metrics[split]["horizons"]) == {"5", "10", "15"}
        assert metrics[split]["horizons"]["5"]["positives"] > 0
        assert metrics[split]["rejected"]["already_hypotensive"] > 0
    with h5py.File(two_runs[0] / "windows/train.h5", "r") as f:
        assert json.loads(f.attrs["params"])["horizons_min"] == [5, 10, 15]
        assert f["signals"].chunks[0] == 256 and f["signals"].compression is None   # windows_h5.SIGNAL_FILTER


def test_quality_report_is_written(two_runs):
    report = two_runs[0] / "report"
    cases = pd.read_csv(report / "cases.csv")
    assert len(cases) == 6 and cases.loc[cases.caseid == 3, "skipped"].item() == "unreadable"
    assert {"usable_fraction", "prevalence_5min", "ecg_sqi", "ppg_ssqi"} <= set(cases.columns)
    for name in ["index.html", "usable_fraction.png", "examples.png"]:
        assert (report / name).stat().st_size > 1000


def test_an_empty_split_stops_the_stage_with_one_line(tmp_path):
    make_cohort(tmp_path, broken=(6,))
    result = run_windows(tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: split test: no usable windows")
    assert not (tmp_path / "windows").exists()


@pytest.mark.parametrize("override, message", [
    ({"length": 1024}, "windows.length=1024"),
    ({"horizons_min": [5, 0]}, "windows.horizons_min"),
    ({"ppg_band_hz": [0.4, 90]}, "windows.ppg_band_hz"),
])
def test_invalid_window_params_give_one_line(tmp_path, override, message):
    make_cohort(tmp_path)
    result = run_windows(tmp_path, **override)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith(f"error: params.yaml: {message}")
