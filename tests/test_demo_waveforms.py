"""The simulator's recordings are the plain formulas' floats, to the bit.

`simulate_case` synthesises the waveforms block by block and in place, upsamples the 1-Hz traces without
np.interp's search, takes phases without np.mod and skips exponentials that are exactly 0 (lib/data/demo.py).
None of that may change a sample: the written .vital files (and the cohort stage's DVC hashes) must not depend
on how the arithmetic is organised. The reference here evaluates the formulas on whole arrays, as written.
"""
import numpy as np
import pytest

from lib.data import demo


def plain_gauss(u, centre, width):
    return np.exp(-0.5 * ((u - centre) / width) ** 2)


def plain_abp_shape(u, width=1.0, notch=1.0):
    return (plain_gauss(u, 0.16, 0.06 * width) + 0.38 * notch * plain_gauss(u, 0.42, 0.07)
            + 0.22 * np.exp(-3.0 * u) * (u > 0.1))


def plain_numerics(abp, beat_starts, faults, srate):
    """monitor_numerics' values and blanking, with the fault test as a count of fault samples per span."""
    n, span = len(abp), int(round(demo.NUMERIC_AVERAGE_S * srate))
    times = np.arange(demo.NUMERIC_AVERAGE_S, n / srate + 1e-9, demo.NUMERIC_INTERVAL_S)
    stop = np.round(times * srate).astype(np.int64)
    start = stop - span

    def overlaps(kinds):
        hit = np.zeros(n + 1, dtype=np.int64)
        for kind, begin_s, end_s in faults:
            if kind in kinds:
                hit[int(round(begin_s * srate))] += 1
                hit[int(round(end_s * srate))] -= 1
        inside = np.concatenate([[0], np.cumsum(np.cumsum(hit)[:n] > 0)])
        return inside[stop] > inside[start]

    sums = np.concatenate([[0.0], np.cumsum(np.where(np.isfinite(abp), abp, 0.0), dtype=np.float64)])
    map_values = np.round((sums[stop] - sums[start]) / span)
    beat_times = np.concatenate([np.asarray(beat_starts, dtype=np.float64) / srate, [np.inf]])
    first = np.searchsorted(beat_times, times - demo.NUMERIC_AVERAGE_S)
    last = np.searchsorted(beat_times, times) - 1
    beats = last - first
    with np.errstate(invalid="ignore", divide="ignore"):
        hr_values = np.round(60.0 * beats / (beat_times[np.maximum(last, 0)] - beat_times[first]))
    map_ok = ~overlaps(demo.ABP_FAULTS)
    hr_ok = ~overlaps(demo.ECG_FAULTS) & (beats >= 1) & np.isfinite(hr_values)
    return {demo.MAP_NUMERIC: (times[map_ok], map_values[map_ok]),
            demo.HR_NUMERIC: (times[hr_ok], hr_values[hr_ok])}


def plain_case(duration_s, srate, has_ioh, rng, patient):
    """simulate_case's formulas on whole arrays (the same random draws in the same order)."""
    hemo = demo.simulate_hemodynamics(duration_s, patient, has_ioh, rng)
    t1 = np.arange(int(duration_s), dtype=float)
    n = int(round(duration_s * srate))
    t = np.arange(n) / srate
    phase = np.cumsum(np.interp(t, t1, hemo.hr) / 60.0) / srate
    beat = np.floor(phase).astype(np.int64)
    jitter = {k: 1 + sd * rng.standard_normal(int(beat[-1]) + 3)[beat] for k, sd in demo.BEAT_JITTER_SD}
    resp = np.sin(2 * np.pi * rng.uniform(0.15, 0.25) * t + rng.uniform(0, 2 * np.pi))
    pp = np.interp(t, t1, hemo.pp) * (1 + 0.06 * resp) * jitter["amp"]
    shape = ((plain_abp_shape(np.mod(phase - 0.08, 1.0), jitter["width"], jitter["notch"]) - demo._ABP_MIN)
             / (demo._ABP_MAX - demo._ABP_MIN))
    abp = np.interp(t, t1, hemo.map) - pp * demo._ABP_MEAN + pp * shape + rng.normal(0, 0.6, n)
    u_ppg = np.mod(phase - 0.2, 1.0)
    ppg = (20 + 3 * resp + np.interp(t, t1, hemo.ppg_amplitude) * jitter["ppg"]
           * (plain_gauss(u_ppg, 0.22, 0.09 * jitter["ppg_width"]) + 0.3 * plain_gauss(u_ppg, 0.5, 0.08))
           + rng.normal(0, 0.3, n))
    u = np.mod(phase, 1.0)
    ecg = (0.12 * plain_gauss(u, 0.08, 0.025) - 0.12 * plain_gauss(u, 0.185, 0.01)
           + 1.1 * jitter["amp"] * plain_gauss(u, 0.2, 0.013) - 0.25 * plain_gauss(u, 0.218, 0.012)
           + 0.3 * plain_gauss(u, 0.45, 0.05) + 0.08 * resp + rng.normal(0, 0.02, n))
    faults = demo._add_faults(abp, ppg, ecg, srate, rng)
    signals = {name: (np.round(x / demo.ADC_STEP[name]) * demo.ADC_STEP[name]).astype(np.float32)
               for name, x in [(demo.ABP, abp), (demo.PPG, ppg), (demo.ECG, ecg)]}
    return signals, faults, plain_numerics(signals[demo.ABP], np.flatnonzero(np.diff(beat)) + 1, faults, srate)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("duration_s, srate, has_ioh, seed", [
    (12 * 60, 100, True, 1), (9 * 60, 100, False, 2), (5 * 60, 500, True, 3), (6 * 60, 62.5, True, 4)])
def test_simulate_case_is_the_plain_formulas_to_the_bit(duration_s, srate, has_ioh, seed, monkeypatch):
    waves, add_faults = [], demo._add_faults

    def keep_waves(abp, ppg, ecg, srate, rng):   # the float64 waves, before the ADC's rounding hides last bits
        waves.append([x.copy() for x in (abp, ppg, ecg)])
        return add_faults(abp, ppg, ecg, srate, rng)

    monkeypatch.setattr(demo, "_add_faults", keep_waves)
    patient = demo.Patient(age=40 + 10 * seed, asa=1 + seed % 4)
    case = demo.simulate_case(duration_s, srate, has_ioh, np.random.default_rng(seed), patient)
    signals, faults, numerics = plain_case(duration_s, srate, has_ioh, np.random.default_rng(seed), patient)
    assert all(same_bits(fast, plain) for fast, plain in zip(*waves, strict=True))
    assert case.faults == faults
    for name, samples in signals.items():
        assert same_bits(case.signals[name], samples), name
    for name, (times, values) in numerics.items():
        assert same_bits(case.numerics[name][0], times) and same_bits(case.numerics[name][1], values), name


@pytest.mark.parametrize("duration_s, srate", [(300, 100.0), (301, 62.5), (7, 500.0), (40, 33.3)])
def test_second_grid_is_np_interp_to_the_bit(duration_s, srate):
    rng = np.random.default_rng(0)
    t = np.arange(int(round(duration_s * srate)), dtype=np.float64) / srate
    grid = demo._SecondGrid(t, duration_s)
    for trace in (rng.normal(80, 15, duration_s), np.cumsum(rng.normal(0, 1, duration_s)),
                  np.r_[0.0, -0.0, rng.normal(0, 1, duration_s - 2)]):   # zeros: np.interp's own path
        assert same_bits(grid.interp(trace), np.interp(t, np.arange(duration_s, dtype=float), trace))


def test_adc_is_the_plain_rounding_to_the_bit():
    x = np.r_[np.random.default_rng(0).normal(0, 100, 100_000), np.nan, -0.0, 0.5 / 32, 1.5 / 32, -2.5 / 1024]
    for step in demo.ADC_STEP.values():
        assert same_bits(demo._adc(x.copy(), step), (np.round(x / step) * step).astype(np.float32)), step


def test_fraction_is_np_mod_to_the_bit():
    rng = np.random.default_rng(0)
    x = np.r_[rng.uniform(-1, 3, 10_000), rng.uniform(0, 5e4, 10_000) - 0.08, -1e-17, -0.08, -0.5, -0.0, 0.0,
              1 - 2 ** -53, 3.0, 2 ** 40 + 0.25, -(2 ** -1074)]
    assert same_bits(demo._fraction(x.copy()), np.mod(x, 1.0))


def test_gauss_and_abp_shape_are_the_plain_expressions_to_the_bit():
    u = np.random.default_rng(0).uniform(0, 1, 50_000)
    for centre, width in [(0.185, 0.01), (0.2, 0.013), (0.08, 0.025), (0.45, 0.05), (0.5, 0.0001)]:
        assert same_bits(demo._gauss(u, centre, width), plain_gauss(u, centre, width)), (centre, width)
    width, notch = 1 + 0.06 * np.random.default_rng(1).standard_normal((2, len(u)))
    assert same_bits(demo._abp_shape(u, 0.06 * width, 0.38 * notch), plain_abp_shape(u, width, notch))
    assert same_bits(demo._abp_shape(demo._GRID), plain_abp_shape(demo._GRID))
