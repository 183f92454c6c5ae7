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
    params = tiny_params()
    params["data"].update(source="local", clinical_csv=str(work / "cases.csv"), vital_dir=str(recordings))
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
