"""Labels derived from the ABP waveform by one documented rule.

MAP trace: `map_per_second[k]` is the mean arterial pressure over [k-1, k+1) seconds (2 s, at
least one cardiac cycle above 30 bpm), NaN when either second has an invalid sample, a sample
above 250 mmHg (flush) or a mean outside 20-200 mmHg (zeroing, disconnection).

Hypotension `horizon_s` ahead, for a window ending at time `e` (seconds from recording start):

* positive (1) when MAP is < `threshold` (65 mmHg) throughout the `duration_s` (60 s) starting
  at `e + horizon_s`; negative (0) otherwise;
* unknown, and the window dropped, when fewer than `min_valid` of those seconds have a valid
  MAP (`label_artefact`), when that minute runs past the recording end (`label_past_end`), or
  when the window is already hypotensive: MAP at its end < threshold (`already_hypotensive`),
  or when MAP at its end is not valid (`map_now_invalid`).

The same rule runs at every horizon in `windows.horizons_min` (5, 10, 15 min by default), each
with its own label column; a window is kept when at least one horizon has a label.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MAP_MIN, MAP_MAX = 20.0, 200.0
PINNED = 250.0  # mmHg: above this the line is being flushed


def map_per_second(abp: np.ndarray, invalid: np.ndarray, fs: int) -> np.ndarray:
    """Per-second MAP (mmHg) over a trailing 2-s span; NaN where the ABP is not usable."""
    fs = int(fs)
    n_sec = len(abp) // fs
    blocks = abp[: n_sec * fs].reshape(n_sec, fs)
    mean = blocks.mean(axis=1)
    bad = (invalid[: n_sec * fs].reshape(n_sec, fs).any(axis=1) | (blocks.max(axis=1) > PINNED)
           | (mean < MAP_MIN) | (mean > MAP_MAX))
    mean[bad] = np.nan
    two_s = np.full(n_sec, np.nan)
    two_s[1:] = 0.5 * (mean[1:] + mean[:-1])  # NaN when either second is unusable
    return two_s


def map_at_end(map_1hz: np.ndarray, window_end_s: np.ndarray) -> np.ndarray:
    """MAP of the trace's last complete second before each window end (NaN when unknown)."""
    if len(map_1hz) == 0:
        return np.full(len(window_end_s), np.nan)
    idx = np.floor(np.asarray(window_end_s, dtype=float) + 1e-9).astype(np.int64) - 1
    return map_1hz[np.clip(idx, 0, len(map_1hz) - 1)]


def hypotension_labels(map_1hz: np.ndarray, window_end_s: np.ndarray, horizon_s: float,
                       duration_s: int = 60, threshold: float = 65.0, min_valid: float = 0.8):
    """Labels for windows ending at `window_end_s`; returns (labels, reasons, map_ahead).

    `labels` is float with NaN where unknown; `reasons` holds '' for a labelled window, else
    why it has no label (see module doc); `map_ahead` is the mean valid MAP over the label
    minute (the regression target at this horizon; NaN when the label is unknown).
    """
    window_end_s = np.asarray(window_end_s, dtype=float)
    n = len(window_end_s)
    labels = np.full(n, np.nan)
    map_ahead = np.full(n, np.nan)
    reasons = np.full(n, "", dtype=object)
    first = np.ceil(window_end_s + horizon_s - 1e-9).astype(np.int64)
    past_end = first + duration_s > len(map_1hz)
    reasons[past_end] = "label_past_end"

    map_now = map_at_end(map_1hz, window_end_s)
    ok = ~past_end
    if ok.any() and len(map_1hz) >= duration_s:
        minutes = sliding_window_view(map_1hz, duration_s)[first[ok]]
        valid = np.isfinite(minutes)
        enough = valid.mean(axis=1) >= min_valid
        below = np.where(valid, minutes < threshold, True).all(axis=1)
        idx = np.flatnonzero(ok)
        labels[idx[enough]] = below[enough].astype(float)
        map_ahead[idx[enough]] = np.nanmean(minutes[enough], axis=1)
        reasons[idx[~enough]] = "label_artefact"
    for unusable, reason in [(ok & (map_now < threshold), "already_hypotensive"),
                             (ok & ~np.isfinite(map_now), "map_now_invalid")]:
        labels[unusable] = np.nan
        map_ahead[unusable] = np.nan
        reasons[unusable] = reason
    return labels, reasons, map_ahead


def past_map_slope(map_1hz: np.ndarray, window_end_s: np.ndarray, span_s: int = 300,
                   min_valid_s: int = 60) -> np.ndarray:
    """MAP trend (mmHg/min) over the `span_s` seconds up to each window end: past data only.

    Least-squares slope of the valid seconds of the MAP trace in (end - span_s, end], by
    cumulative sums (vectorised over windows); NaN with fewer than `min_valid_s` valid seconds.
    """
    valid = np.isfinite(map_1hz)
    t = np.arange(len(map_1hz), dtype=np.float64)
    m = np.where(valid, map_1hz, 0.0)
    terms = (valid.astype(np.float64), t * valid, m, t * m, t * t * valid)
    sums = [np.concatenate([[0.0], np.cumsum(v)]) for v in terms]
    hi = np.clip(np.floor(np.asarray(window_end_s, dtype=float) + 1e-9).astype(np.int64), 0, len(map_1hz))
    lo = np.maximum(hi - span_s, 0)
    n, st, sm, stm, stt = (s[hi] - s[lo] for s in sums)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (n * stm - st * sm) / (n * stt - st * st)
    return np.where(n >= min_valid_s, 60.0 * slope, np.nan)


def has_hypotension(map_1hz: np.ndarray, threshold: float = 65.0, min_duration_s: int = 60) -> bool:
    """True when MAP stays below `threshold` for `min_duration_s` consecutive valid seconds."""
    below = np.concatenate([[0], (map_1hz < threshold).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(below))
    return bool(len(edges) and (edges[1::2] - edges[::2]).max() >= min_duration_s)


def describe_rule(threshold: float, horizons_min, duration_s: int = 60, min_valid: float = 0.8) -> str:
    """The label rule above in one paragraph for a reader (the evaluation and data-quality reports)."""
    horizons = [float(h) for h in horizons_min]
    span = "minute" if float(duration_s) == 60 else f"{float(duration_s):g} s"
    if len(horizons) == 1:
        ahead, start, per = f"{horizons[0]:g} min ahead", f"t + {horizons[0]:g} min", "at this horizon"
    else:
        ahead = f"h = {', '.join(f'{h:g}' for h in horizons)} min ahead (one label per horizon)"
        start, per = "t + h min", "at that horizon"
    return (f"Hypotension {ahead}, derived from the ABP waveform (lib/signal/labels.py): a window ending at time "
            f"t is positive when the per-second MAP stays below {threshold:g} mmHg throughout the {span} starting "
            f"at {start}, negative otherwise. No label (window not used {per}) when fewer than {min_valid:.0%} of "
            f"those {float(duration_s):g} seconds have a valid MAP, when they run past the recording end, or when MAP "
            "at t is already below the threshold or invalid.")
