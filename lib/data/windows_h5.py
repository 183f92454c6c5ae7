"""Windows in HDF5: one file per split, appended case by case, read back in chunks.

Layout: `signals` (n, 3, length) float32 chunked by windows and gzip-compressed, plus one
1-D dataset per per-window column (labels per horizon as int8 with -1 = no label, targets and
context features as float32, `caseid`/`subjectid` int32). File attributes carry the channel
names, sample rate, the window rule (`params`), the track names and the train split's normalisation
statistics.
"""
import json
from pathlib import Path

import h5py
import numpy as np

from lib.core.errors import PipelineError

CHUNK_WINDOWS = 256



IDS = {"caseid": np.int32, "subjectid": np.int32}


def set_attrs(h5file, attrs: dict) -> None:
    """File attributes: numbers and strings as they are, anything else as JSON (`attrs` decodes it)."""
    for key, value in attrs.items():
        h5file.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value, sort_keys=True)


class WindowWriter:
    """Append windows to a new HDF5 file; use as a context manager."""

    def __init__(self, path, channels, length: int, columns: dict, attrs: dict):
        self.file = h5py.File(path, "w")
        self.columns = {**columns, **IDS}
        self.file.create_dataset("signals", shape=(0, len(channels), length),
                                 maxshape=(None, len(channels), length), dtype=np.float32,
                                 chunks=(CHUNK_WINDOWS, len(channels), length),
                                 compression="gzip", compression_opts=1, shuffle=True)
        for name, dtype in self.columns.items():
            self.file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                     chunks=(CHUNK_WINDOWS * 16,))
        self.file.attrs["channels"] = list(channels)
        self.set_attrs(attrs)

    def set_attrs(self, attrs: dict) -> None:
        set_attrs(self.file, attrs)

    def append(self, arrays: dict) -> None:
        n = len(arrays["signals"])
        if n == 0:
            return
        for name in ["signals", *self.columns]:
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
        return int(f["signals"].shape[0])


def attrs(path) -> dict:
    """File attributes, JSON values decoded."""
    with h5py.File(path, "r") as f:
        out = {}
        for key, value in f.attrs.items():
            try:
                out[key] = json.loads(value) if isinstance(value, str) else value
            except json.JSONDecodeError:
                out[key] = value
        return out


def read_columns(path, names) -> dict:
    """The small per-window columns (labels, ids, times), fully in memory."""
    with h5py.File(path, "r") as f:
        return {name: f[name][:] for name in names}


def labelled(path, column: str):
    """(indices, labels float32) of the windows with a label in `column` (-1 means none)."""
    with h5py.File(path, "r") as f:
        if column not in f:
            raise PipelineError(f"{path}: no column {column} (horizons in this file: "
                                f"{', '.join(k for k in f if k.startswith('label_'))}); rerun the windows stage")
        y = f[column][:]
    idx = np.flatnonzero(y >= 0)
    return idx, y[idx].astype(np.float32)


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
                wanted = np.asarray(indices[pos:pos + batch])
                first, last = int(wanted[0]), int(wanted[-1]) + 1
                if last - first <= 2 * len(wanted):
                    # Dense selection (e.g. the labelled windows): one contiguous read, then pick in
                    # memory; h5py's point selection is ~3x slower than a slice.
                    yield pos, data[first:last][wanted - first]
                else:
                    yield pos, data[wanted]


def concat_virtual(sources, path, attrs_from: int = 0, extra_attrs: dict | None = None) -> None:
    """Write `path`: an HDF5 file whose datasets are virtual concatenations of `sources`' datasets
    (h5py virtual datasets: nothing is copied). Attributes come from `sources[attrs_from]`."""
    files = [h5py.File(s, "r") for s in sources]
    try:
        with h5py.File(path, "w") as out:
            for name, first in files[0].items():
                sizes = [f[name].shape[0] for f in files]
                layout = h5py.VirtualLayout(shape=(sum(sizes), *first.shape[1:]), dtype=first.dtype)
                offset = 0
                for source, f, size in zip(sources, files, sizes):
                    layout[offset:offset + size] = h5py.VirtualSource(str(Path(source).resolve()), name,
                                                                      shape=f[name].shape)
                    offset += size
                out.create_virtual_dataset(name, layout)
            for key, value in files[attrs_from].attrs.items():
                out.attrs[key] = value
            set_attrs(out, extra_attrs or {})
    finally:
        for f in files:
            f.close()
