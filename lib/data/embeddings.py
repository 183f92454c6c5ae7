"""The embed stage's cache: the frozen backbone's embeddings of every window of a windows file.

One HDF5 file per windows file: `embeddings` (n, inputs, d_model + 2) in the windows file's row
order, stored as `embed.dtype` (float32, or float16 for half the disk and read bytes; always read
back as float32), and attributes naming the windows file, its window count, the inputs embedded
(`inputs`, comma-separated names from INPUTS: those of model.views) and the settings the
embeddings depend on (EmbeddingConfig.cache_key()). DVC reruns the embed stage when the windows
or the code change; the attributes guard against a cache used with other windows or settings.

A split reads its embeddings through `CachedEmbeddings`, a view that reads the rows asked for
from the file on demand, so training holds one batch, not the whole cache, in memory.
"""
import h5py
import numpy as np

from lib.core.errors import PipelineError
from lib.core.schema import INPUTS
from lib.data.windows_h5 import CHUNK_WINDOWS, count, read_rows, row_reader, set_attrs, storable

# HDF5's chunk cache per open cache file. The cache is written unfiltered, so a row read bypasses
# the chunk cache whenever a chunk is larger than it: a small cache means that reading one row
# never pulls its whole chunk (CHUNK_WINDOWS rows) into memory.
CHUNK_CACHE_BYTES = 0


def write_embeddings(path, windows_path, n_windows: int, shape, chunks, attrs: dict,
                     dtype: str = "float32") -> None:
    """Stream the embeddings of every window of `windows_path` into `path`, stored as `dtype`.

    `chunks` yields (start, array of `shape` per window); rows follow the windows file's order.
    `attrs`: the cache key and anything else worth recording (e.g. the weights directory).
    A finite value beyond float16's range is an error (one line), never a silent inf.
    """
    with h5py.File(path, "w") as f:
        data = f.create_dataset("embeddings", shape=(n_windows, *shape), dtype=np.dtype(dtype),
                                chunks=(min(CHUNK_WINDOWS, max(n_windows, 1)), *shape))
        for start, array in chunks:
            data[start:start + len(array)] = storable(array, dtype, f"{path}: windows {start}-{start + len(array) - 1}",
                                                      "embed.dtype")
        set_attrs(f, {"windows_file": str(windows_path), "windows_count": n_windows, **attrs})


def check_cache(path, windows_path, cache_key: dict) -> tuple:
    """The shape of the cache `path`; an error (one line) unless it is readable and holds the
    embeddings of `windows_path`'s window count computed with the `cache_key` settings (e.g.
    input_scaling, context_length)."""
    try:
        with h5py.File(path, "r") as f:
            stale = (int(f.attrs["windows_count"]) != count(windows_path)
                     or any(f.attrs[key] != value for key, value in cache_key.items()))
            shape = f["embeddings"].shape
    except (OSError, KeyError) as err:
        raise PipelineError(f"{path}: embeddings cache unreadable ({type(err).__name__}); "
                            "rerun dvc repro embed") from err
    if stale:
        wanted = ", ".join(f"model.{k}={v}" for k, v in cache_key.items())
        raise PipelineError(f"{path}: embeddings cache does not belong to {windows_path} with {wanted}; "
                            "rerun dvc repro embed")
    return shape


def input_positions(path, inputs) -> list:
    """Positions of `inputs` (names from INPUTS) in the cache `path`; an error (one line) when the
    cache lacks one (it holds the inputs of the `model.views` it was embedded with). A cache without
    an `inputs` attribute holds INPUTS' first `width` (the layout before embed followed model.views)."""
    with h5py.File(path, "r") as f:
        cached = str(f.attrs["inputs"]).split(",") if "inputs" in f.attrs else list(INPUTS[:f["embeddings"].shape[1]])
    missing = [name for name in inputs if name not in cached]
    if missing:
        raise PipelineError(f"{path}: embeddings cache holds {', '.join(cached)}, not {', '.join(missing)} "
                            "(embedded with other model.views); rerun dvc repro embed")
    return [cached.index(name) for name in inputs]


class CachedEmbeddings:
    """The cached embeddings (len(rows), len(channels), d_model + 2) of some rows of a cache file,
    read on demand: `view[positions]` reads those rows (in the order asked) and nothing else.

    `rows`: the cache rows in view order (a split's file indices); `channels`: positions of the
    input channels in the cache (None: all). Indexing takes positions (an int array or list) or a
    slice; `chunks(batch)` yields the view in order; `subset(positions)` is a narrower view (no read).
    """

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, path, rows, channels=None, cache_shape=None):
        """`cache_shape`: the file's (n, channels, d), when known (else read from the file)."""
        if cache_shape is None:
            with h5py.File(path, "r") as f:
                cache_shape = f["embeddings"].shape
        n, width, d = cache_shape
        self.path, self.rows, self.cache_shape = path, np.asarray(rows, dtype=np.int64), tuple(cache_shape)
        self.channels = None if channels is None else list(channels)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= n):
            raise PipelineError(f"{path}: embeddings cache holds {n} windows, not rows up to {int(self.rows.max())}")
        self.shape = (len(self.rows), width if self.channels is None else len(self.channels), d)
        self._file = self._data = None
        self._rows = False   # the file's RowReader (None where h5py reads it), looked up on first use

    @classmethod
    def open(cls, path, windows_path, rows, cache_key: dict, channels=None) -> "CachedEmbeddings":
        """The view of `rows`, once the cache is known to belong to `windows_path` with `cache_key`."""
        return cls(path, rows, channels, check_cache(path, windows_path, cache_key))

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, positions) -> np.ndarray:
        """float32 (len(positions), channels, d) of the view's windows at `positions`, in that order
        (a float16 cache is widened here: every reader sees float32)."""
        rows = self.rows[positions]
        if rows.ndim != 1:
            raise TypeError(f"CachedEmbeddings takes a slice or 1-d positions, not {positions!r}")
        unique, inverse = np.unique(rows, return_inverse=True)
        picked = self._read(unique)
        return picked[inverse.reshape(-1)] if len(unique) != len(rows) or (np.diff(rows) < 0).any() else picked

    def _read(self, unique: np.ndarray) -> np.ndarray:
        """The rows `unique` (sorted, distinct) with the view's channels (`windows_h5.read_rows`)."""
        if self._rows is False:   # looked up once: the file's RowReader, or None where h5py reads it
            self._rows = row_reader(self.path, "embeddings")
        out = read_rows(self._dataset(), unique, self._rows)
        return np.ascontiguousarray(out if self.channels is None else out[:, self.channels], dtype=np.float32)

    def _dataset(self):
        if self._file is None:
            try:
                self._file = h5py.File(self.path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
            except OSError as err:
                raise PipelineError(f"{self.path}: embeddings cache unreadable ({type(err).__name__}); "
                                    "rerun dvc repro embed") from err
            self._data = self._file["embeddings"]   # looked up once: h5py's lookup costs as much as a batch's read
        return self._data

    def chunks(self, batch: int):
        """Yield (start, float32 (≤ batch, channels, d)) over the view in order."""
        for start in range(0, len(self), batch):
            yield start, self[start:start + batch]

    def subset(self, positions) -> "CachedEmbeddings":
        """The view of the windows at `positions` (nothing is read)."""
        return CachedEmbeddings(self.path, self.rows[positions], self.channels, self.cache_shape)

    def load(self) -> np.ndarray:
        """The whole view in memory (small splits and tests only)."""
        return self[np.arange(len(self))]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._data = None
        self._rows = False

    def __array__(self, *args, **kwargs):
        raise TypeError("CachedEmbeddings reads on demand: index it (view[positions]), iterate view.chunks(batch), "
                        "or call view.load() for the whole view")

    def __getstate__(self):
        return {**self.__dict__, "_file": None, "_data": None, "_rows": False}   # handles do not pickle; reopened

    def __repr__(self):
        return f"CachedEmbeddings({self.path}, {self.shape})"


def read_embeddings(path, windows_path, indices, cache_key: dict) -> np.ndarray:
    """Cached embeddings of the windows at `indices`, in memory; an error if the cache holds another
    number of windows than `windows_path` or was computed with other `cache_key` settings (e.g.
    input_scaling, context_length). A split reads through `CachedEmbeddings` instead."""
    view = CachedEmbeddings.open(path, windows_path, indices, cache_key)
    try:
        return view.load()
    finally:
        view.close()
