import numpy as np

from lib.data import demo
from lib.data.cohort import DEMO_CRITERIA
from lib.data.vitaldb_source import select_cases
from lib.signal import filters, labels


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
    case = demo.simulate_case(60 * 60, 100, False, np.random.default_rng(11))
    kinds = {k for k, _, _ in case.faults}
    abp = case.signals[demo.ABP]
    if "abp_flush" in kinds:
        assert np.nanmax(abp) > 290
    if "disconnect" in kinds:
        assert np.isnan(abp).any()
    assert kinds  # at least one fault in an hour


def test_demo_cases_are_real_eligible_rows_with_multi_case_subjects(clinical):
    rows = demo.select_demo_cases(select_cases(clinical, DEMO_CRITERIA)[0], 40, 6, seed=0)
    assert len(rows) == 40
    assert set(rows.caseid) <= set(clinical.caseid)
    assert (rows.subjectid.value_counts() >= 2).sum() >= 3
    assert (rows.age >= 18).all() and (rows.ane_type == "General").all()
