"""The trend view (lib/signal/trend.py): bin means, observed mask, past-only fill, numeric tracks."""
import numpy as np
import pytest

from lib.signal.trend import numeric_track_1hz, trend_means, trend_series


def _trace(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x = 80 + np.cumsum(rng.normal(0, 0.3, n))
    x[rng.random(n) < 0.05] = np.nan          # scattered invalid seconds
    x[1200:1260] = np.nan                     # a one-minute gap
    return x


@pytest.mark.parametrize("step_s", [1, 2, 5, 10])
def test_rows_are_past_only(step_s):
    """Truncating the trace at e, or replacing everything from floor(e) on, leaves e's row bit-identical."""
    trace = _trace()
    ends = np.array([0.0, 7.0, 59.5, 600.0, 1234.9, 1261.0, 2999.0, 3000.0])
    series, observed = trend_series(trace, ends, step_s, 64)
    rng = np.random.default_rng(1)
    for i, e in enumerate(ends):
        cut = int(np.floor(e))
        for other in (trace[:cut], np.concatenate([trace[:cut], rng.normal(50, 30, 500)]),
                      np.concatenate([trace[:cut], np.full(len(trace) - cut, np.nan)])):
            s, o = trend_series(other, ends[i:i + 1], step_s, 64)
            assert s[0].tobytes() == series[i].tobytes()
            assert np.array_equal(o[0], observed[i])


def _bin_means_by_row(values, ends_s, step_s, context):
    """The bin means of every row from the row's own edges (module doc), one (n, context + 1) table of edges."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, v, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite, dtype=np.int64)])
    ends = np.floor(np.asarray(ends_s, dtype=np.float64) + 1e-9).astype(np.int64)
    edges = np.clip(ends[:, None] + (np.arange(context + 1) - context) * step_s, 0, len(v))
    count, total = np.diff(counts[edges], axis=1), np.diff(sums[edges], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(2 * count >= step_s, total / count, np.nan).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_bin_means_are_each_rows_own_bins_bit_for_bit(seed):
    """Rows are read off one grid of bins per phase of their end (modulo step_s): the same bits as each row's own."""
    rng = np.random.default_rng(seed)
    trace = _trace(n=int(rng.integers(1, 4000)), seed=seed)
    step_s, context = int(rng.integers(1, 20)), int(rng.integers(1, 600))
    ends = np.concatenate([np.arange(4.096, len(trace) + 30, rng.uniform(1, 9)), rng.uniform(-20, len(trace) + 20, 50)])
    expected = _bin_means_by_row(trace, ends, step_s, context)
    assert trend_means(trace, ends, step_s, context).tobytes() == expected.tobytes()


def test_known_bin_means():
    trace = np.arange(100, dtype=float)       # second k has value k
    series, observed = trend_series(trace, np.array([50.0, 50.7]), 10, 4)
    # e' = 50: bins [10, 20), [20, 30), [30, 40), [40, 50) -> means 14.5, 24.5, 34.5, 44.5
    np.testing.assert_allclose(series[0], [14.5, 24.5, 34.5, 44.5], rtol=0, atol=1e-5)
    assert observed.all()
    assert series.dtype == np.float32 and observed.dtype == bool and series.shape == (2, 4)
    np.testing.assert_array_equal(series[0], series[1])   # floor(e): the incomplete second 50 is not used
    # A bin's mean is over its finite seconds; >= half finite is observed.
    trace[40:45] = np.nan                     # bin [40, 50): 5 of 10 finite -> observed, mean 47
    trace[30:36] = np.nan                     # bin [30, 40): 4 of 10 finite -> unobserved
    series, observed = trend_series(trace, np.array([50.0]), 10, 4)
    np.testing.assert_array_equal(observed[0], [True, True, False, True])
    np.testing.assert_allclose(series[0], [14.5, 24.5, 24.5, 47.0], atol=1e-5)   # gap: last observed value


def test_before_recording_start_and_gaps_not_filled_from_future():
    trace = np.full(200, 70.0)
    trace[100:150] = np.nan
    trace[150:] = 90.0
    series, observed = trend_series(trace, np.array([30.0, 180.0]), 10, 20)
    # e = 30: 17 bins before the recording start, unobserved, 0 (no earlier observed bin)
    assert not observed[0, :17].any() and observed[0, 17:].all()
    np.testing.assert_array_equal(series[0, :17], 0.0)
    np.testing.assert_allclose(series[0, 17:], 70.0)
    # e = 180: bins [100, 150) are unobserved and hold 70 (the past), never 90 (the later bins)
    starts = 180 - (20 - np.arange(20)) * 10
    gap = (starts >= 100) & (starts < 150)
    assert not observed[1, gap].any()
    np.testing.assert_allclose(series[1, gap], 70.0)
    np.testing.assert_allclose(series[1, starts >= 150], 90.0)
    assert np.isfinite(series).all()


def test_all_missing_and_empty():
    series, observed = trend_series(np.full(50, np.nan), np.array([40.0]), 5, 8)
    assert not observed.any() and (series == 0).all()
    series, observed = trend_series(np.zeros(0), np.array([10.0]), 5, 8)
    assert not observed.any()
    series, observed = trend_series(np.ones(10), np.zeros(0), 5, 8)
    assert series.shape == (0, 8)
    with pytest.raises(ValueError):
        trend_series(np.ones(10), np.array([5.0]), 0, 8)


def test_numeric_track_past_only_hold():
    times = np.array([0.0, 2.0, 4.0, 30.0])
    values = np.array([60.0, 62.0, np.nan, 70.0])
    out = numeric_track_1hz(times, values, 45, max_age_s=10)
    expected = np.full(45, np.nan)
    expected[0:2], expected[2:13] = 60.0, 62.0       # NaN sample skipped; 62 held until its age exceeds 10 s
    expected[30:41] = 70.0
    np.testing.assert_array_equal(out, expected)
    # unsorted input gives the same trace
    np.testing.assert_array_equal(numeric_track_1hz(times[::-1], values[::-1], 45, 10), out)


def test_numeric_track_2s_vs_1hz_truth():
    """A MAP trend sampled like the Solar8000 numeric (every 2 s, with jitter) vs the 1-Hz truth: every
    second within 0.75 mmHg (sample-and-hold lag <= 2 s on a trend of < 0.3 mmHg/s), 10-s trend bins
    within 0.5 mmHg (mean error < 0.25)."""
    n = 1800
    t1 = np.arange(n, dtype=float)
    truth = 80 + 10 * np.sin(2 * np.pi * t1 / 600) + 3 * np.sin(2 * np.pi * t1 / 97)   # |slope| < 0.3 mmHg/s
    rng = np.random.default_rng(0)
    times = np.arange(0, n, 2.0) + rng.uniform(0, 0.5, n // 2)
    values = np.interp(times, t1, truth)
    hz = numeric_track_1hz(times, values, n)
    ok = np.isfinite(hz)
    assert ok[3:].all()
    assert np.abs(hz[ok] - truth[ok]).max() < 0.75
    ends = np.arange(600, n, 20).astype(float)
    a, _ = trend_series(hz, ends, 10, 30)
    b, _ = trend_series(truth, ends, 10, 30)
    assert np.abs(a - b).max() < 0.5
    assert np.abs(a - b).mean() < 0.25
