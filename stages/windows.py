"""Stage windows: resample, filter, gate, label and window every case; one HDF5 file per split.

usage: python stages/windows.py <cases_csv> <splits_json> <out_dir> <metrics_json>
"""
import json
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import params, windows_h5  # noqa: E402
from lib.atomic import atomic_dir, write_json  # noqa: E402
from lib.errors import CaseError, PipelineError, run_stage  # noqa: E402
from lib.parallel import parallel_map  # noqa: E402
from lib.windowing import CHANNELS, WindowSpec, process_case  # noqa: E402

KEYS = ["fs", "length", "stride", "horizon_min", "map_threshold", "label_min_valid", "workers"]


def _case(path, tracks, spec):
    try:
        return process_case(path, tracks, spec)
    except CaseError as err:
        return {"skip_reason": err.reason, "message": str(err)}


def main(argv):
    cases_csv, splits_json, out_dir, metrics_path = argv
    p = params.load("windows", "data")
    w = p["windows"]
    params.require(w, "windows", KEYS)
    if w["length"] > 512:
        raise PipelineError(f"windows.length={w['length']} exceeds TTM's context length 512")
    if w["horizon_min"] <= 0 or w["stride"] <= 0:
        raise PipelineError("windows.horizon_min and windows.stride must be > 0")
    spec = WindowSpec(fs=int(w["fs"]), length=int(w["length"]), stride=int(w["stride"]),
                      horizon_min=float(w["horizon_min"]), map_threshold=float(w["map_threshold"]),
                      label_min_valid=float(w["label_min_valid"]))
    cases = pd.read_csv(cases_csv, keep_default_na=False).set_index("caseid")
    case_lists = json.loads(Path(splits_json).read_text())
    work = partial(_case, tracks=p["data"]["tracks"], spec=spec)
    summary = {}
    with atomic_dir(out_dir) as tmp:
        for split, caseids in case_lists.items():
            results = parallel_map(work, [cases.loc[c, "path"] for c in caseids], int(w["workers"]), split)
            rejected, skipped, n_pos, n_kept = Counter(), Counter(), 0, 0
            with windows_h5.WindowWriter(tmp / f"{split}.h5", CHANNELS, spec.length,
                                         {"fs": spec.fs, "split": split, "params": w}) as writer:
                for caseid, result in zip(caseids, results):
                    if "skip_reason" in result:
                        print(f"skip case {caseid}: {result['message']}", file=sys.stderr)
                        skipped[result["skip_reason"]] += 1
                        continue
                    n = len(result["label"])
                    result["caseid"] = np.full(n, caseid, dtype=np.int32)
                    result["subjectid"] = np.full(n, cases.loc[caseid, "subjectid"], dtype=np.int32)
                    writer.append(result)
                    rejected.update(result["reasons"])
                    n_pos += int(result["label"].sum())
                    n_kept += n
            if n_kept == 0:
                raise PipelineError(f"split {split}: no usable windows from {len(caseids)} cases "
                                    f"(skipped: {dict(skipped)}, rejected: {dict(rejected)})")
            summary[split] = {"windows": n_kept, "positives": n_pos, "positive_rate": round(n_pos / n_kept, 4),
                              "cases_used": len(caseids) - sum(skipped.values()),
                              "rejected": dict(sorted(rejected.items())), "skipped_cases": dict(skipped)}
    write_json(metrics_path, summary)


if __name__ == "__main__":
    run_stage(main)
