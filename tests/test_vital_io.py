import numpy as np
import pytest

from lib import vital_io
from lib.errors import CaseError, PipelineError


def write(path, n=3000, srate=100.0, names=("SNUADC/ART", "SNUADC/PLETH")):
    signals = {name: np.sin(np.arange(n) / 10).astype(np.float32) + i for i, name in enumerate(names)}
    vital_io.write_vital(path, signals, srate, 4102444800.0, {})
    return signals


def test_roundtrip_through_vitaldb_keeps_samples_and_rate(tmp_path):
    signals = write(tmp_path / "1.vital", srate=500.0)
    tracks = vital_io.read_tracks(tmp_path / "1.vital", list(signals))
    for name, original in signals.items():
        samples, srate = tracks[name]
        assert srate == 500.0
        np.testing.assert_allclose(samples, original)


def test_corrupt_truncated_and_missing_track_are_case_errors(tmp_path):
    (tmp_path / "bad.vital").write_bytes(b"not a vital file" * 10)
    with pytest.raises(CaseError, match="bad.vital: unreadable") as err:
        vital_io.read_tracks(tmp_path / "bad.vital", ["SNUADC/ART"])
    assert err.value.reason == "unreadable"
    write(tmp_path / "2.vital")
    with pytest.raises(CaseError, match="SNUADC/ECG_II is missing"):
        vital_io.read_tracks(tmp_path / "2.vital", ["SNUADC/ART", "SNUADC/ECG_II"])
    data = (tmp_path / "2.vital").read_bytes()
    (tmp_path / "3.vital").write_bytes(data[: len(data) // 3])
    with pytest.raises(CaseError):
        vital_io.read_tracks(tmp_path / "3.vital", ["SNUADC/ART", "SNUADC/PLETH"])


def test_vital_files_lists_caseid_named_files(tmp_path):
    write(tmp_path / "12.vital")
    (tmp_path / "notes.vital").write_text("")
    assert list(vital_io.vital_files(tmp_path)) == [12]
    with pytest.raises(PipelineError, match="directory not found"):
        vital_io.vital_files(tmp_path / "nope")


def test_vitaldb_offline_is_one_clear_error(monkeypatch):
    def offline(_):
        raise ConnectionError("no route to host")
    monkeypatch.setattr(vital_io.vitaldb, "find_cases", offline)
    with pytest.raises(PipelineError, match="cannot reach api.vitaldb.net"):
        vital_io.find_vitaldb_cases(["SNUADC/ART"])


def test_download_uses_cache_and_replaces_a_damaged_cached_file(tmp_path):
    source = tmp_path / "source.vital"
    write(source)
    calls = []

    def loader(caseid, track_names):
        calls.append(caseid)
        return vital_io.vitaldb.VitalFile(str(source), track_names)

    cache = tmp_path / "cache"
    names = ["SNUADC/ART", "SNUADC/PLETH"]
    path = vital_io.download_vitaldb_case(7, names, cache, loader=loader)
    assert path == cache / "7.vital" and calls == [7]
    vital_io.download_vitaldb_case(7, names, cache, loader=loader)
    assert calls == [7]  # served from the cache
    path.write_bytes(b"damaged")
    vital_io.download_vitaldb_case(7, names, cache, loader=loader)
    assert calls == [7, 7] and vital_io.read_tracks(path, names)
