"""The whole pipeline on a GPU host: `dvc exp run --temp` in a fresh clone, measured per stage.

Install the project on the GPU host as anywhere else, then run this from the repository root:

    pip install -r requirements.txt -e .
    python bench/gpu.py [--cases 220] [--workers 16] [--set KEY=VALUE ...]

A host without network installs from a folder of wheels fetched beforehand on a machine with the
same Python and platform (`pip download -r requirements.txt -d wheels`):
`pip install --no-index --find-links wheels -r requirements.txt -e .`.

It is bench/scale.py's measurement (`run_cases`: per-stage wall time between dvc's "Running stage"
lines, peak RSS of the process tree and of the largest process, GNU time's max RSS) of

    dvc exp run --temp -S demo.n_cases=N -S splits.fasttrack=false -S train.device=cuda
                       -S data.workers=W -S windows.workers=W -S data.download.workers=W

and writes bench/results/gpu_<N>.json with the test AUROC per scorer and the GPU's name; bench/report.py
puts the latest one in RESULTS.md.
"""
import argparse
import json
import os
from pathlib import Path

import torch
from scale import run_cases  # bench/ is this script's directory

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=220, help="demo.n_cases")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="data and windows worker processes")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="extra `dvc exp run -S` override")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark is for a GPU host (bench/run_all.py measures the CPU)")
    overrides = {"train.device": "cuda", "data.workers": args.workers, "windows.workers": args.workers,
                 "data.download.workers": args.workers}
    row = run_cases(args.cases, [f"{k}={v}" for k, v in overrides.items()] + args.sets)
    aurocs = row.pop("auroc")
    stages_s = sum(s["wall_s"] for s in row["stages"].values())
    out = {**row, "overrides": {"demo.n_cases": args.cases, "splits.fasttrack": False, **overrides},
           "stages_wall_s": round(stages_s, 1), "s_per_signal_hour": round(stages_s / row["signal_hours"], 3),
           "evaluate": {k: {"auroc": v} for k, v in aurocs.items()},
           "host": {"cpus": os.cpu_count()},
           "environment": {"torch": {"version": torch.__version__, "device": torch.cuda.get_device_name(0)}}}
    path = args.results / f"gpu_{args.cases}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("wall_s", "stages_wall_s", "evaluate")}), "->", path)


if __name__ == "__main__":
    main()
