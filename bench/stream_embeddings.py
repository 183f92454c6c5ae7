"""fm training on cached embeddings held in memory vs read on demand (CachedEmbeddings): peak RSS
and epoch time on a synthetic cache (not a test; the files live in a temporary folder, deleted after).

    python bench/stream_embeddings.py [--windows 200000] [--val 20000] [--epochs 2]

Each mode runs in its own process (its ru_maxrss is its own): `memory` loads the train and val
embeddings into arrays, `lazy` keeps load_split's CachedEmbeddings views. The cache holds every
input (6 × 194 per window, the waveform and trend views); the model uses abp, ppg, ecg.
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEY = {"input_scaling": "revin", "context_length": 512}
CONTEXT = ("map", "map_slope", "hr", "pp", "ppg_observed", "ecg_observed")


def write_split(folder: Path, name: str, n: int, seed: int, inputs: int = 6) -> None:
    """A windows file of n windows (tiny signals; labels and context columns) and its cache of
    `inputs` series per window, written 50,000 windows at a time (memory bounded at any n)."""
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
            x = rng.normal(size=(min(8192, n - start), inputs, 194)).astype(np.float32)
            x[:, 0, 192] = loc[start:start + len(x)]
            yield start, x
    write_embeddings(folder / f"{name}_emb.h5", folder / f"{name}.h5", n, (inputs, 194), chunks(), KEY)


def worker(mode: str, folder: Path, epochs: int) -> dict:
    import torch

    from lib.core.config import LoopConfig, ModelConfig
    from lib.data.dataset import load_split
    from lib.model.loop import train_model
    from lib.model.training import fit_scalers
    from lib.model.ttm import build_model
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(ModelConfig(weights_dir=str(ROOT / "models" / "ttm-r2-512-96"), channels=("abp", "ppg", "ecg"),
                                    level_features=True, input_scaling="revin", context_length=512,
                                    unfreeze_last_n_blocks=0, lora=None, hidden_dims=(256, 128), dropout=0.2,
                                    task="clf"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    splits = [load_split(folder / f"{name}.h5", "clf", 5, model.channels, model.context, folder / f"{name}_emb.h5",
                         KEY, for_training=True) for name in ("train", "val")]
    if mode == "memory":
        for split in splits:
            if hasattr(split.embeddings, "load"):   # a CachedEmbeddings view (older code: already an array)
                split.embeddings = split.embeddings.load()
    loaded = time.perf_counter()
    fit_scalers(model, splits[0])
    scaled = time.perf_counter()
    stamps = []
    loop = LoopConfig(epochs=epochs, batch_size=64, grad_accum_steps=1, lr=1e-3, weight_decay=0.01, grad_clip=1.0,
                      schedule="cosine", warmup_frac=0.1, early_stopping_patience=0, monitor="val_auroc",
                      amp="auto", windows_per_epoch=0, seed=0)
    summary = train_model(model, *splits, loop, torch.device("cpu"),
                          log_epoch=lambda record: stamps.append(time.perf_counter()))
    epoch_s = np.diff([scaled, *stamps])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "train_windows": len(splits[0]), "val_windows": len(splits[1]),
            "rss_after_model_mb": round(before), "peak_rss_mb": round(peak),
            "load_s": round(loaded - started, 2), "fit_scalers_s": round(scaled - loaded, 2),
            "epoch_s": [round(float(s), 2) for s in epoch_s], "best_val_auroc": summary["best_val_auroc"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=200_000)
    parser.add_argument("--val", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["memory", "lazy"])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]), args.epochs)))
        return
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        folder = Path(tmp)
        write_split(folder, "train", args.windows, 0)
        write_split(folder, "val", args.val, 1)
        mb = sum(p.stat().st_size for p in folder.glob("*_emb.h5")) / 2**20
        print(f"caches: {mb:,.0f} MB on disk", flush=True)
        for mode in args.modes:
            out = subprocess.run([sys.executable, __file__, "--epochs", str(args.epochs), "--worker", mode, tmp],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
