"""Windows in HDF5: one file per split, appended case by case, read back in chunks.

Layout: `signals` (n, 3, length) chunked by windows (CHUNK_WINDOWS), stored as `windows.dtype`
(float32, or float16 for half the disk) without a compression filter, and always read back as
float32 (`iter_signal_chunks`); per-window blocks such as the trend view, gzip-compressed; one 1-D
dataset per per-window column (labels per horizon as int8 with -1 = no label, targets and context
features as float32, `caseid`/`subjectid` int32). File attributes carry the channel names, sample
rate, the window rule (`params`, with the dtype), the track names and the train split's
normalisation statistics (computed from the float32 values, before any cast).

The signals' filter (SIGNAL_FILTER) was chosen by read throughput, as `python bench/storage.py
--windows 8192 --repeats 5` measured it on 8,192 simulated demo windows (on a 2-core CPU, files
in the page cache; MB per 1,000 windows / sequential read windows/s / random 64-window batches windows/s):

    dtype    filter          MB    sequential   random
    float32  gzip-1+shuffle  4.23      75,120      675
    float32  lzf+shuffle     4.48      76,604      672
    float32  lzf             5.82     283,600    2,539
    float32  none            5.86   1,084,189    8,274
    float16  gzip-1+shuffle  1.91      71,621      793
    float16  lzf+shuffle     2.12      95,233    1,086
    float16  none            2.93     315,434    9,878

Filtered waveforms have noisy low mantissa bits: compression saves only 28 % (float32) or 35 %
(float16) and decoding (the shuffle filter most of all) makes every read 4-14x slower, random
batches (each touches whole 256-window chunks) 10x and more. No filter reads fastest; float16
without a filter is still smaller than float32 with gzip, so windows.dtype is the size knob.
"""
import errno
import functools
import json
import os
import resource
import shutil
from pathlib import Path

import h5py
import numpy as np

from lib.core.errors import PipelineError
from lib.core.params import Trend, Windows
from lib.core.schema import BEAT_PRESSURES, EVENT_TIMING, OBSERVED, TREND, TREND_BLOCK, label_column, map_ahead_column

CHUNK_WINDOWS = 256
DTYPES = ("float32", "float16")   # windows.dtype: how `signals` are stored (always read back as float32)
FILTERS = {   # HDF5 filters for `signals`, as bench/storage.py compares them
    "gzip1+shuffle": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
    "lzf+shuffle": {"compression": "lzf", "shuffle": True},
    "lzf": {"compression": "lzf"},
    "none": {},
}
SIGNAL_FILTER = "none"   # chosen by read throughput (module docstring, bench/storage.py)

IDS = {"caseid": np.int32, "subjectid": np.int32}


def set_attrs(h5file, attrs: dict) -> None:
    """File attributes: numbers and strings as they are, anything else as JSON (`attrs` decodes it)."""
    for key, value in attrs.items():
        h5file.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value, sort_keys=True)


def window_columns(spec: Windows) -> dict:
    """Per-window HDF5 columns and their dtypes (besides `signals`, `caseid`, `subjectid`)."""
    cols = {label_column(h): np.int8 for h in spec.horizons_min}
    cols.update({map_ahead_column(h): np.float32 for h in spec.horizons_min})
    cols.update({name: np.float32 for name in (*BEAT_PRESSURES, "hr", "map_now", "map_slope", "t_end_s",
                                               *EVENT_TIMING, *OBSERVED.values())})
    return cols


def window_blocks(trend_spec: Trend) -> dict:
    """Per-window arrays besides `signals`: the trend view, {name: (shape, dtype)}."""
    return {TREND_BLOCK: ((len(TREND), trend_spec.context), np.float32)}


class WindowWriter:
    """Append windows to a new HDF5 file; use as a context manager."""

    def __init__(self, path, channels, length: int, columns: dict, attrs: dict, blocks: dict | None = None,
                 dtype: str = "float32", compression: str = SIGNAL_FILTER):
        """`columns`: {name: dtype} of one value per window; `blocks`: {name: (shape, dtype)} of an
        array per window (e.g. the trend view), stored gzip-compressed. `dtype` (DTYPES) is how the
        signals are stored and `compression` (FILTERS) their HDF5 filter; both are read back float32."""
        if np.dtype(dtype).name not in DTYPES:
            raise PipelineError(f"windows dtype {dtype!r}: must be one of {', '.join(DTYPES)}")
        if compression not in FILTERS:
            raise PipelineError(f"signals filter {compression!r}: must be one of {', '.join(FILTERS)}")
        self.dtype = np.dtype(dtype)
        self.file = h5py.File(path, "w")
        self.columns = {**columns, **IDS}
        self.blocks = dict(blocks or {})
        for name, (shape, dtype) in self.blocks.items():
            self.file.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                     chunks=(CHUNK_WINDOWS, *shape), **FILTERS["gzip1+shuffle"])   # smooth, NaN-rich
        self.file.create_dataset("signals", shape=(0, len(channels), length),
                                 maxshape=(None, len(channels), length), dtype=self.dtype,
                                 chunks=(CHUNK_WINDOWS, len(channels), length), **FILTERS[compression])
        for name, dtype in self.columns.items():
            self.file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                     chunks=(CHUNK_WINDOWS * 16,))
        self.file.attrs["channels"] = list(channels)
        self.set_attrs(attrs)
        # Opened once: h5py's lookup by name costs about a millisecond a dataset, as much as writing it.
        self.datasets = {name: self.file[name] for name in ["signals", *self.blocks, *self.columns]}

    def set_attrs(self, attrs: dict) -> None:
        set_attrs(self.file, attrs)

    def append(self, arrays: dict, where: str = "") -> None:
        """Append the windows in `arrays`; `where` (e.g. 'split train, case 12') names them in an error."""
        n = len(arrays["signals"])
        if n == 0:
            return
        arrays = {**arrays, "signals": storable(arrays["signals"], self.dtype, where or str(self.file.filename))}
        check_room(self.file.filename, sum(np.asarray(arrays[k]).nbytes for k in self.datasets))
        for name, dataset in self.datasets.items():
            start = dataset.shape[0]
            dataset.resize(start + n, axis=0)
            dataset[start:] = arrays[name]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


ROOM_MARGIN = 1 << 20   # bytes of HDF5 metadata and chunk padding allowed for beyond the arrays themselves


def check_room(path, nbytes: int) -> None:
    """Raise the disk-full OSError before writing `nbytes` more to `path` when the disk or the
    process's file-size limit has no room for them. HDF5 must not meet a full disk itself: a write
    that fails inside its chunk cache is only reported when the handle is released (as a warning),
    and closing the file then crashes the library."""
    size = os.path.getsize(path)
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    room = min(free, limit - size if limit != resource.RLIM_INFINITY else free)
    if nbytes + ROOM_MARGIN > room:
        code = errno.EFBIG if limit != resource.RLIM_INFINITY and limit - size < free else errno.ENOSPC
        raise OSError(code, os.strerror(code), str(path))


def storable(signals: np.ndarray, dtype, where: str, param: str = "windows.dtype") -> np.ndarray:
    """`signals` cast to the storage `dtype`; a finite value that the cast would turn into inf
    (beyond float16's +-65504) is an error naming `where` and the `param` that chose the dtype,
    never a silent inf. NaN (masked) stays NaN."""
    signals = np.asarray(signals)
    with np.errstate(over="ignore"):   # checked below
        out = signals.astype(dtype, copy=False)
    if out.dtype != signals.dtype:
        overflow = np.isinf(out) & np.isfinite(signals)
        if overflow.any():
            bad = signals[overflow]
            raise PipelineError(f"{where}: {int(overflow.sum())} values (e.g. {float(bad[0]):g}) overflow "
                                f"{param}={np.dtype(dtype).name} (max {float(np.finfo(dtype).max):g}); "
                                f"use {param}=float32")
    return out


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


RULE_ATTRS = ("fs", "params", "tracks", "normalisation")   # how a file's windows were cut, gated and scaled


def window_rule(path) -> dict:
    """How the windows of `path` were made (sample rate, the windows.*/trend.* rule, track aliases, the
    train split's normalisation), as plain JSON values: what a checkpoint keeps so that a recording can be
    windowed as its model was trained (`lib.scoring`)."""
    found = attrs(path)
    return json.loads(json.dumps({key: found[key] for key in RULE_ATTRS if key in found}, default=_plain))


def _plain(value):
    return value.item() if hasattr(value, "item") else list(value)


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


def iter_signal_chunks(path, batch: int = 1024, indices=None, name: str = "signals"):
    """Yield (start, signals) over the file in order, `batch` windows at a time.

    With `indices` (sorted), yield (position, signals) for those windows only. `name` reads another
    per-window block the same way (e.g. the trend view).
    """
    with h5py.File(path, "r") as f:
        if name not in f:
            raise PipelineError(f"{path}: no {name!r} block (written by an older windows stage); rerun dvc repro")
        data = f[name]
        # float16 signals (windows.dtype) are widened here: every reader sees float32
        cast = (lambda x: x.astype(np.float32)) if name == "signals" and data.dtype != np.float32 else (lambda x: x)
        if indices is None:
            for start in range(0, data.shape[0], batch):
                yield start, cast(data[start:start + batch])
        else:
            reader = row_reader(path, name)
            for pos in range(0, len(indices), batch):
                yield pos, cast(read_rows(data, np.asarray(indices[pos:pos + batch]), reader))


def read_rows(data, rows: np.ndarray, reader: "RowReader | None") -> np.ndarray:
    """The rows `rows` (sorted, distinct) of the h5py dataset `data`, as stored. Dense rows (e.g. the
    labelled windows) are one slice, picked in memory; scattered rows (training's random batches) are
    read straight from the file by `reader` (`row_reader`'s), or where none applies one slice per run
    of consecutive rows (h5py's point selection of many rows is several times slower than slices)."""
    first, last = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
    if last - first <= 2 * len(rows):
        return data[first:last][rows - first]
    if reader is not None:
        return reader.read(rows)
    out = np.empty((len(rows), *data.shape[1:]), dtype=data.dtype)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for start, end in zip(np.r_[0, breaks], np.r_[breaks, len(rows)], strict=True):
        out[start:end] = data[int(rows[start]):int(rows[end - 1]) + 1]
    return out


class RowReader:
    """Scattered rows of one unfiltered HDF5 dataset, read from the file at their byte offsets.

    Training draws random batches: a batch's rows are scattered over the file, and h5py reads them
    at tens of microseconds a row (a point selection, or a slice per row), which made reading most of
    a CNN or fm training epoch. Unfiltered rows lie in the file as they are in memory, so each run of
    consecutive rows is one `os.preadv` into the output array, at the byte offset HDF5 itself reports
    for its chunk (h5py's `get_chunk_info_by_coord`, or `get_offset` for a contiguous dataset): the
    same bytes as h5py returns (tests/test_storage.py), without HDF5's per-selection machinery.
    `row_reader` gives one, or None for a dataset this does not apply to (filtered, virtual, chunks
    not spanning whole rows, chunks not allocated), which is then read through h5py.
    """

    def __init__(self, path, name: str):
        with h5py.File(path, "r") as f:
            data = f[name]
            plist = data.id.get_create_plist()
            if data.is_virtual or plist.get_nfilters() or data.dtype.hasobject or not data.dtype.isnative:
                raise ValueError("not a plain dataset")
            self.dtype, self.shape = data.dtype, data.shape
            self.row_bytes = int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize
            if data.chunks is None:
                offset = data.id.get_offset()
                if offset is None:
                    raise ValueError("not allocated")
                self.chunk_rows, self.offsets = max(data.shape[0], 1), np.array([offset], dtype=np.int64)
            else:
                if tuple(data.chunks[1:]) != tuple(data.shape[1:]):
                    raise ValueError("chunks do not span whole rows")
                self.chunk_rows = data.chunks[0]
                tail = (0,) * (data.ndim - 1)
                self.offsets = np.array([data.id.get_chunk_info_by_coord((start, *tail)).byte_offset
                                         for start in range(0, data.shape[0], self.chunk_rows)], dtype=np.int64)
                if (self.offsets < 0).any():
                    raise ValueError("chunks not allocated")
        self.path, self.fd = str(path), os.open(path, os.O_RDONLY)

    def __del__(self):
        if hasattr(self, "fd"):
            os.close(self.fd)

    def read(self, rows) -> np.ndarray:
        """The rows `rows` (sorted, distinct), as stored (dtype and shape of the dataset)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if not len(rows):
            return out
        if rows[0] < 0 or rows[-1] >= self.shape[0]:
            raise PipelineError(f"{self.path}: rows up to {int(rows[-1])} asked of {self.shape[0]}")
        chunk = rows // self.chunk_rows
        breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(chunk) != 0)) + 1
        starts, ends = np.r_[0, breaks], np.r_[breaks, len(rows)]
        offsets = self.offsets[chunk[starts]] + (rows[starts] - chunk[starts] * self.chunk_rows) * self.row_bytes
        raw = out.reshape(len(rows), -1).view(np.uint8)
        for start, end, offset in zip(starts.tolist(), ends.tolist(), offsets.tolist()):
            if os.preadv(self.fd, [raw[start:end]], offset) != (end - start) * self.row_bytes:
                raise PipelineError(f"{self.path}: file shorter than its HDF5 index says (truncated?); rerun dvc repro")
        return out


@functools.lru_cache(maxsize=16)
def _row_reader(path: str, name: str, identity: tuple) -> "RowReader | None":
    try:
        return RowReader(path, name)
    except (ValueError, TypeError, KeyError, AttributeError):   # TypeError: an unallocated chunk's offset (None)
        return None


def row_reader(path, name: str) -> RowReader | None:
    """The `RowReader` of dataset `name` in `path`, kept open while the file is unchanged (a file rewritten
    in place of it, as the stages' atomic writes do, gets a new one); None where h5py must read it."""
    stat = os.stat(path)
    return _row_reader(str(Path(path).resolve()), name, (stat.st_ino, stat.st_size, stat.st_mtime_ns))


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
