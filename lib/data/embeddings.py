"""The embed stage's cache: the frozen backbone's embeddings of every window of a windows file.

One HDF5 file per windows file: `embeddings` (n, channels, d_model + 2) float32 in the windows
file's row order, and attributes naming the windows file, its window count and the settings the
embeddings depend on (EmbeddingConfig.cache_key()). DVC reruns the embed stage when the windows
or the code change; the attributes guard against a cache used with other windows or settings.
"""
import h5py
import numpy as np

from lib.core.errors import PipelineError
from lib.data.windows_h5 import CHUNK_WINDOWS, count, set_attrs


def write_embeddings(path, windows_path, n_windows: int, shape, chunks, attrs: dict) -> None:
    """Stream the embeddings of every window of `windows_path` into `path`.

    `chunks` yields (start, array of `shape` per window); rows follow the windows file's order.
    `attrs`: the cache key and anything else worth recording (e.g. the weights directory).
    """
    with h5py.File(path, "w") as f:
        data = f.create_dataset("embeddings", shape=(n_windows, *shape), dtype=np.float32,
                                chunks=(min(CHUNK_WINDOWS, max(n_windows, 1)), *shape))
        for start, array in chunks:
            data[start:start + len(array)] = array
        set_attrs(f, {"windows_file": str(windows_path), "windows_count": n_windows, **attrs})


def read_embeddings(path, windows_path, indices, cache_key: dict) -> np.ndarray:
    """Cached embeddings of the windows at `indices`; an error if the cache holds another number
    of windows than `windows_path` or was computed with other `cache_key` settings (e.g.
    input_scaling, context_length)."""
    try:
        with h5py.File(path, "r") as f:
            stale = (int(f.attrs["windows_count"]) != count(windows_path)
                     or any(f.attrs[key] != value for key, value in cache_key.items()))
            if not stale:
                return f["embeddings"][:][indices]
    except (OSError, KeyError) as err:
        raise PipelineError(f"{path}: embeddings cache unreadable ({type(err).__name__}); "
                            "rerun dvc repro embed") from err
    wanted = ", ".join(f"model.{k}={v}" for k, v in cache_key.items())
    raise PipelineError(f"{path}: embeddings cache does not belong to {windows_path} with {wanted}; "
                        "rerun dvc repro embed")
