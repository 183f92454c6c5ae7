"""evaluate's statistics (everything after inference) at 1x, 4x and 16x the default demo's test set, now and
at an earlier commit: wall and CPU seconds, time per window, peak RSS.

usage: python bench/evaluate_statistics.py [--scales 1 4 16] [--before REV] [--before-scales 1 4]
                                           [--out bench/results/evaluate_statistics.json]

Input: the default pipeline's own test windows (data/windows/test.h5: ids, times, event timing) and every
scorer's calibrated probabilities on them (data/evaluate/test_scores.parquet), so run `dvc repro` first.
A scale of k tiles them k times as k times the subjects (ids offset, each copy's probabilities nudged by
< 1e-9 so the copies do not tie), which is what a k-times larger cohort adds to the statistics. Each
measurement runs in a fresh interpreter: `evaluate_classifier` (window level, voting, backward, subgroups,
subject-bootstrap CIs) and `monitor_report` (alarms at val-chosen operating points, gray zone, matched on
MAP, decision curve) as the evaluate stage calls them, the probabilities given as calibrated already and
the test windows standing in for val; `bootstrap_ci_s` is the part spent in the subject-bootstrap CIs
(lib.eval.metrics.with_ci). `--before REV` measures the same at commit REV (a git worktree).
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "evaluate_statistics.json"
OFFSET = 10_000_000   # subject and case ids of copy k: id + k x OFFSET


class GivenProbabilities:
    """A calibration that takes the probabilities as given (what the evaluate stage has after calibrating)."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.calibrator = type("Identity", (), {"method": "given"})()

    def predict_proba(self, z):
        return z

    def backwards(self) -> dict:
        return {"backwards": False}


def tiled_inputs(scale: int):
    """(labels, {scorer: probabilities}, TestWindows, clinical table, {scorer: threshold}) of the demo's
    test windows tiled `scale` times."""
    import h5py
    import numpy as np
    import pandas as pd

    from lib.eval import backward, evaluation

    scores = pd.read_parquet(ROOT / "data" / "evaluate" / "test_scores.parquet")
    with h5py.File(ROOT / "data" / "windows" / "test.h5", "r") as f:
        columns = pd.DataFrame({name: f[name][:] for name in ("caseid", "t_end_s", *backward.TIMING_COLUMNS)})
        window_s = f["signals"].shape[-1] / float(f.attrs["fs"])
    table = scores.merge(columns, on=["caseid", "t_end_s"], how="left", validate="one_to_one")
    details = json.loads((ROOT / "metrics" / "evaluate" / "details.json").read_text())
    scorers = [c for c in scores.columns if c not in ("subjectid", "caseid", "t_end_s", "label")]
    thresholds = {name: details["alarms"]["scorers"][name]["val_threshold"]["threshold"] for name in scorers}
    rng = np.random.default_rng(0)

    def tile(values, step=0):
        return np.concatenate([np.asarray(values) + k * step for k in range(scale)])

    probabilities = {name: np.clip(tile(table[name].to_numpy(np.float64))
                                   + rng.uniform(0, 1e-9, len(table) * scale), 0, 1) for name in scorers}
    ids = evaluation.TestWindows(caseid=tile(table["caseid"], OFFSET), subjectid=tile(table["subjectid"], OFFSET),
                                 t_end=tile(table["t_end_s"]), window_s=window_s,
                                 timing={name: tile(table[name]) for name in backward.TIMING_COLUMNS})
    clinical = evaluation.read_clinical(ROOT / "data" / "cohort" / "clinical.csv")
    clinical = pd.concat([clinical.assign(caseid=clinical["caseid"] + k * OFFSET) for k in range(scale)])
    return tile(table["label"]).astype(np.float64), probabilities, ids, clinical, thresholds


def measure_here(scale: int) -> dict:
    """One measurement with the lib/ first on sys.path (the child process's)."""
    import matplotlib
    matplotlib.use("Agg")

    from lib.core.params import Evaluate, read_params
    from lib.eval import evaluation, metrics

    bootstrap_s = [0.0]
    with_ci = metrics.with_ci

    def timed_with_ci(*args, **kwargs):   # every subject-bootstrap CI goes through metrics.with_ci
        started = time.perf_counter()
        try:
            return with_ci(*args, **kwargs)
        finally:
            bootstrap_s[0] += time.perf_counter() - started
    metrics.with_ci = timed_with_ci

    y, probabilities, ids, clinical, thresholds = tiled_inputs(scale)
    cfg = Evaluate.from_params(read_params(ROOT / "params.yaml"))
    calibrations = {name: GivenProbabilities(t) for name, t in thresholds.items()}
    started, cpu = time.perf_counter(), time.process_time()
    evaluation.evaluate_classifier(y, probabilities, calibrations, ids, cfg, clinical, horizon_min=5.0)
    classifier_s = time.perf_counter() - started
    evaluation.monitor_report(y, probabilities, ids, probabilities, ids, thresholds, cfg)
    total_s = time.perf_counter() - started
    return {"windows": len(y), "subjects": len(set(ids.subjectid.tolist())), "scorers": len(probabilities),
            "bootstrap": cfg.bootstrap, "bootstrap_ci_s": round(bootstrap_s[0], 2),
            "classifier_s": round(classifier_s, 2),
            "monitor_s": round(total_s - classifier_s, 2), "total_s": round(total_s, 2),
            "cpu_s": round(time.process_time() - cpu, 2), "ms_per_window": round(1000 * total_s / len(y), 4),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}


def measure(lib_root: Path, scale: int) -> dict:
    code = (f"import json, sys; sys.path[:0] = [{str(lib_root)!r}, {str(ROOT / 'bench')!r}]; "
            f"import evaluate_statistics as e; print(json.dumps(e.measure_here({scale})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"evaluate_statistics at {lib_root}, scale {scale}:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(lib_root.name, scale, result, flush=True)
    return result


def git_rev(root: Path, rev: str = "HEAD") -> str:
    return subprocess.run(["git", "rev-parse", "--short", rev], cwd=root, capture_output=True, text=True,
                          check=True).stdout.strip()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--before", help="an earlier commit to measure beside this checkout")
    parser.add_argument("--before-scales", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    out = {"commit": git_rev(ROOT), "runs": {"now": {str(s): measure(ROOT, s) for s in args.scales}}}
    if args.before:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.before], cwd=ROOT, check=True,
                           capture_output=True)
            try:
                out["before_commit"] = git_rev(ROOT, args.before)
                out["runs"]["before"] = {str(s): measure(tree, s) for s in args.before_scales}
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
