"""Deterministic simulated demo cohort: real VitalDB case rows, simulated ABP/PPG/ECG waveforms.

Real VitalDB waveforms cannot be downloaded offline, so the demo generates them. The clinical
rows (caseid, subjectid, demographics) are real rows of VitalDB's case table; only the signals
are simulated. Nothing downstream reads the simulator's ground truth: labels are derived from
the written ABP waveform exactly as they are for real data.

Physiology (vectorised numpy, one case at a time):

* slowly varying MAP, heart rate and pulse pressure (low-pass filtered noise around a baseline
  drawn per case), respiratory pulse-pressure variation;
* intraoperative hypotension (IOH) episodes, MAP < 65 mmHg for 1.5-6 min, in the cases chosen
  for it (older / higher-ASA patients are more likely), each preceded by precursors of random
  strength: a gradual MAP decline, pulse-pressure narrowing, compensatory tachycardia and a
  smaller PPG amplitude.  A weak precursor makes the episode nearly sudden;
* "near misses" in every case: declines with the same precursors that bottom out above 65 and
  recover, so that a falling MAP alone does not give the answer away;
* beat-by-beat waveforms from a phase integrated over the heart rate: an ABP pulse with a
  dicrotic notch, a delayed PPG pulse, and a P-QRS-T ECG;
* faults seen in real recordings: ABP flush (pinned near 300 mmHg), zeroing (flat 0), clipped
  ABP, disconnection (NaN gaps on all tracks), ECG electrocautery noise, PPG motion artefact.
"""
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import signal

ABP, PPG, ECG = "SNUADC/ART", "SNUADC/PLETH", "SNUADC/ECG_II"
UNITS = {ABP: "mmHg", PPG: "", ECG: "mV"}
# ADC resolution: binary steps keep the float32 mantissas short, so the files compress ~2x.
ADC_STEP = {ABP: 1 / 32, PPG: 1 / 64, ECG: 1 / 1024}


@dataclass
class SimulatedCase:
    """Simulated tracks of one case plus the simulator's truth (used only by tests)."""

    signals: dict
    srate: float
    duration_s: int
    ioh_onsets_s: list = field(default_factory=list)
    faults: list = field(default_factory=list)  # (kind, start_s, end_s)


def select_demo_cases(rows: pd.DataFrame, n_cases: int, n_multi_case_subjects: int,
                      seed: int) -> pd.DataFrame:
    """Choose `n_cases` of the eligible real case rows, including every case of a few
    multi-case subjects.

    Subjects with several cases are what makes subject-level splitting matter, so the demo
    always has some.
    """
    rng = np.random.default_rng(seed)
    case_counts = rows["subjectid"].value_counts()
    multi = np.sort(case_counts[case_counts >= 2].index.to_numpy())
    chosen_multi = rng.choice(multi, size=min(n_multi_case_subjects, len(multi)), replace=False)
    picked = rows[rows["subjectid"].isin(chosen_multi)]
    if len(picked) > n_cases:
        picked = picked[picked["subjectid"].isin(picked["subjectid"].unique()[: max(1, n_cases // 3)])]
    singles = rows[rows["subjectid"].map(case_counts) == 1]
    extra = singles.iloc[np.sort(rng.choice(len(singles), size=n_cases - len(picked), replace=False))]
    return pd.concat([picked, extra]).sort_values("caseid").reset_index(drop=True)


def choose_ioh_cases(cases: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of cases that get hypotension; risk grows with age and ASA class."""
    rng = np.random.default_rng(seed)
    age = pd.to_numeric(cases["age"], errors="coerce").fillna(50).to_numpy()
    asa = pd.to_numeric(cases["asa"], errors="coerce").fillna(2).clip(1, 4).to_numpy()
    weight = 1.0 + (age - 18) / 40 + 0.3 * (asa - 1)
    n_ioh = int(round(fraction * len(cases)))
    idx = rng.choice(len(cases), size=n_ioh, replace=False, p=weight / weight.sum())
    mask = np.zeros(len(cases), dtype=bool)
    mask[idx] = True
    return mask


def slow_noise(n: int, rng, period_s: float) -> np.ndarray:
    """Unit-variance noise on a 1 Hz grid, low-passed to vary over about `period_s` seconds."""
    white = rng.standard_normal(n + 600)
    sos = signal.butter(2, 1.0 / period_s, fs=1.0, output="sos")
    smooth = signal.sosfiltfilt(sos, white)[300:300 + n]
    return smooth / (smooth.std() + 1e-12)


def _gauss(u, centre, width):
    return np.exp(-0.5 * ((u - centre) / width) ** 2)


def _abp_shape(u):
    """ABP pulse over one cardiac cycle (phase u in [0, 1)): upstroke, dicrotic notch, run-off."""
    return _gauss(u, 0.16, 0.06) + 0.38 * _gauss(u, 0.42, 0.07) + 0.22 * np.exp(-3.0 * u) * (u > 0.1)


_GRID = np.linspace(0, 1, 2001)[:-1]
_ABP_MIN, _ABP_MAX = _abp_shape(_GRID).min(), _abp_shape(_GRID).max()
_ABP_MEAN = ((_abp_shape(_GRID) - _ABP_MIN) / (_ABP_MAX - _ABP_MIN)).mean()


def _episode_profile(t, start, lead, fall, hold, recover, pre_depth, depth):
    """MAP offset (mmHg, <= 0) of one decline: precursor ramp, fall, plateau, recovery."""
    knots = [start - lead, start, start + fall, start + fall + hold, start + fall + hold + recover]
    return np.interp(t, knots, [0.0, -pre_depth, -depth, -depth, 0.0])


def simulate_case(duration_s: int, srate: float, has_ioh: bool, rng) -> SimulatedCase:
    """Simulate one case's ABP, PPG and ECG at `srate` Hz."""
    n1 = int(duration_s)
    t1 = np.arange(n1, dtype=float)
    map0 = rng.uniform(76, 100)
    hr0 = rng.uniform(55, 85)
    pp0 = rng.uniform(35, 60)
    map_offset = 3.5 * slow_noise(n1, rng, 400)
    precursor = np.zeros(n1)  # 0..1, drives the non-MAP precursors
    in_episode = np.zeros(n1, dtype=bool)
    onsets = []

    if has_ioh:
        n_episodes = 1 + int(rng.random() < 0.35)
        earliest = min(9 * 60, 0.4 * n1)  # short (test) cases still get an episode
        for k in range(n_episodes):
            latest = n1 - 4 * 60
            if latest <= earliest:
                break
            start = rng.uniform(earliest, min(latest, earliest + (latest - earliest) / (n_episodes - k)))
            strength = rng.uniform(0.3, 1.0)
            lead = rng.uniform(3, 12) * 60
            nadir = rng.uniform(48, 60)
            hold = rng.uniform(90, 360)
            fall, recover = rng.uniform(20, 60), rng.uniform(60, 180)
            depth = map0 - nadir
            pre_depth = strength * max(map0 - 66, 0)  # strong precursor: MAP ~66 at the fall
            offset = _episode_profile(t1, start, lead, fall, hold, recover, pre_depth, depth)
            map_offset = map_offset + offset
            precursor = np.maximum(precursor, strength * offset / -depth)
            in_episode |= (t1 >= start + fall) & (t1 <= start + fall + hold)
            onsets.append(float(start))
            earliest = start + fall + hold + recover + 8 * 60

    for _ in range(rng.poisson(1.3)):  # near misses: same precursors, nadir above 65
        start = rng.uniform(5 * 60, n1)
        strength = rng.uniform(0.2, 1.0)
        nadir = rng.uniform(70, 80)
        depth = max(map0 - nadir, 0)
        offset = _episode_profile(t1, start, rng.uniform(3, 12) * 60, 60, rng.uniform(60, 240),
                                  rng.uniform(60, 180), 0.7 * depth, depth)
        if np.any((offset < 0) & (precursor > 0)):
            continue  # never stack a near miss on a real episode
        map_offset = map_offset + offset
        precursor = np.maximum(precursor, strength * offset / -(depth + 1e-9))

    mean_ap = map0 + map_offset
    mean_ap[in_episode] = np.minimum(mean_ap[in_episode], 63.0)  # an episode stays below 65
    heart_rate = hr0 + 4 * slow_noise(n1, rng, 300) + 22 * precursor
    pulse_pressure = pp0 * (1 + 0.08 * slow_noise(n1, rng, 300)) * (1 - 0.35 * precursor)
    ppg_amplitude = rng.uniform(25, 45) * (1 + 0.1 * slow_noise(n1, rng, 300)) * (1 - 0.5 * precursor)

    # Beat-by-beat waveforms on the sample grid.
    n = int(round(duration_s * srate))
    t = np.arange(n) / srate
    hr = np.interp(t, t1, heart_rate)
    phase = np.cumsum(hr / 60.0) / srate
    resp = np.sin(2 * np.pi * rng.uniform(0.15, 0.25) * t + rng.uniform(0, 2 * np.pi))
    pp = np.interp(t, t1, pulse_pressure) * (1 + 0.06 * resp)
    mean = np.interp(t, t1, mean_ap)
    u_abp = np.mod(phase - 0.08, 1.0)
    shape = (_abp_shape(u_abp) - _ABP_MIN) / (_ABP_MAX - _ABP_MIN)
    abp = mean - pp * _ABP_MEAN + pp * shape + rng.normal(0, 0.6, n)

    u_ppg = np.mod(phase - 0.2, 1.0)
    ppg = (20 + 3 * resp + np.interp(t, t1, ppg_amplitude)
           * (_gauss(u_ppg, 0.22, 0.09) + 0.3 * _gauss(u_ppg, 0.5, 0.08)) + rng.normal(0, 0.3, n))

    u_ecg = np.mod(phase, 1.0)
    ecg = (0.12 * _gauss(u_ecg, 0.08, 0.025) - 0.12 * _gauss(u_ecg, 0.185, 0.01)
           + 1.1 * _gauss(u_ecg, 0.2, 0.013) - 0.25 * _gauss(u_ecg, 0.218, 0.012)
           + 0.3 * _gauss(u_ecg, 0.45, 0.05) + 0.08 * resp + rng.normal(0, 0.02, n))

    faults = _add_faults(abp, ppg, ecg, srate, rng)
    signals = {name: (np.round(x / ADC_STEP[name]) * ADC_STEP[name]).astype(np.float32)
               for name, x in [(ABP, abp), (PPG, ppg), (ECG, ecg)]}
    return SimulatedCase(signals, srate, int(duration_s), onsets, faults)


def _add_faults(abp, ppg, ecg, srate, rng):
    """Overwrite random spans with artefacts seen in real OR recordings; returns the spans."""
    n = len(abp)
    faults = []

    def span(min_s, max_s):
        length = int(rng.uniform(min_s, max_s) * srate)
        start = int(rng.integers(0, max(1, n - length)))
        return slice(start, start + length)

    for kind, rate, min_s, max_s in [("abp_flush", 1.0, 5, 20), ("abp_zero", 0.5, 10, 40),
                                     ("abp_clip", 0.5, 20, 90), ("disconnect", 0.7, 20, 150),
                                     ("ecg_cautery", 1.5, 5, 45), ("ppg_motion", 1.0, 10, 40)]:
        for _ in range(rng.poisson(rate)):
            s = span(min_s, max_s)
            m = s.stop - s.start
            if kind == "abp_flush":
                abp[s] = 300 + rng.normal(0, 1.0, m)
            elif kind == "abp_zero":
                abp[s] = rng.normal(0, 0.2, m)
            elif kind == "abp_clip":
                abp[s] = np.minimum(abp[s], np.percentile(abp[s], 70))  # saturated systolic tops
            elif kind == "disconnect":
                abp[s] = ppg[s] = ecg[s] = np.nan
            elif kind == "ecg_cautery":
                ecg[s] += rng.normal(0, 1.5, m)
            elif kind == "ppg_motion":
                ppg[s] += 25 * signal.sosfilt(signal.butter(2, [0.3, 3], "bandpass", fs=srate, output="sos"),
                                              rng.standard_normal(m)) * 3
            faults.append((kind, s.start / srate, s.stop / srate))
    return faults


def demo_clinical_rows(cases: pd.DataFrame, durations_s: np.ndarray) -> pd.DataFrame:
    """The chosen real rows with case times shortened to the simulated durations.

    VitalDB times are seconds from case start; anaesthesia/operation times are scaled so
    their order and proportions are kept.
    """
    rows = cases.copy()
    real_end = pd.to_numeric(rows["caseend"], errors="coerce").replace(0, np.nan).to_numpy()
    scale = durations_s / real_end
    for col in ["anestart", "aneend", "opstart", "opend"]:
        rows[col] = np.round(pd.to_numeric(rows[col], errors="coerce").to_numpy() * scale)
    rows["casestart"] = 0
    rows["caseend"] = durations_s
    return rows
