"""README's scored timeline (docs/images/scored_timeline.png): `ttm-ioh score` on one test recording.

The recording is the test split's case with the most IOH events (ties: the lowest caseid), scored by the
workspace's trained model and baselines as `ttm-ioh score` does it; run after `dvc repro`.

usage: python scripts/timeline_example.py [--out docs/images/scored_timeline.png]
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lib.data import windows_h5  # noqa: E402
from lib.eval.report import save_png  # noqa: E402
from lib.eval.timeline import timeline_figure  # noqa: E402
from lib.score import MAP_LR, MODEL, load_bundle, score_recording  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs/images/scored_timeline.png"))
    args = parser.parse_args(argv)
    test = windows_h5.read_columns(ROOT / "data/windows/test.h5", ["caseid"])["caseid"]
    cases = pd.read_csv(ROOT / "data/cohort/cases.csv").set_index("caseid").loc[np.unique(test)]
    bundle = load_bundle(ROOT / "models")
    best = None
    for caseid, row in cases.iterrows():
        scores = score_recording(ROOT / row["path"], bundle)
        n_events = len(scores.events[0])
        if best is None or n_events > best[0]:
            best = (n_events, caseid, scores)
    _, caseid, scores = best
    frame = scores.frame
    risks = {scores.names[name]: (frame[f"risk_{name}"].to_numpy(), scores.thresholds[name],
                                  scores.alarm_times[name]) for name in (MODEL, MAP_LR)}
    fig = timeline_figure(frame["time_s"].to_numpy(), frame["map_mmhg"].to_numpy(), risks,
                          list(zip(*scores.events, strict=True)), f"Test case {caseid} (simulated demo): risk of IOH "
                          f"within {scores.horizon_min:g} min", map_1hz=scores.map_1hz, horizon_min=scores.horizon_min)
    save_png(fig, args.out)
    print(f"{args.out}: case {caseid}, {len(scores.events[0])} IOH events, "
          f"{len(scores.alarm_times[MODEL])} model alarms")


if __name__ == "__main__":
    main()
