"""Each quality gate on windows built to pass it and windows built to fail it: an ABP gate drops the
window, a PPG or ECG gate masks only that channel."""
import numpy as np
import pytest
from test_beats import FS, cardiac_phase, clean_abp, clean_ecg, gauss

from lib.signal import beats
from lib.signal.filters import bandpass_ppg, lowpass_abp
from lib.signal.quality import (
    CHANNEL_GATES,
    GATE_ORDER,
    WINDOW_GATES,
    Windows,
    channel_masks,
    gate_checks,
    ppg_skewness_sqi,
    window_rejections,
)

N = 512


def clean_ppg(seconds, bpm=75):
    _, u = cardiac_phase(seconds, bpm)
    return bandpass_ppg(20 * (gauss(u, 0.22, 0.09) + 0.3 * gauss(u, 0.5, 0.08)), FS)


def recording(seconds=40):
    return {"abp": lowpass_abp(clean_abp(seconds), FS), "ppg": clean_ppg(seconds), "ecg": clean_ecg(seconds),
            "invalid": {c: np.zeros(seconds * FS, dtype=bool) for c in ("abp", "ppg", "ecg")}}


DEFAULT_LIMITS = Windows()


def reasons_of(rec, limits=DEFAULT_LIMITS):
    """Gate every window of a recording the way lib.data.windowing does: (why dropped, {channel: why masked})."""
    starts = np.arange(0, len(rec["abp"]) - N + 1, N)

    def views(x):
        return np.lib.stride_tricks.sliding_window_view(x, N)[starts]

    pressures = beats.abp_beat_pressures(rec["abp"], beats.abp_systolic_peaks(rec["abp"], FS), starts, N)
    n_ppg = beats.count_in_windows(beats.ppg_systolic_peaks(rec["ppg"], FS), starts, N)[1]
    sqi = beats.bsqi(*beats.ecg_r_peaks(rec["ecg"], FS), FS, starts, N)
    checks = gate_checks(views(rec["abp"]), views(rec["ppg"]), views(rec["ecg"]),
                         {c: views(v) for c, v in rec["invalid"].items()}, pressures, n_ppg, sqi, limits)
    return window_rejections(checks), channel_masks(checks)


def corrupt(rec, gate, span):
    rng = np.random.default_rng(0)
    x = {k: v.copy() for k, v in rec.items() if k != "invalid"}
    x["invalid"] = {c: v.copy() for c, v in rec["invalid"].items()}
    n = span.stop - span.start
    if gate.endswith("_gap"):
        x["invalid"][gate.split("_")[0]][span.start + 100:span.start + 110] = True
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
def test_each_gate_fails_the_window_built_to_fail_it(gate):
    rec = recording()
    dropped, masked = reasons_of(rec)
    assert (dropped[1:-1] == "").all(), dropped     # inner windows of a clean recording all pass
    for channel, why in masked.items():
        assert (why[1:-1] == "").all(), (channel, why)
    target = 5
    span = slice(target * N, (target + 1) * N)
    dropped, masked = reasons_of(corrupt(rec, gate, span))
    if gate in WINDOW_GATES:
        assert dropped[target] == gate, dropped
    else:   # the window stays; only the failing channel is masked, and only in that window
        channel = next(c for c, gates in CHANNEL_GATES.items() if gate in gates)
        assert dropped[target] == "" and masked[channel][target] == gate, (dropped, masked)
        assert (masked[channel][[1, 2, 3]] == "").all(), masked[channel]   # (detectors may carry noise a block on)


def test_ppg_skewness_sqi_clean_vs_corrupted():
    windows = np.lib.stride_tricks.sliding_window_view(clean_ppg(60), N)[::N]
    assert (ppg_skewness_sqi(windows) >= 0.8).all()
    rng = np.random.default_rng(3)
    noise = bandpass_ppg(rng.normal(0, 20, 60 * FS), FS)
    noisy = np.lib.stride_tricks.sliding_window_view(noise, N)[::N]
    assert (ppg_skewness_sqi(noisy) < 0.8).mean() > 0.9
    assert ppg_skewness_sqi(np.zeros((1, N)))[0] == 0.0


def test_the_first_gate_in_order_wins():
    checks = {g: np.array([False, False, False]) for g in GATE_ORDER}
    checks["abp_flat"] = np.array([True, True, False])
    checks["abp_gap"] = np.array([False, True, False])
    checks["ecg_flat"] = np.array([False, True, True])
    checks["ecg_sqi"] = np.array([True, True, True])
    assert window_rejections(checks).tolist() == ["abp_flat", "abp_gap", ""]   # PPG/ECG gates never drop
    masks = {c: m.tolist() for c, m in channel_masks(checks).items()}
    assert masks == {"ppg": ["", "", ""], "ecg": ["ecg_sqi", "ecg_flat", "ecg_flat"]}   # first ECG gate in its order
