"""lib/data/dataset.py and lib/data/embeddings.py on a small windows file: what a split holds, how
its inputs are read, and the embeddings cache's guard."""
import numpy as np
import pytest
import torch

from lib.core.errors import PipelineError
from lib.core.schema import CHANNELS
from lib.data import windows_h5
from lib.data.dataset import load_split, subset
from lib.data.embeddings import CachedEmbeddings, read_embeddings, write_embeddings

N = 40
KEY = {"input_scaling": "revin", "context_length": 512}


@pytest.fixture
def files(tmp_path):
    """A windows file of N windows (every third unlabelled at 5 min) and its embeddings cache."""
    rng = np.random.default_rng(0)
    signals = rng.normal(size=(N, 3, 512)).astype(np.float32)
    labels = (np.arange(N) % 4 == 0).astype(np.int8)
    labels[::3] = -1
    columns = {"label_5min": np.int8, "map": np.float32, "hr": np.float32, "sbp": np.float32, "dbp": np.float32,
               "ppg_observed": np.float32, "ecg_observed": np.float32}
    arrays = {"signals": signals, "label_5min": labels, "map": rng.normal(80, 10, N), "hr": rng.normal(70, 5, N),
              "sbp": rng.normal(120, 10, N), "dbp": rng.normal(70, 5, N), "caseid": np.arange(N) // 10,
              "subjectid": np.arange(N) // 10}
    arrays["map"][5] = np.nan                      # reg: a window without finite targets is not usable
    arrays["ppg_observed"], arrays["ecg_observed"] = np.ones(N), np.ones(N)
    for channel, rows in (("ppg", [10, 11]), ("ecg", [11, 12])):   # masked by their gates: NaN, flag 0
        signals[rows, CHANNELS.index(channel)] = np.nan
        arrays[f"{channel}_observed"][rows] = 0
    path = tmp_path / "train.h5"
    trend = rng.normal(80, 5, (N, 3, 500)).astype(np.float16)   # a trend view of 500 bins, the first 100 unobserved
    trend[:, :, :100] = np.nan
    arrays["trend"] = trend
    with windows_h5.WindowWriter(path, CHANNELS, 512, columns, {}, {"trend": ((3, 500), np.float16)}) as writer:
        writer.append(arrays)
    embeddings = rng.normal(size=(N, 3, 194)).astype(np.float32)
    cache = tmp_path / "emb.h5"
    write_embeddings(cache, path, N, (3, 194), [(0, embeddings[:25]), (25, embeddings[25:])],
                     {**KEY, "weights_dir": "w"})
    return path, cache, signals, labels, embeddings


def test_a_classification_split_holds_the_labelled_windows_and_their_cached_embeddings(files):
    path, cache, signals, labels, embeddings = files
    split = load_split(path, "clf", 5, ["ppg", "ecg"], ["map", "hr"], cache, KEY)
    # window 11 has both its input channels masked
    assert np.array_equal(split.indices, np.flatnonzero((labels >= 0) & (np.arange(N) != 11)))
    assert np.array_equal(split.targets, labels[split.indices])
    assert isinstance(split.embeddings, CachedEmbeddings) and split.embeddings.shape == (len(split), 2, 194)
    assert np.array_equal(split.embeddings.load(), embeddings[split.indices][:, 1:])
    positions = np.array([7, 0, 3])
    assert torch.equal(split.inputs(positions), torch.from_numpy(embeddings[split.indices[positions]][:, 1:]))
    windows = load_split(path, "clf", 5, ["ppg", "ecg"], ["map", "hr"])   # no cache: inputs are the windows
    assert np.array_equal(windows.windows(positions), signals[windows.indices[positions]][:, 1:], equal_nan=True)
    chunks = list(windows.chunks(8))
    assert [start for start, _ in chunks] == list(range(0, len(windows), 8))
    assert np.array_equal(torch.cat([x for _, x in chunks]).numpy(), signals[windows.indices][:, 1:], equal_nan=True)
    part = subset(split, [5, 1])
    assert np.array_equal(part.indices, split.indices[[1, 5]])
    assert isinstance(part.embeddings, CachedEmbeddings)   # a view: nothing read
    assert np.array_equal(part.embeddings.load(), split.embeddings[[1, 5]])


def test_a_regression_split_holds_the_windows_with_finite_pressures(files):
    path, *_ = files
    split = load_split(path, "reg", 5, ["abp"], ["hr"])
    assert len(split) == N - 1 and 5 not in split.indices and split.targets.shape == (N - 1, 3)


def test_a_window_whose_every_input_channel_is_masked_is_left_out(files, capsys):
    path, _, signals, *_ = files
    both = load_split(path, "reg", 5, ["ppg", "ecg"], ["hr"])
    assert 11 not in both.indices and {10, 12} <= set(both.indices) and len(both) == N - 2   # 5: no target
    assert "1 windows have every input channel (ppg, ecg) masked" in capsys.readouterr().err
    one = both.windows(np.flatnonzero(np.isin(both.indices, [10, 12])))
    assert np.isnan(one[0, 0]).all() and np.isfinite(one[0, 1]).all() and np.isnan(one[1, 1]).all()
    ppg_only = load_split(path, "reg", 5, ["ppg"], ["hr"])
    assert not {10, 11} & set(ppg_only.indices) and 12 in ppg_only.indices
    assert len(load_split(path, "reg", 5, ["abp", "ppg"], ["hr"])) == N - 1   # ABP is always observed


def test_a_training_split_needs_both_classes(files, tmp_path):
    path, *_ = files
    with windows_h5.WindowWriter(tmp_path / "one.h5", CHANNELS, 512, {"label_5min": np.int8}, {}) as writer:
        writer.append({"signals": np.zeros((3, 3, 512), np.float32), "label_5min": np.zeros(3, np.int8),
                       "caseid": np.zeros(3), "subjectid": np.zeros(3)})
    with pytest.raises(PipelineError, match="one split has only one class"):
        load_split(tmp_path / "one.h5", "clf", 5, CHANNELS, [], for_training=True)


def test_the_embeddings_cache_refuses_other_windows_or_other_settings(files, tmp_path):
    path, cache, *_ = files
    assert read_embeddings(cache, path, np.arange(3), KEY).shape == (3, 3, 194)
    with pytest.raises(PipelineError, match="model.input_scaling=train_zscore, model.context_length=512; rerun"):
        read_embeddings(cache, path, np.arange(3), {**KEY, "input_scaling": "train_zscore"})
    with pytest.raises(PipelineError, match="does not belong to"):
        read_embeddings(cache, path, np.arange(3), {**KEY, "context_length": 256})
    shorter = tmp_path / "shorter.h5"
    write_embeddings(shorter, path, N - 1, (3, 194), [], KEY)    # of a windows file with another window count
    with pytest.raises(PipelineError, match="does not belong to"):
        read_embeddings(shorter, path, np.arange(3), KEY)
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(PipelineError, match="embeddings cache unreadable"):
        read_embeddings(tmp_path / "broken.h5", path, np.arange(3), KEY)


def test_a_split_reads_the_waveform_channels_then_the_trend_series(files):
    path, _, signals, labels, _ = files
    split = load_split(path, "clf", 5, ["ecg", "map_trend", "pp_trend"], [])
    x = split.windows(np.array([0, 2]))
    assert x.shape == (2, 3, 512) and x.dtype == np.float32
    rows = split.indices[[0, 2]]
    np.testing.assert_array_equal(x[:, 0], signals[rows, 2])
    trend = windows_h5.read_columns(path, ["trend"])["trend"][rows].astype(np.float32)
    assert np.isnan(x[:, 1:, :12]).all()   # 500 bins left-padded to 512 as unobserved
    np.testing.assert_array_equal(x[:, 1, 12:], trend[:, 0])
    np.testing.assert_array_equal(x[:, 2, 12:], trend[:, 2])
    chunks = np.concatenate([c.numpy() for _, c in split.chunks(7)])
    np.testing.assert_array_equal(chunks[[0, 2]], x)
    with pytest.raises(PipelineError, match="waveform channels come before trend series"):
        load_split(path, "clf", 5, ["map_trend", "ecg"], []).windows(np.array([0]))
