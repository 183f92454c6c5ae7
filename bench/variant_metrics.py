"""A params variant's reported metrics against the committed default, on the same test split.

usage: python bench/variant_metrics.py NAME -S KEY=VALUE [-S KEY=VALUE ...] [--results bench/results]
       python bench/variant_metrics.py NAME --noise --env KEY=VALUE [...]   (the same commit, rerun)

Runs `dvc exp run --temp -n NAME -S ...` from this checkout (the workspace is left as it is), then
compares every headline metric of the experiment (metrics/evaluate/metrics.json, as `dvc exp show`
lists them) with the committed workspace's, and the size of each stage's outputs (the two dvc.lock
files). Writes results/NAME_metrics.json: both values per metric, the metrics that change at
3 decimals, the largest change, and the outputs' sizes. bench/report.py puts it in RESULTS.md.
Examples: float16 storage (`-S embed.dtype=float16 -S windows.dtype=float16`), the fast inference
setting (`-S inference.engine=inductor -S inference.bf16=true`).

`--noise`: no params change; every stage is rerun (`--force`) with the environment of `--env`, e.g.
other numeric kernels, as another machine would pick them (lib/core/kernels.py). The file then
records run-to-run noise, and `make pr-report` (scripts/metrics_noise.py) marks a metric change
within the largest such noise as noise. It also lists the outputs whose bytes changed.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
METRICS_FILE = "metrics/evaluate/metrics.json"


METRICS_FILES = ("metrics/evaluate/metrics.json", "metrics/external/metrics.json")


def flatten(metrics: dict) -> dict:
    """{"ttm": {"auroc": 0.9}} -> {"ttm.auroc": 0.9}: the numeric headline values, named as dvc metrics names them."""
    return {f"{group}.{key}": value for group, values in metrics.items() if isinstance(values, dict)
            for key, value in values.items() if isinstance(value, int | float) and not isinstance(value, bool)}


def git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def experiment_rev(name: str) -> str | None:
    """The commit of the experiment named `name` (refs/exps/.../<name>), None if there is none."""
    refs = [line.split() for line in git("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").splitlines()]
    revs = [rev for rev, ref in refs if ref.rsplit("/", 1)[-1] == name]
    return revs[0] if revs else None


def experiment_file(rev: str, path: str) -> bytes:
    """An output of an experiment: from its commit (cache: false) or from the DVC cache by dvc.lock's md5."""
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True)
    if shown.returncode == 0:
        return shown.stdout
    lock = yaml.safe_load(git("show", f"{rev}:dvc.lock"))
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == path:
                md5 = out["md5"]
                return (ROOT / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_bytes()
    raise SystemExit(f"{path} is not an output of experiment {rev[:7]}")


def outs_mb(lock: dict) -> dict:
    """{stage: MB of its outputs} from a dvc.lock."""
    return {name: round(sum(o.get("size", 0) for o in stage.get("outs", [])) / 2**20, 1)
            for name, stage in lock["stages"].items() if stage.get("outs")}


def changed_outputs(ours: dict, theirs: dict) -> list:
    """The outputs (stage: path) whose hash differs between two dvc.lock files."""
    def hashes(lock):
        return {f"{name}: {o['path']}": o.get("md5") for name, stage in lock["stages"].items()
                for o in stage.get("outs", [])}
    a, b = hashes(ours), hashes(theirs)
    return sorted(k for k in a if a[k] != b.get(k))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("-S", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment of the run")
    parser.add_argument("--noise", action="store_true", help="a forced rerun of the same commit: run-to-run noise")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--compare-only", action="store_true", help="the experiment NAME exists: compare only")
    args = parser.parse_args(argv)
    if not args.sets and not args.noise:
        parser.error("give -S KEY=VALUE (a variant) or --noise (a rerun)")
    command = ["dvc", "exp", "run", "--temp", "-n", args.name, *(x for s in args.sets for x in ("-S", s)),
               *(["--force"] if args.noise else [])]
    env = {**os.environ, **dict(e.split("=", 1) for e in args.env)}
    if not args.compare_only:
        if experiment_rev(args.name):
            subprocess.run([sys.executable, "-m", "dvc", "exp", "remove", args.name], cwd=ROOT, check=True)   # rerun
        print(" ".join([*args.env, *command]), flush=True)
        subprocess.run([sys.executable, "-m", *command], cwd=ROOT, check=True, env=env)
    rev = experiment_rev(args.name)
    if rev is None:
        raise SystemExit(f"variant_metrics: no experiment named {args.name}")
    both = {}
    for path in METRICS_FILES:   # the workspace's (the committed run) against the experiment's
        ours, theirs = flatten(json.loads((ROOT / path).read_text())), flatten(json.loads(experiment_file(rev, path)))
        both[path] = {k: {"default": ours[k], args.name: theirs.get(k)} for k in sorted(ours)}
    metrics = both[METRICS_FILE]
    changes = {k: abs(v[args.name] - v["default"]) for k, v in metrics.items() if v[args.name] is not None}
    changed = sorted(k for k, v in metrics.items()
                     if v[args.name] is None or round(v[args.name], 3) != round(v["default"], 3))
    exp_lock = git("show", f"{rev}:dvc.lock")
    ours_lock, their_lock = yaml.safe_load((ROOT / "dvc.lock").read_text()), yaml.safe_load(exp_lock)
    out = {"command": " ".join([*args.env, "dvc exp run", *(f"-S {s}" for s in args.sets),
                                *(["--force"] if args.noise else [])]) + " (same test split)",
           "kind": "rerun-noise" if args.noise else "variant",
           "baseline": "the committed params.yaml",
           "outs_changed": changed_outputs(ours_lock, their_lock),
           "metrics": metrics, "external_metrics": both["metrics/external/metrics.json"],
           "changed_at_3_decimals": changed,
           "max_abs_change": max(changes.values(), default=0.0),
           "outs_mb": {"default": outs_mb(ours_lock), args.name: outs_mb(their_lock)}}
    path = args.results / f"{args.name}_metrics.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{len(metrics) - len(changed)} of {len(metrics)} metrics unchanged at 3 decimals "
          f"(largest change {out['max_abs_change']:.2g}); changed: {', '.join(changed) or 'none'} -> {path}")


if __name__ == "__main__":
    main()
