import numpy as np

from lib.signal import beats
from lib.signal.filters import bandpass_ecg, bandpass_ppg, lowpass_abp

FS = 125


def gauss(u, centre, width):
    return np.exp(-0.5 * ((u - centre) / width) ** 2)


def cardiac_phase(seconds, bpm, fs=FS):
    t = np.arange(int(seconds * fs)) / fs
    return t, np.mod(t * bpm / 60.0, 1.0)


def clean_ecg(seconds, bpm=75, seed=0):
    _, u = cardiac_phase(seconds, bpm)
    rng = np.random.default_rng(seed)
    x = (0.1 * gauss(u, 0.08, 0.025) + 1.1 * gauss(u, 0.2, 0.012) - 0.25 * gauss(u, 0.22, 0.012)
         + 0.3 * gauss(u, 0.45, 0.05) + rng.normal(0, 0.01, len(u)))
    return bandpass_ecg(x, FS)


def clean_abp(seconds, bpm=75, sbp=120.0, dbp=80.0):
    """An arterial pulse rising from `dbp` to `sbp` once per beat, with a dicrotic wave."""
    _, u = cardiac_phase(seconds, bpm)
    shape = gauss(u, 0.15, 0.06) + 0.3 * gauss(u, 0.42, 0.06)
    return dbp + (sbp - dbp) * shape / shape.max()


def test_both_ecg_detectors_find_every_beat_of_a_clean_ecg():
    ecg = clean_ecg(120, bpm=75)
    for peaks in beats.ecg_r_peaks(ecg, FS):
        assert abs(len(peaks) - 150) <= 2


def test_bsqi_is_one_on_clean_ecg_and_low_under_cautery_noise():
    ecg = clean_ecg(120)
    starts = np.arange(0, len(ecg) - 512, 512)
    clean = beats.bsqi(*beats.ecg_r_peaks(ecg, FS), FS, starts, 512)
    assert (clean >= 0.9).all()
    noisy = ecg.copy()
    noisy[40 * FS:70 * FS] += np.random.default_rng(1).normal(0, 1.5, 30 * FS)   # electrocautery
    sqi = beats.bsqi(*beats.ecg_r_peaks(noisy, FS), FS, starts, 512)
    in_burst = (starts >= 41 * FS) & (starts + 512 <= 69 * FS)
    assert np.median(sqi[in_burst]) < 0.9
    late = starts >= 80 * FS   # detectors restart after the burst (blockwise), quality comes back
    assert (sqi[late] >= 0.9).mean() > 0.9


def test_bsqi_counts_agreement_by_the_published_formula():
    a = np.array([100, 200, 300, 400])
    b = np.array([102, 203, 350])          # 2 matched within 150 ms at 125 Hz (18 samples)
    sqi = beats.bsqi(a, b, FS, np.array([0]), 512)
    assert sqi[0] == 2 / (4 + 3 - 2)
    assert beats.bsqi(a, np.array([], dtype=np.int64), FS, np.array([0]), 512)[0] == 0.0


def test_abp_beat_pressures_recover_sbp_dbp_map_and_heart_rate():
    abp = lowpass_abp(clean_abp(60, bpm=72, sbp=120, dbp=80), FS)
    peaks = beats.abp_systolic_peaks(abp, FS)
    assert abs(len(peaks) - 72) <= 1
    starts = np.arange(512, len(abp) - 1024, 512)
    p = beats.abp_beat_pressures(abp, peaks, starts, 512)
    assert (p["n_beats"] >= 4).all()
    assert np.allclose(p["sbp"], 120, atol=1.0) and np.allclose(p["dbp"], 80, atol=1.0)
    one_cycle = abp[peaks[10]:peaks[11]].mean()
    assert np.allclose(p["map"], one_cycle, atol=0.5) and 80 < one_cycle < 100
    assert np.allclose(p["pp"], 40, atol=2.0)
    assert np.allclose(beats.heart_rate(peaks, FS, starts, 512), 72, atol=1.0)


def test_abp_beats_are_found_during_hypotension_too():
    abp = np.concatenate([clean_abp(30, sbp=120, dbp=80), clean_abp(30, sbp=70, dbp=45)])
    peaks = beats.abp_systolic_peaks(lowpass_abp(abp, FS), FS)
    assert abs((peaks >= 30 * FS).sum() - 37) <= 2   # 75 bpm for the 30 s of low pressure


def test_ppg_peaks_and_empty_signals():
    _, u = cardiac_phase(60, 90)
    ppg = bandpass_ppg(gauss(u, 0.22, 0.09) + 0.3 * gauss(u, 0.5, 0.08), FS)
    assert abs(len(beats.ppg_systolic_peaks(ppg, FS)) - 90) <= 2
    assert len(beats.ppg_systolic_peaks(np.zeros(60 * FS), FS)) == 0
    hr = beats.heart_rate(np.array([], dtype=np.int64), FS, np.array([0]), 512)
    assert np.isnan(hr[0])


def test_count_in_windows():
    lo, n = beats.count_in_windows(np.array([5, 10, 20, 30]), np.array([0, 10, 25]), 10)
    assert lo.tolist() == [0, 1, 3] and n.tolist() == [1, 1, 1]
