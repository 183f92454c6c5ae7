"""Benchmark the windows stage: seconds of signal per wall second (x real time) and peak RSS.

Generates the simulated demo cohort at each scale (1x = params.yaml's demo.n_cases, 220 cases and
about 160 h at present), splits it (no fasttrack cap), then
times `stages/windows.py` exactly as `dvc repro` runs it, sampling the resident memory of the
whole process tree (stage + workers) every 0.1 s.

usage: python bench/windows_throughput.py [--scales 0.25 1] [--workers 2] [--out bench/results/windows_throughput.json]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, cwd):
    result = subprocess.run([sys.executable, *cmd], cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr[-2000:]}")


def timed_tree(cmd, cwd):
    """(wall seconds, peak summed RSS of the process tree in MB, peak single-process RSS in MB)."""
    started = time.perf_counter()
    proc = psutil.Popen([sys.executable, *cmd], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_tree = peak_one = 0
    while proc.poll() is None:
        try:
            rss = [p.memory_info().rss for p in [proc, *proc.children(recursive=True)]]
        except psutil.Error:
            continue
        peak_tree, peak_one = max(peak_tree, sum(rss)), max(peak_one, max(rss))
        time.sleep(0.1)
    wall = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"windows stage failed:\n{proc.stderr.read().decode()[-2000:]}")
    return wall, peak_tree / 2**20, peak_one / 2**20


def bench_scale(scale: float, workers: int) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["clinical_csv"] = str(ROOT / params["data"]["clinical_csv"])
    params["demo"]["n_cases"] = max(1, round(params["demo"]["n_cases"] * scale))
    params["splits"]["fasttrack"] = False
    params["windows"]["workers"] = workers
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        run([str(ROOT / "stages/cohort.py"), "data/cohort", "metrics/cohort.json"], work)
        run([str(ROOT / "stages/splits.py"), "data/cohort/cases.csv", "data/splits.json", "metrics/splits.json"], work)
        cases = pd.read_csv(work / "data/cohort/cases.csv")
        in_splits = {c for ids in json.loads((work / "data/splits.json").read_text()).values() for c in ids}
        signal_s = float(cases.loc[cases.caseid.isin(in_splits), "duration_s"].sum())
        wall, rss_tree, rss_one = timed_tree(
            [str(ROOT / "stages/windows.py"), "data/cohort/cases.csv", "data/splits.json", "data/windows",
             "metrics/windows.json", "metrics/windows_report"], work)
        windows = json.loads((work / "metrics/windows.json").read_text())
    return {"scale": scale, "cases": len(in_splits), "signal_hours": round(signal_s / 3600, 2), "workers": workers,
            "wall_s": round(wall, 2), "x_real_time": round(signal_s / wall), "peak_rss_tree_mb": round(rss_tree),
            "peak_rss_process_mb": round(rss_one), "windows_kept": sum(s["windows"] for s in windows.values())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.25, 1])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench/results/windows_throughput.json"))
    args = parser.parse_args()
    results = []
    for scale in args.scales:
        results.append(bench_scale(scale, args.workers))
        print(json.dumps(results[-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu_count": psutil.cpu_count(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
