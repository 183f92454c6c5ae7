"""Past-only features: a window's context features and beat-derived pressures use no sample after its end.

For windows ending at several times e, every context feature (MAP level and trend, heart rate, pulse
pressure), `map_now`, the window's beat-derived SBP/DBP/MAP and its trend view (MAP, HR and pulse
pressure series) of the window ending at e must not
change when the recording is truncated at e, or when everything after e is replaced with a
different signal; likewise the trend view built from a monitor's numeric tracks (MAP, HR) when the
numeric samples after e are dropped or replaced. Exact equality (NaN == NaN): a past-only computation
sees bit-identical inputs, so it must give bit-identical outputs. (All failed this while they were
computed from the resampled, zero-phase filtered whole recording: the polyphase resampler, filtfilt and
NeuroKit's detectors look ahead.)

Not covered, by design: the waveform the model sees (zero-phase filtered) and the quality gates (which
windows are kept, which PPG/ECG channels are masked, hence the observed flags); docs/data.md bounds
how far past the window end they look.
"""
import numpy as np
import pytest
from test_windowing import TRACKS, synthetic_signals

import lib.data.windowing as windowing
from lib.core.params import Windows
from lib.core.schema import BEAT_PRESSURES, CONTEXT, MAP_NOW, OBSERVED, TREND_BLOCK
from lib.data import demo
from lib.data.vital_io import write_vital

# every measured context feature; the OBSERVED flags are gate outcomes (docs/data.md gives their look-ahead bound)
FEATURES = tuple(dict.fromkeys((*(c for c in CONTEXT if c not in OBSERVED.values()), MAP_NOW, *BEAT_PRESSURES)))
RAW_FS = 100
# Windows: 512 samples at 125 Hz, stride 512 -> windows end at 4.096 k s; every 5th end is a whole raw sample.
ENDS_S = (20.48 * 30, 20.48 * 45, 20.48 * 60)   # 614.4 s, 921.6 s (inside the episode), 1228.8 s


@pytest.fixture
def keep_every_window(monkeypatch):
    """Keep every window whatever its gates or labels (the last window of a truncated case has none), in float64."""
    def no_rejections(checks):
        return np.full(len(next(iter(checks.values()))), "", dtype=object)

    def labelled(map_1hz, t_end, *args, **kwargs):
        n = len(t_end)
        return np.zeros(n), np.full(n, "", dtype="<U1"), np.full(n, np.nan)

    original_columns = windowing.window_columns

    def float64_columns(spec):   # compare before the float32 cast, which would hide small look-ahead
        return {k: np.float64 if v == np.float32 else v for k, v in original_columns(spec).items()}

    monkeypatch.setattr(windowing.quality, "window_rejections", no_rejections)
    monkeypatch.setattr(windowing, "window_columns", float64_columns)
    monkeypatch.setattr(windowing.labels, "hypotension_labels", labelled)


def _features(tmp_path, name, signals, end_s, numerics=None):
    path = tmp_path / f"{name}.vital"
    write_vital(path, signals, srate=RAW_FS, dtstart=1_600_000_000.0,
                units={TRACKS["abp"]: "mmHg", TRACKS["ecg"]: "mV"}, numerics=numerics)
    aliases = {**TRACKS, "map_numeric": demo.MAP_NUMERIC, "hr_numeric": demo.HR_NUMERIC}
    out = windowing.process_case(path, aliases, Windows())
    assert out.trend_source["map"] == ("numeric" if numerics else "waveform")
    at = np.flatnonzero(np.isclose(out.arrays["t_end_s"], end_s, atol=1e-3))
    assert len(at) == 1, f"no window ends at {end_s} s"
    return {f: out.arrays[f][at[0]] for f in (*FEATURES, TREND_BLOCK)}


def _assert_same(a, b, what):
    for f in (*FEATURES, TREND_BLOCK):
        np.testing.assert_array_equal(a[f], b[f], err_msg=f"{f} changed when {what}")


@pytest.mark.parametrize("end_s", ENDS_S)
def test_truncating_at_the_window_end_leaves_the_features_unchanged(tmp_path, keep_every_window, end_s):
    full = synthetic_signals()
    cut = int(round(end_s * RAW_FS))
    truncated = {k: v[:cut] for k, v in full.items()}
    _assert_same(_features(tmp_path, "full", full, end_s), _features(tmp_path, "cut", truncated, end_s),
                 f"the recording was truncated at {end_s} s")


@pytest.mark.parametrize("end_s", ENDS_S)
def test_a_different_future_leaves_the_features_unchanged(tmp_path, keep_every_window, end_s):
    full = synthetic_signals()
    other = synthetic_signals(seed=1, episode=(0, 1e9))   # hypotensive throughout, other noise
    cut = int(round(end_s * RAW_FS))
    spliced = {k: np.concatenate([v[:cut], other[k][cut:] * 0.7 + 5]) for k, v in full.items()}
    features = _features(tmp_path, "full", full, end_s)
    assert all(np.isfinite(features[f]) for f in FEATURES), features
    assert np.isfinite(features[TREND_BLOCK][:, -1]).all(), features[TREND_BLOCK][:, -3:]   # last bins observed
    _assert_same(features, _features(tmp_path, "spliced", spliced, end_s),
                 f"everything after {end_s} s was replaced")


def _monitor(signals):
    """The numeric tracks a monitor computes from the synthetic waveforms (75 bpm: a beat every 80 samples)."""
    abp = signals[TRACKS["abp"]]
    return demo.monitor_numerics(abp, np.arange(0, len(abp), 80), [], RAW_FS)


@pytest.mark.parametrize("end_s", ENDS_S)
def test_the_numeric_trend_ignores_samples_after_the_window_end(tmp_path, keep_every_window, end_s):
    """Numeric-track trend rows (MAP, HR) with the recording and its numeric samples cut at e, or with every
    numeric sample after e replaced: bit-identical. Catches a numeric track interpolated or held backwards in
    time (a sample at t informing a second before t) in `trend.numeric_track_1hz` or `windowing.trend_view`."""
    full = synthetic_signals()
    numerics = _monitor(full)
    cut = int(round(end_s * RAW_FS))
    past = {name: (t[t <= end_s], v[t <= end_s]) for name, (t, v) in numerics.items()}
    other = {name: (t, np.where(t <= end_s, v, v * 0.7 + 5)) for name, (t, v) in numerics.items()}
    features = _features(tmp_path, "full", full, end_s, numerics)
    assert np.isfinite(features[TREND_BLOCK][:2, -1]).all()   # MAP and HR: the last bins observed
    _assert_same(features, _features(tmp_path, "cut", {k: v[:cut] for k, v in full.items()}, end_s, past),
                 f"the recording and its numeric tracks were truncated at {end_s} s")
    _assert_same(features, _features(tmp_path, "other", full, end_s, other),
                 f"the numeric samples after {end_s} s were replaced")
