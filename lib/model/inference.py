"""Running a model: the device, mixed precision, train/eval mode and predictions over a split.

A split with cached embeddings (the frozen backbone's, fm mode) goes through the model's head
alone (`head_forward`); otherwise its windows go through the whole model (`forward`).
"""
import contextlib
import math
import queue
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from lib.core.errors import PipelineError
from lib.core.schema import REG_TARGETS
from lib.data import windows_h5
from lib.data.dataset import Split, iter_inputs

INFERENCE_BATCH = 512


def pick_device(name: str) -> torch.device:
    """train.device: auto (CUDA when available, else CPU), cpu, or cuda[:n]."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"train.device={name}: CUDA is not available on this machine (use auto or cpu)")
    return torch.device(name)


def autocast(device: torch.device, amp: str):
    """(context factory, gradient scaler or None): mixed precision on CUDA (bf16 where supported,
    else fp16 with a scaler); a no-op on CPU or with amp=off."""
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def set_mode(model: nn.Module, training: bool) -> None:
    """Backbone in eval mode always (TTM's own dropout off); head and LoRA dropout follow `training`."""
    model.eval()
    if training:
        model.head.train()
        for name, module in model.named_modules():
            if "lora_dropout" in name:
                module.train()


def forward_for(model: nn.Module, split: Split):
    """The model's head on a split with cached embeddings, else the whole model on its windows."""
    return model.head_forward if split.embeddings is not None else model


def prefetch(chunks, depth: int = 2):
    """Iterate `chunks` with the next ones read by a background thread (HDF5 reads and gzip
    decompression overlap the backbone, which releases the GIL while it computes)."""
    ready, done = queue.Queue(depth), object()

    def read():
        try:
            for item in chunks:
                ready.put(item)
        except BaseException as err:   # re-raised in the caller's thread
            ready.put(err)
        ready.put(done)

    threading.Thread(target=read, daemon=True).start()
    while (item := ready.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


@torch.no_grad()
def predict(model, split: Split, device, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Raw outputs for every window of `split`: logits (n,) for clf, standardised pressures (n, 3) for reg."""
    set_mode(model, False)
    forward = forward_for(model, split)
    outputs = []
    for start, x in tqdm(prefetch(split.chunks(batch_size)), total=math.ceil(len(split) / batch_size),
                         desc=f"predict {split.path.name}", unit="batch", leave=False, disable=None):
        ctx = torch.from_numpy(split.context[start:start + len(x)])
        outputs.append(forward(x.to(device), ctx.to(device)).float().cpu())
    if not outputs:
        return np.zeros((0,) if model.task == "clf" else (0, len(REG_TARGETS)), dtype=np.float32)
    return torch.cat(outputs).numpy()


@torch.no_grad()
def embed_windows(model, path, device, batch_size: int = INFERENCE_BATCH):
    """Yield (start, embeddings (batch, channels, d_model + 2)) of every window of the windows
    file `path`, in its order (the embed stage's cache)."""
    n = windows_h5.count(path)
    for start, signals in tqdm(prefetch(iter_inputs(path, model.channels, batch_size)), total=math.ceil(n / batch_size),
                               desc=f"embed {Path(path).stem}", unit="batch", disable=None):
        yield start, model.embed(torch.from_numpy(signals).to(device)).float().cpu().numpy()
