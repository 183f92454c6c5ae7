"""The demo simulator against published figures (fast path), as tests/test_demo_calibration.py checks them.

For each seed: 300 simulated cases (real VitalDB case rows, 60-180 min, hypotension cases chosen with
demo.ioh_fraction from params.yaml), windows ending every 20 s labelled by the forward rule, logistic
regression on the current MAP fitted on half of the subjects and scored on the other half. Writes
bench/results/demo_calibration.json and prints a markdown table (for bench/RESULTS.md).

usage: python bench/demo_calibration.py [--seeds 1 2] [--cases 300] [--out bench/results/demo_calibration.json]
       [--results-md bench/RESULTS.md]
"""
import argparse
import json
import time
from pathlib import Path

import yaml

from lib.core.config import DemoConfig
from lib.data import demo
from lib.data.cohort import DEMO_CRITERIA, load_clinical
from lib.data.vitaldb_source import select_cases

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Demo simulator against published figures"

PUBLISHED = {"5": 0.932, "10": 0.929, "15": 0.932}   # MAP alone, forward analysis (Anesthesiology 2024;141:443)


def table(results: list) -> str:
    lines = ["| seed | cases | AUROC MAP 5 / 10 / 15 min | coef 5 / 10 / 15 | positive rate 5 / 10 / 15 | "
             "cases with IOH | first event post-induction |", "|---|---|---|---|---|---|---|"]
    for r in results:
        h = r["horizons"]

        def cells(key, fmt=".3f", h=h):
            return " / ".join(format(v[key], fmt) for v in h.values())
        lines.append(f"| {r['seed']} | {r['cases']} | {cells('auroc')} | {cells('coef')} | {cells('positive_rate')} | "
                     f"{r['event_share']:.0%} | {r['post_induction_share']:.0%} |")
    lines.append(f"| published | 2,022 | {' / '.join(f'{v:.3f}' for v in PUBLISHED.values())} | < 0 | | 30-70 % "
                 "(see the test) | >= 20 % |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "demo_calibration.json")
    parser.add_argument("--results-md", type=Path, default=ROOT / "bench" / "RESULTS.md",
                        help="whose section to replace (bench/run_all.py rewrites the whole file anyway)")
    args = parser.parse_args()
    cfg = DemoConfig.from_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    rows = select_cases(load_clinical(ROOT / "data" / "vitaldb" / "clinical_information.csv"), DEMO_CRITERIA)[0]
    results = []
    for seed in args.seeds:
        start = time.perf_counter()
        figures = demo.calibration_figures(rows, args.cases, seed, cfg.ioh_fraction)
        figures["seconds"] = round(time.perf_counter() - start, 2)
        results.append(figures)
    markdown = table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"ioh_fraction": cfg.ioh_fraction, "published_map_auroc": PUBLISHED,
                                    "runs": results, "markdown": markdown}, indent=2) + "\n")
    print(markdown)
    write_section(args.results_md, markdown)


def write_section(path: Path, markdown: str) -> None:
    """Replace (or append) this benchmark's section of bench/RESULTS.md; run_all.py keeps it."""
    text = path.read_text() if path.exists() else ""
    body = (f"{SECTION}\n\n`python bench/demo_calibration.py` (fast path: 1-Hz MAP only; the same check as "
            f"tests/test_demo_calibration.py):\n\n{markdown}\n")
    head, found, tail = text.partition(SECTION)
    rest = tail[tail.find("\n## "):] if found and "\n## " in tail else ""
    path.write_text((head.rstrip() + "\n\n" if head.strip() else "") + body + rest)


if __name__ == "__main__":
    main()
