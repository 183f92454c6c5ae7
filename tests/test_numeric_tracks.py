"""Monitor numeric tracks (Solar8000/ART_MBP, Solar8000/HR) as the trend view's MAP/HR source.

The demo writes them as a monitor computes them from its waveforms (lib/data/demo.py `monitor_numerics`);
`vital_io.read_recording` reads them on the waveform time base; `windowing.trend_view` builds the MAP and HR
rows from them when a recording has them, from the waveform otherwise. (Past-only of the numeric path:
tests/test_past_only.py.)
"""
import numpy as np
import pytest

from lib.core.params import Windows
from lib.core.schema import TREND, TREND_BLOCK
from lib.data import demo, vital_io, windowing
from lib.data.windowing import SplitSummary

WAVES = {"abp": [demo.ABP], "ppg": [demo.PPG], "ecg": [demo.ECG]}
ALIASES = {**WAVES, "map_numeric": [demo.MAP_NUMERIC, "EV1000/ART_MBP"], "hr_numeric": [demo.HR_NUMERIC]}
DTSTART = 4102444800.0
# Agreement of the numeric-track and waveform-derived trend rows on the demo (per 10-s bin observed in both,
# |numeric - waveform|), measured on demo cases 0-19 (35 min each): MAP median 0.31, 95th percentile 1.25 mmHg;
# HR median 0.13, 95th percentile 0.44 bpm (worst case 2.3); on this test's four 25-min cases MAP 0.38 / 1.44,
# HR 0.13 / 0.44. A 30-s shift of the numeric times gives MAP 1.25 / 8.4, HR 1.4 / 7.0. Asserted with margin:
TOLERANCE = {"map": (1.0, 3.0), "hr": (1.0, 3.0)}   # (median, 95th percentile): mmHg, bpm


@pytest.fixture(scope="module")
def demo_cases(tmp_path_factory):
    """Four simulated demo cases (25 min, two with hypotension) written with their numeric tracks, each processed
    with the numeric aliases (numeric) and with the wave aliases only (waveform)."""
    root = tmp_path_factory.mktemp("demo")
    out = []
    for seed in range(4):
        case = demo.simulate_case(25 * 60, 100, seed % 2 == 0, np.random.default_rng(seed))
        path = root / f"{seed}.vital"
        vital_io.write_vital(path, case.signals, 100, DTSTART, demo.UNITS, case.numerics)
        out.append((case, path, windowing.process_case(path, ALIASES, Windows()),
                    windowing.process_case(path, WAVES, Windows())))
    return out


def test_numeric_and_waveform_trends_agree_on_the_demo(demo_cases):
    """Median and 95th percentile of |numeric - waveform| per trend bin within TOLERANCE (MAP mmHg, HR bpm).
    Catches a numeric track on the wrong time base or scale, a wrong trend row, or monitor values that are not
    what the written waveform says (e.g. computed from the simulator's truth instead of the recorded ABP)."""
    diffs = {name: [] for name in TOLERANCE}
    for _, _, numeric, waveform in demo_cases:
        assert numeric.trend_source == {"map": "numeric", "hr": "numeric"}
        np.testing.assert_array_equal(numeric.arrays["t_end_s"], waveform.arrays["t_end_s"])
        for name in TOLERANCE:
            row = TREND.index(name)
            a, b = (x.arrays[TREND_BLOCK][:, row].astype(np.float64) for x in (numeric, waveform))
            both = np.isfinite(a) & np.isfinite(b)
            assert both.sum() > 0.8 * np.isfinite(b).sum(), f"{name}: numeric path misses bins the waveform has"
            diffs[name].append(np.abs(a - b)[both])
        # features and labels stay waveform-derived: only the trend view changes source
        for column in ("map", "map_now", "hr", "label_5min"):
            np.testing.assert_array_equal(numeric.arrays[column], waveform.arrays[column])
        np.testing.assert_array_equal(numeric.arrays[TREND_BLOCK][:, TREND.index("pp")],
                                      waveform.arrays[TREND_BLOCK][:, TREND.index("pp")])
    for name, (median_max, p95_max) in TOLERANCE.items():
        d = np.concatenate(diffs[name])
        assert np.median(d) <= median_max and np.percentile(d, 95) <= p95_max, \
            f"{name}: median {np.median(d):.2f}, p95 {np.percentile(d, 95):.2f}"


def test_monitor_numerics_are_missing_during_faults_and_rounded(demo_cases):
    """No MAP sample whose 8-s span overlaps an ABP fault, no HR sample in a disconnection; whole numbers every
    2 s. Catches a monitor that reports flush/zero artefacts (300 / 0 mmHg) as MAP."""
    for case, _, _, _ in demo_cases:
        times, values = case.numerics[demo.MAP_NUMERIC]
        assert np.all(values == np.round(values)) and np.all(np.diff(times) >= demo.NUMERIC_INTERVAL_S - 1e-9)
        assert values.min() > 20 and values.max() < 200
        for kind, start, end in case.faults:
            if kind in demo.ABP_FAULTS:
                assert not np.any((times > start) & (times - demo.NUMERIC_AVERAGE_S < end)), kind
            if kind == "disconnect":
                hr_times = case.numerics[demo.HR_NUMERIC][0]
                assert not np.any((hr_times > start) & (hr_times - demo.NUMERIC_AVERAGE_S < end))


def test_a_recording_without_numeric_tracks_uses_the_waveform(demo_cases, tmp_path):
    """The same case written without numeric tracks, read with the numeric aliases: waveform source, the trend
    view bit-identical to the waveform path, counted as waveform in the split summary. Catches numeric tracks
    treated as required (a missing_track skip) or a source count that does not follow the data."""
    case, _, numeric, waveform = demo_cases[0]
    path = tmp_path / "plain.vital"
    vital_io.write_vital(path, case.signals, 100, DTSTART, demo.UNITS)
    plain = windowing.process_case(path, ALIASES, Windows())
    assert plain.trend_source == {"map": "waveform", "hr": "waveform"}
    np.testing.assert_array_equal(plain.arrays[TREND_BLOCK], waveform.arrays[TREND_BLOCK])
    summary = SplitSummary.empty(2, ["5", "10", "15"])
    summary.add(plain)
    summary.add(numeric)
    assert summary.to_dict()["trend_source"] == {"map": {"numeric": 1, "waveform": 1},
                                                 "hr": {"numeric": 1, "waveform": 1}}


def test_implausible_numeric_samples_are_left_out(demo_cases, tmp_path):
    """A MAP track of zeros (a zeroed transducer) gives no plausible sample: the waveform is used; single
    implausible samples are dropped, not held. Catches a missing plausibility range on the numeric path."""
    case, _, _, waveform = demo_cases[1]
    times, values = case.numerics[demo.MAP_NUMERIC]
    path = tmp_path / "zero.vital"
    vital_io.write_vital(path, case.signals, 100, DTSTART, demo.UNITS,
                         {demo.MAP_NUMERIC: (times, np.zeros_like(values))})
    zero = windowing.process_case(path, ALIASES, Windows())
    assert zero.trend_source["map"] == "waveform"
    np.testing.assert_array_equal(zero.arrays[TREND_BLOCK][:, 0], waveform.arrays[TREND_BLOCK][:, 0])
    spiked = np.where(np.arange(len(values)) % 3 == 0, 300.0, values)   # flush readings in between
    vital_io.write_vital(path, case.signals, 100, DTSTART, demo.UNITS, {demo.MAP_NUMERIC: (times, spiked)})
    rows = windowing.process_case(path, ALIASES, Windows()).arrays[TREND_BLOCK][:, 0].astype(float)
    assert np.nanmax(rows) < 200


@pytest.mark.parametrize("offset_s", [12.5, -5.0])
def test_numeric_times_are_on_the_waveform_time_base(tmp_path, offset_s):
    """A numeric track starting `offset_s` after (or before) the waveform: its times come back in seconds from the
    same start as the wave samples, so each numeric value equals the wave sample at its time. Catches absolute
    (epoch) times, a forgotten `dtstart`, or times quantised to a grid."""
    srate, n = 100.0, 6000
    wave = np.floor(np.arange(n) / srate / 7.0).astype(np.float32)   # a staircase: value = 7-s step index
    times = offset_s + np.arange(0, 40, 2.0) + 0.25
    values = np.floor(times / 7.0)          # the staircase's value at each numeric time (wave time base)
    path = tmp_path / "1.vital"
    vital_io.write_vital(path, {"SNUADC/ART": wave, "SNUADC/PLETH": wave}, srate, DTSTART, {},
                         {"Solar8000/ART_MBP": (times, values)})
    channels, numerics = vital_io.read_recording(path, {"abp": ["SNUADC/ART"], "map_numeric": ["Solar8000/ART_MBP"],
                                                        "hr_numeric": ["Solar8000/HR"]})
    samples, _ = channels["abp"]
    got_times, got_values = numerics["map_numeric"]
    assert numerics["hr_numeric"] is None                     # absent: None, never an error
    start = min(times[0], 0.0)                                # the file starts at its earliest record
    np.testing.assert_allclose(got_times, times - start, atol=1e-6)
    np.testing.assert_array_equal(got_values, values)
    at = np.round(got_times * srate).astype(int)
    inside = (at >= 0) & (at < len(samples)) & np.isfinite(samples[np.clip(at, 0, len(samples) - 1)])
    assert inside.sum() >= 15
    np.testing.assert_array_equal(samples[at[inside]], got_values[inside])


def test_numeric_keys_are_optional_for_every_reader(tmp_path):
    """data.tracks with the numeric keys: read_channels (cohort, local and vitaldb sources) still reads the wave
    channels of a file without numerics, and a numeric alias that names a wave track is not a numeric track.
    Catches the new keys being treated as required wave channels."""
    wave = np.sin(np.arange(3000) / 10).astype(np.float32)
    path = tmp_path / "1.vital"
    vital_io.write_vital(path, {"SNUADC/ART": wave, "SNUADC/PLETH": wave}, 100.0, DTSTART, {})
    aliases = {"abp": ["SNUADC/ART"], "ppg": ["SNUADC/PLETH"], "map_numeric": ["Solar8000/ART_MBP", "SNUADC/ART"]}
    assert set(vital_io.read_channels(path, aliases)) == {"abp", "ppg"}
    assert vital_io.read_recording(path, aliases)[1] == {"map_numeric": None}
