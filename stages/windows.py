"""Stage windows: resample, filter, gate, label and window every case; one HDF5 file per split.

Train is written first: its per-channel statistics are the only ones any split is normalised
with. Test windows overlap by evaluate.overlap, so evaluate can vote over overlapping predictions.

usage: python stages/windows.py <cases_csv> <splits_json> <out_dir> <metrics_json> <report_dir>
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
import json
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from sklearn.preprocessing import StandardScaler

from lib.core.atomic import atomic_dir, write_json
from lib.core.errors import run_stage
from lib.core.params import Data, Evaluate, Trend, Windows, read_params
from lib.data.quality_report import QualityReport
from lib.data.splits import SPLITS
from lib.data.windowing import file_attrs, normalisation_stats, write_split


class Config(NamedTuple):
    windows: Windows   # train and val windows
    test: Windows      # test windows: overlapping by evaluate.overlap, for voting
    trend: Trend       # the trend view stored with every window (its step_s and context)
    tracks: dict


def config(params) -> Config:
    windows = Windows.from_params(params)
    step_s, context = Trend.pick(params, "step_s", "context")
    return Config(windows, windows.for_test(Evaluate.pick(params, "overlap")), Trend(step_s=step_s, context=context),
                  Data.pick(params, "tracks"))


def main(argv):
    cases_csv, splits_json, out_dir, metrics_path, report_dir = argv
    cfg = config(read_params())
    spec = cfg.windows
    table = pd.read_csv(cases_csv, keep_default_na=False).set_index("caseid")
    case_lists = json.loads(Path(splits_json).read_text())
    cases = {s: [(c, int(table.loc[c, "subjectid"]), table.loc[c, "path"]) for c in case_lists[s]] for s in SPLITS}
    attrs = file_attrs(spec, cfg.trend, cfg.tracks)
    report = QualityReport(spec)
    summary = {}
    with atomic_dir(out_dir) as tmp:
        stats = StandardScaler()
        summary["train"] = write_split("train", cases["train"], tmp / "train.h5", spec, cfg.trend, cfg.tracks, attrs,
                                       report, spec.workers, stats)
        normalisation = normalisation_stats(stats)
        write_json(tmp / "normalisation.json", normalisation)
        for split in ("val", "test"):
            split_spec = cfg.test if split == "test" else spec
            summary[split] = write_split(split, cases[split], tmp / f"{split}.h5", split_spec, cfg.trend, cfg.tracks,
                                         {**attrs, "stride": split_spec.stride, "normalisation": normalisation},
                                         report, spec.workers)
    report.write(report_dir)
    write_json(metrics_path, {split: s.to_dict() for split, s in summary.items()})


if __name__ == "__main__":
    run_stage(main)
