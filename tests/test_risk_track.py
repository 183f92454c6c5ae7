"""`write_risk_tracks`: a scored copy of a `.vital` recording with the risk and alarm tracks added."""
import numpy as np
import pytest
import vitaldb

from lib.core.errors import PipelineError
from lib.data import vital_io

DTSTART = 4102444800.0
SRATE = 100.0
WAVES = ("SNUADC/ART", "SNUADC/PLETH")
ALIASES = {"abp": ["SNUADC/ART"], "ppg": ["SNUADC/PLETH"], "map_numeric": ["Solar8000/ART_MBP"]}
TIMES = np.array([10.0, 20.5, 30.0, 40.25])
RISK = np.array([12.5, np.nan, 80.3, 99.9])
ALARM = np.array([np.nan, 1.0, np.nan, np.nan])


def write_recording(path):
    """A 60 s recording: two wave tracks and a monitor's numeric MAP track."""
    waves = {name: (np.sin(np.arange(6000) / 10) + i).astype(np.float32) for i, name in enumerate(WAVES)}
    monitor_map = (np.arange(0.0, 60.0, 2.0), np.linspace(70, 90, 30))
    vital_io.write_vital(path, waves, SRATE, DTSTART, {"SNUADC/ART": "mmHg"},
                         numerics={"Solar8000/ART_MBP": monitor_map})
    return waves, monitor_map


def numeric_track(path, name):
    """(times_s from the file's start, values) of a numeric track as vitaldb reads it back."""
    vf = vitaldb.VitalFile(str(path))
    track = vf.trks[name]
    assert track.type == vital_io.NUMERIC_TYPE
    times = np.array([rec["dt"] for rec in track.recs]) - vf.dtstart
    return times, np.array([rec["val"] for rec in track.recs]), track


def test_added_tracks_hold_the_finite_values_at_their_times(tmp_path):
    write_recording(tmp_path / "1.vital")
    vital_io.write_risk_tracks(tmp_path / "1.vital", tmp_path / "scored.vital", TIMES,
                               {"TTM/IOH_RISK": RISK, "TTM/IOH_ALARM": ALARM})
    times, values, track = numeric_track(tmp_path / "scored.vital", "TTM/IOH_RISK")
    finite = np.isfinite(RISK)
    np.testing.assert_allclose(times, TIMES[finite], atol=1e-3)
    np.testing.assert_array_equal(values, RISK[finite].astype(np.float32))
    assert (track.unit, track.mindisp, track.maxdisp) == ("%", 0.0, 100.0)
    times, values, _ = numeric_track(tmp_path / "scored.vital", "TTM/IOH_ALARM")
    np.testing.assert_allclose(times, [20.5], atol=1e-3)
    np.testing.assert_array_equal(values, [1.0])


def test_the_recordings_own_tracks_are_kept_on_the_same_time_base(tmp_path):
    waves, (map_times, map_values) = write_recording(tmp_path / "1.vital")
    vital_io.write_risk_tracks(tmp_path / "1.vital", tmp_path / "scored.vital", TIMES, {"TTM/IOH_RISK": RISK})
    channels, numerics = vital_io.read_recording(tmp_path / "scored.vital", ALIASES)
    for channel, name in zip(("abp", "ppg"), WAVES):
        samples, srate = channels[channel]
        assert srate == SRATE
        np.testing.assert_array_equal(samples, waves[name])
    np.testing.assert_allclose(numerics["map_numeric"][0], map_times, atol=1e-3)
    np.testing.assert_allclose(numerics["map_numeric"][1], map_values, rtol=1e-6)
    # the risk track reads back on read_recording's time base (0 = the file's start)
    _, risk = vital_io.read_recording(tmp_path / "scored.vital", {**ALIASES, "map_numeric": ["TTM/IOH_RISK"]})
    np.testing.assert_allclose(risk["map_numeric"][0], TIMES[np.isfinite(RISK)], atol=1e-3)


def test_a_track_without_finite_values_is_left_out_and_replaces_an_earlier_one(tmp_path):
    write_recording(tmp_path / "1.vital")
    vital_io.write_risk_tracks(tmp_path / "1.vital", tmp_path / "once.vital", TIMES, {"TTM/IOH_RISK": RISK})
    vital_io.write_risk_tracks(tmp_path / "once.vital", tmp_path / "twice.vital", TIMES,
                               {"TTM/IOH_RISK": np.full(len(TIMES), np.nan), "TTM/IOH_ALARM": ALARM})
    names = vitaldb.VitalFile(str(tmp_path / "twice.vital")).get_track_names()
    assert "TTM/IOH_RISK" not in names and "TTM/IOH_ALARM" in names


def test_two_writes_give_identical_bytes(tmp_path):
    write_recording(tmp_path / "1.vital")
    for name in ("a.vital", "b.vital"):   # different names: the gzip header must not hold the name
        vital_io.write_risk_tracks(tmp_path / "1.vital", tmp_path / name, TIMES, {"TTM/IOH_RISK": RISK})
    assert (tmp_path / "a.vital").read_bytes() == (tmp_path / "b.vital").read_bytes()


def test_only_a_readable_vital_source_other_than_the_output_is_copied(tmp_path):
    write_recording(tmp_path / "1.vital")
    original = (tmp_path / "1.vital").read_bytes()
    with pytest.raises(PipelineError, match=r"3000003_0001\.hea: --write-vital needs a \.vital recording"):
        vital_io.write_risk_tracks(tmp_path / "3000003_0001.hea", tmp_path / "out.vital", TIMES, {})
    (tmp_path / "sub").mkdir()
    for same in (tmp_path / "1.vital", tmp_path / "sub" / ".." / "1.vital"):
        with pytest.raises(PipelineError, match="is the input recording"):
            vital_io.write_risk_tracks(tmp_path / "1.vital", same, TIMES, {"TTM/IOH_RISK": RISK})
    assert (tmp_path / "1.vital").read_bytes() == original
    (tmp_path / "bad.vital").write_bytes(b"not a vital file" * 10)
    with pytest.raises(PipelineError, match="bad.vital"):
        vital_io.write_risk_tracks(tmp_path / "bad.vital", tmp_path / "out.vital", TIMES, {"TTM/IOH_RISK": RISK})
    with pytest.raises(PipelineError, match="missing.vital: file not found"):
        vital_io.write_risk_tracks(tmp_path / "missing.vital", tmp_path / "out.vital", TIMES, {})
    assert not (tmp_path / "out.vital").exists()
