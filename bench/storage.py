"""Benchmark the windows files' storage: dtype (float32 | float16) x HDF5 filter of `signals`.

Windows are real pipeline windows of simulated cases: `lib.data.demo.simulate_case` recordings
(ADC-quantised, with faults) written as .vital files and cut by `process_case` exactly as the
windows stage does (filtered, quality-gated, masked channels NaN), cached under the temp folder.
For every dtype x filter (`windows_h5.FILTERS`) the windows are written with `WindowWriter` and
measured: size of `signals` per 1,000 windows, write time, sequential read throughput (the whole
file via `iter_signal_chunks`, as inference and the embed stage read it) and random-batch read
throughput (64 random windows per batch, as `Split.windows` reads a training batch). Also the
largest float16 error per channel, absolute (ABP mmHg, PPG a.u., ECG mV) and relative to |value|.

usage: python bench/storage.py [--windows 4096] [--repeats 3] [--out bench/results/storage.json]
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.core.params import Windows  # noqa: E402
from lib.core.schema import CHANNELS  # noqa: E402
from lib.data import demo, windows_h5  # noqa: E402
from lib.data.vital_io import write_vital  # noqa: E402
from lib.data.windowing import process_case  # noqa: E402

ALIASES = {"abp": [demo.ABP], "ppg": [demo.PPG], "ecg": [demo.ECG]}
UNITS = {"abp": "mmHg", "ppg": "a.u.", "ecg": "mV"}
BATCH = 64   # train.batch_size


def simulated_windows(n: int, seed: int = 0) -> np.ndarray:
    """At least `n` windows (n, 3, 512) float32 of simulated 40-min cases, cached in the temp folder."""
    cache = Path(tempfile.gettempdir()) / f"bench_storage_windows_{n}_{seed}.npy"
    if cache.is_file():
        return np.load(cache)
    rng, parts, total = np.random.default_rng(seed), [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in range(10_000):
            sim = demo.simulate_case(40 * 60, 100.0, bool(case % 2), rng)
            path = Path(tmp) / f"{case}.vital"
            write_vital(path, sim.signals, srate=sim.srate, dtstart=1_600_000_000.0, units=demo.UNITS)
            signals = process_case(path, ALIASES, Windows()).arrays["signals"]
            parts.append(signals)
            total += len(signals)
            if total >= n:
                break
    windows = np.concatenate(parts)[:n]
    np.save(cache, windows)
    return windows


def timed(fn, repeats: int) -> float:
    """Best wall seconds of `repeats` calls (the file is in the page cache: decode cost, not disk)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def measure(windows: np.ndarray, dtype: str, compression: str, folder: Path, repeats: int) -> dict:
    n = len(windows)
    path = folder / f"{dtype}_{compression}.h5"

    def write():
        with windows_h5.WindowWriter(path, CHANNELS, windows.shape[-1], {}, {}, dtype=dtype,
                                     compression=compression) as writer:
            for start in range(0, n, 500):   # about one case per append, as write_split does
                part = windows[start:start + 500]
                writer.append({"signals": part, "caseid": np.zeros(len(part), np.int32),
                               "subjectid": np.zeros(len(part), np.int32)})

    write_s = timed(write, repeats)
    with h5py.File(path, "r") as f:
        stored = f["signals"].id.get_storage_size()

    def sequential():
        for _ in windows_h5.iter_signal_chunks(path, 1024):
            pass

    batches = [np.sort(np.random.default_rng(i).choice(n, BATCH, replace=False)) for i in range(50)]

    def random_batches():
        for rows in batches:
            for _ in windows_h5.iter_signal_chunks(path, 4096, rows):
                pass

    seq_s, rand_s = timed(sequential, repeats), timed(random_batches, repeats)
    return {"dtype": dtype, "filter": compression, "mb_per_1000": stored / n * 1000 / 2**20,
            "ratio": windows.nbytes / stored, "write_windows_s": n / write_s,
            "seq_windows_s": n / seq_s, "random_windows_s": len(batches) * BATCH / rand_s}


def float16_error(windows: np.ndarray) -> dict:
    half = windows.astype(np.float16).astype(np.float32)
    out = {}
    for i, channel in enumerate(CHANNELS):
        x, y = windows[:, i], half[:, i]
        seen = np.isfinite(x)
        assert np.array_equal(seen, np.isfinite(y)), "float16 changed which samples are NaN"
        err = np.abs(x[seen] - y[seen])
        rel = err / np.maximum(np.abs(x[seen]), np.finfo(np.float32).tiny)
        out[channel] = {"max_abs": float(err.max()), "max_rel": float(rel[np.abs(x[seen]) > 1e-4].max()),
                        "range": [float(x[seen].min()), float(x[seen].max())], "unit": UNITS.get(channel, "")}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    windows = simulated_windows(args.windows)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in windows_h5.DTYPES:
            for compression in windows_h5.FILTERS:
                rows.append(measure(windows, dtype, compression, Path(tmp), args.repeats))
    errors = float16_error(windows)
    print(f"{len(windows)} windows (3 x {windows.shape[-1]}), "
          f"{np.isnan(windows).any(axis=2).mean(axis=0).round(3).tolist()} share masked per channel; "
          f"uncompressed float32 {windows[:1000].nbytes / 2**20:.2f} MB per 1,000 windows\n")
    print("| dtype | filter | MB / 1,000 windows | ratio | write windows/s | sequential read windows/s "
          f"| random-batch ({BATCH}) read windows/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['filter']} | {r['mb_per_1000']:.2f} | {r['ratio']:.2f}x | "
              f"{r['write_windows_s']:,.0f} | {r['seq_windows_s']:,.0f} | {r['random_windows_s']:,.0f} |")
    print("\n| channel | float16 max abs error | max relative error | value range |")
    print("|---|---|---|---|")
    for channel, e in errors.items():
        print(f"| {channel} | {e['max_abs']:.3g} {e['unit']} | {e['max_rel']:.2g} | "
              f"{e['range'][0]:.3g} to {e['range'][1]:.3g} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"windows": len(windows), "rows": rows, "float16_error": errors}, indent=2))


if __name__ == "__main__":
    main()
