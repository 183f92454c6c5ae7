"""The windows a model trains on or predicts: one split's file rows, targets, context and cached embeddings.

A `Split` is what the training loop and inference iterate over. Its inputs are either the
windows' signals, read from the windows file on demand, or the frozen backbone's cached
embeddings (the embed stage's output, fm mode's fast path): `Split.embeddings` says which.
Both are read from their files batch by batch (`inputs`, `chunks`): a split holds its targets
and context in memory, never its inputs (`load_split` gives a `CachedEmbeddings` view).
"""
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lib.core.config import EmbeddingConfig, ModelConfig
from lib.core.errors import PipelineError
from lib.core.schema import CHANNELS, OBSERVED, REG_TARGETS, TREND_BLOCK, TREND_INPUTS, label_column
from lib.data import windows_h5
from lib.data.embeddings import CachedEmbeddings, input_positions


@dataclass
class Split:
    """The windows of one split the model uses: file rows, targets, context, cached embeddings."""

    path: Path                  # windows HDF5 file
    indices: np.ndarray         # rows of that file (sorted)
    targets: np.ndarray         # clf: labels (n,); reg: SBP/DBP/MAP in mmHg (n, 3)
    context: np.ndarray         # (n, k) past-only context features, NaN where missing
    channels: list              # the inputs, from INPUTS: waveform channels and/or trend series
    # (n, channels, d_model + 2) from the embed stage (fm mode): a CachedEmbeddings view read on
    # demand (load_split), or an array (anything indexable by positions and slices, as float32)
    embeddings: CachedEmbeddings | np.ndarray | None = None

    def __len__(self):
        return len(self.indices)

    def windows(self, positions) -> np.ndarray:
        """Signals (len(positions), channels, length) of the windows at `positions`, in that order."""
        positions = np.asarray(positions)
        order = np.argsort(positions, kind="stable")
        rows = self.indices[positions[order]]
        unique, inverse = np.unique(rows, return_inverse=True)
        picked = np.concatenate([chunk for _, chunk in iter_inputs(self.path, self.channels, 4096, unique)])
        out = np.empty((len(positions), *picked.shape[1:]), dtype=np.float32)
        out[order] = picked[inverse]
        return out

    def inputs(self, positions) -> torch.Tensor:
        """The model's inputs at `positions`, in that order: cached embeddings when the split has
        them, else windows (either read from its file, these windows only)."""
        x = self.embeddings[positions] if self.embeddings is not None else self.windows(positions)
        return torch.from_numpy(np.ascontiguousarray(x))

    def chunks(self, batch_size: int):
        """Yield (start, inputs) over the whole split in order, `batch_size` windows at a time
        (embeddings or windows, as `inputs`; windows are read from the file chunk by chunk)."""
        if self.embeddings is not None:
            for start in range(0, len(self), batch_size):
                yield start, torch.from_numpy(np.ascontiguousarray(self.embeddings[start:start + batch_size]))
        else:
            for start, chunk in iter_inputs(self.path, self.channels, batch_size, self.indices):
                yield start, torch.from_numpy(np.ascontiguousarray(chunk))


def iter_inputs(path, inputs, batch: int = 1024, indices=None):
    """Yield (start, float32 (b, len(inputs), length)) of the windows file's `inputs` (names from
    INPUTS, waveform channels before trend series), as `windows_h5.iter_signal_chunks`: waveform
    channels from `signals`, trend series from the trend block (NaN = unobserved; a trend shorter
    than the windows is left-padded with NaN)."""
    waves = [CHANNELS.index(c) for c in inputs if c in CHANNELS]
    trends = [TREND_INPUTS.index(c) for c in inputs if c in TREND_INPUTS]
    if list(inputs) != [CHANNELS[i] for i in waves] + [TREND_INPUTS[i] for i in trends]:
        raise PipelineError(f"inputs {list(inputs)}: waveform channels come before trend series")
    readers = []
    if waves:
        readers.append((windows_h5.iter_signal_chunks(path, batch, indices), waves))
    if trends:
        readers.append((windows_h5.iter_signal_chunks(path, batch, indices, name=TREND_BLOCK), trends))
    for parts in zip(*(r for r, _ in readers), strict=True):
        start = parts[0][0]
        arrays = [chunk[:, pick].astype(np.float32) for (_, chunk), (_, pick) in zip(parts, readers, strict=True)]
        length = max(a.shape[-1] for a in arrays)
        arrays = [np.pad(a, ((0, 0), (0, 0), (length - a.shape[-1], 0)), constant_values=np.nan) for a in arrays]
        yield start, np.concatenate(arrays, axis=1)


def require_both_classes(name: str, y: np.ndarray, where: str = "") -> None:
    """A classifier needs positives and negatives in its train and val splits."""
    if len(np.unique(y)) < 2:
        raise PipelineError(f"{name} split has only one class ({int(np.sum(y))} positives in {len(y)} windows"
                            f"{where}): cannot train a classifier; use more cases or another split seed")


def load_split(path, task: str, horizon_min: float, channels, context, embeddings_path=None,
               cache_key: dict | None = None, for_training: bool = False, every_window: bool = False) -> Split:
    """A split's usable windows: labelled at the horizon (clf) or with finite pressures (reg); with
    `every_window`, all of the file's windows (scoring a recording: targets are the labels, -1 for none).

    `embeddings_path`: the embed stage's cache of this windows file, computed with `cache_key`
    (EmbeddingConfig.cache_key()). `for_training`: a classifier's split must hold both classes
    (checked before the embeddings load). Without ABP among the `channels`, a window whose every
    input channel was masked by its quality gates is left out (with one line on stderr).
    """
    path = Path(path)
    columns = windows_h5.read_columns(path, [*context, *(REG_TARGETS if task == "reg" else ())])
    if every_window:
        targets = windows_h5.read_columns(path, [label_column(horizon_min)])[label_column(horizon_min)]
        idx, targets = np.arange(len(targets)), targets.astype(np.float32)
    elif task == "clf":
        idx, targets = windows_h5.labelled(path, label_column(horizon_min))
        if for_training:
            require_both_classes(path.stem, targets, f" of {path} at train.horizon_min={horizon_min:g}")
    else:
        targets = np.stack([columns[name] for name in REG_TARGETS], axis=1).astype(np.float32)
        idx = np.flatnonzero(np.isfinite(targets).all(axis=1))
        targets = targets[idx]
    flags = [OBSERVED[c] for c in channels if c in OBSERVED]
    if flags and len(flags) == len(channels) and not every_window:   # no ABP input: one observed input channel
        seen = windows_h5.read_columns(path, flags)
        usable = np.logical_or.reduce([seen[f][idx] > 0 for f in flags])
        if not usable.all():
            print(f"{path.name}: {int((~usable).sum())} windows have every input channel ({', '.join(channels)}) "
                  "masked by its quality gates: not used", file=sys.stderr)
        idx, targets = idx[usable], targets[usable]
    ctx = np.stack([columns[name][idx] for name in context], axis=1).astype(np.float32) if context else \
        np.zeros((len(idx), 0), dtype=np.float32)
    split = Split(path, idx, targets, ctx, list(channels))
    if embeddings_path is not None:
        split.embeddings = CachedEmbeddings.open(embeddings_path, path, idx, cache_key or {},
                                                  input_positions(embeddings_path, channels))
    return split


def checkpoint_split(model, ckpt: dict, path, every_window: bool = False, embeddings_path=None) -> Split:
    """A split's windows as a trained model uses them (its task, horizon, channels and context).

    `embeddings_path`: the embed stage's cache of `path`. A checkpoint whose backbone is the frozen
    pretrained one (fm mode) then runs its head on the cached embeddings, as training did: the same
    logits, bit for bit, without running the backbone again (tests/test_pipeline.py)."""
    cached, key = None, None
    if embeddings_path is not None:
        cfg = ModelConfig.from_dict(ckpt["config"])
        if cfg.mode == "fm":
            cached = embeddings_path
            key = EmbeddingConfig(cfg.weights_dir, cfg.input_scaling, cfg.context_length, cfg.views).cache_key()
    return load_split(path, model.task, ckpt["horizon_min"], model.channels, model.context, cached, key,
                      every_window=every_window)


def subset(split: Split, positions) -> Split:
    """The windows of `split` at `positions` (e.g. one cross-validation fold); cached embeddings
    stay a view on the cache (nothing is read)."""
    positions = np.sort(np.asarray(positions))
    embeddings = split.embeddings
    if embeddings is not None:
        embeddings = embeddings.subset(positions) if isinstance(embeddings, CachedEmbeddings) else embeddings[positions]
    return dataclasses.replace(split, indices=split.indices[positions], targets=split.targets[positions],
                               context=split.context[positions], embeddings=embeddings)


def without_embeddings(split: Split) -> Split:
    """The same windows, read as signals (for a backbone that trains, whose embeddings change)."""
    return dataclasses.replace(split, embeddings=None)
