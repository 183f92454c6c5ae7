"""The simulated second hospital (external.demo): its shift from the training demo, and the training
demo's recordings left unchanged by the code the two share."""
import gzip
import hashlib
from dataclasses import replace

import pandas as pd
import pytest
import vitaldb

from lib.core.errors import PipelineError
from lib.core.params import Demo, ExternalDemo, read_params
from lib.data import demo
from lib.data.cohort import generate_demo, generate_second_hospital
from lib.data.vital_io import read_recording
from tests.conftest import ROOT

SMALL = replace(ExternalDemo(), n_cases=4, min_minutes=2, max_minutes=3)


def tracks_of(path) -> dict:
    """{track name: (srate, vitaldb type)} of a .vital file (type 1 wave, 2 numeric)."""
    return {name: (trk.srate, trk.type) for name, trk in vitaldb.VitalFile(str(path)).trks.items()}


@pytest.fixture(scope="module")
def second_hospital(clinical, tmp_path_factory):
    out = tmp_path_factory.mktemp("second_hospital")
    rows, _ = generate_second_hospital(out, clinical, SMALL, exclude_subjects=[], workers=1)
    return out, rows


def test_files_are_philips_500hz_waves_without_numerics(second_hospital):
    out, rows = second_hospital
    aliases = read_params(ROOT / "params.yaml")["data"]["tracks"]   # the pipeline's default aliases read them
    for caseid in rows["caseid"]:
        path = out / f"{caseid}.vital"
        assert tracks_of(path) == {name: (SMALL.srate, 1) for name in demo.PHILIPS_TRACKS.values()}
        waves, numerics = read_recording(path, aliases)
        assert {srate for _, srate in waves.values()} == {500.0}
        assert all(value is None for value in numerics.values())


def test_patients_are_older_and_sicker_one_case_each(second_hospital, clinical):
    _, rows = second_hospital
    assert (pd.to_numeric(rows["age"]) >= SMALL.min_age).all() and (pd.to_numeric(rows["asa"]) >= SMALL.min_asa).all()
    assert rows["subjectid"].is_unique
    assert list(rows.columns) == list(clinical.columns)   # generate_demo's format
    assert (rows["caseend"] >= SMALL.min_minutes * 60).all() and (rows["caseend"] <= SMALL.max_minutes * 60).all()


def test_excluded_subjects_are_never_drawn(second_hospital, clinical, tmp_path):
    _, rows = second_hospital
    excluded = set(rows["subjectid"])   # the subjects drawn without exclusion
    again, _ = generate_second_hospital(tmp_path, clinical, SMALL, excluded, workers=1)
    assert len(again) == SMALL.n_cases and not excluded & set(again["subjectid"])


def test_same_seed_gives_byte_identical_files(second_hospital, clinical, tmp_path):
    out, rows = second_hospital
    generate_second_hospital(tmp_path, clinical, SMALL, exclude_subjects=[], workers=2)   # other worker count
    for caseid in rows["caseid"]:
        assert (tmp_path / f"{caseid}.vital").read_bytes() == (out / f"{caseid}.vital").read_bytes()


def test_too_few_eligible_subjects_is_one_line(clinical, tmp_path):
    with pytest.raises(PipelineError, match=r"external\.demo\.n_cases=4: only 0 subjects .*min_age=200"):
        generate_second_hospital(tmp_path, clinical, replace(SMALL, min_age=200), [], workers=1)


# generate_demo's recordings (gzip content, independent of the zlib build) before the second hospital shared
# its code; they must not change (the training demo's files and DVC hashes). If the simulator changes on
# purpose, update the pins.
DEMO_PIN = replace(Demo(), n_cases=4, n_multi_case_subjects=1, min_minutes=3, max_minutes=5, seed=11)
DEMO_PIN_SHA256 = {814: "488f402ec30b3f0e7755857ae20f2b5f9420e8405e89276ce0b59797c8b1934e",
                   3331: "38ca31d4d8016846e7878f7f8832e8a3e28903dc6e8d509b4b690313f37b641e",
                   4913: "a20f5d67913beba30d4b6ae4d31a10e9f34a0b99a5bea64e36ad8c6d86fca90b",
                   5099: "e339c68abe1c1e75e642536dc5058b18145ba50c35d387233ea437bf9184e024"}


def test_generate_demo_output_is_unchanged(clinical, tmp_path):
    rows, _ = generate_demo(tmp_path, clinical, DEMO_PIN, workers=1)
    assert rows["caseid"].tolist() == sorted(DEMO_PIN_SHA256)
    for caseid, expected in DEMO_PIN_SHA256.items():
        path = tmp_path / f"{caseid}.vital"
        assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == expected, caseid
        assert tracks_of(path) == {demo.ABP: (100.0, 1), demo.PPG: (100.0, 1), demo.ECG: (100.0, 1),
                                   demo.MAP_NUMERIC: (0.0, 2), demo.HR_NUMERIC: (0.0, 2)}
