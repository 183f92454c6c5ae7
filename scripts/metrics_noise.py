"""`dvc metrics diff` as Markdown, each change labelled against the measured run-to-run noise.

usage: dvc metrics diff BASE --json | python scripts/metrics_noise.py [--results bench/results]

The noise of a metric is the largest change a forced rerun of the same commit produced (files of
kind "rerun-noise" written by `python bench/variant_metrics.py NAME --noise --env ...`; their runs
and what they found are in docs/operations.md, "Bit-identical reruns"). A change no larger than
that is labelled "within noise"; a metric no rerun moved is labelled by its change alone ("changed"),
since reruns leave it bit-identical. Used by scripts/pr_report.sh (`make pr-report`).
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


SECTIONS = {"metrics": "metrics/evaluate/metrics.json", "external_metrics": "metrics/external/metrics.json"}


def measured_noise(results: Path) -> tuple:
    """({(metrics file, metric): largest |change| over the reruns}, [the reruns' commands])."""
    noise, runs = {}, []
    for path in sorted(results.glob("*_metrics.json")):
        found = json.loads(path.read_text())
        if found.get("kind") != "rerun-noise":
            continue
        runs.append(found["command"])
        for section, metrics_file in SECTIONS.items():
            for name, values in found.get(section, {}).items():
                a, b = values.values()
                change = abs(b - a) if a is not None and b is not None else 0.0
                noise[metrics_file, name] = max(noise.get((metrics_file, name), 0.0), change)
    return noise, runs


def label(change, noise: float | None) -> str:
    if change is None:
        return "new or removed"
    if noise is None:
        return "changed (no rerun measured it)"
    if abs(change) <= noise:
        return f"within noise (reruns moved it up to {cell(noise)})"
    return "changed (reruns leave it bit-identical)" if noise == 0 else f"beyond noise ({cell(noise)})"


def cell(value) -> str:
    """4 decimals; a change too small for them in scientific notation, so it does not read as 0."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1e}" if 0 < abs(value) < 5e-5 else f"{value:.4f}"
    return str(value)


def table(diff: dict, noise: dict) -> str:
    lines = ["| metrics file | metric | base | this branch | change | noise |", "|---|---|---|---|---|---|"]
    for path, metrics in diff.items():
        for name, values in sorted(metrics.items()):
            old, new, change = values.get("old"), values.get("new"), values.get("diff")
            lines.append(f"| {path} | {name} | {cell(old)} | {cell(new)} | {cell(change)} "
                         f"| {label(change, noise.get((path, name)))} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    diff = json.load(sys.stdin)
    if not any(diff.values()):
        print("No metrics changed.")
        return
    noise, runs = measured_noise(args.results)
    print(table(diff, noise))
    if runs:
        print(f"\nNoise: the largest change of each metric over {len(runs)} forced rerun(s) of one commit "
              "under other numeric kernels (docs/operations.md, \"Bit-identical reruns\").")


if __name__ == "__main__":
    main()
