"""Stage embed: the frozen TTM backbone's embeddings of every train and val window, computed once.

The backbone is frozen in fm mode, so its per-window output never changes between epochs or
between experiments that only change the head or training knobs: train reads this cache instead
of running TTM again. ft mode uses the train split's embeddings to fit the head's input scaling.
The test split is not embedded here: evaluate is its only reader. The inputs of `model.views` are
embedded (the waveform view: all three channels, so that any `model.input_channels` trains from
the same cache; the trend view: the trend series) and named in the cache's `inputs` attribute.
`embed.dtype` stores them as float32 or float16 (half the disk; read back as float32).

usage: python stages/embed.py <windows_dir> <embeddings_dir>
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
import time
from pathlib import Path
from typing import NamedTuple

from lib.core.atomic import atomic_dir
from lib.core.config import EmbeddingConfig
from lib.core.errors import run_stage
from lib.core.memory import keep_heap_bounded
from lib.core.params import Embed, Inference, Train, read_params
from lib.data import windows_h5
from lib.data.embeddings import write_embeddings
from lib.model.inference import embed_windows, pick_device
from lib.model.ttm import embedding_model


class Config(NamedTuple):
    embedding: EmbeddingConfig
    inference: Inference
    store: Embed
    device: str


def config(params) -> Config:
    return Config(EmbeddingConfig.from_params(params), Inference.from_params(params),
                  Embed.from_params(params), Train.pick(params, "device"))


def main(argv):
    keep_heap_bounded()   # freed memory goes back to the OS while the stage streams (lib/core/memory.py)
    windows_dir, out_dir = Path(argv[0]), argv[1]
    cfg = config(read_params())
    dev = pick_device(cfg.device)
    model = embedding_model(cfg.embedding).to(dev).eval().freeze_for_inference(cfg.inference.engine, cfg.inference.bf16)
    model.set_input_stats(windows_h5.attrs(windows_dir / "train.h5")["normalisation"])
    attrs = {**cfg.embedding.cache_key(), "weights_dir": cfg.embedding.weights_dir, "inputs": ",".join(model.channels)}
    with atomic_dir(out_dir) as tmp:
        for split in ["train", "val"]:
            path = windows_dir / f"{split}.h5"
            n, started = windows_h5.count(path), time.perf_counter()
            write_embeddings(tmp / f"{split}.h5", path, n, (len(model.channels), model.d_model + 2),
                             embed_windows(model, path, dev), attrs, cfg.store.dtype)
            print(f"embed {split}: {n} windows, {n / max(time.perf_counter() - started, 1e-9):,.0f} windows/s")


if __name__ == "__main__":
    run_stage(main)
