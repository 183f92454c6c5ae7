"""NeuroKit2's Elgendi, `neurokit` and Pan-Tompkins peak detectors, run on many segments of one signal at once.

`lib.signal.beats` detects beats on thousands of short segments per case (every 10-s block of a
recording, every window's past-only span). NeuroKit (`ppg_findpeaks(method="elgendi")`,
`ecg_findpeaks(method="neurokit" | "pantompkins1985")`, the version pinned in requirements.txt) takes one
segment per call and loops in Python over its candidate waves, one scipy `find_peaks` call per beat. Here
the same steps run on a stack of equal-length segments (the smoothing row by row, by the same scipy and
numpy calls; the sample-by-sample steps, such as squaring, once over the stretch the segments cover), and
every candidate wave of every segment goes through a single `find_peaks` and `peak_prominences` call: the
waves are laid end to end with +inf between them, and +inf ends every local-maximum and prominence
search at a wave's border exactly as the end of the wave alone does. The peaks are NeuroKit's, index for
index (tests/test_detectors.py compares them with NeuroKit's own).
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage, signal

BATCH_SAMPLES = 1 << 17   # segments stacked at once hold about this many samples: 1 MB a float64 stack,
#                           which stays in cache (a larger stack is slower, besides its memory)


def segment_peaks(detector, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, fs: float) -> tuple:
    """`detector`'s peaks in each segment x[lo[k]:hi[k]] of the finite signal `x`, each segment detected as
    NeuroKit detects it alone: (segment k, index in it), sorted by segment then index. A segment shorter than
    2 s or flat has none. `detector` is one of this module's `elgendi_peaks`, `neurokit_r_peaks`,
    `pantompkins_r_peaks`."""
    x = np.asarray(x, dtype=np.float64)
    if detector in _WAVES:   # the waves batch by batch, then the maxima of all of them at once
        segment, beg, end = _by_batch(_WAVES[detector], x, lo, hi, fs, returns=3)
        order = np.lexsort((beg, segment))
        return _spaced_maxima(x, lo, segment[order], beg[order], end[order], int(np.rint(MINDELAY_S * fs)))
    segment, peak = _by_batch(detector, x, lo, hi, fs, returns=2)
    order = np.lexsort((peak, segment))
    return segment[order], peak[order]


def _by_batch(find, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, fs: float, returns: int) -> list:
    """`find(x, lo[batch], length, fs)` on batches of equal-length segments long enough and not flat: its
    `returns` arrays, concatenated, rows numbered by segment."""
    lengths = hi - lo
    repeats = np.flatnonzero(x[1:] == x[:-1])   # i where sample i + 1 repeats sample i (few, but in flat stretches)
    flat = np.searchsorted(repeats, hi - 1) - np.searchsorted(repeats, lo) >= hi - 1 - lo
    usable = (lengths >= 2 * fs) & ~flat
    parts = [[np.zeros(0, dtype=np.int64)] for _ in range(returns)]
    for length in np.unique(lengths[usable]):
        same = np.flatnonzero(usable & (lengths == length))
        for batch in np.array_split(same, -(-len(same) * int(length) // BATCH_SAMPLES)):
            row, *rest = find(x, lo[batch], int(length), fs)
            for part, values in zip(parts, (batch[row], *rest)):
                part.append(values)
    return [np.concatenate(part) for part in parts]


def _rows(values: np.ndarray, lo: np.ndarray, length: int) -> np.ndarray:
    """values[lo[k]:lo[k] + length] for each k, as rows of a new array (values: one per sample of the stretch
    the segments cover, starting at lo.min())."""
    return sliding_window_view(values, length)[lo - lo.min()]


MINDELAY_S = 0.3   # NeuroKit's minimum delay between peaks, in both wave detectors


def elgendi_peaks(x: np.ndarray, lo: np.ndarray, length: int, fs: float) -> tuple:
    """(k, index) of the systolic peaks `neurokit2.ppg_findpeaks(x[lo[k]:lo[k] + length], fs, method="elgendi")`
    finds (Elgendi et al. 2013: waves where a short moving average of the squared positive signal exceeds a
    long one plus an offset; each long enough wave's most prominent maximum), NeuroKit's defaults."""
    return _spaced_maxima(x, lo, *_elgendi_waves(x, lo, length, fs), int(np.rint(MINDELAY_S * fs)))


def _elgendi_waves(x, lo, length, fs, peakwindow=0.111, beatwindow=0.667, beatoffset=0.02) -> tuple:
    """(k, begin, end) of the waves `elgendi_peaks` searches, in order."""
    stretch = x[lo.min():lo.max() + length]
    squared = _rows(np.maximum(stretch, 0.0) ** 2, lo, length)   # NeuroKit zeroes the negative samples, squares
    ma_peak = ndimage.uniform_filter1d(squared, int(np.rint(peakwindow * fs)), axis=1, mode="nearest")
    ma_beat = ndimage.uniform_filter1d(squared, int(np.rint(beatwindow * fs)), axis=1, mode="nearest")
    threshold = ma_beat + beatoffset * squared.mean(axis=1, keepdims=True)
    row, beg, end = _waves(ma_peak > threshold)
    long_enough = end - beg >= int(np.rint(peakwindow * fs))
    return row[long_enough], beg[long_enough], end[long_enough]


def neurokit_r_peaks(x: np.ndarray, lo: np.ndarray, length: int, fs: float) -> tuple:
    """(k, index) of the R peaks `neurokit2.ecg_findpeaks(x[lo[k]:lo[k] + length], fs, method="neurokit")` finds
    (QRS complexes where the smoothed absolute gradient exceeds 1.5 times its moving average; each one not much
    shorter than the segment's mean its most prominent maximum), NeuroKit's defaults."""
    return _spaced_maxima(x, lo, *_neurokit_waves(x, lo, length, fs), int(np.rint(fs * MINDELAY_S)))


def _neurokit_waves(x, lo, length, fs, smoothwindow=0.1, avgwindow=0.75, gradthreshweight=1.5,
                    minlenweight=0.4) -> tuple:
    """(k, begin, end) of the QRS complexes `neurokit_r_peaks` searches, in order."""
    stretch = x[lo.min():lo.max() + length]
    absgrad = _rows(np.abs(np.gradient(stretch)), lo, length)
    # a segment's own ends take one-sided differences, as np.gradient of the segment alone does
    first, last = lo - lo.min(), lo - lo.min() + length - 1
    absgrad[:, 0] = np.abs(stretch[first + 1] - stretch[first])
    absgrad[:, -1] = np.abs(stretch[last] - stretch[last - 1])
    smoothgrad = ndimage.uniform_filter1d(absgrad, int(np.rint(smoothwindow * fs)), axis=1, mode="nearest")
    avggrad = ndimage.uniform_filter1d(smoothgrad, int(np.rint(avgwindow * fs)), axis=1, mode="nearest")
    row, beg, end = _waves(smoothgrad > gradthreshweight * avggrad)
    # per segment: the mean QRS length (integer sums, exact in any order), as np.mean gives it
    counts = np.bincount(row, minlength=len(lo))
    mean_length = np.bincount(row, weights=end - beg, minlength=len(lo)) / np.maximum(counts, 1)
    long_enough = ~(end - beg < mean_length[row] * minlenweight)
    return row[long_enough], beg[long_enough], end[long_enough]


_WAVES = {elgendi_peaks: _elgendi_waves, neurokit_r_peaks: _neurokit_waves}


def pantompkins_r_peaks(x: np.ndarray, lo: np.ndarray, length: int, fs: float) -> tuple:
    """(k, index) of the R peaks `neurokit2.ecg_findpeaks(x[lo[k]:lo[k] + length], fs, method="pantompkins1985")`
    finds (Pan & Tompkins 1985 as py-ecg-detectors has it: the moving average of the squared derivative, its
    local maxima run through adaptive signal and noise levels, with a search back for a beat missed after a
    long R-R interval)."""
    stretch = x[lo.min():lo.max() + length]
    diff = np.diff(stretch)
    squared = _rows(diff * diff, lo, length - 1)
    width = int(0.12 * fs)
    mwa = ndimage.uniform_filter1d(squared, width, axis=1, origin=(width - 1) // 2)
    head = min(width - 1, squared.shape[1])   # the first averages cover only the samples so far
    mwa[:, :head] = np.cumsum(squared[:, :head], axis=1) / np.linspace(1, head, head)
    mwa[:, :int(0.2 * fs)] = 0
    laid = np.full((len(mwa), mwa.shape[1] + 1), np.inf)   # the rows end to end, +inf after each (module doc)
    laid[:, :-1] = mwa
    laid, offsets = laid.ravel(), np.arange(len(mwa)) * laid.shape[1]
    maxima = signal.find_peaks(laid, plateau_size=(1, 1))[0]
    maxima = maxima[np.isfinite(laid[maxima])]
    row = np.searchsorted(offsets, maxima, side="right") - 1
    found_rows, found_peaks = [], []
    for r, candidates in zip(*_split_by_row(row, maxima - offsets[row])):
        peaks = sorted(set(_adaptive_thresholds(candidates.tolist(), mwa[r, candidates].tolist(), fs)))
        found_rows += [r] * len(peaks)
        found_peaks += peaks
    return np.array(found_rows, dtype=np.int64), np.array(found_peaks, dtype=np.int64)


def _waves(above: np.ndarray) -> tuple:
    """(row, begin, end) of NeuroKit's candidate waves in each row of the boolean `above`: a wave begins at
    i where above turns on at i + 1 and ends at i where it turns off at i + 1; ends before a row's first
    begin are dropped and begins and ends are paired in order, as many as the fewer of them."""
    width, on = above.shape[1], above.ravel()
    at = np.flatnonzero(on[1:] != on[:-1])   # `above` changes between i and i + 1
    at = at[at % width != width - 1]          # not from one row's end to the next row's start
    row, col = np.divmod(at, width)
    turns_on = on[at + 1]
    beg_row, beg, end_row, end = row[turns_on], col[turns_on], row[~turns_on], col[~turns_on]
    first_beg = np.full(len(above), np.iinfo(np.int64).max)   # a row without a begin keeps no end
    rows_with_beg, first = np.unique(beg_row, return_index=True)
    first_beg[rows_with_beg] = beg[first]
    after = end > first_beg[end_row]
    end_row, end = end_row[after], end[after]
    n_beg, n_end = np.bincount(beg_row, minlength=len(above)), np.bincount(end_row, minlength=len(above))
    pairs = np.minimum(n_beg, n_end)
    beg_rank = np.arange(len(beg_row)) - (np.cumsum(n_beg) - n_beg)[beg_row]
    end_rank = np.arange(len(end_row)) - (np.cumsum(n_end) - n_end)[end_row]
    paired_beg, paired_end = beg_rank < pairs[beg_row], end_rank < pairs[end_row]
    return beg_row[paired_beg], beg[paired_beg], end[paired_end]


def _spaced_maxima(x: np.ndarray, lo: np.ndarray, row: np.ndarray, beg: np.ndarray, end: np.ndarray,
                   min_gap: int) -> tuple:
    """(row, index) of the most prominent maximum of each wave [beg, end) of segment x[lo[row]:], in order, a
    peak kept only when it lies more than `min_gap` samples after the segment's last kept one (NeuroKit starts
    that chain at sample 0)."""
    at = most_prominent_peaks(x, lo[row] + beg, lo[row] + end)
    found = at >= 0
    row, peak = row[found], at[found] - lo[row[found]]
    keep = np.zeros(len(peak), dtype=bool)
    last_row, last = -1, 0
    for i, (r, p) in enumerate(zip(row.tolist(), peak.tolist())):
        if r != last_row:
            last_row, last = r, 0
        if p - last > min_gap:
            keep[i], last = True, p
    return row[keep], peak[keep]


def _split_by_row(row: np.ndarray, values: np.ndarray) -> tuple:
    """(rows present, [their values]) of values sorted by row."""
    rows, first = np.unique(row, return_index=True)
    return rows.tolist(), np.split(values, first[1:]) if len(rows) else []


def _adaptive_thresholds(peaks: list, values: list, fs: float) -> list:
    """NeuroKit's `_ecg_findpeaks_peakdetect` over one row's local maxima of the moving average (`peaks`, at
    `values`): a maximum above the running threshold and far enough from the last beat is a beat; after an
    R-R interval 1.66 times the mean of the last eight, the largest maximum in between above half the
    threshold is taken as the missed beat. Same arithmetic, on Python floats instead of numpy scalars."""
    min_peak_distance, min_missed_distance = int(0.3 * fs), int(0.25 * fs)
    beats, signal_level, noise_level, last_peak, last_index = [], 0.0, 0.0, 0, -1
    earliest = last_peak + min_peak_distance   # a beat lies after this sample
    for index, (peak, value) in enumerate(zip(peaks, values)):
        if peak > earliest:
            threshold = noise_level + 0.25 * (signal_level - noise_level)
            if value > threshold:
                beats.append(peak)
                if len(beats) > 9 and peak - last_peak > int(1.66 * ((beats[-2] - beats[-10]) // 8)):
                    missed = [(p, v) for p, v in zip(peaks[last_index + 1:index], values[last_index + 1:index])
                              if last_peak + min_missed_distance < p < peak - min_missed_distance
                              and v > 0.5 * threshold]
                    if missed:
                        beats[-1] = max(missed, key=lambda pv: pv[1])[0]   # the first of equal maxima
                        beats.append(peak)
                last_peak, last_index, earliest = peak, index, peak + min_peak_distance
                signal_level = 0.125 * value + 0.875 * signal_level
                continue
        noise_level = 0.125 * value + 0.875 * noise_level
    return beats


def _laid_end_to_end(values: np.ndarray, beg: np.ndarray, lengths: np.ndarray) -> tuple:
    """The regions values[beg:beg + length] laid end to end, each followed by one +inf: (laid, offset of each
    region in it). A local-maximum or prominence search in `laid` stops at a region's ends as it would at
    the ends of the region alone."""
    slots = lengths + 1
    offsets = np.cumsum(slots) - slots
    # slot j of region k holds values[beg_k + j - offsets_k]; its last slot is then overwritten with +inf
    laid = values.take(np.arange(int(slots.sum())) + np.repeat(beg - offsets, slots), mode="clip")
    laid[offsets + lengths] = np.inf
    return laid, offsets


def most_prominent_peaks(values: np.ndarray, beg: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Per region [beg, end) of `values`, the index (into `values`) of the local maximum that
    `scipy.signal.find_peaks(values[beg:end], prominence=(None, None))` finds most prominent (the first of
    equals); -1 where the region has no local maximum."""
    out = np.full(len(beg), -1, dtype=np.int64)
    if len(beg) == 0:
        return out
    laid, offsets = _laid_end_to_end(values, beg, end - beg)
    peaks = signal.find_peaks(laid)[0]
    peaks = peaks[np.isfinite(laid[peaks])]   # not the separators
    if len(peaks) == 0:
        return out
    prominence = signal.peak_prominences(laid, peaks)[0]
    region = np.searchsorted(offsets, peaks, side="right") - 1
    starts = np.flatnonzero(np.concatenate([[True], region[1:] != region[:-1]]))
    best = np.repeat(np.maximum.reduceat(prominence, starts), np.diff(np.append(starts, len(peaks))))
    regions, first = np.unique(region[prominence == best], return_index=True)
    chosen = peaks[prominence == best][first]
    out[regions] = beg[regions] + chosen - offsets[regions]
    return out
