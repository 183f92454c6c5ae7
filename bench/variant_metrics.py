"""A params variant's reported metrics against the committed default, on the same test split.

usage: python bench/variant_metrics.py NAME -S KEY=VALUE [-S KEY=VALUE ...] [--results bench/results]

Runs `dvc exp run --temp -n NAME -S ...` from this checkout (the workspace is left as it is), then
compares every headline metric of the experiment (metrics/evaluate/metrics.json, as `dvc exp show`
lists them) with the committed workspace's, and the size of each stage's outputs (the two dvc.lock
files). Writes results/NAME_metrics.json: both values per metric, the metrics that change at
3 decimals, the largest change, and the outputs' sizes. bench/report.py puts it in RESULTS.md.
Examples: float16 storage (`-S embed.dtype=float16 -S windows.dtype=float16`), the fast inference
setting (`-S inference.engine=inductor -S inference.bf16=true`).
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import dvc.api
import yaml

ROOT = Path(__file__).resolve().parents[1]
METRICS_FILE = "metrics/evaluate/metrics.json"


def headline(row: dict) -> dict:
    """The numeric metric columns of an exp show row (the params are keys with a dot and a section prefix)."""
    flat = json.loads((ROOT / METRICS_FILE).read_text())
    names = {f"{scorer}.{key}" for scorer, values in flat.items() if isinstance(values, dict) for key in values}
    return {k: v for k, v in row.items() if k in names and isinstance(v, (int, float)) and not isinstance(v, bool)}


def outs_mb(lock: dict) -> dict:
    """{stage: MB of its outputs} from a dvc.lock."""
    return {name: round(sum(o.get("size", 0) for o in stage.get("outs", [])) / 2**20, 1)
            for name, stage in lock["stages"].items() if stage.get("outs")}


def experiments() -> list:
    """`dvc exp show` rows of the last commits (an experiment belongs to the commit it started from)."""
    revs = subprocess.run(["git", "log", "--format=%h", "-20"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.split()
    return dvc.api.exp_show(repo=str(ROOT), revs=revs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("-S", dest="sets", action="append", required=True, metavar="KEY=VALUE")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--compare-only", action="store_true", help="the experiment NAME exists: compare only")
    args = parser.parse_args(argv)
    command = ["dvc", "exp", "run", "--temp", "-n", args.name, *(x for s in args.sets for x in ("-S", s))]
    if not args.compare_only:
        if any(r["Experiment"] == args.name for r in experiments()):
            subprocess.run([sys.executable, "-m", "dvc", "exp", "remove", args.name], cwd=ROOT, check=True)   # rerun
        print(" ".join(command), flush=True)
        subprocess.run([sys.executable, "-m", *command], cwd=ROOT, check=True)
    rows = experiments()
    base = next(r for r in rows if r["rev"] == "workspace")
    variant = next(r for r in rows if r["Experiment"] == args.name)
    ours, theirs = headline(base), headline(variant)
    metrics = {k: {"default": ours[k], args.name: theirs.get(k)} for k in sorted(ours)}
    changes = {k: abs(v[args.name] - v["default"]) for k, v in metrics.items() if v[args.name] is not None}
    changed = sorted(k for k, v in metrics.items()
                     if v[args.name] is None or round(v[args.name], 3) != round(v["default"], 3))
    exp_lock = subprocess.run(["git", "show", f"{variant['rev']}:dvc.lock"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
    out = {"command": f"dvc exp run {' '.join(f'-S {s}' for s in args.sets)} (same test split)",
           "baseline": "the committed params.yaml",
           "metrics": metrics, "changed_at_3_decimals": changed,
           "max_abs_change": max(changes.values(), default=0.0),
           "outs_mb": {"default": outs_mb(yaml.safe_load((ROOT / "dvc.lock").read_text())),
                       args.name: outs_mb(yaml.safe_load(exp_lock))}}
    path = args.results / f"{args.name}_metrics.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{len(metrics) - len(changed)} of {len(metrics)} metrics unchanged at 3 decimals "
          f"(largest change {out['max_abs_change']:.2g}); changed: {', '.join(changed) or 'none'} -> {path}")


if __name__ == "__main__":
    main()
