"""Labels derived from the ABP waveform by one documented rule.

MAP trace: `map_per_second[k]` is the mean arterial pressure over [k-1, k+1) seconds (2 s, at
least one cardiac cycle above 30 bpm), NaN when either second has an invalid sample, a sample
above 250 mmHg (flush) or a mean outside 20-200 mmHg (zeroing, disconnection).

IOH event (`ioh_events`, one detector for the label rule, the cohort's `has_hypotension` and the
simulator's tests): MAP < `threshold` (65 mmHg) for >= `min_duration_s` (60 s). A candidate is a
maximal run of seconds each either below the threshold or invalid (NaN), trimmed to start and end
on a valid second below it; it is an event when it is >= `min_duration_s` long and some
`min_duration_s` span of it starting on a valid second has at least `min_valid` (0.8) of its
seconds valid. Its onset is the first such span's first second (the run start when the data are
complete), its end the run end (exclusive). Every valid second of an event is below the threshold;
a gap (NaN) inside a run neither breaks nor confirms it.

Two label rules for a window ending at time `e` (seconds from recording start), horizon `h`:

`within` (forward, the default; Anesthesiology 2024;141(3):443): positive (1) when an IOH event
begins within (e, e + h]; negative (0) when none does and at least `min_valid` of the seconds in
(e, e + h + duration] are valid (else `label_artefact`). No label when that span runs past the
recording end (`label_past_end`), when MAP at e is invalid (`map_now_invalid`) or already below
the threshold (`already_hypotensive`), when e lies inside an event (`in_event`: onset <= e < end,
which includes an event beginning exactly at e), or within `post_event_gap_s` after an event ends
(`post_event`).

`at` (state of one future minute): positive when MAP is < `threshold` throughout the
`duration_s` (60 s) starting at `e + h`; negative otherwise; no label when fewer than `min_valid`
of those seconds have a valid MAP (`label_artefact`), when that minute runs past the recording
end (`label_past_end`), or when MAP at e is below the threshold (`already_hypotensive`) or not
valid (`map_now_invalid`).

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


RULES = ("within", "at")


def ioh_events(map_1hz: np.ndarray, threshold: float = 65.0, min_duration_s: int = 60,
               min_valid: float = 0.8) -> tuple:
    """IOH events of a 1-Hz MAP trace (see module doc): (onsets_s, ends_s) int64 arrays, ends exclusive."""
    m = np.asarray(map_1hz, dtype=float)
    n, d = len(m), int(min_duration_s)
    empty = np.zeros(0, dtype=np.int64)
    if n < d or d <= 0:
        return empty, empty
    valid = np.isfinite(m)
    below = valid & (np.where(valid, m, np.inf) < threshold)
    member = below | ~valid
    edges = np.diff(np.concatenate([[0], member.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    # seconds of run left from each second (0 outside runs)
    run_id = np.cumsum(edges[:-1] == 1) - 1
    left = np.where(member, stops[np.clip(run_id, 0, None)] - np.arange(n), 0) if len(starts) else np.zeros(n, int)
    count = np.concatenate([[0], np.cumsum(valid)])
    idx = np.arange(n - d + 1)
    ok = below[idx] & (left[idx] >= d) & (count[idx + d] - count[idx] >= min_valid * d - 1e-9)
    cand = idx[ok]
    if len(cand) == 0:
        return empty, empty
    runs, first = np.unique(run_id[cand], return_index=True)
    onsets = cand[first].astype(np.int64)
    last_below = np.concatenate([[-1], np.flatnonzero(below)])
    # trim trailing invalid seconds: the event ends after its last valid second below the threshold
    pos = np.searchsorted(last_below, stops[runs], side="left") - 1
    ends = last_below[pos].astype(np.int64) + 1
    return onsets, ends


def event_timing(onsets_s, ends_s, window_end_s: np.ndarray) -> tuple:
    """(next_onset_s, event_distance_s) per window end: seconds to the next event onset after the
    end (NaN when none follows), and to the nearest event before or after (0 inside one: onset <=
    end < event end; NaN when there is no event)."""
    e = np.asarray(window_end_s, dtype=float)
    onsets, ends = np.asarray(onsets_s, dtype=float), np.asarray(ends_s, dtype=float)
    if len(onsets) == 0:
        nan = np.full(len(e), np.nan)
        return nan, nan.copy()
    k = np.searchsorted(onsets, e, side="right")            # first onset > e
    next_onset = np.where(k < len(onsets), onsets[np.minimum(k, len(onsets) - 1)] - e, np.nan)
    prev = k - 1                                            # last onset <= e
    prev_end = ends[np.clip(prev, 0, None)]
    inside = (prev >= 0) & (e < prev_end)
    since_end = np.where(prev >= 0, e - prev_end, np.inf)
    distance = np.fmin(np.where(np.isnan(next_onset), np.inf, next_onset), since_end)
    return next_onset, np.where(inside, 0.0, distance)


def hypotension_labels(map_1hz: np.ndarray, window_end_s: np.ndarray, horizon_s: float,
                       duration_s: int = 60, threshold: float = 65.0, min_valid: float = 0.8,
                       rule: str = "at", post_event_gap_s: float = 0.0, events=None):
    """Labels for windows ending at `window_end_s`; returns (labels, reasons, map_ahead).

    `rule` is 'within' or 'at' (module doc). `labels` is float with NaN where unknown; `reasons`
    holds '' for a labelled window, else why it has no label; `map_ahead` is the mean valid MAP
    over the minute starting at e + h (the regression target at this horizon; NaN when the label
    is unknown). `events` is `ioh_events(...)` of the trace when already computed (rule 'within').
    """
    if rule not in RULES:
        raise ValueError(f"label rule {rule!r}: must be one of {RULES}")
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
    unusable = [(ok & (map_now < threshold), "already_hypotensive"), (ok & ~np.isfinite(map_now), "map_now_invalid")]
    if rule == "within":
        onsets, ends = ioh_events(map_1hz, threshold, duration_s, min_valid) if events is None else events
        onsets, ends = np.asarray(onsets, dtype=float), np.asarray(ends, dtype=float)
        e = window_end_s
        k = np.searchsorted(onsets, e, side="right")           # onsets[k] is the first > e
        begins = (k < len(onsets)) & (onsets[np.minimum(k, max(len(onsets) - 1, 0))] <= e + horizon_s) \
            if len(onsets) else np.zeros(n, dtype=bool)
        prev_end = ends[np.clip(k - 1, 0, None)] if len(onsets) else np.full(n, -np.inf)
        has_prev = k > 0
        valid = np.concatenate([[0], np.cumsum(np.isfinite(map_1hz))])
        lo = np.clip(np.floor(e + 1e-9).astype(np.int64), 0, len(map_1hz))
        hi = np.clip(first + duration_s, 0, len(map_1hz))
        share = (valid[hi] - valid[lo]) / np.maximum(hi - lo, 1)
        labels[ok] = begins[ok].astype(float)
        reasons[ok] = ""
        artefact = ok & ~begins & (share < min_valid)
        labels[artefact] = np.nan
        reasons[artefact] = "label_artefact"
        unusable = [(ok & has_prev & (e >= prev_end) & (e < prev_end + post_event_gap_s), "post_event"),
                    (ok & has_prev & (e < prev_end), "in_event"), *unusable]
        map_ahead[~np.isfinite(labels)] = np.nan
    for mask, reason in unusable:
        labels[mask] = np.nan
        map_ahead[mask] = np.nan
        reasons[mask] = reason
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


def has_hypotension(map_1hz: np.ndarray, threshold: float = 65.0, min_duration_s: int = 60,
                    min_valid: float = 0.8) -> bool:
    """True when the trace has at least one IOH event (`ioh_events`)."""
    return len(ioh_events(map_1hz, threshold, min_duration_s, min_valid)[0]) > 0


def describe_rule(threshold: float, horizons_min, duration_s: int = 60, min_valid: float = 0.8,
                  rule: str = "at", post_event_gap_min: float = 0.0) -> str:
    """The configured label rule (module doc) in one paragraph for a reader (evaluation and data-quality reports)."""
    horizons = [float(h) for h in horizons_min]
    span = "minute" if float(duration_s) == 60 else f"{float(duration_s):g} s"
    if len(horizons) == 1:
        ahead, start, per, h = f"{horizons[0]:g} min ahead", f"t + {horizons[0]:g} min", "at this horizon", \
            f"{horizons[0]:g} min"
    else:
        ahead = f"h = {', '.join(f'{h:g}' for h in horizons)} min ahead (one label per horizon)"
        start, per, h = "t + h min", "at that horizon", "h min"
    if rule == "within":
        gap = (f", or within {float(post_event_gap_min):g} min after one ends" if post_event_gap_min else "")
        return (f"Hypotension {ahead}, derived from the ABP waveform (lib/signal/labels.py), forward (cohort) "
                f"labelling: an IOH event is MAP below {threshold:g} mmHg for at least {float(duration_s):g} s "
                f"(at least {min_valid:.0%} of those seconds valid, every valid one below). A window ending at time t "
                f"is positive when an event begins within (t, t + {h}], negative when none does. No label (window "
                f"not used {per}) when fewer than {min_valid:.0%} of the seconds up to t + {h} plus the {span} "
                f"confirming an event are valid, when they run past the recording end, when MAP at t is already "
                f"below the threshold or invalid, when t lies inside an event{gap}.")
    return (f"Hypotension {ahead}, derived from the ABP waveform (lib/signal/labels.py): a window ending at time "
            f"t is positive when the per-second MAP stays below {threshold:g} mmHg throughout the {span} starting "
            f"at {start}, negative otherwise. No label (window not used {per}) when fewer than {min_valid:.0%} of "
            f"those {float(duration_s):g} seconds have a valid MAP, when they run past the recording end, or when MAP "
            "at t is already below the threshold or invalid.")
