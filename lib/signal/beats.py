"""Beat detection on whole recordings, and per-window beat statistics by prefix sums.

Detectors run once per case (not once per window), then every window's beat count, ECG
agreement, SBP/DBP/MAP and heart rate come from `searchsorted` + cumulative sums, vectorised
over all windows of the case.

* ECG R peaks: two independent detectors from NeuroKit2 (Makowski et al., 2021): its own
  gradient-based detector (`neurokit`) and Pan & Tompkins (1985) (`pantompkins1985`).
* Arterial/PPG systolic peaks: Elgendi et al. (2013, PLoS ONE 8:e76585) two-moving-average
  detector (`neurokit2.ppg_findpeaks(method="elgendi")`). ABP is detected on a 0.5-8 Hz
  band-passed copy (the detector thresholds the positive half of a zero-mean signal, so a long
  low-pressure stretch would otherwise hide its beats) and each peak is then moved to the
  local maximum of the level-preserving ABP within ±`REFINE_S`.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

BSQI_TOLERANCE_S = 0.15   # Li et al. (2008): detections within 150 ms are the same beat
REFINE_S = 0.1
BLOCK_S, BLOCK_MARGIN_S = 10.0, 2.0   # ECG detectors restart every 10 s (see _blockwise_peaks)


# neurokit2 takes about a second to import: it is imported where beats are detected, not with this module
# (`ttm-ioh score` windows a recording in a worker process while the model loads).
def ecg_findpeaks(*args, **kwargs):
    from neurokit2 import ecg_findpeaks as find
    return find(*args, **kwargs)


def ppg_findpeaks(*args, **kwargs):
    from neurokit2 import ppg_findpeaks as find
    return find(*args, **kwargs)


def _quiet_peaks(find, x, fs, method, key):
    """A detector's peak indices; a flat or very short signal simply has none."""
    if len(x) < 2 * fs or not np.ptp(x) > 0:
        return np.zeros(0, dtype=np.int64)
    try:
        peaks = find(x, sampling_rate=fs, method=method)[key]
    except (ValueError, IndexError):  # NeuroKit raises on signals without any detectable beat
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.asarray(peaks, dtype=np.int64))


def _blockwise_peaks(find, x, fs, method, key, block_s=BLOCK_S, margin_s=BLOCK_MARGIN_S):
    """Run a detector on overlapping blocks and keep each block's core detections.

    Adaptive-threshold detectors (Pan-Tompkins) never recover from one large artefact on a long
    recording (the threshold stays up for the rest of the case); restarting every block, as a
    bedside monitor relearns, confines an artefact's damage to its block.
    """
    block, margin = int(block_s * fs), int(margin_s * fs)
    found = []
    for core in range(0, len(x), block):
        lo = max(core - margin, 0)
        peaks = _quiet_peaks(find, x[lo:core + block + margin], fs, method, key) + lo
        found.append(peaks[(peaks >= core) & (peaks < core + block)])
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def ecg_r_peaks(ecg: np.ndarray, fs: float):
    """R-peak indices from two independent detectors (for bSQI): (neurokit, pantompkins1985)."""
    return (_blockwise_peaks(ecg_findpeaks, ecg, fs, "neurokit", "ECG_R_Peaks"),
            _blockwise_peaks(ecg_findpeaks, ecg, fs, "pantompkins1985", "ECG_R_Peaks"))


def ppg_systolic_peaks(ppg: np.ndarray, fs: float) -> np.ndarray:
    """Systolic peaks of a band-passed PPG (Elgendi 2013), restarted every BLOCK_S like the ECG's
    (its threshold is a mean over the signal it sees: blocks bound how far ahead that reaches)."""
    return _blockwise_peaks(ppg_findpeaks, ppg, fs, "elgendi", "PPG_Peaks")


def abp_systolic_peaks(abp: np.ndarray, fs: float) -> np.ndarray:
    """Systolic peaks of the (level-preserving) ABP: detected band-passed, refined on the ABP."""
    sos = signal.butter(2, [0.5, min(8.0, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    detect = signal.sosfiltfilt(sos, abp) if len(abp) > 15 else abp - abp.mean()
    return _refine_to_maximum(_quiet_peaks(ppg_findpeaks, detect, fs, "elgendi", "PPG_Peaks"), abp, fs)


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
    x = np.asarray(samples, dtype=np.float64)
    valid = np.isfinite(x)
    if not valid.any():
        return np.zeros_like(x)
    last_valid = np.maximum.accumulate(np.where(valid, np.arange(len(x)), -1))
    held = x[np.where(last_valid >= 0, last_valid, np.argmax(valid))]
    return signal.sosfilt(sos, held, zi=signal.sosfilt_zi(sos) * held[0])[0]


def _past_spans(n_samples: int, srate: float, window_end_s: np.ndarray, span_s: float):
    """Per window end e: (lo, start, end) sample indices with [start, end) the span [e - span_s, e)
    (samples strictly before e) and [lo, start) up to PAST_MARGIN_S of history before it."""
    end = np.minimum(np.floor(np.asarray(window_end_s, dtype=float) * srate - 1e-6).astype(np.int64) + 1, n_samples)
    start = np.maximum(end - int(round(span_s * srate)), 0)
    return np.maximum(start - int(round(PAST_MARGIN_S * srate)), 0), start, end


def _span_has_gap(samples: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    bad = np.concatenate([[0], np.cumsum(~np.isfinite(samples))])
    return bad[end] - bad[start] > 0


def _whole_beats(peaks: np.ndarray, offset: int, n: int, srate: float) -> np.ndarray:
    """Detections inside the span [offset, n) of a segment that are not a beat cut by its end."""
    return peaks[(peaks >= offset) & (peaks < n - CUT_BEAT_S * srate)]


def past_abp_pressures(abp: np.ndarray, srate: float, window_end_s: np.ndarray, span_s: float,
                       lowpass_hz: float) -> dict:
    """`abp_beat_pressures` of each window's span [e - span_s, e), from the recorded ABP before e only.

    The recording is filtered causally (`causal_filter`: a 4th-order Butterworth low-pass keeps
    the level, a 0.5-8 Hz band-pass feeds the detector), then each window's segment (its span plus
    PAST_MARGIN_S of history) gets its own Elgendi detection, so no sample at or after the window
    end e can change the result (a zero-phase filter or a whole-recording detector looks ahead).
    A detection in the last CUT_BEAT_S before e may be a systole cut by e: it is not counted.
    NaN (and 0 beats) where the span has a missing sample.
    """
    smooth = causal_filter(abp, signal.butter(4, min(lowpass_hz, 0.45 * srate), btype="lowpass", fs=srate,
                                              output="sos"))
    detect = causal_filter(abp, signal.butter(2, [0.5, min(8.0, 0.45 * srate)], btype="bandpass", fs=srate,
                                              output="sos"))
    lo, start, end = _past_spans(len(smooth), srate, window_end_s, span_s)
    gap = _span_has_gap(abp, start, end)
    keys = ("n_beats", "sbp", "dbp", "map", "pp")
    out = {k: np.full(len(lo), np.nan) for k in keys}
    out["n_beats"] = np.zeros(len(lo), dtype=np.int64)
    for i in np.flatnonzero(~gap & (end - start > 0)):
        seg = smooth[lo[i]:end[i]]
        peaks = _refine_to_maximum(_quiet_peaks(ppg_findpeaks, detect[lo[i]:end[i]], srate, "elgendi", "PPG_Peaks"),
                                   seg, srate)
        row = abp_beat_pressures(seg, _whole_beats(peaks, start[i] - lo[i], len(seg), srate),
                                 np.array([start[i] - lo[i]]), end[i] - start[i])
        for k in keys:
            out[k][i] = row[k][0]
    return out


def past_heart_rate(ecg: np.ndarray, srate: float, window_end_s: np.ndarray, span_s: float, band_hz) -> np.ndarray:
    """Heart rate (bpm) from the R peaks in each window's span [e - span_s, e), from the recorded
    ECG before e only: causal band-pass (a constant delay leaves R-R intervals exact), NeuroKit's
    detector per segment, as `past_abp_pressures`. NaN where the span has a gap or < 2 beats."""
    clean = causal_filter(ecg, signal.butter(4, [band_hz[0], min(band_hz[1], 0.45 * srate)], btype="bandpass",
                                             fs=srate, output="sos"))
    lo, start, end = _past_spans(len(clean), srate, window_end_s, span_s)
    rates = np.full(len(lo), np.nan)
    for i in np.flatnonzero(~_span_has_gap(ecg, start, end) & (end - start > 0)):
        seg = clean[lo[i]:end[i]]
        peaks = _whole_beats(_quiet_peaks(ecg_findpeaks, seg, srate, "neurokit", "ECG_R_Peaks"), start[i] - lo[i],
                             len(seg), srate)
        rates[i] = heart_rate(peaks, srate, np.array([start[i] - lo[i]]), end[i] - start[i])[0]
    return rates
