"""The batched beat detectors find NeuroKit's own peaks, and what the windows stage builds on them equals the
one-call-per-segment computation bit for bit.

lib.signal.detectors runs NeuroKit's Elgendi, `neurokit` and Pan-Tompkins detectors on many segments at
once; lib.signal.beats uses it for the 10-s blocks of a recording and for every window's past-only span.
Each is checked here against NeuroKit called on one segment at a time (`neurokit_peaks`), on
simulated ABP/PPG/ECG at 100, 125 and 500 Hz with the artefacts that make detectors disagree (noise bursts,
a flat stretch, ADC steps, a baseline jump, a gap), and the per-window statistics against the loop over
windows they replace. Equality is exact: same peaks, same floating-point bits.
"""
import warnings

import numpy as np
import pytest
from neurokit2 import ecg_findpeaks, ppg_findpeaks
from test_windowing import TRACKS, synthetic_signals

from lib.signal import beats, detectors, filters

DETECTORS = {   # batched detector -> (NeuroKit function, method, result key)
    detectors.elgendi_peaks: (ppg_findpeaks, "elgendi", "PPG_Peaks"),
    detectors.neurokit_r_peaks: (ecg_findpeaks, "neurokit", "ECG_R_Peaks"),
    detectors.pantompkins_r_peaks: (ecg_findpeaks, "pantompkins1985", "ECG_R_Peaks"),
}


def neurokit_peaks(find, x, fs, method, key) -> np.ndarray:
    """NeuroKit's peaks in one segment, sorted; none in a segment shorter than 2 s or flat, or where NeuroKit
    raises (it does on a segment without any detectable beat)."""
    if len(x) < 2 * fs or not np.ptp(x) > 0:
        return np.zeros(0, dtype=np.int64)
    try:
        with warnings.catch_warnings():   # NeuroKit's mean of no QRS complex
            warnings.simplefilter("ignore", RuntimeWarning)
            peaks = find(x, sampling_rate=fs, method=method)[key]
    except (ValueError, IndexError):
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.asarray(peaks, dtype=np.int64))


def recording(fs: int, minutes: float = 4, seed: int = 0) -> dict:
    """Synthetic ABP/PPG/ECG at `fs` Hz with artefacts; the ABP and ECG with a 6-s gap (NaN)."""
    rng = np.random.default_rng(seed)
    simulated = synthetic_signals(minutes=minutes, fs=fs, seed=seed)
    signals = {channel: simulated[name].astype(np.float64) for channel, name in TRACKS.items()}
    n = len(signals["abp"])
    for x in signals.values():
        burst = int(rng.integers(0, n // 2))
        x[burst:burst + 8 * fs] += rng.normal(0, 0.5 * np.std(x), 8 * fs)   # noise burst
        x[int(0.6 * n):int(0.6 * n) + 3 * fs] = x[int(0.6 * n)]             # flat stretch
        x[int(0.7 * n):] += 0.5 * np.std(x)                                  # baseline jump
    signals["ppg"] = np.round(signals["ppg"] * 16) / 16                 # ADC steps
    for channel in ("abp", "ecg"):
        signals[channel][int(0.3 * n):int(0.3 * n) + 6 * fs] = np.nan
    return signals


def detector_inputs(fs: int) -> list:
    """Finite signals a detector may be given: raw (gaps bridged), zero-phase and causally filtered."""
    signals = {channel: filters.fill_gaps(x)[0] for channel, x in recording(fs).items()}
    return [*signals.values(), filters.bandpass_ppg(signals["ppg"], fs), filters.bandpass_ecg(signals["ecg"], fs),
            beats.causal_filter(signals["abp"], filters.butter_sos(2, (0.5, 8.0), "bandpass", fs)),
            np.random.default_rng(fs).normal(size=len(signals["abp"]))]


@pytest.mark.parametrize("fs", [100, 125, 500])
def test_each_segment_gets_the_peaks_neurokit_finds_in_it_alone(fs):
    rng = np.random.default_rng(fs)
    found = dict.fromkeys(DETECTORS, 0)
    for x in detector_inputs(fs):
        length = np.array([int(s * fs) for s in (1.5, 2.5, 6.1, 14.0)])[rng.integers(0, 4, 24)]
        lo = rng.integers(0, len(x) - length)
        lo[0], length[0] = int(0.6 * len(x)) + 5, 2 * fs   # inside the flat stretch: no peaks
        for detector, (find, method, key) in DETECTORS.items():
            segment, peaks = detectors.segment_peaks(detector, x, lo, lo + length, fs)
            for k in range(len(lo)):
                expected = neurokit_peaks(find, x[lo[k]:lo[k] + length[k]], fs, method, key)
                assert np.array_equal(peaks[segment == k], expected), (fs, method, k)
            found[detector] += len(peaks)
    assert min(found.values()) > 500   # beats were found, not only agreed absences


def _blockwise_reference(find, x, fs, method, key):
    """One NeuroKit call per block, as `beats._blockwise_peaks` defines the blocks."""
    block, margin = int(beats.BLOCK_S * fs), int(beats.BLOCK_MARGIN_S * fs)
    found = []
    for core in range(0, len(x), block):
        lo = max(core - margin, 0)
        peaks = neurokit_peaks(find, x[lo:core + block + margin], fs, method, key) + lo
        found.append(peaks[(peaks >= core) & (peaks < core + block)])
    return np.concatenate(found)


def test_blockwise_detection_equals_one_neurokit_call_per_block():
    fs = 125
    signals = {channel: filters.fill_gaps(x)[0] for channel, x in recording(fs, minutes=3).items()}
    ecg, ppg = filters.bandpass_ecg(signals["ecg"], fs), filters.bandpass_ppg(signals["ppg"], fs)
    neurokit, pantompkins = beats.ecg_r_peaks(ecg, fs)
    assert np.array_equal(neurokit, _blockwise_reference(ecg_findpeaks, ecg, fs, "neurokit", "ECG_R_Peaks"))
    assert np.array_equal(pantompkins, _blockwise_reference(ecg_findpeaks, ecg, fs, "pantompkins1985",
                                                            "ECG_R_Peaks"))
    assert np.array_equal(beats.ppg_systolic_peaks(ppg, fs),
                          _blockwise_reference(ppg_findpeaks, ppg, fs, "elgendi", "PPG_Peaks"))


def _past_abp_reference(abp, srate, window_end_s, span_s, lowpass_hz):
    """`beats.past_abp_pressures` one window at a time: NeuroKit's Elgendi on each window's own segment."""
    smooth = beats.causal_filter(abp, filters.butter_sos(4, min(lowpass_hz, 0.45 * srate), "lowpass", srate))
    detect = beats.causal_filter(abp, filters.butter_sos(2, (0.5, min(8.0, 0.45 * srate)), "bandpass", srate))
    lo, start, end = beats._past_spans(len(smooth), srate, window_end_s, span_s)
    out = {k: np.full(len(lo), np.nan) for k in ("sbp", "dbp", "map", "pp")}
    out["n_beats"] = np.zeros(len(lo), dtype=np.int64)
    for i in np.flatnonzero(~beats._span_has_gap(abp, start, end) & (end - start > 0)):
        seg = smooth[lo[i]:end[i]]
        found = neurokit_peaks(ppg_findpeaks, detect[lo[i]:end[i]], srate, "elgendi", "PPG_Peaks")
        peaks = beats._refine_to_maximum(found, seg, srate)
        whole = peaks[(peaks >= start[i] - lo[i]) & (peaks < len(seg) - beats.CUT_BEAT_S * srate)]
        row = beats.abp_beat_pressures(seg, whole, np.array([start[i] - lo[i]]), end[i] - start[i])
        for k in out:
            out[k][i] = row[k][0]
    return out


def _past_heart_rate_reference(ecg, srate, window_end_s, span_s, band_hz):
    """`beats.past_heart_rate` one window at a time: NeuroKit's detector on each window's own segment."""
    clean = beats.causal_filter(ecg, filters.butter_sos(4, (band_hz[0], min(band_hz[1], 0.45 * srate)), "bandpass",
                                                        srate))
    lo, start, end = beats._past_spans(len(clean), srate, window_end_s, span_s)
    rates = np.full(len(lo), np.nan)
    for i in np.flatnonzero(~beats._span_has_gap(ecg, start, end) & (end - start > 0)):
        seg = clean[lo[i]:end[i]]
        peaks = neurokit_peaks(ecg_findpeaks, seg, srate, "neurokit", "ECG_R_Peaks")
        whole = peaks[(peaks >= start[i] - lo[i]) & (peaks < len(seg) - beats.CUT_BEAT_S * srate)]
        rates[i] = beats.heart_rate(whole, srate, np.array([start[i] - lo[i]]), end[i] - start[i])[0]
    return rates


def _same_bits(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("srate", [100.0, 500.0])
@pytest.mark.parametrize("stride_s", [4.096, 2.048])   # train/val windows, and the test split's overlapping ones
def test_past_statistics_equal_the_window_by_window_computation(srate, stride_s):
    signals = recording(int(srate), minutes=3, seed=1)
    ends = np.arange(4.096, len(signals["abp"]) / srate, stride_s)
    pressures = beats.past_abp_pressures(signals["abp"], srate, ends, 4.096, 20.0)
    expected = _past_abp_reference(signals["abp"], srate, ends, 4.096, 20.0)
    assert pressures.keys() == expected.keys()
    assert all(_same_bits(pressures[k], expected[k]) for k in expected)
    assert np.isnan(pressures["map"]).any() and np.isfinite(pressures["map"]).any()   # the gap, and beats
    rates = beats.past_heart_rate(signals["ecg"], srate, ends, 4.096, (0.5, 40.0))
    assert _same_bits(rates, _past_heart_rate_reference(signals["ecg"], srate, ends, 4.096, (0.5, 40.0)))
    assert np.isnan(rates).any() and np.isfinite(rates).any()


def _gappy(rng, n: int) -> np.ndarray:
    """Samples with runs of NaN/inf, some at the start or the end, or none valid at all."""
    x = rng.normal(80, 20, n).astype(rng.choice([np.float32, np.float64]))
    for _ in range(int(rng.integers(0, 5))):
        at = int(rng.integers(0, n))
        x[at:at + int(rng.integers(1, 60))] = rng.choice([np.nan, np.inf, -np.inf])
    if rng.random() < 0.1:
        x[rng.random(n) < 0.5] = np.nan
    if rng.random() < 0.05:
        x[:] = np.nan
    return x


def test_gap_filling_is_its_definition_bit_for_bit():
    """fill_gaps bridges each gap by np.interp over all valid samples; causal_filter's hold repeats the last
    valid sample (the first one before it)."""
    rng = np.random.default_rng(3)
    for _ in range(500):
        x = _gappy(rng, int(rng.integers(1, 400)))
        valid, at = np.isfinite(x), np.arange(len(x))
        filled, invalid = filters.fill_gaps(x)
        expected = np.asarray(x, dtype=np.float64).copy()
        if valid.any():
            expected[~valid] = np.interp(at[~valid], at[valid], expected[valid])
        else:
            expected[:] = 0.0
        assert _same_bits(filled, expected) and np.array_equal(invalid, ~valid)
        held = beats._hold_gaps(x)
        if not valid.any():
            assert held is None
            continue
        last_valid = np.maximum.accumulate(np.where(valid, at, -1))
        source = np.where(last_valid >= 0, last_valid, np.argmax(valid))
        assert _same_bits(held, np.asarray(x, dtype=np.float64)[source])


def test_dilate_marks_every_sample_within_margin_of_a_masked_one():
    """Gaps of any length included: the inside of a gap longer than 127 samples is masked too (a count
    kept in int8 wraps there and left it unmasked), and a mask shorter than the margin keeps its length."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        mask = rng.random(int(rng.integers(1, 2000))) < rng.choice([0.0, 0.001, 0.3, 0.9])
        if rng.random() < 0.5:   # a long run
            at = int(rng.integers(0, len(mask)))
            mask[at:at + int(rng.integers(100, 600))] = True
        margin = int(rng.integers(0, 200))
        expected = np.array([mask[max(i - margin, 0):i + margin + 1].any() for i in range(len(mask))])
        assert np.array_equal(filters.dilate(mask, margin), expected)
    gap = np.zeros(3000, dtype=bool)
    gap[1000:2000] = True
    assert np.flatnonzero(filters.dilate(gap, 5)).tolist() == list(range(995, 2005))
