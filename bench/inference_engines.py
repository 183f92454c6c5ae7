"""Inference engines for the frozen TTM backbone on CPU: windows/s of the embed and predict paths.

For each engine of `freeze_for_inference` (params.yaml `inference`: eager, TorchScript trace +
freeze, torch.compile/Inductor, ONNX Runtime), in float32 and under bfloat16 autocast
(`<engine>_bf16`, inference.bf16; `bf16` alone is the eager model), on `--threads` threads: the
backbone alone on real windows at backbone batches 64/256/1024; the embed stage's path
(`embed_windows`: HDF5 read + fit_context + backbone, 3 waveform channels = model.views
[waveform]) with and without the reader thread; and evaluate's `predict` of the trained
checkpoint. Rounds are interleaved across engines and the best round is kept (the CPU is
shared). Also: the read-only time of the split (what prefetching can hide), the max |diff| of
each engine's embeddings/logits vs eager, and the val AUROC from each engine's logits.

usage: python bench/inference_engines.py [--windows val.h5] [--checkpoint model.pt] [--n 2048] [--rounds 3]
       [--engines eager torchscript inductor ...]
"""
import argparse
import contextlib
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.core.config import EmbeddingConfig  # noqa: E402
from lib.data import windows_h5  # noqa: E402
from lib.data.dataset import checkpoint_split, iter_inputs, subset  # noqa: E402
from lib.model import inference, ttm  # noqa: E402

ENGINES = ("eager", "torchscript", "inductor", "onnxruntime", "bf16", "torchscript_bf16", "inductor_bf16")
BATCHES = (64, 256, 1024)
GFLOP_PER_WINDOW, ROOFLINE_GFLOPS = 0.0367, 151.3   # bench/RESULTS.md: 3 x 512 window, 2048^2 fp32 matmul


def frozen(model, engine):
    """(model frozen for `engine`, context manager to run it in); `<engine>_bf16` is params.yaml's
    inference.engine=<engine> with inference.bf16=true."""
    base, bf16 = engine.removesuffix("_bf16"), engine.endswith("_bf16")
    return model.freeze_for_inference("eager" if base == "bf16" else base, bf16=bf16 or base == "bf16"), \
        contextlib.nullcontext


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def embed_all(model, path, ctx, overlap=True):
    prefetch = inference.prefetch
    if not overlap:
        inference.prefetch = lambda chunks, depth=2: chunks
    try:
        with ctx():
            return np.concatenate([e for _, e in inference.embed_windows(model, path, "cpu")])
    finally:
        inference.prefetch = prefetch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", default="data/windows/val.h5")
    ap.add_argument("--checkpoint", default="models/model.pt")
    ap.add_argument("--n", type=int, default=4096, help="windows per timed pass")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=ENGINES)
    ap.add_argument("--out", default=str(ROOT / "bench/results/inference_engines.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    path = Path(args.windows)
    n = min(args.n, windows_h5.count(path))
    # the embed path on the first n windows only: a file holding just those (same chunks as the windows file)
    cut = Path("/tmp") / f"inference_engines_{n}.h5"
    import h5py
    with h5py.File(path, "r") as src, h5py.File(cut, "w") as dst:
        for name in ("signals", "trend"):
            d = src[name]
            dst.create_dataset(name, data=d[:n], chunks=d.chunks, compression=d.compression)
        for name in src:
            if name not in ("signals", "trend"):
                dst.create_dataset(name, data=src[name][:n])
        dst.attrs.update(src.attrs)
    _, read_s = timed(list, iter_inputs(cut, ttm.CHANNELS, inference.INFERENCE_BATCH))
    ckpt_model, ckpt = ttm.load_checkpoint(args.checkpoint)
    split = checkpoint_split(ckpt_model, ckpt, path)
    test = subset(split, np.arange(min(n, len(split))))
    emb_model = ttm.embedding_model(EmbeddingConfig(str(ROOT / "models/ttm-r2-512-96"), "revin", 512, ("waveform",)))
    windows = torch.from_numpy(np.concatenate([c for _, c in iter_inputs(cut, emb_model.channels, n)]))
    x, observed = ttm.fit_context(windows.transpose(1, 2), 512)

    rates, ref, diffs, auroc = {}, {}, {}, {}
    best = lambda key, value: rates.__setitem__(key, max(rates.get(key, 0), round(value)))  # noqa: E731
    for r in range(args.rounds):
        for engine in args.engines:
            m, ctx = frozen(emb_model, engine)
            with torch.no_grad(), ctx():
                for b in BATCHES:
                    m._backbone_outputs(x[:b], observed[:b])   # warm-up
                    _, s = timed(lambda b=b, m=m: [m._backbone_outputs(x[i:i + b], observed[i:i + b])
                                                   for i in range(0, n, b)])
                    best(f"{engine} backbone batch {b}", n / s)
            emb, s = timed(embed_all, m, cut, ctx, overlap=False)
            best(f"{engine} embed", n / s)
            emb, s = timed(embed_all, m, cut, ctx)
            best(f"{engine} embed + prefetch", n / s)
            p, _ = frozen(ckpt_model, engine)
            with ctx():
                _, s = timed(inference.predict, p, test, "cpu")
                logits = inference.predict(p, split, "cpu") if r == 0 else None   # the whole val split
            best(f"{engine} predict + prefetch", len(test) / s)
            if r == 0:
                ref.setdefault("emb", emb)
                ref.setdefault("logits", logits)
                diffs[engine] = {"embeddings": float(np.abs(emb - ref["emb"]).max()),
                                 "logits": float(np.abs(logits - ref["logits"]).max())}
                auroc[engine] = round(float(roc_auc_score(split.targets, logits)), 4)
            print(f"round {r} {engine}: {json.dumps({k: v for k, v in rates.items() if k.startswith(engine)})}",
                  file=sys.stderr, flush=True)
    out = {"threads": args.threads, "windows": n, "predict_windows": len(test), "auroc_windows": len(split),
           "rounds": args.rounds, "checkpoint_views": list(ckpt_model.channels),
           "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "read_s_per_1000_windows": round(1000 * read_s / n, 4), "windows_per_s": rates,
           "max_abs_diff_vs_eager": diffs, "val_auroc": auroc,
           "roofline_share": {k: round(v * GFLOP_PER_WINDOW / ROOFLINE_GFLOPS, 3) for k, v in rates.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
