"""Deterministic simulated demo cohort: real VitalDB case rows, simulated ABP/PPG/ECG waveforms.

Real VitalDB waveforms cannot be downloaded offline, so the demo generates them. The clinical
rows (caseid, subjectid, demographics) are real rows of VitalDB's case table; only the signals
are simulated. Nothing downstream reads the simulator's ground truth: labels are derived from
the written ABP waveform exactly as they are for real data.

Physiology first (v2), on a 1-Hz grid (`simulate_hemodynamics`, vectorised numpy, seeded):

* per-patient baselines from the real case row (`Patient.from_row`): older, ASA 3-4 and
  hypertensive patients have a lower anaesthetised MAP, a higher awake MAP and a more labile one;
* induction: the recording starts awake; MAP falls after induction (deeper in older/ASA 3-4
  patients), intubation gives a short rise, the level recovers over ~10 min. Post-induction
  hypotension is an IOH event like the others, placed 5-20 min after induction;
* autocorrelated MAP drift (minutes scale) and fast fluctuations; surgical stimulation
  (incision, then random stimuli) raises MAP and decays over minutes;
* IOH events (patients chosen for it, `choose_ioh_cases`): mostly gradual (MAP drifts down
  over 5-20 min, hovers at 65-75 mmHg, then crosses 65), some abrupt (bleeding, ABRUPT_SHARE of
  the events after the first 15 min: MAP declines over 3-10 min to a 70-80 mmHg shoulder, then
  falls below 65 within 1-2 min). The shoulder (v2.1): under general anaesthesia the baroreflex
  and sympathetic compensation of blood loss are blunted, so MAP falls with the lost volume from the
  start instead of holding until decompensation; a drop from 85-95 mmHg straight to < 65 (v2.0)
  made a handful of cases decide a 40-subject test split (default demo test split, -MAP AUROC
  5 min 0.83 with two such cases). Event mix against the data: MAP alone predicts the events
  with AUROC 0.93 at 5, 10 and 15 min in a forward analysis (Davies et al., Anesthesiology
  2024;141(3):443), so events preceded by a high MAP must be a minority; in the real case rows
  the demo draws from (VitalDB, data/vitaldb), 17 % of eligible cases lost >= 500 mL and 9 %
  were transfused, about the ~10 % of cases the simulator gives a bleeding event. An intervention
  (vasopressor: vascular tone; fluids: stroke volume) ends most events within a few minutes, with
  an overshoot that settles over minutes; some are treated late. Outside events MAP stays above 65 (a soft floor);
* MAP = stroke volume x heart rate x vascular tone in relative terms: the baroreflex moves heart
  rate against MAP changes (blunted in some, mostly older, patients); pulse pressure follows
  stroke volume, PPG amplitude stroke volume over tone, each with its own noise;
* beat-by-beat waveforms from a phase integrated over the heart rate: an ABP pulse with a
  dicrotic notch, a delayed PPG pulse and a P-QRS-T ECG, each beat's template varied (width,
  notch, amplitude);
* faults seen in real recordings: ABP flush (pinned near 300 mmHg), zeroing (flat 0), clipped
  ABP, disconnection (NaN gaps on all tracks), ECG electrocautery noise, PPG motion artefact;
* (v2.2) the patient monitor's numeric tracks, as real VitalDB recordings have them:
  `Solar8000/ART_MBP` and `Solar8000/HR` every 2 s, each the trailing 8-s mean of the written ABP / the
  mean beat interval, rounded to whole numbers, and not sent while the span overlaps a fault
  (`monitor_numerics`). They are computed from the waveforms with no random draws, so the waveform
  tracks are bit-identical to v2.1's.
* the second hospital (external validation, `second_hospital_rows`, `cohort.generate_second_hospital`):
  the same simulator with a documented shift: another seed, older and sicker patients (age and ASA
  floors), more of them with hypotension, 500 Hz, Philips IntelliVue track names (`PHILIPS_TRACKS`), no
  numeric tracks.

`simulate_map` is the fast path: the same 1-Hz physiology (same random stream) without
waveforms or faults, for calibration (tests/test_demo_calibration.py, bench/demo_calibration.py).
"""
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import signal

ABP, PPG, ECG = "SNUADC/ART", "SNUADC/PLETH", "SNUADC/ECG_II"
MAP_NUMERIC, HR_NUMERIC = "Solar8000/ART_MBP", "Solar8000/HR"   # the patient monitor's numerics (v2.2)
UNITS = {ABP: "mmHg", PPG: "", ECG: "mV", MAP_NUMERIC: "mmHg", HR_NUMERIC: "/min"}
# The second hospital's monitor (Philips IntelliVue) names the same waves differently and sends no numerics here.
PHILIPS_TRACKS = {ABP: "Intellivue/ABP", PPG: "Intellivue/PLETH", ECG: "Intellivue/ECG_II"}
PHILIPS_UNITS = {philips: UNITS[name] for name, philips in PHILIPS_TRACKS.items()}
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
    numerics: dict = field(default_factory=dict)  # {track: (times_s, values)}: the monitor's numeric tracks


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


def second_hospital_rows(rows: pd.DataFrame, min_age: float, min_asa: int, exclude_subjects,
                         one_case_per_subject: bool) -> pd.DataFrame:
    """The rows the second hospital draws from (`select_demo_cases`): age >= `min_age` and ASA >= `min_asa`
    (an older, sicker population), never a subject of `exclude_subjects` (the training cohort's: the two
    cohorts share no patient), and, if asked, only each subject's first eligible case."""
    age, asa = (pd.to_numeric(rows[column], errors="coerce") for column in ("age", "asa"))
    rows = rows[(age >= min_age) & (asa >= min_asa) & ~rows["subjectid"].isin(list(exclude_subjects))]
    if one_case_per_subject:
        rows = rows.sort_values("caseid").drop_duplicates("subjectid")
    return rows.sort_values("caseid").reset_index(drop=True)


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


# Exact zeros of exp: below this argument np.exp returns 0.0 (exp(-745.14) < 2**-1075 rounds to 0), and libm's
# underflow path for such arguments costs 2-4x a normal exp; the far tails of the narrow ECG peaks are there.
EXP_ZERO_BELOW = -746.0


def _exp(arg):
    """np.exp(arg), overwriting `arg` (a temporary); arguments whose exponential is exactly 0 are not evaluated."""
    if arg.size and arg.min() < EXP_ZERO_BELOW:
        return np.exp(arg, out=np.zeros_like(arg), where=arg >= EXP_ZERO_BELOW)
    return np.exp(arg, out=arg)


def _gauss(u, centre, width):
    """exp(-0.5 ((u - centre) / width)^2): the plain expression's operations in its order (the same floats),
    on one temporary."""
    arg = np.subtract(u, centre)
    arg /= width
    np.square(arg, out=arg)
    arg *= -0.5
    return _exp(arg)


def _abp_shape(u, pulse_width=0.06, notch_height=0.38):
    """ABP pulse over one cardiac cycle (phase u in [0, 1)): upstroke, dicrotic notch, run-off. The upstroke's
    width and the notch's height may vary per sample (each beat's template)."""
    shape = _gauss(u, 0.16, pulse_width)
    shape += notch_height * _gauss(u, 0.42, 0.07)
    run_off = np.multiply(-3.0, u)
    np.exp(run_off, out=run_off)
    run_off *= 0.22
    run_off *= u > 0.1
    shape += run_off
    return shape


_GRID = np.linspace(0, 1, 2001)[:-1]
_ABP_MIN, _ABP_MAX = _abp_shape(_GRID).min(), _abp_shape(_GRID).max()
_ABP_MEAN = ((_abp_shape(_GRID) - _ABP_MIN) / (_ABP_MAX - _ABP_MIN)).mean()


@dataclass(frozen=True)
class Patient:
    """What the simulator takes from a real case row."""

    age: float = 60.0
    asa: float = 2.0
    female: bool = False
    hypertensive: bool = False

    @classmethod
    def from_row(cls, row) -> "Patient":
        def num(key, default):
            value = pd.to_numeric(pd.Series([row.get(key, default)]), errors="coerce").iloc[0]
            return default if pd.isna(value) else float(value)
        return cls(age=float(np.clip(num("age", 60.0), 18, 95)), asa=float(np.clip(num("asa", 2.0), 1, 4)),
                   female=str(row.get("sex", "")).upper().startswith("F"), hypertensive=num("preop_htn", 0.0) > 0)


@dataclass
class Hemodynamics:
    """1-Hz traces of one simulated case (and the simulator's event onsets, for tests only)."""

    map: np.ndarray
    hr: np.ndarray
    pp: np.ndarray
    ppg_amplitude: np.ndarray
    onsets_s: list
    abrupt: list = field(default_factory=list)   # per onset: True for an abrupt (bleeding) event


# Tuned so that the fast path matches published figures (tests/test_demo_calibration.py).
HOVER_MIN = (12.0, 30.0)     # gradual events: minutes MAP hovers in the pre-hypotensive zone before crossing 65
HOVER_MMHG = (68.0, 74.0)    # ... at what level when it gets there
APPROACH_MMHG = (65.5, 68.0)  # ... and just before the crossing
ABRUPT_SHARE = 0.15          # intraoperative events that are abrupt (bleeding)
BLEED_DECLINE_MIN = (3.0, 10.0)      # abrupt events: minutes MAP declines (blunted compensation) ...
BLEED_SHOULDER_MMHG = (70.0, 80.0)   # ... to this level, before the fall below 65 within 1-2 min
FLOOR_MMHG, FLOOR_SOFTNESS = 70.0, 2.0   # outside events MAP stays above the floor


def _ou(n: int, rng, tau_s: float, sd: float) -> np.ndarray:
    """Ornstein-Uhlenbeck (AR(1)) noise on a 1 Hz grid: correlation time `tau_s`, stationary sd `sd`."""
    phi = np.exp(-1.0 / tau_s)
    x = signal.lfilter([np.sqrt(1 - phi * phi)], [1, -phi], rng.standard_normal(n))
    return sd * (x + (rng.standard_normal() - x[0]) * phi ** np.arange(n))  # start in the stationary state


def _ramp(t, knots, values):
    return np.interp(t, knots, values, left=values[0], right=values[-1])


def _decay(t, start, tau):
    """0 before `start`, then exp(-(t - start) / tau)."""
    return np.where(t >= start, np.exp(-np.clip(t - start, 0, None) / tau), 0.0)


def _soft_floor(x, floor, softness):
    """x above `floor`, smoothly bent (over about `softness` mmHg) so that it never goes below it."""
    return floor + softness * np.logaddexp(0.0, (x - floor) / softness)


def simulate_hemodynamics(duration_s: int, patient: Patient, has_ioh: bool, rng) -> Hemodynamics:
    """The 1-Hz physiology of one case (module doc); deterministic for a given `rng` state."""
    n = int(duration_s)
    t = np.arange(n, dtype=float)
    old, sick = (patient.age - 55) / 15, patient.asa - 2
    lability = float(np.clip(np.exp(rng.normal(0, 0.2)) * (1 + 0.15 * old + 0.15 * sick), 0.6, 2.0))
    map0 = (84 - 3 * old - 3 * sick - 2 * patient.female - 3 * patient.hypertensive - 4 * has_ioh
            + rng.normal(0, 6))
    map0 = float(np.clip(map0, 71, 105))
    awake = map0 + 12 + 4 * old + 5 * patient.hypertensive + rng.normal(0, 6)
    hr0 = float(np.clip(rng.normal(72, 10) - 2 * old, 50, 100))
    pp0 = float(np.clip(rng.normal(42, 7) + 5 * old + 4 * patient.hypertensive, 25, 80))

    # Background, all vascular tone: induction, drift, stimulation.
    t0 = rng.uniform(60, 240)                         # induction (s from recording start)
    dip_tau = rng.uniform(240, 480)
    dip = min(rng.uniform(4, 12) * lability, 20.0)
    tone = _ramp(t, [t0, t0 + 90], [awake - map0, 0.0])
    x = np.clip(t - t0, 0, None) / dip_tau
    tone -= dip * x * np.exp(1 - x)                  # post-induction dip, deepest dip_tau after induction
    tone += rng.uniform(8, 20) * _ramp(t, [t0 + 150, t0 + 180], [0, 1]) * _decay(t, t0 + 180, 90)  # intubation
    incision = t0 + rng.uniform(8, 25) * 60
    tone += rng.uniform(6, 16) * _ramp(t, [incision, incision + 60], [0, 1]) * _decay(t, incision + 60,
                                                                                        rng.uniform(300, 900))
    for start in rng.uniform(incision, max(incision, n), rng.poisson(n / 2400)):
        tone += rng.uniform(4, 12) * _ramp(t, [start, start + 60], [0, 1]) * _decay(t, start + 60,
                                                                                   rng.uniform(180, 480))
    tone += _ou(n, rng, rng.uniform(240, 600), 4.0 * lability) + _ou(n, rng, 20.0, 1.0)
    volume = _ou(n, rng, rng.uniform(300, 900), 1.5)
    base = _soft_floor(map0 + tone + volume, FLOOR_MMHG, FLOOR_SOFTNESS)
    tone = base - map0 - volume                       # the floor acts on tone (the anaesthetist's response)

    onsets, kinds = [], []
    if has_ioh:
        times = []
        if rng.random() < 0.6:                                        # post-induction hypotension
            times.append(min(t0 + rng.uniform(5, 20) * 60, 0.7 * n))     # short (test) cases: in the recording
        k = rng.poisson(n / 3600 * 0.8) + (0 if times else 1)
        times += list(rng.uniform(t0 + 20 * 60, n - 3 * 60, k)) if n - 3 * 60 > t0 + 20 * 60 else []
        if not times:
            times = [min(t0 + rng.uniform(3, 15) * 60, 0.7 * n)]     # short (test) cases still get one
        busy_until = -np.inf
        for onset in sorted(times):
            abrupt = rng.random() < ABRUPT_SHARE and onset > t0 + 15 * 60
            if abrupt:   # hover_s: the final fall; before it, the decline to the shoulder
                hover_s = rng.uniform(60, 120)
                lead = hover_s + rng.uniform(*BLEED_DECLINE_MIN) * 60
            else:
                hover_s = rng.uniform(*HOVER_MIN) * 60
                lead = hover_s + rng.uniform(2, 8) * 60
            if onset - lead < busy_until or onset > n - 120:
                continue
            nadir, hover, cross = rng.uniform(50, 62), rng.uniform(*HOVER_MMHG), rng.uniform(60, 240)
            treat = onset + (rng.uniform(1, 4) if rng.random() < 0.85 else rng.uniform(5, 15)) * 60
            rise, overshoot, settle = rng.uniform(60, 180), rng.uniform(5, 20), rng.uniform(240, 720)
            background = map0 + tone + volume
            if abrupt:   # bleeding: MAP declines over minutes to a shoulder, then falls below 65 within 1-2 min
                weight = _ramp(t, [onset - lead, onset - hover_s], [0.0, 1.0])
                shoulder = min(rng.uniform(*BLEED_SHOULDER_MMHG), background[max(int(onset - hover_s), 0)])
                target = _ramp(t, [onset - hover_s, onset, onset + 60], [shoulder, 64.0, nadir])
            else:        # gradual: down to the 65-75 zone, hovering there for minutes, then crossing
                weight = _ramp(t, [onset - lead, onset - hover_s], [0.0, 1.0])
                approach = rng.uniform(*APPROACH_MMHG)   # the hover drifts towards 65 as the onset nears
                target = _ramp(t, [onset - hover_s, onset - cross, onset, onset + 60], [hover, approach, 64.5, nadir])
                target += _ou(n, rng, 120, 1.5)
            offset = np.where(t < treat, weight * (target - background), 0.0)
            at_treat = offset[min(int(treat) - 1, n - 1)]
            offset += np.where(t >= treat, _ramp(t, [treat, treat + rise], [at_treat, overshoot]), 0.0)
            after = t >= treat + rise   # the overshoot settles back to the background
            offset[after] = overshoot * _decay(t[after], treat + rise, settle)
            # The cause persists (vasodilation: tone; bleeding: volume), the treatment compensates it
            # (vasopressor: tone; fluids: volume).
            cause = np.where(t < treat, offset, at_treat)
            if abrupt:
                volume += cause
            else:
                tone += cause
            if rng.random() < 0.3:
                volume += offset - cause
            else:
                tone += offset - cause
            onsets.append(float(onset))
            kinds.append(bool(abrupt))
            busy_until = treat + rise + settle
    mean_ap = map0 + tone + volume

    # Heart rate: baroreflex against MAP changes (10-s lag), blunted in some patients; its own noise.
    blunted = rng.random() < 0.2 + 0.15 * (patient.age > 70)
    gain = rng.uniform(0.0, 0.15) if blunted else rng.uniform(0.3, 0.8)
    lagged = signal.lfilter([0.1], [1, -0.9], mean_ap - map0)
    heart_rate = np.clip(hr0 - gain * lagged + _ou(n, rng, 180, 3.0) + _ou(n, rng, 5, 1.0), 35, 150)
    # Stroke volume (relative) follows volume; pulse pressure and PPG amplitude from it and from tone.
    stroke = 1 + 0.012 * volume + _ou(n, rng, 240, 0.05)
    pulse_pressure = np.clip(pp0 * stroke * (1 + 0.004 * (mean_ap - map0)) * (1 + _ou(n, rng, 60, 0.03)), 12, 120)
    rel_tone = np.clip(1 + 0.012 * tone, 0.4, 2.0)
    ppg_amplitude = rng.uniform(25, 45) * np.clip(stroke, 0.3, 2) / rel_tone * (1 + _ou(n, rng, 120, 0.08))
    return Hemodynamics(mean_ap, heart_rate, pulse_pressure, ppg_amplitude, onsets, kinds)


def simulate_map(duration_s: int, patient: Patient, has_ioh: bool, rng) -> np.ndarray:
    """Fast path: the 1-Hz MAP trace (mmHg) the waveform path's `map_per_second` sees, without waveforms
    or faults (a 2-s mean: the simulated level plus beat and respiratory ripple as white noise)."""
    hemo = simulate_hemodynamics(duration_s, patient, has_ioh, rng)
    noise = rng.normal(0, 0.8, len(hemo.map))
    return hemo.map + 0.5 * (noise + np.roll(noise, 1))


def simulate_case(duration_s: int, srate: float, has_ioh: bool, rng, patient: Patient | None = None) -> SimulatedCase:
    """Simulate one case's ABP, PPG and ECG at `srate` Hz (the same 1-Hz physiology as `simulate_map`)."""
    hemo = simulate_hemodynamics(duration_s, patient or Patient(), has_ioh, rng)

    # Beat-by-beat waveforms on the sample grid; every beat's template is varied a little.
    n, n_seconds = int(round(duration_s * srate)), int(duration_s)
    t = np.arange(n, dtype=np.float64) / srate   # a float arange holds the same whole numbers as arange(n)
    blocks = [(block, _SecondGrid(t[block], n_seconds)) for block in _blocks(n)]
    phase = _cardiac_phase(blocks, hemo.hr, srate, n)
    beat = np.floor(phase).astype(np.int64)
    n_beats = int(beat[-1]) + 3 if n else 3
    jitter = {k: 1 + sd * rng.standard_normal(n_beats) for k, sd in BEAT_JITTER_SD}   # one factor per beat
    resp = _breathing(t, rng)
    abp, ppg, ecg = _waves(blocks, phase, beat, resp, jitter, hemo)
    for wave, sd in [(abp, 0.6), (ppg, 0.3), (ecg, 0.02)]:   # white noise, drawn in this order
        wave += rng.normal(0, sd, n)

    faults = _add_faults(abp, ppg, ecg, srate, rng)
    signals = {name: _adc(x, ADC_STEP[name]) for name, x in [(ABP, abp), (PPG, ppg), (ECG, ecg)]}
    numerics = monitor_numerics(signals[ABP], np.flatnonzero(beat[1:] != beat[:-1]) + 1, faults, srate)
    return SimulatedCase(signals, srate, int(duration_s), hemo.onsets_s, faults, numerics)


# sd of each beat's template factor (1 + sd * N(0, 1)), drawn in this order
BEAT_JITTER_SD = [("amp", 0.03), ("width", 0.06), ("notch", 0.12), ("ppg", 0.04), ("ppg_width", 0.05)]
# Waveforms are synthesised this many samples at a time: each step's temporaries stay in the CPU's cache.
WAVE_BLOCK = 1 << 16


def _blocks(n: int):
    return (slice(start, min(start + WAVE_BLOCK, n)) for start in range(0, n, WAVE_BLOCK))


def _cardiac_phase(blocks, hr, srate: float, n: int):
    """Beats since the recording's start at each of its `n` samples: the 1-Hz heart rate `hr` (/min) on the
    sample grid, integrated."""
    beats_per_s = np.empty(n)
    for block, per_second in blocks:
        beats_per_s[block] = per_second.interp(hr)
    beats_per_s /= 60.0
    phase = np.cumsum(beats_per_s, out=beats_per_s)
    phase /= srate
    return phase


def _breathing(t, rng):
    """sin(2 pi f t + phi) of a random breathing rate f (9-15 /min) and phase phi."""
    resp = 2 * np.pi * rng.uniform(0.15, 0.25) * t
    resp += rng.uniform(0, 2 * np.pi)
    return np.sin(resp, out=resp)


def _waves(blocks, phase, beat, resp, jitter, hemo):
    """ABP, PPG and ECG (3, n) without their noise, synthesised block by block."""
    waves = np.empty((3, len(phase)))
    for block, per_second in blocks:
        samples = _Samples(phase[block], beat[block], resp[block], per_second)
        amp = jitter["amp"][samples.beat]   # the beat's pulse amplitude (ABP and ECG)
        waves[0, block] = _abp_wave(samples, jitter, amp, hemo)
        waves[1, block] = _ppg_wave(samples, jitter, hemo)
        waves[2, block] = _ecg_wave(samples, amp)
    return waves


class _SecondGrid:
    """Sample times on the 1-Hz grid of the hemodynamic traces: `interp(trace)` is
    np.interp(t, arange(n_seconds), trace) to the bit (np.interp's slope * (t - second) + value at the second
    below t, the trace's last value past its last second), for every trace with the index search done once."""

    def __init__(self, t, n_seconds: int):
        self.t, self.n_seconds = t, n_seconds
        second = np.minimum(t.astype(np.int64), max(n_seconds - 1, 0))   # t >= 0: truncation is floor
        self.into_second = t - second                                      # exact: the fraction of t past it
        self.repeats = np.bincount(second, minlength=n_seconds)

    def interp(self, trace):
        if self.n_seconds < 2 or not np.isfinite(trace).all() or (trace == 0).any():
            # np.interp's own special cases (a signed zero returned as is, NaN slopes)
            return np.interp(self.t, np.arange(self.n_seconds, dtype=float), trace)
        slope = np.append(np.diff(trace), 0.0)   # (y[j+1] - y[j]) / 1 s; flat past the last second
        out = np.repeat(slope, self.repeats)
        out *= self.into_second
        out += np.repeat(trace, self.repeats)
        return out


@dataclass
class _Samples:
    """A run of consecutive samples: what every waveform is synthesised from."""

    phase: np.ndarray          # cardiac phase: beats since the start
    beat: np.ndarray           # the beat each sample belongs to (floor of phase)
    resp: np.ndarray           # breathing, -1..1
    per_second: _SecondGrid    # the 1-Hz traces at these samples


def _fraction(x):
    """np.mod(x, 1.0) to the bit, in place (x - floor(x) is exact, and for -1 < x < 0 rounds as np.mod's
    x + 1 does)."""
    x -= np.floor(x)
    return x


def _abp_wave(samples, jitter, amp, hemo):
    """ABP without its noise: MAP plus the pulse (its template normalised to [0, 1], scaled by the pulse
    pressure, shifted so that the cycle's mean stays MAP)."""
    pp = samples.per_second.interp(hemo.pp)
    breathing = 0.06 * samples.resp
    breathing += 1
    pp *= breathing
    pp *= amp
    beat = samples.beat
    shape = _abp_shape(_fraction(samples.phase - 0.08), (0.06 * jitter["width"])[beat],
                       (0.38 * jitter["notch"])[beat])
    shape -= _ABP_MIN
    shape /= _ABP_MAX - _ABP_MIN
    shape *= pp
    abp = np.subtract(samples.per_second.interp(hemo.map), pp * _ABP_MEAN)
    abp += shape
    return abp


def _ppg_wave(samples, jitter, hemo):
    """PPG without its noise: a baseline moved by breathing plus a delayed pulse of the beat's amplitude."""
    u = _fraction(samples.phase - 0.2)
    pulse = _gauss(u, 0.22, (0.09 * jitter["ppg_width"])[samples.beat])
    pulse += 0.3 * _gauss(u, 0.5, 0.08)
    amplitude = samples.per_second.interp(hemo.ppg_amplitude)
    amplitude *= jitter["ppg"][samples.beat]
    amplitude *= pulse
    ppg = 3 * samples.resp
    ppg += 20
    ppg += amplitude
    return ppg


def _ecg_wave(samples, amp):
    """ECG without its noise: P, Q, R, S and T waves over the cycle plus a breathing baseline."""
    u = samples.phase - samples.beat   # np.mod(phase, 1.0): the beat is floor(phase)
    ecg = 0.12 * _gauss(u, 0.08, 0.025)
    ecg -= 0.12 * _gauss(u, 0.185, 0.01)
    ecg += 1.1 * amp * _gauss(u, 0.2, 0.013)
    ecg -= 0.25 * _gauss(u, 0.218, 0.012)
    ecg += 0.3 * _gauss(u, 0.45, 0.05)
    ecg += 0.08 * samples.resp
    return ecg


def _adc(x, step):
    """x on the ADC's grid of `step` (a power of 2, so x * (1 / step) is x / step exactly), as float32."""
    x *= 1 / step
    np.rint(x, out=x)   # np.round to 0 decimals
    x *= step
    return x.astype(np.float32)


NUMERIC_INTERVAL_S = 2.0   # the monitor's update interval (Solar8000: every ~2 s)
NUMERIC_AVERAGE_S = 8.0    # each value averages the trailing 8 s (a few beats), like a monitor's display
ABP_FAULTS = ("abp_flush", "abp_zero", "abp_clip", "disconnect")
ECG_FAULTS = ("ecg_cautery", "disconnect")


def monitor_numerics(abp, beat_starts, faults, srate) -> dict:
    """The patient monitor's numeric tracks, computed from the recorded waveforms as a monitor does:
    every NUMERIC_INTERVAL_S at time t, MAP = mean of the recorded (as-written) ABP over [t - NUMERIC_AVERAGE_S, t)
    and HR = 60 / mean beat interval of the beats in that span, rounded to whole numbers. A value is not
    sent (no sample) when its span overlaps an arterial-line fault (MAP: flush, zeroing, clipping,
    disconnection; HR: electrocautery, disconnection), as a monitor blanks an artefact-flagged value.
    Deterministic, no random draws: the waveforms and the RNG streams are those of v2.1.
    Returns {track: (times_s, values)}, times in seconds from the recording start."""
    n, span = len(abp), int(round(NUMERIC_AVERAGE_S * srate))
    times = np.arange(NUMERIC_AVERAGE_S, n / srate + 1e-9, NUMERIC_INTERVAL_S)
    stop = np.round(times * srate).astype(np.int64)
    start = stop - span

    def overlaps(kinds):   # does [start, stop) share a sample with a fault span [begin, end) of these kinds?
        hit = np.zeros(len(times), dtype=bool)
        for kind, begin_s, end_s in faults:
            if kind in kinds:
                begin, end = int(round(begin_s * srate)), min(int(round(end_s * srate)), n)
                hit |= np.maximum(start, begin) < np.minimum(stop, end)
        return hit

    values = np.zeros(n + 1)
    values[1:] = abp   # float64: a cumsum casting float32 on the fly takes 5x as long (the same sums)
    values[1:][~np.isfinite(abp)] = 0.0   # NaN only in disconnections, which blank the value anyway
    sums = np.cumsum(values, out=values)
    map_values = np.round((sums[stop] - sums[start]) / span)
    # beats in [t - span, t): the first and last of them, and the mean interval between them
    beat_times = np.concatenate([np.asarray(beat_starts, dtype=np.float64) / srate, [np.inf]])
    first = np.searchsorted(beat_times, times - NUMERIC_AVERAGE_S)
    last = np.searchsorted(beat_times, times) - 1
    beats = last - first
    with np.errstate(invalid="ignore", divide="ignore"):
        hr_values = np.round(60.0 * beats / (beat_times[np.maximum(last, 0)] - beat_times[first]))
    map_ok = ~overlaps(ABP_FAULTS)
    hr_ok = ~overlaps(ECG_FAULTS) & (beats >= 1) & np.isfinite(hr_values)
    return {MAP_NUMERIC: (times[map_ok], map_values[map_ok]), HR_NUMERIC: (times[hr_ok], hr_values[hr_ok])}


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


def calibration_figures(rows: pd.DataFrame, n_cases: int, seed: int, ioh_fraction: float,
                        minutes=(60.0, 180.0), horizons_min=(5.0, 10.0, 15.0), step_s: int = 20,
                        post_event_gap_min: float = 10.0, threshold: float = 65.0) -> dict:
    """The simulator against published figures, on the fast path (`simulate_map`).

    `n_cases` real case rows (drawn from `rows` with `seed`) are simulated for a duration drawn
    uniformly in `minutes`, with hypotension cases chosen as the demo chooses them. Windows end every
    `step_s` seconds and are labelled by the forward rule ('within', lib.signal.labels); logistic
    regression on the current MAP is fitted on half of the subjects and scored (AUROC) on the other
    half, per horizon. Also: the share of cases with >= 1 IOH event, and of those the share whose
    first event begins within 20 min of the recording start (post-induction).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from lib.signal import labels

    rng = np.random.default_rng(seed)
    cases = rows.iloc[np.sort(rng.choice(len(rows), size=n_cases, replace=len(rows) < n_cases))].reset_index(drop=True)
    ioh = choose_ioh_cases(cases, ioh_fraction, seed + 1)
    durations = np.round(rng.uniform(*minutes, n_cases) * 60).astype(int)
    seeds = np.random.SeedSequence(seed).spawn(n_cases)
    subjects = cases["subjectid"].to_numpy() if "subjectid" in cases else np.arange(n_cases)
    fit_subjects = set(rng.permutation(np.unique(subjects))[: len(np.unique(subjects)) // 2].tolist())
    per_h = {h: {"x": [], "y": [], "fit": []} for h in horizons_min}
    with_event, post_induction = 0, 0
    for i in range(n_cases):
        trace = simulate_map(int(durations[i]), Patient.from_row(cases.iloc[i]), bool(ioh[i]),
                             np.random.default_rng(seeds[i]))
        events = labels.ioh_events(trace, threshold)
        if len(events[0]):
            with_event += 1
            post_induction += events[0][0] < 20 * 60
        ends = np.arange(step_s, len(trace) + 1, step_s, dtype=float)
        now = labels.map_at_end(trace, ends)
        for h in horizons_min:
            y, _, _ = labels.hypotension_labels(trace, ends, h * 60, 60, threshold, rule="within",
                                                post_event_gap_s=post_event_gap_min * 60, events=events)
            keep = np.isfinite(y)
            per_h[h]["x"].append(now[keep])
            per_h[h]["y"].append(y[keep])
            per_h[h]["fit"].append(np.full(keep.sum(), subjects[i] in fit_subjects))
    out = {"cases": n_cases, "seed": seed, "minutes": list(minutes), "step_s": step_s,
           "event_share": with_event / n_cases, "post_induction_share": post_induction / max(with_event, 1),
           "horizons": {}}
    for h, d in per_h.items():
        x, y, fit = (np.concatenate(d[k]) for k in ("x", "y", "fit"))
        model = LogisticRegression().fit(x[fit, None], y[fit])
        score = model.predict_proba(x[~fit, None])[:, 1]
        out["horizons"][f"{h:g}"] = {"auroc": float(roc_auc_score(y[~fit], score)), "coef": float(model.coef_[0, 0]),
                                     "windows": int(len(y)), "positive_rate": float(y.mean())}
    return out
