"""Stage external_windows: the external cohort's windows, cut exactly as the test split's.

The same windows.* rule and trend view as the training cohort, at the test split's stride (evaluate.overlap),
normalised with the training cohort's train statistics (`<normalisation_json>`, the windows stage's): nothing
is fitted on the external cohort. Every case is test: one file, `<out_dir>/test.h5`, and a data-quality
report. The recordings are read through `external.tracks`. With `external.source: none` the stage only
records that external validation is off.

usage: python stages/external_windows.py <cases_csv> <normalisation_json> <out_dir> <metrics_json> <report_dir>
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
import json
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from lib.core.atomic import atomic_dir, write_json
from lib.core.errors import PipelineError, run_stage
from lib.core.params import Evaluate, External, Trend, Windows, read_params
from lib.data.quality_report import QualityReport
from lib.data.windowing import file_attrs, write_split


class Config(NamedTuple):
    source: str
    windows: Windows   # the training cohort's rule
    test: Windows      # ... at the test split's stride: overlapping by evaluate.overlap
    trend: Trend
    tracks: dict


def config(params) -> Config:
    step_s, context = Trend.pick(params, "step_s", "context")
    source, tracks = External.pick(params, "source", "tracks")
    windows = Windows.from_params(params)
    return Config(source, windows, windows.for_test(Evaluate.pick(params, "overlap")),
                  Trend(step_s=step_s, context=context), tracks)


def main(argv):
    cases_csv, normalisation_json, out_dir, metrics_path, report_dir = argv
    cfg = config(read_params())
    spec = cfg.test
    report = QualityReport(spec)
    with atomic_dir(out_dir) as tmp:
        if cfg.source == "none":
            write_json(metrics_path, {"source": "none"})
            Path(report_dir).mkdir(parents=True, exist_ok=True)   # an empty report: nothing was windowed
            return
        table = pd.read_csv(cases_csv, keep_default_na=False)
        usable = table[table["skip_reason"] == ""]
        if usable.empty:
            raise PipelineError(f"{cases_csv}: the external cohort has no usable case "
                                f"({len(table)} listed, every one skipped: see metrics/external_cohort.json)")
        cases = [(int(c), int(s), p) for c, s, p in zip(usable["caseid"], usable["subjectid"], usable["path"],
                                                         strict=True)]
        normalisation = json.loads(Path(normalisation_json).read_text())
        attrs = {**file_attrs(cfg.windows, cfg.trend, cfg.tracks), "stride": spec.stride,
                 "normalisation": normalisation, "cohort": "external"}
        summary = write_split("test", cases, tmp / "test.h5", spec, cfg.trend, cfg.tracks, attrs, report,
                              spec.workers)
    report.write(report_dir)
    write_json(metrics_path, {"test": summary.to_dict()})


if __name__ == "__main__":
    run_stage(main)
