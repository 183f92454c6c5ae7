"""Real VitalDB source: offline case selection on the real case table; download cache on local files."""
import json

import numpy as np
import pytest

from lib.core.errors import PipelineError
from lib.data import splits, vital_io, vitaldb_source
from lib.data.vitaldb_source import Criteria, VitalDBCache

ALIASES = {"abp": ["SNUADC/ART"], "ppg": ["SNUADC/PLETH"]}


def test_adult_general_anaesthesia_cases_with_a_radial_line(clinical):
    rows, excluded = vitaldb_source.select_cases(clinical, Criteria())
    assert len(clinical) == 6388
    # VitalDB: 6,331 adults; 6,043 general anaesthesia; aline1 "Right/Left radial" on 3,357 cases.
    assert len(rows) == 3313 and rows["subjectid"].nunique() == 3211
    assert excluded == {"age": 57, "anaesthesia": 342, "arterial_line": 2676, "case_length": 0}
    assert (rows["age"] >= 18).all() and (rows["ane_type"] == "General").all()
    assert rows["aline1"].str.contains("radial", case=False).all()
    any_line, _ = vitaldb_source.select_cases(clinical, Criteria(aline_sites=()))
    assert len(any_line) == 3411   # radial, dorsalis pedis, femoral, other sites
    long_cases, excluded = vitaldb_source.select_cases(clinical, Criteria(min_case_minutes=240))
    assert excluded["case_length"] > 0 and len(long_cases) == 3313 - excluded["case_length"]


def test_sampling_takes_whole_subjects_and_is_deterministic(clinical):
    rows, _ = vitaldb_source.select_cases(clinical, Criteria())
    sample = vitaldb_source.sample_subjects(rows, 300, seed=3)
    assert len(sample) <= 300 and len(sample) > 290
    for subject in sample["subjectid"].unique():   # every eligible case of a drawn subject is in
        assert set(rows.loc[rows["subjectid"] == subject, "caseid"]) <= set(sample["caseid"])
    assert sample.equals(vitaldb_source.sample_subjects(rows, 300, seed=3))
    assert not sample.equals(vitaldb_source.sample_subjects(rows, 300, seed=4))
    assert len(vitaldb_source.sample_subjects(rows, 0, seed=3)) == len(rows)


def test_subjects_with_several_cases_stay_in_one_split(clinical):
    rows, _ = vitaldb_source.select_cases(clinical, Criteria())
    multi = rows["subjectid"].value_counts()
    assert (multi > 1).sum() == 81   # subjects with 2+ eligible cases
    cases = rows[["caseid", "subjectid"]].assign(has_hypotension=rows["caseid"] % 3 == 0)
    case_lists = splits.subject_splits(cases, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    split_of = {c: s for s, ids in case_lists.items() for c in ids}
    for subject in multi[multi > 1].index:
        assert len({split_of[c] for c in rows.loc[rows["subjectid"] == subject, "caseid"]}) == 1


@pytest.fixture
def server(tmp_path):
    """A stand-in for api.vitaldb.net: `vitaldb.VitalFile` over local files, with a call log."""
    root = tmp_path / "server"
    root.mkdir()
    t = np.arange(6000) / 100
    for caseid, names in [(1, ["SNUADC/ART", "SNUADC/PLETH"]), (2, ["SNUADC/ART", "SNUADC/PLETH"]),
                          (3, ["SNUADC/ART"])]:
        vital_io.write_vital(root / f"{caseid}.vital", {n: np.sin(t + i) for i, n in enumerate(names)},
                             100.0, 4102444800.0, {})
    calls, failures = [], {}

    def loader(caseid, track_names):
        calls.append(caseid)
        if failures.get(caseid, 0) > 0:
            failures[caseid] -= 1
            raise ConnectionError("connection reset by peer")
        return vital_io.vitaldb.VitalFile(str(root / f"{caseid}.vital"), track_names)

    return loader, calls, failures


def cache_for(tmp_path, loader, **kw):
    return VitalDBCache(tmp_path / "cache", ALIASES, loader=loader, sleep=lambda s: None, **kw)


def test_download_caches_and_skips_cases_without_the_tracks(tmp_path, server):
    loader, calls, _ = server
    files, skipped = cache_for(tmp_path, loader).fetch([1, 2, 3])
    assert sorted(files) == [1, 2] and list(skipped) == [3]
    assert skipped[3][0] == "missing_track" and "required ppg track is missing" in skipped[3][1]
    assert not (tmp_path / "cache" / "3.vital").exists()
    np.testing.assert_allclose(vital_io.read_channels(files[1], ALIASES)["abp"][0], np.sin(np.arange(6000) / 100),
                               atol=1e-6)
    calls.clear()
    files_again, skipped_again = cache_for(tmp_path, loader).fetch([1, 2, 3])
    assert calls == [] and files_again == files and skipped_again == skipped   # offline from the cache


def test_download_retries_with_backoff_then_succeeds(tmp_path, server):
    loader, calls, failures = server
    failures[1] = 2
    waits = []
    cache = VitalDBCache(tmp_path / "cache", ALIASES, loader=loader, retries=3, backoff_s=2, sleep=waits.append)
    files, _ = cache.fetch([1])
    assert calls == [1, 1, 1] and waits == [2, 4] and 1 in files


def test_offline_is_one_line_and_the_next_run_resumes(tmp_path, server):
    loader, calls, failures = server
    failures[2] = 99    # the network goes down after case 1
    with pytest.raises(PipelineError) as err:
        cache_for(tmp_path, loader, retries=2).fetch([1, 2])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("case 2: cannot download from api.vitaldb.net after 3 tries (ConnectionError")
    assert "1 cases are cached" in message and "rerun to resume" in message
    assert json.loads((tmp_path / "cache" / "progress.json").read_text())["1"]["status"] == "ok"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["1.vital", "progress.json"]  # no half file
    failures.clear()
    calls.clear()
    files, _ = cache_for(tmp_path, loader).fetch([1, 2])
    assert calls == [2] and sorted(files) == [1, 2]    # case 1 came from the cache


def test_a_damaged_cached_file_is_downloaded_again(tmp_path, server):
    loader, calls, _ = server
    files, _ = cache_for(tmp_path, loader).fetch([1])
    files[1].write_bytes(files[1].read_bytes()[:100])    # truncated, e.g. by a disk problem
    calls.clear()
    files, _ = cache_for(tmp_path, loader).fetch([1])
    assert calls == [1] and vital_io.read_channels(files[1], ALIASES)
