"""Subject-level train/val/test splits, stratified by whether a subject has hypotension.

A subject (VitalDB `subjectid`) can have several cases; all of them land in one split, so no
patient is ever seen in training and again at test.
"""
import numpy as np
import pandas as pd

from lib.core.errors import PipelineError
from lib.core.params import Splits

SPLITS = ("train", "val", "test")


def check_ratios(ratios: dict) -> None:
    """Ratios must be non-negative, cover train/val/test and sum to 1."""
    if set(ratios) != set(SPLITS):
        raise PipelineError(f"splits: ratios must be exactly {', '.join(SPLITS)} (got {sorted(ratios)})")
    if any(r < 0 for r in ratios.values()) or abs(sum(ratios.values()) - 1) > 1e-6:
        raise PipelineError(f"splits.train/val/test must be >= 0 and sum to 1 (got {ratios})")


def subject_splits(cases: pd.DataFrame, ratios: dict, seed: int, max_cases: dict | None = None) -> dict:
    """{split: sorted caseids} from rows with caseid, subjectid, has_hypotension.

    Subjects are shuffled with `seed` inside each stratum (any case with hypotension or not) and
    dealt out by ratio. `max_cases` optionally caps the train and val case counts (fasttrack),
    dropping whole subjects from the end of the shuffled order. Test is never capped, and its cases
    do not depend on the caps, so variants with and without fasttrack score the same test split.
    """
    check_ratios(ratios)
    if "test" in (max_cases or {}):
        raise PipelineError("splits.fasttrack_max_cases: test cannot be capped (variants must compare on the "
                            "same test split); cap train and val only")
    subjects = cases.groupby("subjectid")["has_hypotension"].any()
    rng = np.random.default_rng(seed)
    assigned = {s: [] for s in SPLITS}
    for stratum in (True, False):
        ids = np.sort(subjects[subjects == stratum].index.to_numpy())
        ids = ids[rng.permutation(len(ids))]
        n_train = int(round(ratios["train"] * len(ids)))
        n_val = int(round(ratios["val"] * len(ids)))
        assigned["train"] += list(ids[:n_train])
        assigned["val"] += list(ids[n_train:n_train + n_val])
        assigned["test"] += list(ids[n_train + n_val:])

    case_lists = {}
    for split, subject_ids in assigned.items():
        order = rng.permutation(len(subject_ids))  # interleave strata before any cap
        chosen = []
        for subject in np.asarray(subject_ids, dtype=np.int64)[order]:
            subject_cases = cases.loc[cases["subjectid"] == subject, "caseid"].tolist()
            cap = (max_cases or {}).get(split)
            if cap is not None and len(chosen) + len(subject_cases) > cap:
                continue
            chosen += subject_cases
        case_lists[split] = sorted(int(c) for c in chosen)
    assert_subject_disjoint(cases, case_lists)
    return case_lists


def assert_subject_disjoint(cases: pd.DataFrame, case_lists: dict) -> None:
    """Raise if any subject has cases in two splits."""
    subject_of = dict(zip(cases["caseid"], cases["subjectid"]))
    seen = {}
    for split, caseids in case_lists.items():
        for caseid in caseids:
            other = seen.setdefault(subject_of[caseid], split)
            if other != split:
                raise PipelineError(f"subject {subject_of[caseid]} is in both {other} and {split}")


def split_cases(cases: pd.DataFrame, cfg: Splits) -> tuple:
    """({split: caseids}, per-split summary) of the usable cases, as the splits section says."""
    case_lists = subject_splits(cases, cfg.ratios, cfg.seed, cfg.max_cases)
    for name, caseids in case_lists.items():
        if not caseids and cfg.ratios[name] > 0:
            raise PipelineError(f"split {name} is empty: {len(cases)} usable cases are too few for ratio "
                                f"{cfg.ratios[name]}")
    summary = {}
    for name, caseids in case_lists.items():
        rows = cases[cases["caseid"].isin(caseids)]
        summary[name] = {"cases": len(rows), "subjects": int(rows["subjectid"].nunique()),
                         "cases_with_hypotension": int(rows["has_hypotension"].sum())}
    return case_lists, summary


def fold_of_each_window(y, subjects, n_folds: int, seed: int) -> np.ndarray:
    """Cross-validation fold per window (StratifiedGroupKFold, stratified by `y`): all windows of
    a subject share one fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    if len(np.unique(subjects)) < n_folds:
        raise PipelineError(f"params.yaml: cv.n_folds={n_folds} but train+val has only "
                            f"{len(np.unique(subjects))} subjects")
    folds = np.empty(len(y), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(y)), y, subjects)):
        folds[held_out] = k
    return folds
