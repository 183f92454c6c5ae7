"""Stage windows: resample, filter, gate, label and window every case; one HDF5 file per split.

Train is written first: its per-channel statistics are the only ones any split is normalised
with. Test windows overlap by evaluate.overlap, so evaluate can vote over overlapping predictions.

usage: python stages/windows.py <cases_csv> <splits_json> <out_dir> <metrics_json> <report_dir>
"""
import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from sklearn.preprocessing import StandardScaler

from lib.core.atomic import atomic_dir, write_json
from lib.core.config import WindowsConfig, read_params, track_aliases
from lib.core.errors import run_stage
from lib.data.quality_report import QualityReport
from lib.data.splits import SPLITS
from lib.data.windowing import normalisation_stats, write_split


class Config(NamedTuple):
    windows: WindowsConfig
    tracks: dict


def config(params) -> Config:
    return Config(WindowsConfig.from_params(params), track_aliases(params["data"]["tracks"]))


def main(argv):
    cases_csv, splits_json, out_dir, metrics_path, report_dir = argv
    cfg = config(read_params())
    spec = cfg.windows.spec
    table = pd.read_csv(cases_csv, keep_default_na=False).set_index("caseid")
    case_lists = json.loads(Path(splits_json).read_text())
    cases = {s: [(c, int(table.loc[c, "subjectid"]), table.loc[c, "path"]) for c in case_lists[s]] for s in SPLITS}
    attrs = {"fs": spec.fs, "params": dataclasses.asdict(spec), "tracks": cfg.tracks}
    report = QualityReport(spec)
    summary = {}
    with atomic_dir(out_dir) as tmp:
        stats = StandardScaler()
        summary["train"] = write_split("train", cases["train"], tmp / "train.h5", spec, cfg.tracks, attrs, report,
                                       cfg.windows.workers, stats)
        normalisation = normalisation_stats(stats)
        write_json(tmp / "normalisation.json", normalisation)
        for split in ("val", "test"):
            split_spec = cfg.windows.test_spec if split == "test" else spec
            summary[split] = write_split(split, cases[split], tmp / f"{split}.h5", split_spec, cfg.tracks,
                                         {**attrs, "stride": split_spec.stride, "normalisation": normalisation},
                                         report, cfg.windows.workers)
    report.write(report_dir)
    write_json(metrics_path, {split: s.to_dict() for split, s in summary.items()})


if __name__ == "__main__":
    run_stage(main)
