import numpy as np
from scipy import signal as sps

from lib.signal.filters import bandpass_ecg, bandpass_ppg, dilate, lowpass_abp, resample_to

FS = 125


def gain(filter_fn, freq, fs=FS, seconds=60):
    t = np.arange(seconds * fs) / fs
    x = np.sin(2 * np.pi * freq * t)
    y = filter_fn(x, fs)
    core = slice(len(t) // 4, 3 * len(t) // 4)  # away from the edges
    return y[core].std() / x[core].std()


def test_ppg_bandpass_passes_heart_rate_and_stops_drift_and_noise():
    assert gain(bandpass_ppg, 1.5) > 0.8
    assert gain(bandpass_ppg, 0.05) < 0.15
    assert gain(bandpass_ppg, 25) < 0.15


def test_ecg_bandpass_response():
    assert 0.9 < gain(bandpass_ecg, 10) < 1.1
    assert gain(bandpass_ecg, 0.05) < 0.05
    assert gain(bandpass_ecg, 55) < 0.3


def test_abp_lowpass_keeps_the_pressure_level():
    x = 80 + 20 * np.sin(2 * np.pi * 1.2 * np.arange(60 * FS) / FS)
    y = lowpass_abp(x, FS)
    assert abs(y.mean() - 80) < 0.1
    assert gain(lowpass_abp, 40) < 0.1


def test_resample_100_to_125_hz_keeps_frequency_and_gaps():
    t = np.arange(100 * 30) / 100
    x = np.sin(2 * np.pi * 2 * t)
    x[1000:1100] = np.nan
    y, invalid = resample_to(x, 100, 125)
    assert len(y) == 125 * 30
    assert invalid[1250:1375].all() and not invalid[:1200].any()
    f, pxx = sps.periodogram(y[:1200], fs=125)
    assert abs(f[np.argmax(pxx)] - 2) < 0.2


def test_dilate_grows_masked_runs():
    mask = np.zeros(20, dtype=bool)
    mask[10] = True
    assert np.flatnonzero(dilate(mask, 2)).tolist() == [8, 9, 10, 11, 12]


def test_filter_gains_across_pass_and_stop_bands():
    # (filter, frequencies that must pass with gain ~1, frequencies that must be stopped)
    cases = [(bandpass_ppg, [1.0, 2.0, 4.0], [0.05, 20.0, 40.0]),
             (bandpass_ecg, [2.0, 10.0, 25.0], [0.02, 60.0]),
             (lowpass_abp, [0.5, 2.0, 8.0], [40.0, 60.0])]
    for filter_fn, passed, stopped in cases:
        for f in passed:
            assert 0.85 < gain(filter_fn, f) < 1.1, (filter_fn.__name__, f)
        for f in stopped:
            assert gain(filter_fn, f) < 0.15, (filter_fn.__name__, f)
