"""`ttm-ioh score` and lib/score.py on the tiny pipeline's trained workspace: a test recording scored alone
gives evaluate's calibrated probabilities; bad recordings are one line each and the others are still scored."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import vitaldb

from lib import cli
from lib.data import windows_h5
from lib.data.vital_io import write_vital
from lib.eval.calibration import Calibration, read_calibrations
from lib.eval.run import predict_test
from lib.score import ALARM_TRACK, RISK_TRACK, load_bundle, score_recording


@pytest.fixture(scope="module")
def work(tiny_pipeline):
    return tiny_pipeline


@pytest.fixture(scope="module")
def bundle(work):
    return load_bundle(work / "models")


def _test_recordings(work):
    cases = pd.read_csv(work / "data/cohort/cases.csv")
    test_ids = np.unique(windows_h5.read_columns(work / "data/windows/test.h5", ["caseid"])["caseid"])
    return {c: str(work / p) for c, p in cases.set_index("caseid").loc[test_ids, "path"].items()}


def test_scoring_a_test_recording_reproduces_evaluates_probabilities(work, bundle):
    """Every window evaluate scores in a test case is scored alike by `score_recording` on the raw file
    (same windows, same probabilities to 1e-6, for the model and each baseline)."""
    run = predict_test(work / "models/model.pt", work / "models/baselines", work / "data/windows/test.h5", "cpu")
    calibrations = {"ttm": Calibration.load(work / "models/calibrator.json"),
                    **read_calibrations(work / "models/baselines/calibration.json")}
    expected = {name: calibrations[name].predict_proba(z) for name, z in run.predictions.items()}
    columns = windows_h5.read_columns(work / "data/windows/test.h5", ["caseid", "t_end_s"])
    stride = int(windows_h5.attrs(work / "data/windows/test.h5")["stride"])
    at_test_stride, checked = load_bundle(work / "models", stride=stride), 0
    for caseid, path in _test_recordings(work).items():
        rows = run.indices[columns["caseid"][run.indices] == caseid]
        if not len(rows):
            continue
        scores = score_recording(path, at_test_stride)
        frame = scores.frame.set_index("time_s")
        t = columns["t_end_s"][rows].astype(np.float64)
        assert np.isin(t, frame.index).all(), f"case {caseid}: evaluate's windows missing from the scored ones"
        positions = np.searchsorted(run.indices, rows)
        for name, p in expected.items():
            np.testing.assert_allclose(frame.loc[t, f"risk_{name}"].to_numpy(), p[positions], atol=1e-6,
                                       err_msg=f"case {caseid}, scorer {name}")
        y = frame.loc[t, f"ioh_within_{run.horizon_min:g}min"].to_numpy()
        np.testing.assert_array_equal(y, run.targets[positions])
        assert len(frame) >= len(rows)   # unlabelled windows are scored too
        checked += 1
    assert checked == len(np.unique(columns["caseid"][run.indices])) >= 1   # every test case with scored windows


def test_score_cli_writes_csv_png_and_a_vital_track_and_reports_bad_files(work, tmp_path, capsys):
    good = next(iter(_test_recordings(work).values()))
    truncated = tmp_path / "truncated.vital"
    truncated.write_bytes(Path(good).read_bytes()[:5000])
    corrupt = tmp_path / "corrupt.vital"
    corrupt.write_bytes(b"not a vital file at all" * 100)
    out, vital_out = tmp_path / "scores", tmp_path / "scored"
    status = cli.main(["score", str(truncated), good, str(corrupt), "--models", str(work / "models"),
                       "--out", str(out), "--write-vital", str(vital_out)])
    err = capsys.readouterr().err
    assert status == 1
    assert sum("truncated.vital" in line for line in err.splitlines()) == 1
    assert sum("corrupt.vital" in line for line in err.splitlines()) == 1
    assert "2 of 3 recordings could not be scored" in err
    stem = good.rsplit("/", 1)[-1].removesuffix(".vital")
    frame = pd.read_csv(out / f"{stem}.csv")
    assert {"time_s", "map_mmhg", "masked", "risk_ttm", "alarm_ttm", "risk_map_lr", "alarm_map_lr"} <= set(frame)
    assert frame["risk_ttm"].between(0, 1).all() and frame["time_s"].is_monotonic_increasing
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    vf = vitaldb.VitalFile(str(vital_out / f"{stem}.vital"))
    assert {RISK_TRACK, ALARM_TRACK} <= set(vf.get_track_names())
    risk = vf.to_numpy([RISK_TRACK], 1.0)[:, 0]
    assert np.nanmax(risk) <= 100 and np.isfinite(risk).sum() > 0


def test_a_recording_without_ppg_is_scored_by_the_scorers_that_can(work, bundle, tmp_path):
    good = next(iter(_test_recordings(work).values()))
    vf = vitaldb.VitalFile(good)
    srate = vf.trks["SNUADC/ART"].srate
    waves = {name: vf.to_numpy([name], 1 / srate)[:, 0] for name in ("SNUADC/ART", "SNUADC/ECG_II")}
    no_ppg = tmp_path / "no_ppg.vital"
    write_vital(no_ppg, waves, srate, vf.dtstart, {})
    scores = score_recording(no_ppg, bundle)
    assert scores.absent == ["ppg"]
    assert "ttm" in scores.not_scored and "map_lr" not in scores.not_scored
    assert scores.frame["risk_ttm"].isna().all() and scores.frame["risk_map_lr"].notna().all()
    no_abp = tmp_path / "no_abp.vital"
    write_vital(no_abp, {"SNUADC/ECG_II": waves["SNUADC/ECG_II"]}, srate, vf.dtstart, {})
    with pytest.raises(Exception, match="abp track is missing"):
        score_recording(no_abp, bundle)


def test_a_checkpoint_without_its_windowing_rule_is_refused(work, tmp_path):
    import torch
    models = tmp_path / "models"
    shutil.copytree(work / "models", models)
    ckpt = torch.load(models / "model.pt", map_location="cpu", weights_only=False)
    del ckpt["windows"]
    torch.save(ckpt, models / "model.pt")
    with pytest.raises(Exception, match="does not record its windowing rule"):
        load_bundle(models)



def test_a_stride_off_the_window_grid_is_refused(work):
    from lib.data.recording_windows import read_rule

    assert read_rule(work / "models", 128).spec.stride == 128 and read_rule(work / "models", 1024).spec.stride == 1024
    with pytest.raises(Exception, match="--stride 100: must divide the window length"):
        read_rule(work / "models", 100)
