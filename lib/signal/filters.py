"""Resampling and zero-phase filters for ABP, PPG and ECG (scipy.signal, second-order sections).

Gaps (NaN) are carried as a boolean `invalid` mask: samples are linearly bridged so that the
filters can run, and every window that touches a bridged sample (plus a margin for filter
ringing) is rejected later by the quality gates.
"""
from fractions import Fraction

import numpy as np
from scipy import signal


def fill_gaps(x: np.ndarray):
    """Linearly bridge NaN/inf samples; returns (filled float64 array, invalid mask)."""
    x = np.asarray(x, dtype=np.float64)
    invalid = ~np.isfinite(x)
    if invalid.all():
        return np.zeros_like(x), invalid
    if invalid.any():
        idx = np.arange(len(x))
        x = x.copy()
        x[invalid] = np.interp(idx[invalid], idx[~invalid], x[~invalid])
    return x, invalid


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
    """Grow True runs by `margin` samples on each side (filter ringing around gaps)."""
    if margin <= 0 or not mask.any():
        return mask
    return np.convolve(mask.astype(np.int8), np.ones(2 * margin + 1, dtype=np.int8), "same") > 0


def _sos_filtfilt(sos, x):
    return signal.sosfiltfilt(sos, x) if len(x) > 3 * (2 * len(sos) + 1) else x


def bandpass_ppg(x: np.ndarray, fs: float, low: float = 0.4, high: float = 7.0) -> np.ndarray:
    """PPG: 4th-order Chebyshev type II band-pass, zero-phase (Liang et al., 2018, Diagnostics)."""
    sos = signal.cheby2(4, 20, [low, high], btype="bandpass", fs=fs, output="sos")
    return _sos_filtfilt(sos, x)


def bandpass_ecg(x: np.ndarray, fs: float, low: float = 0.5, high: float = 40.0) -> np.ndarray:
    """ECG: 4th-order Butterworth band-pass, zero-phase (removes baseline wander and EMG)."""
    sos = signal.butter(4, [low, min(high, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    return _sos_filtfilt(sos, x)


def lowpass_abp(x: np.ndarray, fs: float, cutoff: float = 20.0) -> np.ndarray:
    """ABP: 4th-order Butterworth low-pass, zero-phase. Keeps the DC level: MAP *is* the label."""
    sos = signal.butter(4, min(cutoff, 0.45 * fs), btype="lowpass", fs=fs, output="sos")
    return _sos_filtfilt(sos, x)
