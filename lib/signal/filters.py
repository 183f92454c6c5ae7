"""Resampling and zero-phase filters for ABP, PPG and ECG (scipy.signal, second-order sections).

Gaps (NaN) are carried as a boolean `invalid` mask: samples are linearly bridged so that the
filters can run, and every window that touches a bridged sample (plus a margin for filter
ringing) is rejected later by the quality gates.
"""
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal


def butter_sos(order: int, cutoff, btype: str, fs: float) -> np.ndarray:
    """`signal.butter(order, cutoff, btype, fs=fs, output="sos")` (cutoff a float or a (low, high) tuple),
    designed once per process for each set of arguments (every case uses the same few)."""
    return _design("butter", (order, cutoff), btype, fs).copy()


def cheby2_sos(order: int, attenuation_db: float, cutoff, btype: str, fs: float) -> np.ndarray:
    """`signal.cheby2(order, attenuation_db, cutoff, btype, fs=fs, output="sos")`, designed once as `butter_sos`."""
    return _design("cheby2", (order, attenuation_db, cutoff), btype, fs).copy()


@lru_cache(maxsize=64)
def _design(kind: str, args: tuple, btype: str, fs: float) -> np.ndarray:
    return getattr(signal, kind)(*args, btype=btype, fs=fs, output="sos")


def fill_gaps(x: np.ndarray):
    """Linearly bridge NaN/inf samples; returns (filled float64 array, invalid mask)."""
    x = np.asarray(x, dtype=np.float64)
    invalid = ~np.isfinite(x)
    if invalid.all():
        return np.zeros_like(x), invalid
    if invalid.any():
        starts, stops = true_runs(invalid)
        # a bridge is np.interp between the valid samples on either side of its gap: only those are needed
        sides = np.concatenate([starts - 1, stops])
        known = np.unique(sides[(sides >= 0) & (sides < len(x))])
        x = x.copy()
        x[invalid] = np.interp(np.flatnonzero(invalid), known, x[known])
    return x, invalid


def true_runs(mask: np.ndarray) -> tuple:
    """(starts, stops) of the runs of True in a boolean array, stops exclusive."""
    step = np.diff(mask.astype(np.int8), prepend=0, append=0)
    return np.flatnonzero(step == 1), np.flatnonzero(step == -1)


def resample_to(x: np.ndarray, fs_in: float, fs_out: float):
    """Polyphase resampling (anti-aliased) of one track; returns (samples, invalid mask)."""
    filled, invalid = fill_gaps(x)
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    if ratio == 1:
        return filled, invalid
    resampled = signal.resample_poly(filled, ratio.numerator, ratio.denominator, padtype="line")
    src = np.minimum((np.arange(len(resampled)) * fs_in / fs_out).astype(np.int64), len(x) - 1)
    return resampled, invalid[src]


def dilate(mask: np.ndarray, margin: int) -> np.ndarray:
    """Grow True runs by `margin` samples on each side (filter ringing around gaps): a sample is marked
    when any sample within `margin` of it is masked. Counted by prefix sums (a convolution takes
    2 * margin + 1 products a sample)."""
    if margin <= 0 or not mask.any():
        return mask
    counts = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
    at = np.arange(len(mask))
    near = counts[np.minimum(at + margin + 1, len(mask))] - counts[np.maximum(at - margin, 0)]
    return near > 0


def _sos_filtfilt(sos, x):
    return signal.sosfiltfilt(sos, x) if len(x) > 3 * (2 * len(sos) + 1) else x


def bandpass_ppg(x: np.ndarray, fs: float, low: float = 0.4, high: float = 7.0) -> np.ndarray:
    """PPG: 4th-order Chebyshev type II band-pass, zero-phase (Liang et al., 2018, Diagnostics)."""
    sos = cheby2_sos(4, 20, (low, high), "bandpass", fs)
    return _sos_filtfilt(sos, x)


def bandpass_ecg(x: np.ndarray, fs: float, low: float = 0.5, high: float = 40.0) -> np.ndarray:
    """ECG: 4th-order Butterworth band-pass, zero-phase (removes baseline wander and EMG)."""
    sos = butter_sos(4, (low, min(high, 0.45 * fs)), "bandpass", fs)
    return _sos_filtfilt(sos, x)


def lowpass_abp(x: np.ndarray, fs: float, cutoff: float = 20.0) -> np.ndarray:
    """ABP: 4th-order Butterworth low-pass, zero-phase. Keeps the DC level: MAP *is* the label."""
    sos = butter_sos(4, min(cutoff, 0.45 * fs), "lowpass", fs)
    return _sos_filtfilt(sos, x)
