"""Beat detection on whole recordings, and per-window beat statistics by prefix sums.

Detectors run once per case (not once per window), then every window's beat count, ECG
agreement, SBP/DBP/MAP and heart rate come from `searchsorted` + cumulative sums, vectorised
over all windows of the case. The past-only statistics (`past_abp_pressures`, `past_heart_rate`)
detect each window's own segment; all the segments of a case go through `lib.signal.detectors` at once.

* ECG R peaks: two independent detectors from NeuroKit2 (Makowski et al., 2021): its own
  gradient-based detector (`neurokit`) and Pan & Tompkins (1985) (`pantompkins1985`).
* Arterial/PPG systolic peaks: Elgendi et al. (2013, PLoS ONE 8:e76585) two-moving-average
  detector (`neurokit2.ppg_findpeaks(method="elgendi")`). ABP is detected on a 0.5-8 Hz
  band-passed copy (the detector thresholds the positive half of a zero-mean signal, so a long
  low-pressure stretch would otherwise hide its beats) and each peak is then moved to the
  local maximum of the level-preserving ABP within ±`REFINE_S`.

The three NeuroKit detectors run as `lib.signal.detectors` runs them: on many segments at once, each
segment getting the peaks NeuroKit finds in it alone.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

from lib.signal import detectors
from lib.signal.filters import butter_sos, true_runs

BSQI_TOLERANCE_S = 0.15   # Li et al. (2008): detections within 150 ms are the same beat
REFINE_S = 0.1
BLOCK_S, BLOCK_MARGIN_S = 10.0, 2.0   # ECG detectors restart every 10 s (see _blockwise_peaks)


def _blocks(n: int, fs: float) -> tuple:
    """(lo, hi, core) of the overlapping blocks `_blockwise_peaks` detects on: block k spans [lo, hi) and
    keeps its detections in [core, core + BLOCK_S)."""
    block, margin = int(BLOCK_S * fs), int(BLOCK_MARGIN_S * fs)
    core = np.arange(0, n, block, dtype=np.int64)
    return np.maximum(core - margin, 0), np.minimum(core + block + margin, n), core


def _blockwise_peaks(detector, x, fs):
    """Run a detector on overlapping blocks and keep each block's core detections.

    Adaptive-threshold detectors (Pan-Tompkins) never recover from one large artefact on a long
    recording (the threshold stays up for the rest of the case); restarting every block, as a
    bedside monitor relearns, confines an artefact's damage to its block. `detector`: one of
    lib.signal.detectors.
    """
    lo, hi, core = _blocks(len(x), fs)
    block, peaks = detectors.segment_peaks(detector, x, lo, hi, fs)
    peaks = peaks + lo[block]
    return peaks[(peaks >= core[block]) & (peaks < core[block] + int(BLOCK_S * fs))]


def ecg_r_peaks(ecg: np.ndarray, fs: float):
    """R-peak indices from two independent detectors (for bSQI): (neurokit, pantompkins1985)."""
    return (_blockwise_peaks(detectors.neurokit_r_peaks, ecg, fs),
            _blockwise_peaks(detectors.pantompkins_r_peaks, ecg, fs))


def ppg_systolic_peaks(ppg: np.ndarray, fs: float) -> np.ndarray:
    """Systolic peaks of a band-passed PPG (Elgendi 2013), restarted every BLOCK_S like the ECG's
    (its threshold is a mean over the signal it sees: blocks bound how far ahead that reaches)."""
    return _blockwise_peaks(detectors.elgendi_peaks, ppg, fs)


def abp_systolic_peaks(abp: np.ndarray, fs: float) -> np.ndarray:
    """Systolic peaks of the (level-preserving) ABP: detected band-passed, refined on the ABP."""
    sos = signal.butter(2, [0.5, min(8.0, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    detect = signal.sosfiltfilt(sos, abp) if len(abp) > 15 else abp - abp.mean()
    _, peaks = detectors.segment_peaks(detectors.elgendi_peaks, detect, np.array([0]), np.array([len(detect)]), fs)
    return _refine_to_maximum(peaks, abp, fs)


def _refine_to_maximum(peaks: np.ndarray, abp: np.ndarray, fs: float) -> np.ndarray:
    """Move each detection to the pressure maximum within ±REFINE_S of it, inside `abp` (edges held)."""
    r = int(REFINE_S * fs)
    if len(peaks) == 0 or len(abp) <= 2 * r:
        return peaks
    neighbourhood = sliding_window_view(np.pad(abp, r, mode="edge"), 2 * r + 1)[peaks]
    return np.unique(peaks + np.argmax(neighbourhood, axis=1) - r)


def count_in_windows(events: np.ndarray, starts: np.ndarray, length: int):
    """(first index, count) of sorted `events` inside each window [start, start + length)."""
    lo = np.searchsorted(events, starts, side="left")
    hi = np.searchsorted(events, starts + length, side="left")
    return lo, hi - lo


def _window_sum(values: np.ndarray, lo: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Sum of values[lo:lo+n] per window, by one cumulative sum."""
    cs = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return cs[lo + n] - cs[lo]


def _window_mean(values: np.ndarray, lo: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Mean of values[lo:lo+n] per window (NaN when n == 0)."""
    return np.where(n > 0, _window_sum(values, lo, n) / np.maximum(n, 1), np.nan)


def _has_partner(peaks, others, tol) -> np.ndarray:
    """True where a detection has a detection of the other detector within `tol` samples."""
    if len(peaks) == 0 or len(others) == 0:
        return np.zeros(len(peaks), dtype=bool)
    right = np.clip(np.searchsorted(others, peaks), 0, len(others) - 1)
    left = np.maximum(right - 1, 0)
    return np.minimum(np.abs(others[right] - peaks), np.abs(others[left] - peaks)) <= tol


def bsqi(peaks_a: np.ndarray, peaks_b: np.ndarray, fs: float, starts: np.ndarray, length: int) -> np.ndarray:
    """ECG beat-agreement SQI per window (Li, Mark & Clifford 2008, Physiol. Meas. 29:15-32).

    bSQI = N_matched / (N_a + N_b - N_matched): the share of beats that both detectors find
    (within 150 ms of each other); 1 = perfect agreement, noise makes the detectors disagree.
    Computed as M / (M + U_a + U_b), M the matched beats, U the unmatched detections of each
    detector in the window; a pair straddling a window edge counts once, as matched. A window
    without any detection scores 0.
    """
    tol = BSQI_TOLERANCE_S * fs
    counts = []
    for peaks, others in [(peaks_a, peaks_b), (peaks_b, peaks_a)]:
        lo, n = count_in_windows(peaks, starts, length)
        matched = _window_sum(_has_partner(peaks, others, tol), lo, n)
        counts.append((matched, n - matched))
    (m_a, u_a), (m_b, u_b) = counts
    m = np.maximum(m_a, m_b)
    total = m + u_a + u_b
    return np.where(total > 0, m / np.maximum(total, 1), 0.0)


def heart_rate(r_peaks: np.ndarray, fs: float, starts: np.ndarray, length: int) -> np.ndarray:
    """Beats per minute from the mean R-R interval inside each window (NaN below 2 beats)."""
    lo, n = count_in_windows(r_peaks, starts, length)
    first = r_peaks[np.minimum(lo, max(len(r_peaks) - 1, 0))] if len(r_peaks) else np.zeros(len(lo))
    last = r_peaks[np.maximum(lo + n - 1, 0)] if len(r_peaks) else np.zeros(len(lo))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= 2, 60.0 * fs * (n - 1) / (last - first), np.nan)


def abp_beat_pressures(abp: np.ndarray, peaks: np.ndarray, starts: np.ndarray, length: int) -> dict:
    """Beat-derived pressures per window (mmHg).

    * `sbp`: mean of the systolic peaks in the window;
    * `dbp`: mean of the diastolic minima between consecutive peaks in the window;
    * `map`: mean ABP from the first to the last peak in the window (whole cardiac cycles, so
      neither systole nor diastole is over-represented);
    * `pp` = sbp - dbp, and `n_beats`.
    NaN where the window has fewer than two peaks.
    """
    lo, n = count_in_windows(peaks, starts, length)
    if len(peaks) < 2:
        nan = np.full(len(lo), np.nan)
        return {"n_beats": n, "sbp": nan, "dbp": nan, "map": nan, "pp": nan}
    enough = n >= 2
    troughs = np.minimum.reduceat(abp, peaks)[:-1]  # min over [p_k, p_k+1)
    first, last = peaks[np.minimum(lo, len(peaks) - 1)], peaks[np.clip(lo + n - 1, 0, len(peaks) - 1)]
    sbp = np.where(enough, _window_mean(abp[peaks], lo, n), np.nan)
    dbp = np.where(enough, _window_mean(troughs, lo, np.maximum(n - 1, 0)), np.nan)
    whole_cycles = _window_sum(abp, first, last - first) / np.maximum(last - first, 1)
    return {"n_beats": n, "sbp": sbp, "dbp": dbp, "map": np.where(enough, whole_cycles, np.nan), "pp": sbp - dbp}


PAST_MARGIN_S = 2.0   # recorded history before a window's span that its detectors also see
CUT_BEAT_S = 0.15     # a detection this close to the window end may be a beat cut mid-upstroke: not counted


def causal_filter(samples: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """One forward pass of `sos` over a whole recording: sample t of the output depends on samples <= t only.

    Gaps hold the last valid sample (a linear bridge would reach for the next valid one); samples
    before the first valid one take its value, so they too come from no later than any window that
    has a valid sample.
    """
    return _forward_filter(_hold_gaps(samples), sos, len(samples))


def _hold_gaps(samples: np.ndarray):
    """The samples as float64, each gap holding the last valid sample before it (`causal_filter`); None
    when no sample is valid."""
    x = np.asarray(samples, dtype=np.float64)
    valid = np.isfinite(x)
    if valid.all():
        return x
    if not valid.any():
        return None
    starts, stops = true_runs(~valid)
    held = x.copy()   # a gap at the start holds the first valid sample
    held[~valid] = np.repeat(x[np.where(starts > 0, starts - 1, stops[0])], stops - starts)
    return held


def _forward_filter(held, sos: np.ndarray, n: int) -> np.ndarray:
    """`causal_filter` of gap-held samples (`_hold_gaps`; None: n samples without a valid one give zeros)."""
    if held is None:
        return np.zeros(n)
    return signal.sosfilt(sos, held, zi=signal.sosfilt_zi(sos) * held[0])[0]


def _past_spans(n_samples: int, srate: float, window_end_s: np.ndarray, span_s: float):
    """Per window end e: (lo, start, end) sample indices with [start, end) the span [e - span_s, e)
    (samples strictly before e) and [lo, start) up to PAST_MARGIN_S of history before it."""
    end = np.minimum(np.floor(np.asarray(window_end_s, dtype=float) * srate - 1e-6).astype(np.int64) + 1, n_samples)
    start = np.maximum(end - int(round(span_s * srate)), 0)
    return np.maximum(start - int(round(PAST_MARGIN_S * srate)), 0), start, end


def _span_has_gap(samples: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(samples))
    return np.searchsorted(bad, end) > np.searchsorted(bad, start)


def _whole_beats(segment: np.ndarray, peaks: np.ndarray, offset: np.ndarray, n: np.ndarray, srate: float):
    """The detections (segment, index in it) inside their segment's span [offset, n) that are not a beat
    cut by its end (`offset`, `n`: per segment)."""
    keep = (peaks >= offset[segment]) & (peaks < n[segment] - CUT_BEAT_S * srate)
    return segment[keep], peaks[keep]


def past_abp_pressures(abp: np.ndarray, srate: float, window_end_s: np.ndarray, span_s: float,
                       lowpass_hz: float) -> dict:
    """`abp_beat_pressures` of each window's span [e - span_s, e), from the recorded ABP before e only.

    The recording is filtered causally (`causal_filter`: a 4th-order Butterworth low-pass keeps
    the level, a 0.5-8 Hz band-pass feeds the detector), then each window's segment (its span plus
    PAST_MARGIN_S of history) gets its own Elgendi detection, so no sample at or after the window
    end e can change the result (a zero-phase filter or a whole-recording detector looks ahead).
    A detection in the last CUT_BEAT_S before e may be a systole cut by e: it is not counted.
    NaN (and 0 beats) where the span has a missing sample. The segments are detected all at once
    (`detectors.segment_peaks`), each exactly as alone.
    """
    held = _hold_gaps(abp)
    smooth = _forward_filter(held, butter_sos(4, min(lowpass_hz, 0.45 * srate), "lowpass", srate), len(abp))
    detect = _forward_filter(held, butter_sos(2, (0.5, min(8.0, 0.45 * srate)), "bandpass", srate), len(abp))
    lo, start, end = _past_spans(len(smooth), srate, window_end_s, span_s)
    out = {key: np.full(len(lo), np.nan) for key in ("sbp", "dbp", "map", "pp")}
    out["n_beats"] = np.zeros(len(lo), dtype=np.int64)
    todo = np.flatnonzero(~_span_has_gap(abp, start, end) & (end - start > 0))
    lo, start, end = lo[todo], start[todo], end[todo]
    segment, peaks = detectors.segment_peaks(detectors.elgendi_peaks, detect, lo, end, srate)
    segment, peaks = _refine_in_segments(segment, peaks, smooth, lo, end - lo, srate)
    segment, peaks = _whole_beats(segment, peaks, start - lo, end - lo, srate)
    for key, values in _segment_pressures(smooth, lo, segment, peaks).items():
        out[key][todo] = values
    return out


def _refine_in_segments(segment, peaks, x, lo, lengths, fs) -> tuple:
    """`_refine_to_maximum` of each segment's detections (segment, index in it), segment k being
    x[lo[k]:lo[k] + lengths[k]]: (segment, refined index), sorted and distinct per segment."""
    r = int(REFINE_S * fs)
    movable = lengths[segment] > 2 * r
    # next to a segment end the neighbourhood repeats the end sample, as np.pad(mode="edge") does
    near = np.clip(peaks[movable, None] + np.arange(-r, r + 1), 0, lengths[segment[movable], None] - 1)
    moved = peaks.copy()
    moved[movable] += np.argmax(x[lo[segment[movable], None] + near], axis=1) - r
    order = np.lexsort((moved, segment))
    segment, moved = segment[order], moved[order]
    distinct = np.concatenate([[True], (segment[1:] != segment[:-1]) | (moved[1:] != moved[:-1])])
    return segment[distinct], moved[distinct]


def _segment_pressures(x, lo, segment, peaks) -> dict:
    """`abp_beat_pressures` of each segment x[lo[k]:] over a span that holds all its beats (segment, index
    in it, sorted): {name: one value per segment}, every sum added in the order of that function's."""
    n = np.bincount(segment, minlength=len(lo))
    if len(peaks) == 0:
        return {"n_beats": n, **{key: np.full(len(lo), np.nan) for key in ("sbp", "dbp", "map", "pp")}}
    first_of = np.cumsum(n) - n
    rank = np.arange(len(segment)) - first_of[segment]
    first = peaks[np.minimum(first_of, len(peaks) - 1)]
    last = peaks[np.minimum(first_of + np.maximum(n - 1, 0), len(peaks) - 1)]
    at = lo[segment] + peaks
    troughs = np.minimum.reduceat(x, at)   # min over [p_k, p_k+1) between one segment's beats
    between = rank < (n - 1)[segment]
    enough = n >= 2
    sbp = np.where(enough, _sums_in_order(x[at], segment, rank, n) / np.maximum(n, 1), np.nan)
    dbp = np.where(enough, _sums_in_order(troughs[between], segment[between], rank[between], n - 1)
                   / np.maximum(n - 1, 1), np.nan)
    whole_cycles = np.full(len(lo), np.nan)   # mean pressure from the first beat to the last
    whole_cycles[enough] = (_prefix_sum_differences(x, lo[enough], first[enough], last[enough])
                            / np.maximum(last - first, 1)[enough])
    return {"n_beats": n, "sbp": sbp, "dbp": dbp, "map": whole_cycles, "pp": sbp - dbp}


def _sums_in_order(values, segment, rank, n) -> np.ndarray:
    """Per segment, its `n` values (placed by `rank`) added one after the other, as np.cumsum adds them."""
    table = np.zeros((len(n), max(int(n.max(initial=0)), 1)))
    table[segment, rank] = values
    return np.cumsum(table, axis=1)[np.arange(len(n)), np.clip(n - 1, 0, None)]


def _prefix_sum_differences(x, lo, first, last) -> np.ndarray:
    """Per segment x[lo[k]:], the sum of its samples [first, last) (first < last) as `_window_sum` on the segment
    gives it: the difference of two prefix sums, each accumulated from the segment's first sample."""
    out = np.zeros(len(lo))
    if len(lo) == 0:
        return out
    width = int(last.max())
    tail = max(int(lo.max()) + width - len(x), 0)   # rows running past the recording's end (never read there)
    padded = np.concatenate([x, np.zeros(tail)]) if tail else x
    for batch in np.array_split(np.arange(len(lo)), -(-len(lo) * width // detectors.BATCH_SAMPLES)):
        sums = sliding_window_view(padded, width)[lo[batch]]   # a copy, accumulated in place
        np.cumsum(sums, axis=1, out=sums)
        rows = np.arange(len(batch))
        before_first = np.where(first[batch] > 0, sums[rows, np.maximum(first[batch] - 1, 0)], 0.0)
        out[batch] = sums[rows, last[batch] - 1] - before_first
    return out


def past_heart_rate(ecg: np.ndarray, srate: float, window_end_s: np.ndarray, span_s: float, band_hz) -> np.ndarray:
    """Heart rate (bpm) from the R peaks in each window's span [e - span_s, e), from the recorded
    ECG before e only: causal band-pass (a constant delay leaves R-R intervals exact), NeuroKit's
    detector per segment, as `past_abp_pressures`. NaN where the span has a gap or < 2 beats."""
    clean = causal_filter(ecg, butter_sos(4, (band_hz[0], min(band_hz[1], 0.45 * srate)), "bandpass", srate))
    lo, start, end = _past_spans(len(clean), srate, window_end_s, span_s)
    rates = np.full(len(lo), np.nan)
    todo = np.flatnonzero(~_span_has_gap(ecg, start, end) & (end - start > 0))
    lo, start, end = lo[todo], start[todo], end[todo]
    segment, peaks = detectors.segment_peaks(detectors.neurokit_r_peaks, clean, lo, end, srate)
    segment, peaks = _whole_beats(segment, peaks, start - lo, end - lo, srate)
    if len(peaks) == 0:
        return rates
    n = np.bincount(segment, minlength=len(todo))
    first_of = np.cumsum(n) - n
    first = peaks[np.minimum(first_of, len(peaks) - 1)]
    last = peaks[np.minimum(first_of + np.maximum(n - 1, 0), len(peaks) - 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        rates[todo] = np.where(n >= 2, 60.0 * srate * (n - 1) / (last - first), np.nan)
    return rates
