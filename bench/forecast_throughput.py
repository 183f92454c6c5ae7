"""Benchmark the zero-shot TTM trend forecaster (lib/model/forecast.py): windows per second on CPU.

fp32, `torch.set_num_threads(threads)`, batch sizes 256 / 1024 / 4096, for three ways of running the
same weights: eager, TorchScript trace + freeze (`freeze_forecaster`), and `torch.compile` (where it
works on this machine). Inputs are random-walk MAP trend rows (512 bins, the first third unobserved
in a third of the rows), forecast 90 bins (15 min at 10-s bins). Each cell is the best of `--repeats`
timed passes over `--windows` rows after one warm-up pass; prints a markdown table (and writes JSON
with --out).

usage: python bench/forecast_throughput.py [--threads 2] [--windows 8192] [--repeats 3]
                                           [--no-compile] [--out bench/results/forecast_throughput.json]
"""
import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.model.forecast import forecast, freeze_forecaster, load_forecaster, steps_for  # noqa: E402

BATCHES = (256, 1024, 4096)
TARGET = 2000  # windows/s


class _Compiled:
    """forecast()'s model protocol for a torch.compile'd module: model(past_values=, past_observed_mask=)."""

    def __init__(self, model):
        self.config = model.config
        self.fn = torch.compile(model, dynamic=True)

    def __call__(self, past_values, past_observed_mask):
        return self.fn(past_values=past_values, past_observed_mask=past_observed_mask)


def rows(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = (80 + np.cumsum(rng.normal(0, 0.4, (n, 512)), axis=1)).astype(np.float32)
    observed = np.ones_like(x, dtype=bool)
    observed[::3, :170] = False
    x[~observed] = 0.0
    return x, observed


def best_rate(model, x, observed, batch: int, repeats: int) -> float:
    forecast(model, x[:batch], observed[:batch], batch)          # warm-up (compile, allocator)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        forecast(model, x, observed, batch)
        best = min(best, time.perf_counter() - t0)
    return len(x) / best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    model = load_forecaster(ROOT / "models" / "ttm-r2-512-96", steps_for(15, 10))
    x, observed = rows(args.windows)
    variants = {"eager": model, "torchscript (trace + freeze)": freeze_forecaster(model)}
    if not args.no_compile:
        variants["torch.compile"] = _Compiled(model)
    reference = forecast(model, x[:256], observed[:256], 256)
    results, notes = {}, {}
    for name, runner in variants.items():
        try:
            diff = float(np.nanmax(np.abs(forecast(runner, x[:256], observed[:256], 256) - reference)))
            results[name] = {str(b): round(best_rate(runner, x, observed, b, args.repeats)) for b in BATCHES}
            notes[name] = f"max |diff| vs eager {diff:.1e} mmHg"
        except Exception as err:  # torch.compile needs a C++ toolchain; report, do not fail the benchmark
            notes[name] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
        print(f"{name}: {results.get(name)} ({notes[name]})", file=sys.stderr, flush=True)

    lines = [f"Zero-shot TTM r2 512-96 forecaster, fp32, {args.threads} threads, {args.windows} windows "
             f"(90-step forecasts), best of {args.repeats}; windows/s (target >= {TARGET:,}):", "",
             "| variant | " + " | ".join(f"batch {b}" for b in BATCHES) + " | notes |",
             "|---|" + "---:|" * len(BATCHES) + "---|"]
    for name in variants:
        rates = results.get(name)
        cells = [f"{rates[str(b)]:,}" if rates else "–" for b in BATCHES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {notes[name]} |")
    print("\n".join(lines))
    if not args.out:
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "windows": args.windows, "repeats": args.repeats,
                               "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                               "windows_per_s": results, "notes": notes, "target": TARGET}, indent=2) + "\n")


if __name__ == "__main__":
    main()
