"""The trend view: a 1-Hz trace (MAP, HR, ...) as per-window series of `step_s`-second bin means.

TTM r2 was pre-trained on minutely-to-hourly series; a MAP *trend* at seconds-to-minutes resolution
is its home. `trend_series` turns a past-only 1-Hz trace (index k summarises data before second
k + 1: `lib.signal.labels.map_per_second`, `lib.data.windowing._past_only_map_trace`, or
`numeric_track_1hz` below) into one fixed-length row per window end, the input TTM forecasts from.

Bins. For a window ending at `e` (seconds from recording start) let e' = floor(e) (the last complete
second). Bin j = 0 .. context-1 covers the trace's seconds [e' - (context-j)*step_s,
e' - (context-j-1)*step_s): the last bin ends just before second e', the same "last complete second"
convention as `labels.map_at_end` and `labels.past_map_slope`, so no row reads anything at or
after e'. Its value is the mean of the bin's finite seconds.

Observed. A bin is observed when at least half of its `step_s` seconds are finite (seconds before
the recording start or past the trace's end count as missing); otherwise it is unobserved:
`observed=False`, and its value is the last observed bin's value before it in the same row
(forward fill, past-only), or 0.0 when the row has no observed bin before it. Nothing is ever
filled from a later bin. TTM receives `observed` as `past_observed_mask`, so fills never enter its
per-window scaling statistics (see `lib.model.forecast` for how the leading fills are presented).

Everything is vectorised over windows with cumulative sums of the finite values and of the finite
counts: a row depends only on the prefix of the trace before e', so truncating the trace at e' or
changing anything after it leaves the row bit-identical (tests/test_trend.py).
"""
import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MAX_AGE_S = 10.0  # numeric_track_1hz: a sample older than this no longer stands for the current second


def _ends(window_end_s) -> np.ndarray:
    """floor(e) per window end, with the same 1e-9 tolerance as lib.signal.labels."""
    return np.floor(np.asarray(window_end_s, dtype=np.float64) + 1e-9).astype(np.int64)


def trend_series(values_1hz: np.ndarray, window_end_s: np.ndarray, step_s: int, context: int) -> tuple:
    """Per-window trend rows of a 1-Hz trace: (series float32 (n, context), observed bool (n, context)).

    See the module doc for the bins, the observed rule (>= half the bin's seconds finite) and the
    past-only forward fill of unobserved bins (0.0 before the first observed bin of a row).
    """
    return fill_unobserved(trend_means(values_1hz, window_end_s, step_s, context))


def trend_means(values_1hz: np.ndarray, window_end_s: np.ndarray, step_s: int, context: int) -> np.ndarray:
    """The bin means of `trend_series`, float32 (n, context), NaN where a bin is unobserved (as stored)."""
    step_s, context = int(step_s), int(context)
    if step_s < 1 or context < 1:
        raise ValueError(f"trend_series: step_s={step_s} and context={context} must be >= 1")
    v = np.asarray(values_1hz, dtype=np.float64).ravel()
    finite = np.isfinite(v)
    # cumulative sums, prefix 0: sums[k] covers seconds [0, k)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, v, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite, dtype=np.int64)])
    ends = _ends(window_end_s)
    out = np.empty((len(ends), context), dtype=np.float32)
    # A bin is fixed by its first second. Windows whose ends agree modulo step_s share one grid of bins: each
    # grid's bin means are computed once and every window's row is read off its grid.
    phase = ends % step_s
    for grid_phase in np.unique(phase):
        rows = np.flatnonzero(phase == grid_phase)
        first_edge = ends[rows] - context * step_s
        # bin edges on this grid, from the earliest row's first to the latest row's last; outside the trace = no data
        edges = np.clip(np.arange(first_edge.min(), ends[rows].max() + 1, step_s), 0, len(v))
        count = np.diff(counts[edges])
        total = np.diff(sums[edges])
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(2 * count >= step_s, total / count, np.nan).astype(np.float32)
        out[rows] = sliding_window_view(means, context)[(first_edge - first_edge.min()) // step_s]
    return out


def numeric_track_1hz(times_s: np.ndarray, values: np.ndarray, n_seconds: int,
                      max_age_s: float = MAX_AGE_S) -> np.ndarray:
    """An irregular numeric track (e.g. VitalDB `Solar8000/ART_MBP` every ~2 s, `Solar8000/HR`) as a
    past-only 1-Hz trace of `n_seconds` seconds (float64; NaN = unknown).

    Second k holds the last finite sample at a time t <= k, when k - t <= `max_age_s`; NaN otherwise
    (before the first sample, or after a gap longer than `max_age_s`). Sample-and-hold, never
    interpolated, so second k depends only on samples up to time k. (`trend_series` then reads
    seconds < floor(e), i.e. samples up to e - 1: one second more conservative than the waveform
    trace, harmless at 2-s sampling and >= 2-s bins.) Samples need not be sorted; of samples at the
    same time the last one given wins.
    """
    n_seconds = int(n_seconds)
    t = np.asarray(times_s, dtype=np.float64).ravel()
    x = np.asarray(values, dtype=np.float64).ravel()
    if t.shape != x.shape:
        raise ValueError(f"numeric_track_1hz: {len(t)} times but {len(x)} values")
    keep = np.isfinite(t) & np.isfinite(x)
    t, x = t[keep], x[keep]
    order = np.argsort(t, kind="stable")
    t, x = t[order], x[order]
    out = np.full(max(n_seconds, 0), np.nan)
    if len(t) == 0 or n_seconds <= 0:
        return out
    k = np.arange(n_seconds, dtype=np.float64)
    idx = np.searchsorted(t, k + 1e-9, side="right") - 1      # last sample at t <= k
    ok = idx >= 0
    age = k - t[np.maximum(idx, 0)]
    ok &= age <= max_age_s + 1e-9
    out[ok] = x[idx[ok]]
    return out


def fill_unobserved(rows: np.ndarray) -> tuple:
    """Stored trend rows (NaN = unobserved bin) back to `trend_series`' form: (series float32 with
    each unobserved bin holding the last observed value before it, 0.0 before the first; observed bool)."""
    rows = np.asarray(rows, dtype=np.float32)
    observed = np.isfinite(rows)
    last = np.where(observed, np.arange(rows.shape[-1]), -1)
    np.maximum.accumulate(last, axis=-1, out=last)
    held = np.take_along_axis(np.where(observed, rows, 0.0), np.maximum(last, 0), axis=-1)
    return np.where(last >= 0, held, 0.0).astype(np.float32), observed


CLASSIC_FEATURES = ("map_now", "map_slope_5min", "map_min_5min", "map_sd_5min", "hr_now")


def classic_features(rows: np.ndarray, step_s: int, span_s: int = 300) -> np.ndarray:
    """The classical trend features a clinician reads off a monitor, from stored trend rows
    (n, TREND, context) (channel 0 MAP, 1 HR; NaN = unobserved): current MAP (the last bin), its
    least-squares slope (mmHg/min), minimum and SD over the last `span_s`, and current HR; NaN where
    the bins are unobserved. (n, len(CLASSIC_FEATURES)) float64, past-only like the rows."""
    rows = np.asarray(rows, dtype=np.float64)
    k = max(int(round(span_s / step_s)), 2)
    recent = rows[:, 0, -k:]
    t = (np.arange(k) - (k - 1)) * step_s / 60.0   # minutes before the last bin
    ok = np.isfinite(recent)
    n_ok = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_mean = np.where(ok, t, 0).sum(axis=1) / n_ok
        y_mean = np.where(ok, recent, 0).sum(axis=1) / n_ok
        dt = np.where(ok, t - t_mean[:, None], 0)
        slope = (dt * np.where(ok, recent - y_mean[:, None], 0)).sum(axis=1) / (dt ** 2).sum(axis=1)
    slope = np.where(n_ok >= 3, slope, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN rows give NaN, as they should
        low, spread = np.nanmin(recent, axis=1), np.nanstd(recent, axis=1)
    return np.stack([rows[:, 0, -1], slope, low, spread, rows[:, 1, -1]], axis=1)
