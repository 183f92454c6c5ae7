"""Memory per window of the two steps that see every window: fm training and evaluate's statistics.

usage: python bench/memory_per_window.py [--train 100000 400000] [--test 200000 800000] [--bootstrap 40]
                                        [--out bench/results/memory_per_window.json]

Each measurement runs in a fresh interpreter and reports its peak RSS (getrusage):
* train: the train stage's path (`load_split` with the embeddings cache, `fit_scalers`, 2 fm epochs
  of `train_model`, val scored every epoch) on synthetic windows files and caches of N train and
  N/3 val windows (3 inputs x 194, as the default waveform view);
* evaluate: `evaluate_classifier` (window, voted, backward and subgroup levels, subject-bootstrap
  CIs) on N synthetic test windows of 400 subjects scored by 8 scorers (the default run has 6),
  with large blocks mmapped as the evaluate stage has them after inference.
The growth between the two sizes, in bytes per window, is what a larger cohort adds: the fixed part
(libraries, the bootstrap's blocks, one batch) does not grow. The JSON also projects each step's peak
to the full VitalDB selection's window counts (per signal hour as in the 4x scale run).
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL_HOURS = 13123
# windows per signal hour at 4x the default demo (bench/RESULTS.md scale table: 659.2 h)
PER_HOUR = {"train": 244990 / 659.18, "val": 83461 / 659.18, "test": 160430 / 659.18}


def peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def train_step(n: int, folder: Path) -> dict:
    """Peak RSS of fm training on n train and n // 3 val synthetic windows."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from model_helpers import model_config
    from stream_embeddings import KEY, write_split  # bench/: the synthetic windows files and caches

    from lib.core.config import LoopConfig
    from lib.data.dataset import load_split
    from lib.model.loop import train_model
    from lib.model.training import fit_scalers
    from lib.model.ttm import build_model

    for name, count, seed in (("train", n, 1), ("val", n // 3, 2)):
        write_split(folder, name, count, seed, inputs=3)
    files = [(folder / f"{name}.h5", folder / f"{name}_emb.h5") for name in ("train", "val")]
    before = peak_mb()   # writing the synthetic files is not the step
    model = build_model(model_config())   # the default waveform view, level-aware linear head (fm)
    train, val = (load_split(w, "clf", 5, model.channels, model.context, e, KEY, for_training=True) for w, e in files)
    fit_scalers(model, train)
    loop = LoopConfig(epochs=2, batch_size=256, grad_accum_steps=1, lr=1e-3, weight_decay=0.0, grad_clip=1.0,
                      schedule="cosine", warmup_frac=0.1, early_stopping_patience=0, monitor="val_auroc", amp="auto",
                      windows_per_epoch=0, seed=0)
    train_model(model, train, val, loop, torch.device("cpu"))
    return {"windows": n + n // 3, "peak_rss_mb": peak_mb(), "peak_rss_before_mb": before}


def evaluate_step(n: int, bootstrap: int) -> dict:
    """Peak RSS of evaluate_classifier on n synthetic test windows (tests/test_evaluation.py's scorers)."""
    import matplotlib
    matplotlib.use("Agg")
    sys.path.insert(0, str(ROOT / "tests"))
    import numpy as np
    import pandas as pd
    from test_evaluation import SCORERS, event_timing, scored_split, windows

    from lib.core.config import EvaluateConfig
    from lib.core.memory import map_large_blocks, release_freed_memory
    from lib.eval import evaluation
    from lib.eval.calibration import Calibration

    y_val, _, rng = windows(12, 40, seed=1)
    val = scored_split(None, y_val, rng)
    fitted = {name: Calibration.fit(val[name], y_val, "platt", "youden", 0.8, {"split": "val"}) for name in SCORERS}
    y, ids, rng = windows(400, n // 400, seed=2)
    scored = scored_split(ids, y, rng)
    logits = {("ttm" if (name, i) == ("ttm", 0) else f"{name}{i}"): z for i in range(2) for name, z in scored.items()}
    calibrations = {("ttm" if (name, i) == ("ttm", 0) else f"{name}{i}"): c for i in range(2)
                    for name, c in fitted.items()}
    ids.timing = event_timing(y, rng)
    clinical = pd.DataFrame({"caseid": np.unique(ids.caseid), "subjectid": np.unique(ids.subjectid),
                             "age": rng.integers(20, 90, 400), "sex": rng.choice(["M", "F"], 400),
                             "asa": rng.integers(1, 5, 400)})
    before = peak_mb()
    release_freed_memory()   # as the evaluate stage does after inference
    map_large_blocks()
    evaluation.evaluate_classifier(y, logits, calibrations, ids, EvaluateConfig(bootstrap=bootstrap), clinical,
                                   horizon_min=5.0)
    return {"windows": len(y), "scorers": len(logits), "peak_rss_mb": peak_mb(), "peak_rss_before_mb": before}


def measure(step: str, n: int, bootstrap: int) -> dict:
    """One measurement in a fresh interpreter (peak RSS is per process)."""
    code = (f"import json, sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'bench')!r}]; "
            "import memory_per_window as m, tempfile, pathlib; "
            f"print(json.dumps(m.train_step({n}, pathlib.Path(tempfile.mkdtemp())) if {step!r} == 'train' "
            f"else m.evaluate_step({n}, {bootstrap})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(step, result, flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, nargs=2, default=[100_000, 400_000])
    parser.add_argument("--test", type=int, nargs=2, default=[200_000, 800_000])
    parser.add_argument("--bootstrap", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory_per_window.json")
    args = parser.parse_args(argv)
    full = {split: round(rate * FULL_HOURS) for split, rate in PER_HOUR.items()}
    out = {"full_vitaldb_windows": full, "steps": {}}
    with tempfile.TemporaryDirectory():
        for step, sizes, windows_at_full in (("train", args.train, full["train"] + full["val"]),
                                             ("evaluate", args.test, full["test"])):
            small, large = (measure(step, n, args.bootstrap) for n in sizes)
            per_window = (large["peak_rss_mb"] - small["peak_rss_mb"]) * 2**20 / (large["windows"] - small["windows"])
            out["steps"][step] = {
                "runs": [small, large], "bytes_per_window": round(per_window),
                "projected_full_mb": round(large["peak_rss_mb"] + max(per_window, 0)
                                           * (windows_at_full - large["windows"]) / 2**20),
                "windows_at_full": windows_at_full}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for step, s in out["steps"].items():
        print(f"{step}: {s['bytes_per_window']} bytes per window; at {s['windows_at_full']:,} windows "
              f"(full VitalDB) ≈ {s['projected_full_mb']:,} MB peak")


if __name__ == "__main__":
    main()
