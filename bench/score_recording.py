"""`ttm-ioh score` on one simulated 1-hour recording: wall time, start-up included (bench/RESULTS.md).

The recording is the demo simulator's at 500 Hz, the rate of VitalDB's waves, with an IOH episode; it is
scored by the workspace's trained model and baselines (run after `dvc repro`) in a fresh process each time,
as a user runs the command. The median of `--runs` runs is reported, with each run's time.

usage: python bench/score_recording.py [--minutes 60] [--srate 500] [--runs 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.data import demo  # noqa: E402
from lib.data.vital_io import write_vital  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--srate", type=float, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/score_recording.json")
    args = parser.parse_args(argv)
    command = Path(sys.executable).with_name("ttm-ioh")
    with tempfile.TemporaryDirectory() as tmp:
        recording = Path(tmp) / "one_hour.vital"
        case = demo.simulate_case(int(args.minutes * 60), args.srate, True, np.random.default_rng(0))
        write_vital(recording, case.signals, args.srate, 1.7e9, demo.UNITS, case.numerics)
        walls = []
        for _ in range(args.runs):
            started = time.perf_counter()
            result = subprocess.run([str(command), "score", str(recording), "--out", tmp], cwd=ROOT,
                                    capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            walls.append(round(time.perf_counter() - started, 2))
            if result.returncode != 0:
                sys.exit(f"ttm-ioh score failed:\n{result.stderr[-2000:]}")
        windows = len((Path(tmp) / "one_hour.csv").read_text().splitlines()) - 1
    figures = {"minutes": args.minutes, "srate_hz": args.srate, "windows": windows, "wall_s": walls,
               "median_wall_s": statistics.median(walls), "cpus": os.cpu_count()}
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
