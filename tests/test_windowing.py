"""One case through lib.windowing.process_case: labels per horizon, targets, context features."""
import numpy as np
import pytest
from test_beats import gauss

from lib.core.errors import CaseError
from lib.core.params import Windows
from lib.core.schema import CHANNELS
from lib.data.vital_io import write_vital
from lib.data.windowing import process_case, window_columns

TRACKS = {"abp": "SNUADC/ART", "ppg": "SNUADC/PLETH", "ecg": "SNUADC/ECG_II"}
EPISODE = (900, 1020)   # s: MAP about 50 mmHg


def synthetic_signals(minutes=25, fs=100, episode=EPISODE, seed=0):
    """Clean ABP/PPG/ECG at 75 bpm; ABP 120/80 except 75/40 during `episode`."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(minutes * 60 * fs)) / fs
    u = np.mod(t * 75 / 60, 1.0)
    pulse = gauss(u, 0.15, 0.06) + 0.3 * gauss(u, 0.42, 0.06)
    low = (t >= episode[0]) & (t < episode[1])
    dbp, sbp = np.where(low, 40.0, 80.0), np.where(low, 75.0, 120.0)
    abp = dbp + (sbp - dbp) * pulse / pulse.max()
    ppg = 20 * (gauss(np.mod(u - 0.05, 1), 0.22, 0.09) + 0.3 * gauss(np.mod(u - 0.05, 1), 0.5, 0.08))
    ecg = (0.1 * gauss(u, 0.08, 0.025) + 1.1 * gauss(u, 0.2, 0.012) - 0.25 * gauss(u, 0.22, 0.012)
           + 0.3 * gauss(u, 0.45, 0.05) + rng.normal(0, 0.01, len(t)))
    return {TRACKS["abp"]: abp, TRACKS["ppg"]: ppg, TRACKS["ecg"]: ecg}


def write_case(path, **kwargs):
    write_vital(path, synthetic_signals(**kwargs), srate=100, dtstart=1_600_000_000.0,
                units={TRACKS["abp"]: "mmHg", TRACKS["ecg"]: "mV"})
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    path = write_case(tmp_path_factory.mktemp("case") / "1.vital")
    return process_case(path, TRACKS, Windows(label_rule="at"))


@pytest.fixture(scope="module")
def forward(tmp_path_factory):
    path = write_case(tmp_path_factory.mktemp("forward") / "1.vital")
    return process_case(path, TRACKS, Windows())   # label_rule 'within', post-event gap 10 min


def test_windows_have_signals_and_every_column(case):
    n = len(case.arrays["signals"])
    assert case.arrays["signals"].shape == (n, len(CHANNELS), 512) and case.arrays["signals"].dtype == np.float32
    for name in window_columns(Windows()):
        assert len(case.arrays[name]) == n, name
    assert case.n_windows == (25 * 60 * 125 - 512) // 512 + 1
    assert "kept" in case.examples and case.examples["kept"].shape == (3, 512)


def test_labels_at_each_horizon_follow_the_episode(case):
    t_end = case.arrays["t_end_s"]
    for horizon in (5, 10, 15):
        label = case.arrays[f"label_{horizon}min"]
        lead = horizon * 60
        inside = (t_end >= EPISODE[0] - lead + 5) & (t_end <= EPISODE[1] - lead - 65)
        outside = (t_end < EPISODE[0] - lead - 70) | (t_end > EPISODE[1] - lead + 5)
        assert inside.any() and (label[inside] == 1).all(), horizon
        assert (label[outside & (label >= 0)] == 0).all(), horizon
        past_end = t_end + lead + 60 > 25 * 60
        assert (label[past_end] == -1).all(), horizon


def test_forward_labels_follow_the_event_onset(forward):
    t_end, onset = forward.arrays["t_end_s"], EPISODE[0]
    for horizon in (5, 10, 15):
        label, lead = forward.arrays[f"label_{horizon}min"], horizon * 60
        known = label >= 0
        before = (t_end > onset - lead + 3) & (t_end < onset - 3) & (t_end + lead + 60 <= 25 * 60)
        assert before.any() and (label[before] == 1).all(), horizon
        assert (label[known & (t_end < onset - lead - 3)] == 0).all(), horizon
        assert not (known & (t_end > onset + 3)).any(), horizon   # in the event, then the 10-min gap, then the end
    assert forward.reasons.get("already_hypotensive", 0) > 0
    assert (forward.arrays["label_5min"] == 0).sum() > 0 and (forward.arrays["label_15min"] == 1).sum() > 0


def test_event_timing_columns(tmp_path):
    forward = process_case(write_case(tmp_path / "4.vital"), TRACKS, Windows(post_event_gap_min=0))
    t_end = forward.arrays["t_end_s"]
    assert forward.arrays["next_onset_s"].dtype == np.float32 and forward.arrays["event_distance_s"].dtype == np.float32
    early = t_end < EPISODE[0] - 5
    np.testing.assert_allclose(forward.arrays["next_onset_s"][early], EPISODE[0] - t_end[early], atol=3)
    np.testing.assert_allclose(forward.arrays["event_distance_s"][early], EPISODE[0] - t_end[early], atol=3)
    late = t_end > EPISODE[1] + 5
    assert late.any() and np.isnan(forward.arrays["next_onset_s"][late]).all()
    np.testing.assert_allclose(forward.arrays["event_distance_s"][late], t_end[late] - EPISODE[1], atol=3)
    assert (forward.arrays["label_5min"][late] == 0).all()   # no post-event gap: negative right after the event


def test_already_hypotensive_windows_are_dropped(case):
    assert (case.arrays["map_now"] >= 65).all()
    during = (case.arrays["t_end_s"] > EPISODE[0] + 5) & (case.arrays["t_end_s"] < EPISODE[1])
    assert not during.any()
    assert case.reasons["already_hypotensive"] > 0


def test_beat_derived_targets_and_context_features(case):
    normal = case.arrays["t_end_s"] < EPISODE[0] - 10
    assert np.allclose(case.arrays["sbp"][normal], 120, atol=2) and np.allclose(case.arrays["dbp"][normal], 80, atol=2)
    assert np.allclose(case.arrays["pp"][normal], 40, atol=3) and np.allclose(case.arrays["hr"][normal], 75, atol=1.5)
    assert (case.arrays["map"][normal] > 85).all() and (case.arrays["map"][normal] < 100).all()
    early = case.arrays["t_end_s"] < 60
    assert np.isnan(case.arrays["map_slope"][early]).all() and np.isfinite(case.arrays["map_slope"][~early]).all()
    steady = (case.arrays["t_end_s"] > 400) & (case.arrays["t_end_s"] < EPISODE[0])
    assert np.allclose(case.arrays["map_slope"][steady], 0, atol=0.1)
    ahead = case.arrays["map_5min"][case.arrays["label_5min"] == 1]
    assert (ahead < 65).all() and np.isnan(case.arrays["map_5min"][case.arrays["label_5min"] == -1]).all()


def test_fifty_percent_overlap(tmp_path):
    path = write_case(tmp_path / "2.vital", minutes=12)
    half = process_case(path, TRACKS, Windows(stride=256))
    full = process_case(path, TRACKS, Windows())
    n = 12 * 60 * 125
    assert half.n_windows == (n - 512) // 256 + 1 and full.n_windows == (n - 512) // 512 + 1
    # Every non-overlapping window is also cut, unchanged, at stride 256.
    position = {t: i for i, t in enumerate(half.arrays["t_end_s"])}
    same = [position[t] for t in full.arrays["t_end_s"]]
    np.testing.assert_array_equal(half.arrays["signals"][same], full.arrays["signals"])
    np.testing.assert_array_equal(half.arrays["label_5min"][same], full.arrays["label_5min"])


def test_a_case_shorter_than_window_plus_horizon_is_skipped(tmp_path):
    path = write_case(tmp_path / "3.vital", minutes=5)
    with pytest.raises(CaseError) as err:
        process_case(path, TRACKS, Windows())
    assert err.value.reason == "too_short" and "3.vital" in str(err.value)
