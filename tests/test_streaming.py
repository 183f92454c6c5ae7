"""Cached embeddings read on demand (lib.data.embeddings.CachedEmbeddings): a split, the head's
input scaling and the training loop hold one batch of them in memory, never the whole cache, and
train exactly as on the same embeddings in memory; a float16 cache (embed.dtype) reads back as
float32 and trains as the float32 one within float16's rounding."""
import re
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from model_helpers import model_config
from sklearn.preprocessing import StandardScaler

from lib.core.config import LoopConfig
from lib.core.errors import PipelineError
from lib.core.params import Embed
from lib.core.schema import CHANNELS
from lib.data import windows_h5
from lib.data.dataset import Split, subset
from lib.data.embeddings import CachedEmbeddings, read_embeddings, write_embeddings
from lib.model.inference import predict
from lib.model.loop import train_model
from lib.model.training import fit_scalers
from lib.model.ttm import build_model

N = 2400
KEY = {"input_scaling": "revin", "context_length": 512}
LOOP = LoopConfig(epochs=3, batch_size=64, grad_accum_steps=1, lr=1e-2, weight_decay=0.0, grad_clip=1.0,
                  schedule="cosine", warmup_frac=0.1, early_stopping_patience=0, monitor="val_auroc", amp="auto",
                  windows_per_epoch=0, seed=3)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A windows file of N windows and its embeddings cache of 4 inputs (the model uses the first
    3): the ABP loc decides the label (low pressure → hypotension)."""
    tmp = tmp_path_factory.mktemp("streaming")
    rng = np.random.default_rng(0)
    windows = tmp / "train.h5"
    with windows_h5.WindowWriter(windows, CHANNELS, 8, {"label_5min": np.int8}, {}) as writer:
        writer.append({"signals": np.zeros((N, 3, 8), np.float32), "label_5min": np.zeros(N, np.int8),
                       "caseid": np.arange(N) // 100, "subjectid": np.arange(N) // 100})
    embeddings = rng.normal(size=(N, 4, 194)).astype(np.float32)
    embeddings[:, 0, 192] = rng.normal(80, 12, size=N)
    path = tmp / "emb.h5"
    write_embeddings(path, windows, N, (4, 194), [(s, embeddings[s:s + 700]) for s in range(0, N, 700)], KEY)
    return windows, path, embeddings


@pytest.fixture(scope="module")
def cache16(cache, tmp_path_factory):
    """The same embeddings stored with embed.dtype=float16."""
    windows, _, embeddings = cache
    path = tmp_path_factory.mktemp("streaming16") / "emb.h5"
    write_embeddings(path, windows, N, (4, 194), [(s, embeddings[s:s + 700]) for s in range(0, N, 700)], KEY,
                     "float16")
    return windows, path, embeddings


def split_of(cache, rows, seed, lazy: bool) -> Split:
    windows, path, embeddings = cache
    rng = np.random.default_rng(seed)
    loc = embeddings[rows, 0, 192]
    targets = (loc < np.quantile(loc, 0.15)).astype(np.float32)
    context = np.stack([loc, rng.normal(size=len(rows)), rng.normal(70, 10, size=len(rows)),
                        rng.normal(45, 8, size=len(rows)), rng.random(len(rows)) > 0.05,
                        rng.random(len(rows)) > 0.05], axis=1).astype(np.float32)
    context[: len(rows) // 10, 1] = np.nan   # map_slope missing early in a case
    view = CachedEmbeddings.open(path, windows, rows, KEY, [0, 1, 2])
    return Split(windows, rows, targets, context, ["abp", "ppg", "ecg"], view if lazy else view.load())


@pytest.fixture(scope="module")
def rows():
    """Train and val rows of the file: interleaved, with gaps (not simply 0..n)."""
    everything = np.random.default_rng(1).permutation(N)
    return np.sort(everything[:1600]), np.sort(everything[1600:2300])


def test_the_view_reads_the_rows_asked_in_their_order(cache):
    windows, path, embeddings = cache
    rows = np.array([3, 10, 11, 12, 500, 2000, 2399])
    view = CachedEmbeddings.open(path, windows, rows, KEY, [0, 2])
    assert len(view) == 7 and view.shape == (7, 2, 194)
    expected = embeddings[rows][:, [0, 2]]
    for positions in ([6, 0, 3, 3, 1], [1, 2, 3], np.array([5, 4]), [], slice(2, 6)):
        got = view[positions]
        assert got.dtype == np.float32 and np.array_equal(got, expected[positions])
    chunks = list(view.chunks(3))
    assert [start for start, _ in chunks] == [0, 3, 6] and np.array_equal(np.concatenate([c for _, c in chunks]),
                                                                          expected)
    reversed_inputs = CachedEmbeddings(path, rows, [3, 1, 0])   # channels read as they are asked
    assert np.array_equal(reversed_inputs[[6, 0, 4]], embeddings[rows[[6, 0, 4]]][:, [3, 1, 0]])
    assert np.array_equal(CachedEmbeddings(path, rows, [1, 2])[[6, 0]], embeddings[rows[[6, 0]]][:, 1:3])
    part = view.subset([1, 5])
    assert part.shape == (2, 2, 194) and np.array_equal(part.load(), expected[[1, 5]])
    with pytest.raises(TypeError, match="reads on demand"):
        np.asarray(view)
    with pytest.raises(PipelineError, match="holds 2400 windows"):
        CachedEmbeddings(path, [N])
    assert np.array_equal(read_embeddings(path, windows, rows, KEY), embeddings[rows])


def test_the_streamed_feature_scaling_equals_the_scaling_of_the_whole_split(cache, rows):
    lazy = split_of(cache, rows[0], 0, lazy=True)
    model = build_model(model_config())
    fit_scalers(model, lazy, batch=100)
    features = model.head_features(torch.from_numpy(lazy.embeddings.load()), torch.from_numpy(lazy.context))
    whole = StandardScaler().fit(features.numpy().astype(np.float64))   # NaN ignored, as np.nanmean/np.nanstd
    np.testing.assert_allclose(model.feature_mean.numpy(), whole.mean_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.feature_std.numpy(), whole.scale_, rtol=1e-5, atol=1e-6)
    slope = lazy.context[:, 1]
    assert model.feature_mean[-5].item() == pytest.approx(np.nanmean(slope), abs=1e-6)


def test_training_on_the_view_equals_training_in_memory(cache, rows):
    runs = []
    for lazy in (True, False):
        train, val = split_of(cache, rows[0], 0, lazy), split_of(cache, rows[1], 1, lazy)
        assert isinstance(train.embeddings, CachedEmbeddings) == lazy
        torch.manual_seed(0)
        model = build_model(model_config())
        fit_scalers(model, train)
        summary = train_model(model, train, val, LOOP, CPU)
        runs.append((summary, [p.detach().clone() for p in model.head.parameters()]))
    (lazy_summary, lazy_weights), (memory_summary, memory_weights) = runs
    assert lazy_summary == memory_summary and lazy_summary["epochs_run"] == 3
    assert all(torch.equal(a, b) for a, b in zip(lazy_weights, memory_weights, strict=True))


def test_training_reads_one_micro_batch_at_a_time(cache, rows, monkeypatch):
    reads = []
    read = CachedEmbeddings._read

    def counting(self, unique):
        out = read(self, unique)
        reads.append(len(out))
        return out
    monkeypatch.setattr(CachedEmbeddings, "_read", counting)
    train, val = split_of(cache, rows[0], 0, lazy=True), split_of(cache, rows[1], 1, lazy=False)
    reads.clear()   # the in-memory val split's read
    model = build_model(model_config())
    fit_scalers(model, train, batch=256)
    assert max(reads) == 256 and sum(reads) == len(train)
    reads.clear()
    train_model(model, train, val, replace(LOOP, epochs=2, batch_size=32, grad_accum_steps=2), CPU)
    assert max(reads) <= 32 and sum(reads) == 2 * len(train)   # each window once per epoch, 32 at a time


def test_a_fold_of_a_lazy_split_is_a_view(cache, rows):
    train = split_of(cache, rows[0], 0, lazy=True)
    fold = subset(train, np.arange(0, len(train), 3))
    assert isinstance(fold.embeddings, CachedEmbeddings) and len(fold.embeddings) == len(fold)
    np.testing.assert_array_equal(fold.inputs([2, 0]).numpy(), cache[2][fold.indices[[2, 0]]][:, :3])


def test_a_float16_cache_stores_half_and_reads_back_float32(cache, cache16):
    with h5py.File(cache[1], "r") as f32, h5py.File(cache16[1], "r") as f16:
        assert f32["embeddings"].dtype == np.float32 and f16["embeddings"].dtype == np.float16
        assert f16["embeddings"].id.get_storage_size() * 2 == f32["embeddings"].id.get_storage_size()
    rows = np.array([2399, 0, 7, 8, 1500])
    half = CachedEmbeddings.open(cache16[1], cache16[0], rows, KEY)[np.arange(5)]
    full = cache[2][rows]
    assert half.dtype == np.float32 and not np.array_equal(half, full)   # really stored at half precision
    np.testing.assert_allclose(half, full, rtol=2 ** -11, atol=2 ** -24)   # float16's rounding, no more


def test_training_on_a_float16_cache_matches_float32(cache, cache16, rows):
    results = []
    for stored in (cache, cache16):
        train, val = split_of(stored, rows[0], 0, lazy=True), split_of(stored, rows[1], 1, lazy=True)
        torch.manual_seed(0)
        model = build_model(model_config())
        fit_scalers(model, train)
        results.append((train_model(model, train, val, LOOP, CPU), predict(model, val, CPU)))
    (s32, p32), (s16, p16) = results
    assert s32["best_val_auroc"] > 0.75  # the task is learnt, so the comparison means something
    assert abs(s16["best_val_auroc"] - s32["best_val_auroc"]) <= 0.002
    assert not np.array_equal(p16, p32) and np.abs(p16 - p32).max() <= 0.02   # measured 0.002


def test_an_embedding_beyond_float16_range_is_refused_naming_the_param(cache, tmp_path):
    windows, _, embeddings = cache
    loud = embeddings[:700].copy()
    loud[5, 0, 192] = 7e4   # finite, beyond float16's 65504
    path = tmp_path / "emb.h5"
    with pytest.raises(PipelineError, match=r"emb\.h5: windows 0-699: 1 values .*70000.* embed\.dtype=float16"):
        write_embeddings(path, windows, N, (4, 194), [(0, loud)], KEY, "float16")
    write_embeddings(path, windows, N, (4, 194), [(0, loud)], KEY)   # float32 holds it


@pytest.mark.parametrize("section, message", [({"dtype": "bfloat16"}, "embed.dtype='bfloat16': expected one of"),
                                              ({}, "embed.dtype is missing")])
def test_embed_dtype_is_checked_with_one_line(section, message):
    with pytest.raises(PipelineError, match=re.escape(message)):
        Embed.from_params({"embed": section})
