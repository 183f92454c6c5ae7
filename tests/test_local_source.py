"""Your own recordings (data.source=local) with the smallest clinical table, caseid and subjectid,
run through every stage of dvc.yaml to the report: nothing downstream needs VitalDB's columns."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import STAGES, run_stage, tiny_params

from lib.data import demo
from lib.data.vital_io import write_vital

N_CASES = 8
SUBJECTS = [1, 1, 2, 3, 4, 5, 6, 7]   # subject 1 has two cases
SRATE = 100


FOREIGN_SRATE, FOREIGN_CASES = 500, 6   # another hospital: 500-Hz Philips tracks, a two-column table


def foreign_cohort(directory, rng):
    """A foreign cohort for external validation: FOREIGN_CASES good recordings plus one truncated and one
    corrupt file, listed in a caseid,subjectid table."""
    directory.mkdir()
    caseids = [9001 + i for i in range(FOREIGN_CASES + 2)]
    for caseid in caseids[:FOREIGN_CASES]:
        case = demo.simulate_case(13 * 60, FOREIGN_SRATE, True, rng)
        write_vital(directory / f"{caseid}.vital", {demo.PHILIPS_TRACKS[k]: v for k, v in case.signals.items()},
                    FOREIGN_SRATE, 1.7e9 + caseid * 86400.0, demo.PHILIPS_UNITS)
    good = (directory / f"{caseids[0]}.vital").read_bytes()
    (directory / f"{caseids[-2]}.vital").write_bytes(good[: len(good) // 3])     # truncated
    (directory / f"{caseids[-1]}.vital").write_bytes(b"\x00corrupt" * 4096)      # not a vital file
    pd.DataFrame({"caseid": caseids, "subjectid": [70 + i for i in range(len(caseids))]}).to_csv(
        directory / "cases.csv", index=False)
    return directory


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("local")
    recordings = work / "recordings"
    recordings.mkdir()
    rng = np.random.default_rng(11)
    caseids = [101 + i for i in range(N_CASES)]
    for caseid in caseids:   # every case has an episode, so every split holds both classes
        case = demo.simulate_case(13 * 60, SRATE, True, rng)
        write_vital(recordings / f"{caseid}.vital", case.signals, SRATE, 1.6e9 + caseid * 86400.0, demo.UNITS)
    pd.DataFrame({"caseid": caseids, "subjectid": SUBJECTS}).to_csv(work / "cases.csv", index=False)
    foreign = foreign_cohort(work / "foreign", rng)
    params = tiny_params()
    params["data"].update(source="local", clinical_csv=str(work / "cases.csv"), vital_dir=str(recordings))
    params["external"].update(source="local", clinical_csv=str(foreign / "cases.csv"), vital_dir=str(foreign))
    params["evaluate"].update(min_subjects=3, min_positive_subjects=1)
    params["train"].update(epochs=2)
    params["baselines"].update(cnn_epochs=1)
    params["evaluate"].update(bootstrap=100)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    for name in STAGES:
        result = run_stage(name, work)
        assert result.returncode == 0, f"{name} failed:\n{result.stderr[-3000:]}"
    return work


def test_a_two_column_clinical_table_runs_to_the_report(local_run):
    clinical = pd.read_csv(local_run / "data/cohort/clinical.csv")
    assert {"age", "sex", "asa"} <= set(clinical.columns) and clinical["age"].isna().all()
    head = json.loads((local_run / "metrics/evaluate/metrics.json").read_text())
    assert head["test"]["windows"] > 0 and head["test"]["positives"] > 0
    details = json.loads((local_run / "metrics/evaluate/details.json").read_text())
    assert set(details["subgroups"]) == {"sex=unknown", "age=unknown", "asa=unknown"}
    report = (local_run / "metrics/report.md").read_text()
    assert "Source: `local`" in report and "Simulated data" not in report
    assert "unknown (unknown) | unknown | unknown |" in report


def test_a_foreign_cohort_is_validated_with_its_bad_files_counted(local_run):
    """external.source=local: a two-column table, 500-Hz Philips recordings, one truncated and one corrupt file:
    the two are counted skips, the others are scored by the frozen model and every baseline."""
    cohort = json.loads((local_run / "metrics/external_cohort.json").read_text())
    assert cohort["cases"] == FOREIGN_CASES and sum(cohort["skipped"].values()) == 2
    head = json.loads((local_run / "metrics/external/metrics.json").read_text())
    internal = json.loads((local_run / "metrics/evaluate/metrics.json").read_text())
    assert set(head) == set(internal) and {k: set(v) for k, v in head.items()} == {k: set(v) for k, v in
                                                                                   internal.items()}
    details = json.loads((local_run / "metrics/external/details.json").read_text())
    for name, stats in details["window"].items():
        if not name.startswith("gain_over_"):
            assert stats["auroc_ci_low"] <= stats["auroc"] <= stats["auroc_ci_high"], name
    assert details["cohort"]["external"]["subjects"] == FOREIGN_CASES
    report = (local_run / "metrics/external/report.md").read_text()
    assert "side by side" in report and "internal test" in report and "MOVER" in report
