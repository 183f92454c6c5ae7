"""Stage windows: resample, filter, gate, label and window every case; one HDF5 file per split.

usage: python stages/windows.py <cases_csv> <splits_json> <out_dir> <metrics_json> <report_dir>
"""
import dataclasses
import hashlib
import json
import sys
from collections import Counter
from contextlib import ExitStack, closing
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from lib.core import config as params
from lib.data import quality_report
from lib.data import vital_io
from lib.data import windows_h5
from lib.core.atomic import atomic_dir, write_json
from lib.core.errors import CaseError, PipelineError, run_stage
from lib.core.parallel import parallel_imap
from lib.signal.quality import QualityLimits
from lib.data.splits import SPLITS
from lib.data.windowing import CHANNELS, WindowSpec, process_case

KEYS = ["fs", "length", "stride", "horizons_min", "map_threshold", "label_min_valid", "ppg_band_hz",
        "ecg_band_hz", "abp_lowpass_hz", "ecg_sqi_min", "ppg_ssqi_min", "min_beats", "map_range",
        "pulse_pressure_range", "map_slope_window_s", "workers"]
ROOT = Path(__file__).resolve().parents[1]
# The code that decides what a window holds; its hash is stored in every file as `code_version`.
CODE = ["stages/windows.py", "lib/data/windowing.py", "lib/signal/filters.py", "lib/signal/beats.py", "lib/signal/quality.py",
        "lib/signal/labels.py", "lib/data/vital_io.py", "lib/windows_h5.py"]


def window_spec(w: dict) -> WindowSpec:
    """params.yaml → windows, validated, as a WindowSpec."""
    params.require(w, "windows", KEYS)
    fs = float(w["fs"])
    if not 0 < w["length"] <= 512:
        raise PipelineError(f"windows.length={w['length']}: must be 1-512 (TTM's context length is 512)")
    if w["stride"] <= 0:
        raise PipelineError(f"windows.stride={w['stride']}: must be > 0")
    horizons = w["horizons_min"]
    if not isinstance(horizons, list) or not horizons or any(h <= 0 for h in horizons):
        raise PipelineError(f"windows.horizons_min={horizons}: must be a non-empty list of minutes > 0")
    for key in ["ppg_band_hz", "ecg_band_hz", "map_range", "pulse_pressure_range"]:
        low, high = w[key]
        if not low < high:
            raise PipelineError(f"windows.{key}={w[key]}: must be [low, high] with low < high")
    for key in ["ppg_band_hz", "ecg_band_hz"]:
        if w[key][0] <= 0 or w[key][1] >= fs / 2:
            raise PipelineError(f"windows.{key}={w[key]}: must lie inside (0, fs/2 = {fs / 2:g}) Hz")
    limits = QualityLimits(ecg_sqi_min=float(w["ecg_sqi_min"]), ppg_ssqi_min=float(w["ppg_ssqi_min"]),
                           min_beats=int(w["min_beats"]), map_range=tuple(map(float, w["map_range"])),
                           pp_range=tuple(map(float, w["pulse_pressure_range"])))
    return WindowSpec(fs=int(fs), length=int(w["length"]), stride=int(w["stride"]),
                      horizons_min=tuple(float(h) for h in horizons), map_threshold=float(w["map_threshold"]),
                      label_min_valid=float(w["label_min_valid"]), ppg_band=tuple(w["ppg_band_hz"]),
                      ecg_band=tuple(w["ecg_band_hz"]), abp_lowpass_hz=float(w["abp_lowpass_hz"]),
                      slope_window_s=int(w["map_slope_window_s"]), limits=limits)


def code_version() -> str:
    digest = hashlib.sha256()
    for name in CODE:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


def normalisation_stats(scaler: StandardScaler) -> dict:
    return {"fitted_on": "train", "channels": list(CHANNELS), "mean": [round(float(v), 6) for v in scaler.mean_],
            "std": [round(float(v), 6) for v in scaler.scale_], "samples": int(scaler.n_samples_seen_)}


def _case(path, aliases, spec):
    try:
        return process_case(path, aliases, spec)
    except CaseError as err:
        return {"skip_reason": err.reason, "message": str(err)}


def write_split(split, caseids, cases, work, path, spec, attrs, stats, report, workers):
    """Process one split's cases in parallel and stream them into one HDF5 file; returns its summary."""
    rejected, skipped, horizon_unlabelled = Counter(), Counter(), {f"{h:g}": Counter() for h in spec.horizons_min}
    labelled, positives = Counter(), Counter()   # per horizon
    n_kept = n_total = 0
    with ExitStack() as stack:
        writer = stack.enter_context(windows_h5.WindowWriter(path, CHANNELS, spec.length, spec.columns(),
                                                             {**attrs, "split": split}))
        results = stack.enter_context(closing(parallel_imap(work, [cases.loc[c, "path"] for c in caseids],
                                                            workers, split)))
        for caseid, result in zip(caseids, results):
            subjectid = int(cases.loc[caseid, "subjectid"])
            if "skip_reason" in result:
                print(f"skip case {caseid}: {result['message']}", file=sys.stderr)
                skipped[result["skip_reason"]] += 1
                report.add_case(split, caseid, subjectid, result["skip_reason"])
                continue
            n = len(result["signals"])
            result["caseid"] = np.full(n, caseid, dtype=np.int32)
            result["subjectid"] = np.full(n, subjectid, dtype=np.int32)
            writer.append(result)
            if stats is not None:  # per-channel statistics over every sample of the train windows
                stats.partial_fit(result["signals"].transpose(0, 2, 1).reshape(-1, len(CHANNELS)))
            rejected.update(result["reasons"])
            label_counts = {}   # horizon -> (labelled, positives) of this case
            for h, counts in result["horizon_reasons"].items():
                horizon_unlabelled[h].update(counts)
                y = result[windows_h5.label_column(h)]
                label_counts[h] = (int((y >= 0).sum()), int((y == 1).sum()))
                labelled[h] += label_counts[h][0]
                positives[h] += label_counts[h][1]
            n_kept += n
            n_total += result["n_windows"]
            report.add_case(split, caseid, subjectid, None, result, label_counts)
        if stats is not None:
            writer.set_attrs({"normalisation": normalisation_stats(stats)})
    if n_kept == 0:
        raise PipelineError(f"split {split}: no usable windows from {len(caseids)} cases "
                            f"(skipped: {dict(skipped)}, rejected: {dict(rejected)})")
    return {"cases": len(caseids), "cases_used": len(caseids) - sum(skipped.values()),
            "skipped_cases": dict(sorted(skipped.items())), "windows_total": n_total, "windows": n_kept,
            "usable_fraction": round(n_kept / max(n_total, 1), 4), "rejected": dict(sorted(rejected.items())),
            "horizons": {h: {"labelled": labelled[h], "positives": positives[h],
                             "positive_rate": round(positives[h] / max(labelled[h], 1), 4),
                             "unlabelled": dict(sorted(horizon_unlabelled[h].items()))}
                         for h in horizon_unlabelled}}


def main(argv):
    cases_csv, splits_json, out_dir, metrics_path, report_dir = argv
    p = params.load("windows", "data", "evaluate")
    w = p["windows"]
    spec = window_spec(w)
    # Test windows overlap by evaluate.overlap, so evaluate can vote over overlapping predictions.
    overlap = p["evaluate"]["overlap"]
    if not 0 <= overlap < 1:
        raise PipelineError(f"params.yaml: evaluate.overlap={overlap}: must be in [0, 1)")
    specs = {s: spec for s in SPLITS} | {"test": dataclasses.replace(spec, stride=max(1, round(spec.length * (1 - overlap))))}
    cases = pd.read_csv(cases_csv, keep_default_na=False).set_index("caseid")
    case_lists = json.loads(Path(splits_json).read_text())
    aliases = vital_io.track_aliases(p["data"]["tracks"])
    work = {s: partial(_case, aliases=aliases, spec=specs[s]) for s in SPLITS}
    attrs = {"fs": spec.fs, "params": {k: v for k, v in w.items() if k != "workers"},
             "tracks": p["data"]["tracks"], "code_version": code_version()}
    report = quality_report.QualityReport(spec)
    summary = {}
    with atomic_dir(out_dir) as tmp:
        # Train first: its channel statistics are the only ones any split is normalised with.
        stats = StandardScaler()
        summary["train"] = write_split("train", case_lists["train"], cases, work["train"], tmp / "train.h5", spec, attrs,
                                       stats, report, int(w["workers"]))
        normalisation = normalisation_stats(stats)
        write_json(tmp / "normalisation.json", normalisation)
        for split in [s for s in SPLITS if s != "train"]:
            summary[split] = write_split(split, case_lists[split], cases, work[split], tmp / f"{split}.h5",
                                         specs[split], {**attrs, "stride": specs[split].stride,
                                                        "normalisation": normalisation}, None, report,
                                         int(w["workers"]))
    report.write(report_dir)
    write_json(metrics_path, summary)


if __name__ == "__main__":
    run_stage(main)
