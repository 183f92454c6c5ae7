"""Stage splits: subject-level train/val/test split of the usable cases.

usage: python stages/splits.py <cases_csv> <splits_json> <metrics_json>
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
import pandas as pd

from lib.core.atomic import write_json
from lib.core.errors import run_stage
from lib.core.params import Splits, read_params
from lib.data import splits


def config(params) -> Splits:
    return Splits.from_params(params)


def main(argv):
    cases_csv, splits_path, metrics_path = argv
    cfg = config(read_params())
    cases = pd.read_csv(cases_csv, keep_default_na=False)
    case_lists, summary = splits.split_cases(cases[cases["skip_reason"] == ""], cfg)
    write_json(splits_path, case_lists)
    write_json(metrics_path, summary)


if __name__ == "__main__":
    run_stage(main)
