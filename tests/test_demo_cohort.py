from dataclasses import replace

import numpy as np
import pandas as pd

from lib.core.params import Demo, ExternalDemo, read_params
from lib.data import demo, vital_io
from lib.data.cohort import (
    DEMO_CRITERIA,
    _reads_as_simulated,
    build_manifest,
    generate_demo,
    generate_second_hospital,
    summarise_case,
)
from lib.data.vitaldb_source import select_cases
from lib.signal import filters, labels
from tests.conftest import ROOT


def test_simulation_is_deterministic_per_seed():
    a = demo.simulate_case(15 * 60, 100, True, np.random.default_rng(3))
    b = demo.simulate_case(15 * 60, 100, True, np.random.default_rng(3))
    for name in a.signals:
        np.testing.assert_array_equal(a.signals[name], b.signals[name])


def test_hypotension_cases_have_an_episode_in_the_abp_and_others_do_not():
    found = []
    for seed, has_ioh in [(1, True), (2, True), (3, False), (4, False)]:
        case = demo.simulate_case(40 * 60, 100, has_ioh, np.random.default_rng(seed))
        abp, invalid = filters.resample_to(case.signals[demo.ABP], 100, 125)
        found.append(labels.has_hypotension(labels.map_per_second(abp, invalid, 125)))
    assert found[:2] == [True, True] and found[2:] == [False, False]


def test_faults_are_present_and_realistic():
    seen = set()
    for seed in range(11, 17):
        case = demo.simulate_case(30 * 60, 100, False, np.random.default_rng(seed))
        abp, ecg = case.signals[demo.ABP], case.signals[demo.ECG]
        for kind, start, end in case.faults:
            span = slice(round(start * 100), round(end * 100))
            seen.add(kind)
            if kind == "abp_flush":
                assert np.nanmax(abp[span]) > 290, (seed, kind)
            elif kind == "disconnect":
                assert np.isnan(abp[span]).all() and np.isnan(ecg[span]).all(), (seed, kind)
    assert {"abp_flush", "disconnect", "abp_zero", "ecg_cautery"} <= seen, seen


def test_physiology_follows_the_patient_and_the_baroreflex():
    def mean_map(patient):
        return np.mean([demo.simulate_map(3600, patient, False, np.random.default_rng(s)).mean() for s in range(12)])
    assert mean_map(demo.Patient(age=80, asa=4)) < mean_map(demo.Patient(age=30, asa=1)) - 3
    corr = []
    for seed in range(6):
        hemo = demo.simulate_hemodynamics(3600, demo.Patient(), True, np.random.default_rng(seed))
        corr.append(np.corrcoef(hemo.map[300:], hemo.hr[300:])[0, 1])
    assert np.median(corr) < -0.2   # heart rate rises when MAP falls (most patients)
    hemo = demo.simulate_hemodynamics(3600, demo.Patient(), True, np.random.default_rng(0))
    for other in (hemo.pp, hemo.ppg_amplitude):   # not noiseless functions of MAP
        assert abs(np.corrcoef(hemo.map, other)[0, 1]) < 0.95


def test_fast_path_events_post_induction_and_interventions():
    onsets, durations = [], []
    for seed in range(40):
        trace = demo.simulate_map(90 * 60, demo.Patient(age=70, asa=3), True, np.random.default_rng(seed))
        starts, ends = labels.ioh_events(trace)
        assert len(starts), seed                      # a hypotension case has at least one event
        onsets.append(starts[0])
        durations += list(ends - starts)
    assert np.mean(np.array(onsets) < 20 * 60) > 0.3   # post-induction hypotension is frequent
    assert np.median(durations) < 8 * 60                # most events are treated within minutes
    assert all(not len(labels.ioh_events(demo.simulate_map(90 * 60, demo.Patient(age=70, asa=3), False,
                                                           np.random.default_rng(s)))[0]) for s in range(20))


def test_fast_path_is_the_waveform_path_at_1_hz():
    patient = demo.Patient(age=70, asa=3)
    fast = demo.simulate_map(20 * 60, patient, True, np.random.default_rng(5))
    case = demo.simulate_case(20 * 60, 100, True, np.random.default_rng(5), patient)
    abp, invalid = filters.resample_to(case.signals[demo.ABP], 100, 125)
    slow = labels.map_per_second(abp, invalid, 125)
    ok = np.isfinite(slow)
    assert ok.mean() > 0.7 and np.median(np.abs(slow[ok] - fast[: len(slow)][ok])) < 2.0


def test_demo_cases_are_real_eligible_rows_with_multi_case_subjects(clinical):
    rows = demo.select_demo_cases(select_cases(clinical, DEMO_CRITERIA)[0], 40, 6, seed=0)
    assert len(rows) == 40
    assert set(rows.caseid) <= set(clinical.caseid)
    assert (rows.subjectid.value_counts() >= 2).sum() >= 3
    assert (rows.age >= 18).all() and (rows.ane_type == "General").all()


def test_simulated_summaries_are_what_reading_the_files_gives(clinical, tmp_path):
    """The cohort stage takes a simulated case's manifest summary from the samples it wrote instead of
    reading the file back: it must be summarise_case's, duration and hypotension alike, at 100 and 500 Hz."""
    aliases = read_params(ROOT / "params.yaml")["data"]["tracks"]
    long_ioh = dict(n_cases=3, min_minutes=35, max_minutes=40, ioh_fraction=1.0)
    _, ours = generate_demo(tmp_path / "demo", clinical, replace(Demo(), n_multi_case_subjects=0, **long_ioh), 2)
    _, theirs = generate_second_hospital(tmp_path / "ext", clinical, replace(ExternalDemo(), **long_ioh), (), 1)
    for directory, summaries in [(tmp_path / "demo", ours), (tmp_path / "ext", theirs)]:
        assert len(summaries) == 3 and any(s["has_hypotension"] for s in summaries.values())
        for caseid, summary in summaries.items():
            assert summary == summarise_case(directory / f"{caseid}.vital", aliases), caseid
    files = vital_io.vital_files(tmp_path / "demo")
    rows = clinical[clinical["caseid"].isin(list(files))]
    pd.testing.assert_frame_equal(build_manifest(rows, files, aliases, 1, known=ours),
                                  build_manifest(rows, files, aliases, 1))


def test_simulated_summaries_are_used_only_where_the_aliases_read_the_simulated_tracks():
    aliases = read_params(ROOT / "params.yaml")["data"]["tracks"]
    assert _reads_as_simulated(aliases, philips=False) and _reads_as_simulated(aliases, philips=True)
    assert not _reads_as_simulated({**aliases, "abp": ["SNUADC/PLETH"]}, philips=False)   # another wave as ABP
    assert not _reads_as_simulated({**aliases, "abp": ["ART_MBP", "SNUADC/ART"]}, philips=False)   # a numeric first
    assert not _reads_as_simulated({**aliases, "ecg": ["II"]}, philips=True)   # no track of that name
    assert not _reads_as_simulated({**aliases, "ppg": ["SNUADC/PLETH"]}, philips=True)   # Philips files lack it
