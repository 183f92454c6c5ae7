"""Each quality gate on windows built to pass it and windows built to fail it."""
import numpy as np
import pytest
from test_beats import FS, cardiac_phase, clean_abp, clean_ecg, gauss

from lib.signal import beats
from lib.signal.filters import bandpass_ppg, lowpass_abp
from lib.signal.quality import GATE_ORDER, QualityLimits, gate_checks, ppg_skewness_sqi, window_rejections

N = 512


def clean_ppg(seconds, bpm=75):
    _, u = cardiac_phase(seconds, bpm)
    return bandpass_ppg(20 * (gauss(u, 0.22, 0.09) + 0.3 * gauss(u, 0.5, 0.08)), FS)


def recording(seconds=40):
    return {"abp": lowpass_abp(clean_abp(seconds), FS), "ppg": clean_ppg(seconds), "ecg": clean_ecg(seconds),
            "invalid": np.zeros(seconds * FS, dtype=bool)}


DEFAULT_LIMITS = QualityLimits()


def reasons_of(rec, limits=DEFAULT_LIMITS):
    """Gate every window of a recording the way lib.data.windowing does."""
    starts = np.arange(0, len(rec["abp"]) - N + 1, N)

    def views(x):
        return np.lib.stride_tricks.sliding_window_view(x, N)[starts]

    pressures = beats.abp_beat_pressures(rec["abp"], beats.abp_systolic_peaks(rec["abp"], FS), starts, N)
    n_ppg = beats.count_in_windows(beats.ppg_systolic_peaks(rec["ppg"], FS), starts, N)[1]
    sqi = beats.bsqi(*beats.ecg_r_peaks(rec["ecg"], FS), FS, starts, N)
    checks = gate_checks(views(rec["abp"]), views(rec["ppg"]), views(rec["ecg"]), views(rec["invalid"]),
                         pressures, n_ppg, sqi, limits)
    return window_rejections(checks)


def corrupt(rec, gate, span):
    rng = np.random.default_rng(0)
    x = {k: v.copy() for k, v in rec.items()}
    n = span.stop - span.start
    if gate == "nan_gap":
        x["invalid"][span.start + 100:span.start + 110] = True
    elif gate == "abp_pinned":
        x["abp"][span] = 300 + rng.normal(0, 0.5, n)
    elif gate == "abp_flat":
        x["abp"][span] = 85.0 + rng.normal(0, 0.2, n)
    elif gate == "abp_clipped":
        x["abp"][span] = np.minimum(x["abp"][span], 95.0)
    elif gate == "abp_few_beats":     # asystole-like: one beat, then a slow diastolic run-off
        x["abp"][span] = 80 + 40 * np.exp(-np.arange(n) / FS)
    elif gate == "abp_map_range":     # pulsatile, but around 17 mmHg (transducer not levelled/zeroed)
        x["abp"][span] = x["abp"][span] - 75
    elif gate == "abp_pulse_pressure":   # under-damped line ("fling"): pulse pressure 170 mmHg
        x["abp"][span] = 60 + (x["abp"][span] - 80) * 4.25
    elif gate == "ppg_flat":
        x["ppg"][span] = 0.0
    elif gate == "ppg_few_beats":
        x["ppg"][span] = 5 * np.sin(2 * np.pi * 0.3 * np.arange(n) / FS)
    elif gate == "ppg_ssqi":          # motion artefact: the PPG flips to left-skewed
        x["ppg"][span] = -x["ppg"][span]
    elif gate == "ecg_flat":
        x["ecg"][span] = 0.0
    elif gate == "ecg_sqi":
        x["ecg"][span] += rng.normal(0, 1.5, n)
    return x


@pytest.mark.parametrize("gate", GATE_ORDER)
def test_each_gate_rejects_the_window_built_to_fail_it(gate):
    rec = recording()
    clean = reasons_of(rec)
    assert (clean[1:-1] == "").all(), clean     # inner windows of a clean recording all pass
    target = 5
    span = slice(target * N, (target + 1) * N)
    reasons = reasons_of(corrupt(rec, gate, span))
    assert reasons[target] == gate, reasons


def test_ppg_skewness_sqi_clean_vs_corrupted():
    windows = np.lib.stride_tricks.sliding_window_view(clean_ppg(60), N)[::N]
    assert (ppg_skewness_sqi(windows) >= 0.8).all()
    rng = np.random.default_rng(3)
    noise = bandpass_ppg(rng.normal(0, 20, 60 * FS), FS)
    noisy = np.lib.stride_tricks.sliding_window_view(noise, N)[::N]
    assert (ppg_skewness_sqi(noisy) < 0.8).mean() > 0.9
    assert ppg_skewness_sqi(np.zeros((1, N)))[0] == 0.0


def test_the_first_gate_in_order_wins():
    checks = {g: np.array([False, False]) for g in GATE_ORDER}
    checks["ecg_sqi"] = np.array([True, True])
    checks["nan_gap"] = np.array([False, True])
    assert window_rejections(checks).tolist() == ["ecg_sqi", "nan_gap"]
