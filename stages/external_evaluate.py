"""Stage external_evaluate: the frozen model, its calibrator and every baseline on the external cohort.

Nothing is refitted: the thresholds and the alarms' operating points are those chosen on the training
cohort's val split, the windows were cut and normalised with the training cohort's rule. Writes what
evaluate writes, for the external cohort (lib.eval.run):

* `<live_dir>/metrics.json`: the same headline keys as evaluate's (DVC metrics);
* `<live_dir>/details.json`: everything, plus the optional recalibration on a held-out part of the
  cohort (`external.recalibrate_fraction`), reported apart;
* `<report_md>`: internal (`<internal_details_json>`, evaluate's) and external results side by side,
  then the full external report.

With `external.source: none` it records that external validation is off.

usage: python stages/external_evaluate.py <checkpoint> <calibrator_json> <val_scores> <baselines_dir>
       <external_windows_dir> <val_h5> <external_clinical_csv> <internal_details_json> <live_dir> <report_md>
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
import json
from pathlib import Path
from typing import NamedTuple

from lib.core.atomic import atomic_dir, atomic_path, write_json
from lib.core.errors import run_stage
from lib.core.memory import after_inference, keep_heap_bounded
from lib.core.params import Evaluate, External, Inference, Train, read_params
from lib.eval import external, run


class Config(NamedTuple):
    source: str
    recalibrate_fraction: float
    evaluate: Evaluate
    inference: Inference
    device: str


def config(params) -> Config:
    return Config(*External.pick(params, "source", "recalibrate_fraction"), Evaluate.from_params(params),
                  Inference.from_params(params), Train.pick(params, "device"))


def main(argv):
    keep_heap_bounded()   # freed memory goes back to the OS while the stage streams (lib/core/memory.py)
    checkpoint, calibrator, val_scores, baselines_dir, windows_dir, val_h5, clinical_csv, internal_json, live_dir, \
        report = argv
    cfg = config(read_params())
    if cfg.source == "none":
        with atomic_dir(live_dir) as tmp:
            write_json(tmp / "metrics.json", {"source": "none"})
            write_json(tmp / "details.json", {"source": "none"})
            (tmp / "plots").mkdir()   # a declared output, empty
        with atomic_path(report) as tmp:
            tmp.write_text(external.OFF_REPORT)
        return
    test_h5 = Path(windows_dir) / "test.h5"
    details, figures, provenance = run.evaluate(checkpoint, calibrator, val_scores, baselines_dir, test_h5, val_h5,
                                                clinical_csv, {"external": test_h5}, cfg.evaluate, cfg.inference,
                                                cfg.device, cfg.recalibrate_fraction, after_inference)
    internal = json.loads(Path(internal_json).read_text())
    run.write(live_dir, report, details, figures, provenance, heading="External validation",
              preface=external.comparison(internal, details.to_dict(), provenance))


if __name__ == "__main__":
    run_stage(main)
