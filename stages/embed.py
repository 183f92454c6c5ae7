"""Stage embed: the frozen TTM backbone's embeddings of every train and val window, computed once.

The backbone is frozen in fm mode, so its per-window output never changes between epochs or
between experiments that only change the head or training knobs: train reads this cache instead
of running TTM again. ft mode uses the train split's embeddings to fit the head's input scaling.
The test split is not embedded here: evaluate is its only reader.

usage: python stages/embed.py <windows_dir> <embeddings_dir>
"""
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from lib.model import ttm
from lib.core import config as params
from lib.data import windows_h5
from lib.core.atomic import atomic_dir
from lib.core.errors import run_stage
from lib.model.training import INFERENCE_BATCH, pick_device


def main(argv):
    windows_dir, out_dir = Path(argv[0]), argv[1]
    p = params.load("model", "train")
    settings = ttm.embedding_settings(p["model"])
    device = pick_device(p["train"]["device"])
    model = ttm.build_model(p["model"]["weights_dir"], ttm.CHANNELS, **settings).to(device).eval().freeze_for_inference()
    model.set_input_stats(windows_h5.attrs(windows_dir / "train.h5")["normalisation"])
    shape = (len(ttm.CHANNELS), model.d_model + 2)
    with atomic_dir(out_dir) as tmp:
        for split in ["train", "val"]:
            path = windows_dir / f"{split}.h5"
            n = windows_h5.count(path)
            started = time.perf_counter()

            @torch.no_grad()
            def chunks():
                for start, signals in tqdm(windows_h5.iter_signal_chunks(path, INFERENCE_BATCH),
                                           total=math.ceil(n / INFERENCE_BATCH), desc=f"embed {split}",
                                           unit="batch", disable=None):
                    yield start, model.embed(torch.from_numpy(signals).to(device)).float().cpu().numpy()

            windows_h5.write_embeddings(tmp / f"{split}.h5", path, n, shape, chunks(),
                                        {**settings, "weights_dir": str(p["model"]["weights_dir"])})
            print(f"embed {split}: {n} windows, {n / max(time.perf_counter() - started, 1e-9):,.0f} windows/s")


if __name__ == "__main__":
    run_stage(main)
