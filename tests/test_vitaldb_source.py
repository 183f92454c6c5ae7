"""Real VitalDB source: offline case selection on the real case table; download cache on local files."""
import itertools
import json
import re
import shutil
import time

import numpy as np
import pytest

from lib.core.errors import PipelineError
from lib.core.params import Data, read_params
from lib.data import splits, vital_io, vitaldb_source
from lib.data.vitaldb_source import Select, VitalDBCache

ALIASES = {"abp": ["SNUADC/ART"], "ppg": ["SNUADC/PLETH"]}


def test_adult_general_anaesthesia_cases_with_a_radial_line(clinical):
    rows, excluded = vitaldb_source.select_cases(clinical, Select())
    assert len(clinical) == 6388
    # VitalDB: 6,331 adults; 6,043 general anaesthesia; aline1 "Right/Left radial" on 3,357 cases.
    assert len(rows) == 3313 and rows["subjectid"].nunique() == 3211
    assert excluded == {"age": 57, "anaesthesia": 342, "arterial_line": 2676, "case_length": 0}
    assert (rows["age"] >= 18).all() and (rows["ane_type"] == "General").all()
    assert rows["aline1"].str.contains("radial", case=False).all()
    any_line, _ = vitaldb_source.select_cases(clinical, Select(aline_sites=()))
    assert len(any_line) == 3411   # radial, dorsalis pedis, femoral, other sites
    long_cases, excluded = vitaldb_source.select_cases(clinical, Select(min_case_minutes=240))
    assert excluded["case_length"] > 0 and len(long_cases) == 3313 - excluded["case_length"]


def test_sampling_takes_whole_subjects_and_is_deterministic(clinical):
    rows, _ = vitaldb_source.select_cases(clinical, Select())
    sample = vitaldb_source.sample_subjects(rows, 300, seed=3)
    assert len(sample) <= 300 and len(sample) > 290
    for subject in sample["subjectid"].unique():   # every eligible case of a drawn subject is in
        assert set(rows.loc[rows["subjectid"] == subject, "caseid"]) <= set(sample["caseid"])
    assert sample.equals(vitaldb_source.sample_subjects(rows, 300, seed=3))
    assert not sample.equals(vitaldb_source.sample_subjects(rows, 300, seed=4))
    assert len(vitaldb_source.sample_subjects(rows, 0, seed=3)) == len(rows)


def test_subjects_with_several_cases_stay_in_one_split(clinical):
    rows, _ = vitaldb_source.select_cases(clinical, Select())
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
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["1.vital", "progress.json",   # no half file
                                                                      "timings.json"]
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


# --- parallel downloads (data.download.workers) ---

CASES = list(range(1, 9))
NO_PPG = (2, 7)    # the server has these without a PPG track: counted skips


@pytest.fixture
def many(tmp_path):
    """A stand-in server of 8 cases; `make(delay, crash_at)` gives a loader that sleeps `delay(caseid)`
    seconds, raises KeyboardInterrupt on its `crash_at`-th call (a kill) and logs completions."""
    root = tmp_path / "server8"
    root.mkdir()
    t = np.arange(6000) / 100
    for caseid in CASES:
        names = ["SNUADC/ART"] if caseid in NO_PPG else ["SNUADC/ART", "SNUADC/PLETH"]
        vital_io.write_vital(root / f"{caseid}.vital", {n: np.sin(t * caseid + i) for i, n in enumerate(names)},
                             100.0, 4102444800.0, {})

    def make(delay=lambda caseid: 0.0, crash_at=0, failures=None):
        calls, done, counter = [], [], itertools.count(1)

        def loader(caseid, track_names):
            calls.append(caseid)
            if next(counter) == crash_at:
                raise KeyboardInterrupt
            time.sleep(delay(caseid))
            if failures and caseid in failures:
                raise ConnectionError("connection reset by peer")
            vf = vital_io.vitaldb.VitalFile(str(root / f"{caseid}.vital"), track_names)
            done.append(caseid)
            return vf
        return loader, calls, done
    return make


def cache_files(cache_dir) -> dict:
    """{name: bytes} of what the cache holds except the timings (which are measurements)."""
    return {p.name: p.read_bytes() for p in sorted(cache_dir.iterdir()) if p.name != "timings.json"}


def test_any_number_of_workers_gives_the_same_cache_and_results(tmp_path, many, capsys):
    results = {}
    for workers in (1, 4):
        # later cases are quicker, so with 4 workers they finish before earlier ones
        loader, _, done = many(delay=lambda caseid: 0.01 * (9 - caseid))
        files, skipped = VitalDBCache(tmp_path / "cache", ALIASES, loader=loader, workers=workers).fetch(CASES)
        results[workers] = (files, list(skipped.items()), cache_files(tmp_path / "cache"), done)
        (tmp_path / "cache").rename(tmp_path / f"w{workers}")   # skip messages name the cache's path
    (files1, skipped1, cache1, done1), (files4, skipped4, cache4, done4) = results[1], results[4]
    assert done1 == sorted(done1) and done4 != sorted(done4)    # the completion order really differed
    assert list(files4.items()) == list(files1.items()) and sorted(files1) == [1, 3, 4, 5, 6, 8]
    assert skipped4 == skipped1 and [c for c, _ in skipped1] == list(NO_PPG)   # skip lines in case order
    assert list(cache4) == list(cache1) == ["1.vital", "3.vital", "4.vital", "5.vital", "6.vital", "8.vital",
                                            "progress.json"]
    for name in cache1:     # byte-identical: no write time or temporary's name in the gzip header
        assert cache4[name] == cache1[name], name
    timings = json.loads((tmp_path / "w4" / "timings.json").read_text())
    assert sorted(map(int, timings)) == CASES and timings["1"]["bytes"] == len(cache4["1.vital"]) > 0
    assert timings["2"]["bytes"] == 0 and all(t["seconds"] >= 0.01 for t in timings.values())
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("download:")]
    assert len(lines) == 2 and all(line.startswith("download: 6 cases fetched, 0 cached, 2 skipped in ")
                                   for line in lines)
    medians = [float(re.search(r"median ([0-9.]+) s/case", line).group(1)) for line in lines]
    assert all(0.04 <= m < 0.5 for m in medians) and "workers=4" in lines[1]   # the delays' median: 0.045 s
    VitalDBCache(tmp_path / "w4", ALIASES, loader=None, workers=4).fetch(CASES)   # offline now
    assert capsys.readouterr().err.splitlines()[-1].startswith("download: 0 cases fetched, 6 cached, 2 skipped")


@pytest.mark.parametrize("workers", [1, 4])
def test_a_killed_parallel_run_resumes_with_only_the_missing_cases(tmp_path, many, workers):
    loader, _, _ = many(delay=lambda caseid: 0.02, crash_at=4)   # killed during the 4th case
    with pytest.raises(KeyboardInterrupt):
        VitalDBCache(tmp_path / "cache", ALIASES, loader=loader, workers=workers).fetch(CASES)
    progress = json.loads((tmp_path / "cache" / "progress.json").read_text())
    logged = sorted(int(c) for c in progress)
    assert 3 <= len(logged) < len(CASES)    # the cases finished before (and beside) the kill are logged
    if workers == 1:
        assert logged == [1, 2, 3]
    assert not list((tmp_path / "cache").glob(".*"))    # no half-written file or staging folder
    loader, calls, _ = many()
    files, skipped = VitalDBCache(tmp_path / "cache", ALIASES, loader=loader, workers=workers).fetch(CASES)
    assert sorted(calls) == sorted(set(CASES) - set(logged))    # only the missing cases are downloaded
    assert sorted(files) == [1, 3, 4, 5, 6, 8] and list(skipped) == list(NO_PPG)
    resumed = cache_files(tmp_path / "cache")
    shutil.rmtree(tmp_path / "cache")
    clean, _, _ = many()
    VitalDBCache(tmp_path / "cache", ALIASES, loader=clean, workers=1).fetch(CASES)   # one uninterrupted run
    assert resumed == cache_files(tmp_path / "cache")


def test_a_case_that_cannot_be_fetched_stops_the_parallel_run_with_one_line(tmp_path, many):
    # cases 2 and 4 fail at once, the others take 0.1 s: nothing beyond the first 4 is started
    loader, calls, _ = many(delay=lambda caseid: 0.0 if caseid in (2, 4) else 0.1, failures={2, 4})
    with pytest.raises(PipelineError) as err:
        cache_for(tmp_path, loader, retries=1, workers=4).fetch(CASES)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("case 2: cannot download from api.vitaldb.net after 2 tries (ConnectionError")
    assert "2 cases are cached" in message and "rerun to resume" in message
    assert set(calls) == {1, 2, 3, 4}    # the pending cases were never started
    progress = json.loads((tmp_path / "cache" / "progress.json").read_text())
    assert sorted(progress) == ["1", "3"]    # the cases in flight finished and are logged


def test_parallel_downloads_overlap(tmp_path, many):
    loader, calls, _ = many(delay=lambda caseid: 0.2)
    start = time.perf_counter()
    files, _ = VitalDBCache(tmp_path / "cache", ALIASES, loader=loader, workers=4).fetch(CASES + [1, 3])
    elapsed = time.perf_counter() - start
    assert sorted(calls) == CASES and len(files) == 6    # a repeated case is fetched once
    assert elapsed < 1.2, f"8 cases x 0.2 s on 4 workers took {elapsed:.2f} s"


def test_download_workers_is_validated_with_one_line():
    params = read_params()
    assert Data.from_params(params).download.workers == params["data"]["download"]["workers"] >= 1
    for bad in (0, 1.5, "4"):
        params["data"]["download"]["workers"] = bad
        with pytest.raises(PipelineError, match=r"^params.yaml: data.download.workers") as err:
            Data.from_params(params)
        assert "\n" not in str(err.value)
    del params["data"]["download"]["workers"]
    with pytest.raises(PipelineError, match="data.download.workers is missing"):
        Data.from_params(params)
