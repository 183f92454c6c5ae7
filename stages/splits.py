"""Stage splits: subject-level train/val/test split of the usable cases.

usage: python stages/splits.py <cases_csv> <splits_json> <metrics_json>
"""
import sys
from pathlib import Path

import pandas as pd

from lib.core import config as params
from lib.data import splits
from lib.core.atomic import write_json
from lib.core.errors import PipelineError, run_stage

KEYS = ["train", "val", "test", "seed", "fasttrack", "fasttrack_max_cases"]


def main(argv):
    cases_csv, splits_path, metrics_path = argv
    p = params.load("splits")["splits"]
    params.require(p, "splits", KEYS)
    cases = pd.read_csv(cases_csv, keep_default_na=False)
    cases = cases[cases["skip_reason"] == ""]
    ratios = {s: float(p[s]) for s in splits.SPLITS}
    caps = p["fasttrack_max_cases"] if p["fasttrack"] else None
    case_lists = splits.subject_splits(cases, ratios, int(p["seed"]), caps)
    for name, caseids in case_lists.items():
        if not caseids and ratios[name] > 0:
            raise PipelineError(f"split {name} is empty: {len(cases)} usable cases are too few for ratio {ratios[name]}")
    write_json(splits_path, case_lists)
    summary = {}
    for name, caseids in case_lists.items():
        rows = cases[cases["caseid"].isin(caseids)]
        summary[name] = {"cases": len(rows), "subjects": int(rows["subjectid"].nunique()),
                         "cases_with_hypotension": int(rows["has_hypotension"].sum())}
    write_json(metrics_path, summary)


if __name__ == "__main__":
    run_stage(main)
