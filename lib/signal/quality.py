"""Window-level quality gates, vectorised over all windows of a case.

Each window gets the first reason in `GATE_ORDER` that rejects it ('' when it passes); the
windows stage counts them per split. Limits come from params.yaml → windows (`QualityLimits`).

ABP (mmHg), physiological gates:
* `nan_gap`: any channel has a missing/bridged sample (or lies within the filter-ringing margin);
* `abp_pinned`: ABP above 250 mmHg (flush/calibration: the line pinned near 300);
* `abp_flat`: 5th-95th percentile range below 10 mmHg (zeroing, flatline, damped line);
* `abp_clipped`: over 15 % of samples within 0.5 mmHg of the window maximum (saturated top);
* `abp_few_beats`: fewer than `min_beats` systolic peaks detected;
* `abp_map_range`: beat-derived MAP outside `map_range` (20-200);
* `abp_pulse_pressure`: beat-derived pulse pressure outside `pp_range`.

PPG and ECG:
* `ppg_flat`, `ecg_flat`: (almost) no variation (probe off, lead off);
* `ppg_few_beats`: fewer than `min_beats` PPG systolic peaks;
* `ppg_ssqi`: skewness SQI below `ppg_ssqi_min` (see `ppg_skewness_sqi`);
* `ecg_sqi`: beat-agreement bSQI below `ecg_sqi_min` (see `lib.beats.bsqi`).
"""
import numpy as np
from scipy.stats import skew

from lib.core.config import QualityLimits
from lib.signal.labels import PINNED

GATE_ORDER = ["nan_gap", "abp_pinned", "abp_flat", "abp_clipped", "abp_few_beats", "abp_map_range",
              "abp_pulse_pressure", "ppg_flat", "ppg_few_beats", "ppg_ssqi", "ecg_flat", "ecg_sqi"]



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


def gate_checks(abp, ppg, ecg, invalid, abp_pressures: dict, n_ppg_beats, ecg_sqi, limits: QualityLimits) -> dict:
    """{gate: boolean rejects per window}. `abp`, `ppg`, `ecg`, `invalid` are (n_windows, length);
    `abp_pressures` comes from `lib.beats.abp_beat_pressures`."""
    p05, p95 = np.percentile(abp, [5, 95], axis=1)
    top = abp.max(axis=1, keepdims=True)
    beat_map, pp = abp_pressures["map"], abp_pressures["pp"]
    with np.errstate(invalid="ignore"):
        return {
            "nan_gap": invalid.any(axis=1),
            "abp_pinned": top[:, 0] > PINNED,
            "abp_flat": (p95 - p05) < 10,
            "abp_clipped": (abp > top - 0.5).mean(axis=1) > 0.15,
            "abp_few_beats": abp_pressures["n_beats"] < limits.min_beats,
            "abp_map_range": ~((beat_map >= limits.map_range[0]) & (beat_map <= limits.map_range[1])),
            "abp_pulse_pressure": ~((pp >= limits.pp_range[0]) & (pp <= limits.pp_range[1])),
            "ppg_flat": ppg.std(axis=1) < 1e-3,
            "ppg_few_beats": n_ppg_beats < limits.min_beats,
            "ppg_ssqi": ppg_skewness_sqi(ppg) < limits.ppg_ssqi_min,
            "ecg_flat": ecg.std(axis=1) < 1e-3,
            "ecg_sqi": ecg_sqi < limits.ecg_sqi_min,
        }


def window_rejections(checks: dict) -> np.ndarray:
    """The first failing gate per window, in GATE_ORDER ('' when every gate passes)."""
    n = len(next(iter(checks.values())))
    reasons = np.full(n, "", dtype=object)
    for name in reversed(GATE_ORDER):  # the first gate in GATE_ORDER wins
        reasons[checks[name]] = name
    return reasons
