"""windows.dtype: float16 windows files read back as float32, NaN kept, statistics from float32, overflow refused."""
import copy

import h5py
import numpy as np
import pytest
import yaml
from conftest import ROOT
from sklearn.preprocessing import StandardScaler
from test_windowing import TRACKS, write_case

from lib.core.errors import PipelineError
from lib.core.params import Trend, Windows
from lib.core.schema import CHANNELS
from lib.data import windowing, windows_h5
from lib.data.dataset import Split


class NoReport:
    def add_case(self, *args, **kwargs):
        pass


def write(tmp_path, dtype: str, cases) -> tuple:
    """(path, summary) of a train split of `cases` written with windows.dtype=`dtype`, statistics fitted."""
    path = tmp_path / f"train_{dtype}.h5"
    spec = Windows(dtype=dtype)
    summary = windowing.write_split("train", cases, path, spec, Trend(), TRACKS, {"fs": spec.fs}, NoReport(), workers=1,
                                    stats=StandardScaler())
    return path, summary


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases")
    return [(7, 70, write_case(folder / "7.vital", minutes=14, seed=1)),
            (8, 80, write_case(folder / "8.vital", minutes=15, episode=(540, 660), seed=2))]


@pytest.fixture(scope="module")
def files(tmp_path_factory, cases):
    tmp = tmp_path_factory.mktemp("windows")
    return {dtype: write(tmp, dtype, cases)[0] for dtype in ("float32", "float16")}


def read_all(path):
    return np.concatenate([chunk for _, chunk in windows_h5.iter_signal_chunks(path, 100)])


def test_float16_file_stores_half_and_reads_back_float32_within_precision(files):
    with h5py.File(files["float16"], "r") as f16, h5py.File(files["float32"], "r") as f32:
        assert f16["signals"].dtype == np.float16 and f32["signals"].dtype == np.float32
        assert f16["signals"].shape == f32["signals"].shape
    full, half = read_all(files["float32"]), read_all(files["float16"])
    assert half.dtype == np.float32
    assert np.array_equal(np.isnan(full), np.isnan(half))
    np.testing.assert_allclose(half, full, rtol=1e-3, atol=1e-6)
    assert not np.array_equal(half, full)   # really stored at half precision
    rows = np.array([0, 3, len(full) - 1])
    split = Split(files["float16"], rows, np.zeros(3), np.zeros((3, 0)), list(CHANNELS))
    picked = split.windows([2, 0, 1])   # what the model sees: float32, in the asked order
    assert picked.dtype == np.float32
    np.testing.assert_array_equal(picked, half[rows[[2, 0, 1]]])


def test_normalisation_statistics_come_from_float32_values(files):
    stats = {dtype: windows_h5.attrs(path)["normalisation"] for dtype, path in files.items()}
    assert stats["float16"] == stats["float32"]


def test_float16_keeps_nan_of_masked_channels(tmp_path):
    signals = np.random.default_rng(0).normal(80, 20, size=(300, len(CHANNELS), 512)).astype(np.float32)
    signals[::7, CHANNELS.index("ppg")] = np.nan   # masked PPG
    signals[5, CHANNELS.index("ecg"), :100] = np.nan
    path = tmp_path / "masked.h5"
    with windows_h5.WindowWriter(path, CHANNELS, 512, {}, {}, dtype="float16") as writer:
        writer.append({"signals": signals, "caseid": np.zeros(300, np.int32), "subjectid": np.zeros(300, np.int32)})
    back = read_all(path)
    assert back.dtype == np.float32
    assert np.array_equal(np.isnan(back), np.isnan(signals))
    np.testing.assert_allclose(back, signals, rtol=1e-3)


@pytest.mark.parametrize("value", ["float64", "int16", 16])
def test_windows_dtype_other_than_float32_or_float16_is_refused(value):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert Windows.from_params(params).dtype == "float32"
    bad = copy.deepcopy(params)
    bad["windows"]["dtype"] = value
    with pytest.raises(PipelineError, match=r"windows\.dtype") as err:
        Windows.from_params(bad)
    assert "\n" not in str(err.value)
    bad["windows"]["dtype"] = "float16"
    assert Windows.from_params(bad).for_test(0.5).dtype == "float16"


def test_a_value_that_overflows_float16_is_an_error_naming_split_and_case(tmp_path, cases, monkeypatch):
    real = windowing.process_case

    def loud_ecg(path, aliases, spec, trend_spec):
        result = real(path, aliases, spec, trend_spec)
        if path.stem == "8":
            result.arrays["signals"][1, CHANNELS.index("ecg"), 10] = 7e4   # finite, beyond float16's 65504
        return result

    monkeypatch.setattr(windowing, "process_case", loud_ecg)
    path, _ = write(tmp_path, "float32", cases)   # float32 holds it
    assert np.nanmax(read_all(path)) == pytest.approx(7e4)
    with pytest.raises(PipelineError, match=r"split train, case 8: 1 values .*70000.* windows\.dtype=float16"):
        write(tmp_path, "float16", cases)


@pytest.mark.parametrize("layout", ["chunked", "chunked float16", "contiguous"])
def test_the_row_reader_reads_the_bytes_h5py_reads(tmp_path, layout):
    """Scattered rows read straight from the file (training's random batches) are h5py's rows exactly:
    across chunk boundaries, in a partial last chunk, for runs and single rows; a wrong chunk offset,
    row size or dtype would fail here."""
    rng = np.random.default_rng(0)
    dtype = np.float16 if "float16" in layout else np.float32
    data = rng.normal(size=(1000, 3, 16)).astype(dtype)
    path = tmp_path / "rows.h5"
    with h5py.File(path, "w") as f:
        if layout == "contiguous":
            f.create_dataset("x", data=data)
        else:   # appended in uneven blocks, as WindowWriter does
            ds = f.create_dataset("x", shape=(0, 3, 16), maxshape=(None, 3, 16), dtype=dtype, chunks=(64, 3, 16))
            for start in range(0, 1000, 77):
                ds.resize(min(start + 77, 1000), axis=0)
                ds[start:] = data[start:start + 77]
    reader = windows_h5.row_reader(path, "x")
    assert reader is not None
    for rows in (np.sort(rng.choice(1000, 50, replace=False)), np.arange(60, 70), np.array([63, 64, 999]),
                 np.array([0]), np.array([], dtype=np.int64)):
        assert reader.read(rows).tobytes() == data[rows].tobytes()
    with pytest.raises(PipelineError, match="rows up to 1000"):
        reader.read(np.array([5, 1000]))


def test_a_filtered_or_virtual_dataset_is_left_to_h5py(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("gz", data=np.zeros((300, 4), np.float32), chunks=(64, 4), compression="gzip")
        f.create_dataset("part", data=np.zeros((300, 4), np.float32), chunks=(64, 2))   # chunks split a row
    assert windows_h5.row_reader(path, "gz") is None and windows_h5.row_reader(path, "part") is None
    layout = h5py.VirtualLayout(shape=(300, 4), dtype=np.float32)
    layout[:] = h5py.VirtualSource(str(path), "gz", shape=(300, 4))
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_virtual_dataset("v", layout)
    assert windows_h5.row_reader(tmp_path / "v.h5", "v") is None


def test_scattered_windows_of_a_split_are_read_exactly(files):
    """Split.windows at random positions (a CNN batch) equals the file's windows, float16 widened."""
    for path in files.values():
        with h5py.File(path, "r") as f:
            signals = f["signals"][:].astype(np.float32)
        rows = np.arange(len(signals))
        split = Split(path, rows, np.zeros(len(rows), np.float32), np.zeros((len(rows), 0), np.float32), list(CHANNELS))
        positions = np.random.default_rng(2).permutation(len(rows))[:max(3, len(rows) // 3)]
        np.testing.assert_array_equal(split.windows(positions), signals[positions])
