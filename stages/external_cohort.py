"""Stage external_cohort: the second cohort the frozen model is validated on (params `external`).

Its keys are data's: a simulated second hospital (`external.source: demo`, `external.demo`), your own
recordings (`local`) or a VitalDB draw (`vitaldb`). Drawn from VitalDB's case table (demo, vitaldb), it
never includes a subject of the training cohort (`<training_clinical_csv>`); they are counted. With
`external.source: none` the stage only records that external validation is off.

usage: python stages/external_cohort.py <training_clinical_csv> <out_dir> <metrics_json>
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
import sys
from pathlib import Path

import pandas as pd

from lib.core.atomic import atomic_dir, write_json
from lib.core.errors import run_stage
from lib.core.params import External, read_params
from lib.data import cohort

MANIFEST_COLUMNS = ["caseid", "subjectid", "path", "duration_s", "has_hypotension", "skip_reason"]


COHORT_KEYS = ("source", "clinical_csv", "vital_dir", "cache_dir", "max_cases", "select", "download", "tracks",
               "workers", "demo")   # not recalibrate_fraction: changing it must not redraw the cohort


def config(params) -> External:
    return External(**dict(zip(COHORT_KEYS, External.pick(params, *COHORT_KEYS), strict=True)))


def training_subjects(cfg: External, training_clinical_csv) -> set:
    """The training cohort's subjects an external draw must leave out: only when both cohorts come from
    VitalDB's case table (subject ids of your own recordings are another hospital's numbering)."""
    if cfg.source == "local":
        return set()
    table = pd.read_csv(training_clinical_csv, usecols=["subjectid", "source"])
    if (table["source"] == "local").all():
        return set()
    return set(table["subjectid"].astype(int))


def main(argv):
    training_clinical_csv, out_dir, metrics_path = argv[0], Path(argv[1]), argv[2]
    cfg = config(read_params())
    with atomic_dir(out_dir) as tmp:
        if cfg.source == "none":
            pd.DataFrame(columns=MANIFEST_COLUMNS).to_csv(tmp / "cases.csv", index=False)
            pd.DataFrame(columns=["caseid", "subjectid"]).to_csv(tmp / "clinical.csv", index=False)
            write_json(metrics_path, {"source": "none"})
            return
        exclude = training_subjects(cfg, training_clinical_csv)
        manifest, clinical, download_skips, selection = cohort.materialise(tmp, out_dir, cfg.as_data(), cfg.demo,
                                                                           exclude, section="external")
        for caseid, (_, message) in download_skips.items():
            print(f"skip external case {caseid}: {message}", file=sys.stderr)
        for row in manifest[manifest["skip_reason"] != ""].itertuples():
            print(f"skip external case {row.caseid}: {row.skip_message}", file=sys.stderr)
        manifest.drop(columns="skip_message").to_csv(tmp / "cases.csv", index=False)
        clinical.to_csv(tmp / "clinical.csv", index=False)
    summary = cohort.summary(manifest, download_skips, cfg.source, selection)
    summary["training_subjects_left_out"] = len(exclude)
    write_json(metrics_path, summary)


if __name__ == "__main__":
    run_stage(main)
