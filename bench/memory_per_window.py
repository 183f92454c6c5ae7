"""Memory per window of the two steps that see every window: fm training and evaluate's statistics.

usage: python bench/memory_per_window.py [--train 100000 400000] [--test 200000 800000] [--bootstrap 40]
                                        [--out bench/results/memory_per_window.json]

Each measurement runs in a fresh interpreter and reports its peak RSS (getrusage):
* train: the train stage's path (`load_split` with the embeddings cache, `fit_scalers`, 2 fm epochs
  of `train_model`, val scored every epoch) on synthetic windows files and caches of N train and
  N/3 val windows (3 inputs x 194, as the default waveform view), written here;
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEY = {"input_scaling": "revin", "context_length": 512}   # the embeddings cache's model key
CONTEXT = ("map", "map_slope", "hr", "pp", "ppg_observed", "ecg_observed")
FULL_HOURS = 13123
# windows per signal hour at 4x the default demo (bench/RESULTS.md scale table: 659.2 h)
PER_HOUR = {"train": 244990 / 659.18, "val": 83461 / 659.18, "test": 160430 / 659.18}


def peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def write_split(folder: Path, name: str, n: int, seed: int) -> None:
    """A windows file of n synthetic windows (tiny signals; labels and context columns) and its cache of
    3 inputs x 194 per window, written 50,000 windows at a time (memory bounded at any n)."""
    from lib.core.schema import CHANNELS
    from lib.data import windows_h5
    from lib.data.embeddings import write_embeddings
    rng = np.random.default_rng(seed)
    loc = rng.normal(80, 12, n).astype(np.float32)
    columns = {"label_5min": np.int8, **{c: np.float32 for c in CONTEXT}}
    with windows_h5.WindowWriter(folder / f"{name}.h5", CHANNELS, 8, columns, {}) as writer:
        for start in range(0, n, 50_000):
            m, case = min(50_000, n - start), np.arange(start, min(n, start + 50_000)) // 500
            writer.append({"signals": np.zeros((m, 3, 8), np.float32), "caseid": case, "subjectid": case,
                           "label_5min": (loc[start:start + m] < 65).astype(np.int8), "map": loc[start:start + m],
                           "map_slope": rng.normal(size=m), "hr": rng.normal(70, 10, m), "pp": rng.normal(45, 8, m),
                           "ppg_observed": np.ones(m), "ecg_observed": np.ones(m)})

    def chunks():
        for start in range(0, n, 8192):
            x = rng.normal(size=(min(8192, n - start), 3, 194)).astype(np.float32)
            x[:, 0, 192] = loc[start:start + len(x)]
            yield start, x
    write_embeddings(folder / f"{name}_emb.h5", folder / f"{name}.h5", n, (3, 194), chunks(), KEY)


def train_step(n: int, folder: Path) -> dict:
    """Peak RSS of fm training on n train and n // 3 val synthetic windows."""
    import torch
    import yaml

    from lib.core.config import LoopConfig, ModelConfig
    from lib.data.dataset import load_split
    from lib.model.loop import train_model
    from lib.model.training import fit_scalers
    from lib.model.ttm import build_model

    for name, count, seed in (("train", n, 1), ("val", n // 3, 2)):
        write_split(folder, name, count, seed)
    files = [(folder / f"{name}.h5", folder / f"{name}_emb.h5") for name in ("train", "val")]
    before = peak_mb()   # writing the synthetic files is not the step
    from lib.core.memory import keep_heap_bounded
    keep_heap_bounded()   # as the train stage does
    weights = ROOT / yaml.safe_load((ROOT / "params.yaml").read_text())["model"]["weights_dir"]
    model = build_model(ModelConfig(   # the default waveform view, level-aware linear head (fm)
        weights_dir=str(weights), channels=("abp", "ppg", "ecg"), level_features=True, input_scaling="revin",
        context_length=512, unfreeze_last_n_blocks=0, lora=None, hidden_dims=(256, 128), dropout=0.2, task="clf"))
    train, val = (load_split(w, "clf", 5, model.channels, model.context, e, KEY, for_training=True) for w, e in files)
    fit_scalers(model, train)
    loop = LoopConfig(epochs=2, batch_size=256, grad_accum_steps=1, lr=1e-3, weight_decay=0.0, grad_clip=1.0,
                      schedule="cosine", warmup_frac=0.1, early_stopping_patience=0, monitor="val_auroc", amp="auto",
                      windows_per_epoch=0, seed=0)
    train_model(model, train, val, loop, torch.device("cpu"))
    return {"windows": n + n // 3, "peak_rss_mb": peak_mb(), "peak_rss_before_mb": before}


def test_windows(n_subjects: int, per_subject: int, seed: int):
    """Synthetic test windows: labels (30 % positive), ids 2.048 s apart, and 4 scorers' logits
    (a model, a weak baseline, two that rank backwards)."""
    from lib.eval import evaluation
    rng = np.random.default_rng(seed)
    subjects = np.repeat(np.arange(n_subjects), per_subject)
    ids = evaluation.TestWindows(caseid=subjects + 100, subjectid=subjects,
                                 t_end=np.tile(np.arange(per_subject) * 2.048 + 4.096, n_subjects), window_s=4.096)
    y = (rng.random(len(subjects)) < 0.3).astype(float)
    signal, noise = 2.5 * (y - 0.3), lambda sd: rng.normal(0, sd, len(y))
    logits = {"ttm": signal + noise(1), "map_lr": 0.5 * signal + noise(1.5), "backwards": -signal + noise(1),
              "val_backwards": -signal + noise(1)}
    return y, ids, logits, rng


def event_timing(y, rng) -> dict:
    """The windows' event timing columns: positives end 4-5 min before an onset; negatives are near an
    event, far from one, or in a recording without any; MAP around 80 mmHg."""
    n = len(y)
    near = rng.random(n) < 0.4
    onset = np.where(y == 1, rng.uniform(240, 300, n), np.where(near, rng.uniform(400, 1000, n), np.nan))
    distance = np.where(np.isfinite(onset), onset, np.where(rng.random(n) < 0.5, np.nan, rng.uniform(1200, 3000, n)))
    return {"next_onset_s": onset, "event_distance_s": distance, "map_now": rng.normal(82, 6, n)}


def evaluate_step(n: int, bootstrap: int) -> dict:
    """Peak RSS of evaluate_classifier on n synthetic test windows of 400 subjects, 8 scorers."""
    import matplotlib
    matplotlib.use("Agg")
    import pandas as pd

    from lib.core.memory import keep_heap_bounded, map_large_blocks, release_freed_memory
    from lib.core.params import Evaluate
    from lib.eval import evaluation
    from lib.eval.calibration import Calibration

    y_val, _, val, _ = test_windows(12, 40, seed=1)
    fitted = {name: Calibration.fit(z, y_val, "platt", "youden", 0.8, {"split": "val"}) for name, z in val.items()}
    y, ids, scored, rng = test_windows(400, n // 400, seed=2)
    logits = {("ttm" if (name, i) == ("ttm", 0) else f"{name}{i}"): z for i in range(2) for name, z in scored.items()}
    calibrations = {("ttm" if (name, i) == ("ttm", 0) else f"{name}{i}"): c for i in range(2)
                    for name, c in fitted.items()}
    ids.timing = event_timing(y, rng)
    clinical = pd.DataFrame({"caseid": np.unique(ids.caseid), "subjectid": np.unique(ids.subjectid),
                             "age": rng.integers(20, 90, 400), "sex": rng.choice(["M", "F"], 400),
                             "asa": rng.integers(1, 5, 400)})
    before = peak_mb()
    keep_heap_bounded()   # as the evaluate stage does at its start and after inference:
    release_freed_memory()   # as the evaluate stage does after inference
    map_large_blocks()
    evaluation.evaluate_classifier(y, logits, calibrations, ids, Evaluate(bootstrap=bootstrap), clinical,
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
