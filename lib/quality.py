"""Window-level quality gates, vectorised over all windows of a case.

Each window gets the first reason that rejects it ('' when it passes); the stage counts them.
Gates (ABP in mmHg):

* `nan_gap`: any channel has a missing/bridged sample (or lies within the ringing margin);
* `abp_pinned`: ABP above 250 mmHg (flush/calibration: the line pinned near 300);
* `abp_flat`: ABP 5th-95th percentile range below 10 mmHg (zeroing, flatline, damped line);
* `abp_implausible`: window MAP outside 20-200 mmHg;
* `abp_clipped`: over 15 % of samples within 0.5 mmHg of the window maximum (saturated top);
* `ppg_flat`, `ecg_flat`: a channel with (almost) no variation.
"""
import numpy as np

GATE_ORDER = ["nan_gap", "abp_pinned", "abp_flat", "abp_implausible", "abp_clipped", "ppg_flat", "ecg_flat"]


def window_rejections(abp, ppg, ecg, invalid) -> np.ndarray:
    """Reasons per window; every argument is (n_windows, length)."""
    p05, p95 = np.percentile(abp, [5, 95], axis=1)
    top = abp.max(axis=1, keepdims=True)
    checks = {
        "nan_gap": invalid.any(axis=1),
        "abp_pinned": top[:, 0] > 250,
        "abp_flat": (p95 - p05) < 10,
        "abp_implausible": (abp.mean(axis=1) < 20) | (abp.mean(axis=1) > 200),
        "abp_clipped": (abp > top - 0.5).mean(axis=1) > 0.15,
        "ppg_flat": ppg.std(axis=1) < 1e-3,
        "ecg_flat": ecg.std(axis=1) < 1e-3,
    }
    reasons = np.full(len(abp), "", dtype=object)
    for name in reversed(GATE_ORDER):  # the first gate in GATE_ORDER wins
        reasons[checks[name]] = name
    return reasons
