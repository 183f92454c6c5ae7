"""The bad-input catalogue: what real recordings, params and machines do to the pipeline.

Every item gets one clear line naming the file/case/parameter and the problem, and either a
counted skip (the run goes on; the stage's metrics count the reason) or exit code 2 with no
output left behind. Never a traceback as the only message.

| # | bad input                                   | where      | outcome                          |
|---|---------------------------------------------|------------|----------------------------------|
| 1 | corrupt .vital                              | cohort     | skip `unreadable`                |
| 2 | truncated .vital                            | cohort     | skip `unreadable`                |
| 3 | missing required track                      | cohort     | skip `missing_track`             |
| 4 | all-NaN track                               | windows    | skip `all_nan`                   |
| 5 | flatline for the whole recording            | windows    | skip `flatline`                  |
| 6 | pinned / clipped ABP                        | windows    | windows rejected `abp_pinned` / `abp_clipped` |
| 7 | zero or wrong (numeric-rate) sample rate    | cohort     | skip `bad_srate`                 |
| 8 | case shorter than one window + horizon      | windows    | skip `too_short`                 |
| 9 | empty split after filtering                 | windows    | exit 2                           |
| 10| single-class train split                    | train      | exit 2                           |
| 11| invalid params: unknown key, ratio sum != 1, horizon <= 0, window > context | any | exit 2  |
| 12| missing or corrupt TTM weights              | embed/train| exit 2                           |
| 13| unwritable output directory, disk full      | any        | exit 2, nothing written          |
| 14| clinical table missing a column             | cohort     | exit 2                           |
| 15| every window rejected (e.g. line pinned all case) | windows | skip `no_usable_windows`     |
"""
import json
import resource
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import vitaldb
import yaml
from conftest import ROOT, WEIGHTS
from test_windowing import TRACKS, synthetic_signals, write_case

from lib.core.errors import PipelineError
from lib.data.vital_io import write_vital
from lib.model import ttm

GOOD = {1: "train", 2: "val", 3: "test"}


def params_file(work, **sections):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(params))


def stage(name, work, *args, preexec_fn=None):
    """Run stages/<name>.py in `work` (its params.yaml) and return the finished process."""
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *map(str, args)], cwd=work,
                          capture_output=True, text=True, preexec_fn=preexec_fn)


def one_line_error(result, starts_with):
    """Exit 2, and the last stderr line is the error, said once; no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {starts_with}"), last
    return last


def skip_line(result, caseid):
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"skip case {caseid}: ")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def write_with_abp(path, abp=None, srate=100.0, drop=(), minutes=16):
    signals = synthetic_signals(minutes=minutes)
    if abp is not None:
        signals[TRACKS["abp"]] = abp(signals[TRACKS["abp"]])
    for name in drop:
        signals.pop(TRACKS[name])
    write_vital(path, signals, srate, 1_600_000_000.0, {})


def pinned_and_clipped(abp):
    abp = abp.copy()
    abp[300 * 100:360 * 100] = 300.0                            # line flush: pinned near 300 mmHg
    abp[420 * 100:480 * 100] = np.minimum(abp[420 * 100:480 * 100], 90.0)    # transducer saturates at 90
    return abp


@pytest.fixture(scope="module")
def local_cohort(tmp_path_factory):
    """A local-source directory of good and broken recordings, through the cohort and windows stages."""
    work = tmp_path_factory.mktemp("bad_input")
    rec = work / "recordings"
    rec.mkdir()
    for caseid in GOOD:
        write_case(rec / f"{caseid}.vital", minutes=16, seed=caseid)
    (rec / "11.vital").write_bytes(np.random.default_rng(0).bytes(5000))              # 1 corrupt
    good = (rec / "1.vital").read_bytes()
    (rec / "12.vital").write_bytes(good[: len(good) // 3])                           # 2 truncated
    write_with_abp(rec / "13.vital", drop=("ecg",))                                   # 3 missing track
    write_with_abp(rec / "14.vital", abp=lambda a: np.full_like(a, np.nan))           # 4 all-NaN
    write_with_abp(rec / "15.vital", abp=lambda a: np.zeros_like(a))                  # 5 flatline
    write_with_abp(rec / "16.vital", abp=pinned_and_clipped)                          # 6 pinned/clipped
    write_with_abp(rec / "17.vital", srate=1.0, minutes=0.5)                          # 7 numeric-rate "wave"
    write_with_abp(rec / "18.vital")                                                  # 7 zero sample rate
    zero = vitaldb.VitalFile(str(rec / "18.vital"))
    zero.trks[TRACKS["abp"]].srate = 0
    zero.to_vital(str(rec / "18.vital"))
    write_with_abp(rec / "19.vital", minutes=3)                                       # 8 too short
    noise = np.random.default_rng(20)
    write_with_abp(rec / "20.vital", abp=lambda a: 300 + noise.normal(0, 1, len(a)))  # 15 pinned all case
    # Your own recordings need only caseid and subjectid in their table.
    pd.DataFrame({"caseid": range(1, 21), "subjectid": range(101, 121)}).to_csv(work / "table.csv", index=False)
    params_file(work, data={"source": "local", "vital_dir": str(rec), "clinical_csv": str(work / "table.csv")})
    cohort = stage("cohort", work, "cohort", "cohort.json")
    assert cohort.returncode == 0, cohort.stderr[-2000:]
    usable = pd.read_csv(work / "cohort" / "cases.csv", keep_default_na=False).query("skip_reason == ''")
    splits = {s: [int(c) for c in usable["caseid"] if GOOD.get(c, "train") == s] for s in ["train", "val", "test"]}
    (work / "splits.json").write_text(json.dumps(splits))
    windows = stage("windows", work, "cohort/cases.csv", "splits.json", "windows", "windows.json", "report")
    assert windows.returncode == 0, windows.stderr[-2000:]
    return work, cohort, windows


def cohort_skips(work):
    return json.loads((work / "cohort.json").read_text())["skipped"]


def windows_summary(work):
    return json.loads((work / "windows.json").read_text())["train"]


def test_01_corrupt_vital_is_a_counted_skip(local_cohort):
    work, cohort, _ = local_cohort
    assert "11.vital: truncated or corrupt vital file (BadGzipFile" in skip_line(cohort, 11)
    assert cohort_skips(work)["unreadable"] == 2    # with the truncated file


def test_02_truncated_vital_is_a_counted_skip(local_cohort):
    work, cohort, _ = local_cohort
    line = skip_line(cohort, 12)
    assert "12.vital: truncated or corrupt vital file (EOFError" in line


def test_03_missing_track_is_a_counted_skip(local_cohort):
    work, cohort, _ = local_cohort
    assert "13.vital: required ecg track is missing (looked for SNUADC/ECG_II" in skip_line(cohort, 13)
    assert cohort_skips(work)["missing_track"] == 1


@pytest.mark.parametrize("caseid, reason, message", [
    (14, "all_nan", "14.vital: the ABP track has no finite samples (all NaN)"),                        # 4
    (15, "flatline", "15.vital: the ABP track is a flat line at 0"),                                   # 5
    (19, "too_short", "19.vital: recording is 180 s, shorter than one window plus the 5-min horizon"),  # 8
    (20, "no_usable_windows", "20.vital: no usable window: all 234 rejected (abp_pinned 234)"),         # 15
], ids=["04_all_nan_track", "05_flatline", "08_shorter_than_window_and_horizon", "15_no_usable_window"])
def test_windows_stage_skips_and_counts_the_case(local_cohort, caseid, reason, message):
    work, _, windows = local_cohort
    assert message in skip_line(windows, caseid)
    assert windows_summary(work)["skipped_cases"][reason] == 1


def test_06_pinned_and_clipped_abp_windows_are_counted_rejections(local_cohort):
    work, _, windows = local_cohort
    rejected = windows_summary(work)["rejected"]
    # 60 s pinned and 60 s clipped: about 14 windows of 4.1 s each, minus the ringing margins
    assert rejected["abp_pinned"] >= 10 and rejected["abp_clipped"] >= 10
    report = pd.read_csv(work / "report" / "cases.csv")
    assert report.loc[report.caseid == 16, "usable_fraction"].item() < 0.9


def test_07_zero_or_numeric_sample_rate_is_a_counted_skip(local_cohort):
    work, cohort, _ = local_cohort
    assert "17.vital: track SNUADC/ART has sample rate 1.0 Hz" in skip_line(cohort, 17)
    assert "18.vital: track SNUADC/ART has sample rate 0.0 Hz" in skip_line(cohort, 18)
    assert cohort_skips(work)["bad_srate"] == 2


def test_09_empty_split_after_filtering_stops_with_one_line(local_cohort, tmp_path):
    work, _, _ = local_cohort
    (tmp_path / "params.yaml").write_text((work / "params.yaml").read_text())
    (tmp_path / "splits.json").write_text(json.dumps({"train": [1, 2], "val": [14], "test": [3]}))
    result = stage("windows", tmp_path, work / "cohort/cases.csv", "splits.json", "windows", "w.json", "report")
    one_line_error(result, "split val: no usable windows from 1 cases (skipped: {'all_nan': 1}")
    assert not (tmp_path / "windows").exists() and not (tmp_path / "w.json").exists()


def test_10_single_class_train_split_stops_with_one_line(tiny_pipeline, tmp_path):
    import h5py
    windows = tmp_path / "windows"
    windows.mkdir()
    for split in ["train", "val", "test"]:
        (windows / f"{split}.h5").write_bytes((tiny_pipeline / "data/windows" / f"{split}.h5").read_bytes())
    with h5py.File(windows / "train.h5", "a") as f:    # every train label negative
        f["label_5min"][...] = np.minimum(f["label_5min"][...], 0)
    (tmp_path / "params.yaml").write_text((tiny_pipeline / "params.yaml").read_text())
    result = stage("train", tmp_path, windows, tmp_path / "emb", tmp_path / "model.pt", tmp_path / "live")
    one_line_error(result, "train split has only one class (0 positives in")
    assert f"windows of {windows / 'train.h5'} at train.horizon_min=5)" in result.stderr
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("section, values, message", [
    ("windows", {"lenght": 512}, "params.yaml: unknown key windows.lenght"),
    ("windows", {"horizons_min": [5, -1]},
     "params.yaml: windows.horizons_min=[5, -1]: must be a non-empty list of minutes > 0"),
    ("windows", {"length": 1024}, "params.yaml: windows.length=1024: must be an integer 1-512"),
])
def test_11_invalid_window_params_stop_with_one_line(local_cohort, tmp_path, section, values, message):
    work, _, _ = local_cohort
    params_file(tmp_path, **{section: values})
    result = stage("windows", tmp_path, work / "cohort/cases.csv", work / "splits.json", "w", "w.json", "r")
    one_line_error(result, message)


def test_11_split_ratios_not_summing_to_one_stop_with_one_line(local_cohort, tmp_path):
    work, _, _ = local_cohort
    params_file(tmp_path, splits={"train": 0.7, "val": 0.2, "test": 0.2})
    result = stage("splits", tmp_path, work / "cohort/cases.csv", "splits.json", "s.json")
    one_line_error(result, "params.yaml: splits.train/val/test must sum to 1")
    assert not (tmp_path / "splits.json").exists()


def test_11_model_context_longer_than_the_window_stops_with_one_line(tiny_pipeline, tmp_path):
    params = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())
    params["windows"]["length"] = 256     # the stored windows stay 512 long; the model's context may not exceed
    params["model"]["context_length"] = 600
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage("embed", tmp_path, tiny_pipeline / "data/windows", tmp_path / "emb")
    one_line_error(result, "params.yaml: model.context_length=600")
    assert not (tmp_path / "emb").exists()


def test_12_missing_ttm_weights_stop_with_one_line(tiny_pipeline, tmp_path):
    params = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())
    params["model"]["weights_dir"] = str(tmp_path / "no-weights")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage("embed", tmp_path, tiny_pipeline / "data/windows", tmp_path / "emb")
    one_line_error(result, f"model.weights_dir={tmp_path / 'no-weights'}: TTM weights missing")


def test_12_corrupt_ttm_weights_are_one_line_never_a_fallback(tmp_path):
    broken = tmp_path / "ttm"
    broken.mkdir()
    for f in WEIGHTS.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])    # a cut-off download
    with pytest.raises(PipelineError, match=f"model.weights_dir={broken}: TTM weights could not be loaded") as err:
        ttm.load_ttm(broken)
    assert "\n" not in str(err.value)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(PipelineError, match="TTM weights could not be loaded"):
        ttm.load_ttm(broken)


def test_13_unwritable_output_directory_stops_with_one_line(local_cohort, tmp_path):
    work, _, _ = local_cohort
    (tmp_path / "params.yaml").write_text((work / "params.yaml").read_text())
    (tmp_path / "a_file").write_text("")     # a path under a file cannot be created, even by root
    result = stage("splits", tmp_path, work / "cohort/cases.csv", tmp_path / "a_file/out/splits.json", "s.json")
    one_line_error(result, f"cannot create output directory {tmp_path / 'a_file/out'}")


def test_13_disk_full_stops_with_one_line_and_leaves_nothing(local_cohort, tmp_path):
    work, _, _ = local_cohort
    (tmp_path / "params.yaml").write_text((work / "params.yaml").read_text())

    def small_disk():   # files may grow to 1 MB: writing a bigger one fails like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    result = stage("windows", tmp_path, work / "cohort/cases.csv", work / "splits.json", "windows", "w.json",
                   "report", preexec_fn=small_disk)
    line = one_line_error(result, "cannot write ")
    assert line.endswith("train.h5: File too large (disk full or file-size limit); free space and rerun")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]    # no partial output, no temp files


def test_14_clinical_table_missing_a_column_stops_with_one_line(tmp_path):
    table = pd.read_csv(ROOT / "data/vitaldb/clinical_information.csv", nrows=50).drop(columns=["age"])
    table.to_csv(tmp_path / "cases.csv", index=False)
    params_file(tmp_path, data={"clinical_csv": str(tmp_path / "cases.csv")})
    result = stage("cohort", tmp_path, "cohort", "cohort.json")
    one_line_error(result, f"clinical table {tmp_path / 'cases.csv'}: missing column(s) age")
    assert not (tmp_path / "cohort").exists()


def test_a_stage_turns_any_pipeline_or_os_error_into_one_line(capsys, monkeypatch):
    from lib.core import errors

    def exit_code(code):
        raise SystemExit(code)

    def disk_full(argv):
        raise OSError(28, "No space left on device", "data/windows/train.h5")

    monkeypatch.setattr(errors.os, "_exit", exit_code)
    monkeypatch.setattr(errors.sys, "unraisablehook", errors.sys.unraisablehook)
    monkeypatch.setattr(errors.sys, "excepthook", errors.sys.excepthook)
    with pytest.raises(SystemExit) as stop:
        errors.run_stage(disk_full, [])
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("error: cannot write data/windows/train.h5: No space left on device "
                                       "(disk full or file-size limit); free space and rerun\n")


@pytest.mark.parametrize("section, values, message", [
    ("train", {"epoch": 3}, "params.yaml: unknown key train.epoch"),
    ("evaluate", {"voting": "majority"}, "params.yaml: evaluate.voting='majority': expected one of soft, hard, none"),
    ("calibrate", {"method": "beta"}, "params.yaml: calibrate.method='beta': expected one of"),
])
def test_11_the_first_stage_validates_every_section(tmp_path, section, values, message):
    """A typo in a late stage's params stops the cohort stage, before any recording is read."""
    params_file(tmp_path, **{section: values})
    result = stage("cohort", tmp_path, "cohort", "cohort.json")
    one_line_error(result, message)
    assert not (tmp_path / "cohort").exists()
