"""Windows in HDF5: one file per split, appended case by case, read back in chunks.

Layout: `signals` (n, 3, length) float32 chunked by windows and gzip-compressed; `label`
(int8), `map_now`, `t_end_s` (float32), `caseid`, `subjectid` (int32), all length n. File
attributes carry the channel names, sample rate, the params and the code version.
"""
import json

import h5py
import numpy as np

CHUNK_WINDOWS = 256
PER_WINDOW = {"label": np.int8, "map_now": np.float32, "t_end_s": np.float32,
              "caseid": np.int32, "subjectid": np.int32}


class WindowWriter:
    """Append windows to a new HDF5 file; use as a context manager."""

    def __init__(self, path, channels, length: int, attrs: dict):
        self.file = h5py.File(path, "w")
        self.file.create_dataset("signals", shape=(0, len(channels), length),
                                 maxshape=(None, len(channels), length), dtype=np.float32,
                                 chunks=(CHUNK_WINDOWS, len(channels), length),
                                 compression="gzip", compression_opts=1, shuffle=True)
        for name, dtype in PER_WINDOW.items():
            self.file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                     chunks=(CHUNK_WINDOWS * 16,))
        self.file.attrs["channels"] = list(channels)
        for key, value in attrs.items():
            self.file.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)

    def append(self, arrays: dict) -> None:
        n = len(arrays["signals"])
        if n == 0:
            return
        for name in ["signals", *PER_WINDOW]:
            dataset = self.file[name]
            start = dataset.shape[0]
            dataset.resize(start + n, axis=0)
            dataset[start:] = arrays[name]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def count(path) -> int:
    with h5py.File(path, "r") as f:
        return int(f["label"].shape[0])


def read_columns(path, names) -> dict:
    """The small per-window columns (labels, ids, times), fully in memory."""
    with h5py.File(path, "r") as f:
        return {name: f[name][:] for name in names}


def iter_signal_chunks(path, batch: int = 1024, indices=None):
    """Yield (start, signals) over the file in order, `batch` windows at a time.

    With `indices` (sorted), yield (position, signals) for those windows only.
    """
    with h5py.File(path, "r") as f:
        data = f["signals"]
        if indices is None:
            for start in range(0, data.shape[0], batch):
                yield start, data[start:start + batch]
        else:
            for pos in range(0, len(indices), batch):
                yield pos, data[np.asarray(indices[pos:pos + batch])]
