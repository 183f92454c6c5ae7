"""Quality gates per window and channel, vectorised over all windows of a case.

ABP is the label source: a window whose ABP fails a gate is dropped (`window_rejections`: the
first failing gate of `WINDOW_GATES`). A PPG or ECG that fails its own gates only masks that
channel in that window (`channel_masks`: the first failing gate of `CHANNEL_GATES[channel]`); the
windows stage stores a masked channel as NaN, so models see it as unobserved. Gating every channel
jointly would drop the poorly perfused patients whose PPG degrades, who are the ones that become
hypotensive: a selection bias. Limits come from params.yaml → windows (`Windows`).

ABP (mmHg), physiological gates:
* `abp_gap`: a missing/bridged ABP sample (or one within the filter-ringing margin of a gap);
* `abp_pinned`: ABP above 250 mmHg (flush/calibration: the line pinned near 300);
* `abp_flat`: 5th-95th percentile range below 10 mmHg (zeroing, flatline, damped line);
* `abp_clipped`: over 15 % of samples within 0.5 mmHg of the window maximum (saturated top);
* `abp_few_beats`: fewer than `min_beats` systolic peaks detected;
* `abp_map_range`: beat-derived MAP outside `map_range` (20-200);
* `abp_pulse_pressure`: beat-derived pulse pressure outside `windows.pulse_pressure_range`.

PPG and ECG (masks):
* `ppg_gap`, `ecg_gap`: a missing/bridged sample of that channel (or within the ringing margin);
* `ppg_flat`, `ecg_flat`: (almost) no variation (probe off, lead off);
* `ppg_few_beats`: fewer than `min_beats` PPG systolic peaks;
* `ppg_ssqi`: skewness SQI below `ppg_ssqi_min` (see `ppg_skewness_sqi`; the default 0.8 is this
  project's choice on clean simulated and real pulses, not a published cut-off: Elgendi 2016 ranks
  the index, it gives no threshold. The windows stage reports its pass rate per split);
* `ecg_sqi`: beat-agreement bSQI below `ecg_sqi_min` (see `lib.beats.bsqi`).
"""
import numpy as np
from scipy.stats import skew

from lib.core.params import Windows
from lib.signal.labels import PINNED

WINDOW_GATES = ["abp_gap", "abp_pinned", "abp_flat", "abp_clipped", "abp_few_beats", "abp_map_range",
                "abp_pulse_pressure"]
CHANNEL_GATES = {"ppg": ["ppg_gap", "ppg_flat", "ppg_few_beats", "ppg_ssqi"], "ecg": ["ecg_gap", "ecg_flat", "ecg_sqi"]}
GATE_ORDER = WINDOW_GATES + [g for gates in CHANNEL_GATES.values() for g in gates]


def ppg_skewness_sqi(ppg_windows: np.ndarray) -> np.ndarray:
    """Skewness SQI per window: S = mean(((x - mu) / sigma)^3) (Elgendi 2016, Bioengineering 3:21).

    Elgendi found skewness the best of eight PPG quality indices; it is computed here on the
    Chebyshev-II band-passed PPG, the filter Liang et al. (2018, Sci. Data 5:180076) found best
    for it. Clean pulses (sharp systolic upstroke, long diastolic run-off) are right-skewed;
    motion artefact and noise pull S towards 0 or below.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        s = skew(ppg_windows, axis=1)
    return np.nan_to_num(s, nan=0.0)


def gate_checks(abp, ppg, ecg, invalid: dict, abp_pressures: dict, n_ppg_beats, ecg_sqi,
                limits: Windows) -> dict:
    """{gate: boolean failures per window}. `abp`, `ppg`, `ecg` and `invalid[channel]` are
    (n_windows, length); `abp_pressures` comes from `lib.signal.beats.past_abp_pressures`."""
    p05, p95 = np.percentile(abp, [5, 95], axis=1)
    top = abp.max(axis=1, keepdims=True)
    beat_map, pp = abp_pressures["map"], abp_pressures["pp"]
    with np.errstate(invalid="ignore"):
        return {
            "abp_gap": invalid["abp"].any(axis=1),
            "abp_pinned": top[:, 0] > PINNED,
            "abp_flat": (p95 - p05) < 10,
            "abp_clipped": (abp > top - 0.5).mean(axis=1) > 0.15,
            "abp_few_beats": abp_pressures["n_beats"] < limits.min_beats,
            "abp_map_range": ~((beat_map >= limits.map_range[0]) & (beat_map <= limits.map_range[1])),
            "abp_pulse_pressure": ~((pp >= limits.pulse_pressure_range[0]) & (pp <= limits.pulse_pressure_range[1])),
            "ppg_gap": invalid["ppg"].any(axis=1),
            "ppg_flat": ppg.std(axis=1) < 1e-3,
            "ppg_few_beats": n_ppg_beats < limits.min_beats,
            "ppg_ssqi": ppg_skewness_sqi(ppg) < limits.ppg_ssqi_min,
            "ecg_gap": invalid["ecg"].any(axis=1),
            "ecg_flat": ecg.std(axis=1) < 1e-3,
            "ecg_sqi": ecg_sqi < limits.ecg_sqi_min,
        }


def first_failures(checks: dict, gates) -> np.ndarray:
    """The first failing gate of `gates` per window ('' when all of them pass)."""
    n = len(next(iter(checks.values())))
    reasons = np.full(n, "", dtype=object)
    for name in reversed(gates):  # the first gate in the list wins
        reasons[checks[name]] = name
    return reasons


def window_rejections(checks: dict) -> np.ndarray:
    """Why each window is dropped: its first failing ABP gate ('' when the ABP passes)."""
    return first_failures(checks, WINDOW_GATES)


def channel_masks(checks: dict) -> dict:
    """{channel: why it is masked in each window ('' when it passes)} for PPG and ECG."""
    return {channel: first_failures(checks, gates) for channel, gates in CHANNEL_GATES.items()}
