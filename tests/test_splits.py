import numpy as np
import pandas as pd
import pytest

from lib.core.errors import PipelineError
from lib.data.splits import assert_subject_disjoint, subject_splits

RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}


def cohort(n_subjects=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    caseid = 1
    for subject in range(1000, 1000 + n_subjects):
        for _ in range(rng.integers(1, 4)):  # 1-3 cases per subject
            rows.append({"caseid": caseid, "subjectid": subject, "has_hypotension": bool(rng.random() < 0.3)})
            caseid += 1
    return pd.DataFrame(rows)


def test_no_subject_in_two_splits_and_every_case_assigned():
    cases = cohort()
    lists = subject_splits(cases, RATIOS, seed=3)
    subject_of = dict(zip(cases.caseid, cases.subjectid))
    sets = {k: {subject_of[c] for c in v} for k, v in lists.items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert sorted(sum(lists.values(), [])) == sorted(cases.caseid)


def test_splits_are_deterministic_stratified_and_seed_dependent():
    cases = cohort()
    assert subject_splits(cases, RATIOS, seed=3) == subject_splits(cases, RATIOS, seed=3)
    assert subject_splits(cases, RATIOS, seed=3) != subject_splits(cases, RATIOS, seed=4)
    lists = subject_splits(cases, RATIOS, seed=3)
    for caseids in lists.values():  # every split has subjects with hypotension
        assert cases[cases.caseid.isin(caseids)].has_hypotension.any()


def test_fasttrack_caps_train_and_val_with_whole_subjects_and_never_moves_test():
    cases = cohort()
    lists = subject_splits(cases, RATIOS, seed=3, max_cases={"train": 10, "val": 5})
    full = subject_splits(cases, RATIOS, seed=3)
    assert len(lists["train"]) <= 10 and len(lists["val"]) <= 5 and len(full["train"]) > 10
    assert lists["test"] == full["test"]    # variants with and without fasttrack share the test split
    with pytest.raises(PipelineError, match="test cannot be capped"):
        subject_splits(cases, RATIOS, seed=3, max_cases={"train": 10, "val": 5, "test": 5})
    chosen = cases[cases.caseid.isin(lists["train"])]
    for subject in chosen.subjectid.unique():  # a capped subject is never split up
        assert set(cases[cases.subjectid == subject].caseid) <= set(lists["train"])


def test_leak_is_detected_and_bad_ratios_rejected():
    cases = pd.DataFrame({"caseid": [1, 2], "subjectid": [7, 7], "has_hypotension": [False, False]})
    with pytest.raises(PipelineError, match="subject 7"):
        assert_subject_disjoint(cases, {"train": [1], "test": [2]})
    with pytest.raises(PipelineError, match="sum to 1"):
        subject_splits(cohort(), {"train": 0.7, "val": 0.2, "test": 0.2}, seed=0)
