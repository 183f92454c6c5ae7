import numpy as np
import pytest
import wfdb

from lib.core.errors import CaseError, PipelineError
from lib.data import vital_io

ALIASES = {"abp": ["SNUADC/ART", "Intellivue/ABP", "ABP"], "ppg": ["SNUADC/PLETH", "PLETH"]}


def write(path, n=3000, srate=100.0, names=("SNUADC/ART", "SNUADC/PLETH")):
    signals = {name: np.sin(np.arange(n) / 10).astype(np.float32) + i for i, name in enumerate(names)}
    vital_io.write_vital(path, signals, srate, 4102444800.0, {})
    return signals


def test_roundtrip_through_vitaldb_keeps_samples_and_rate(tmp_path):
    signals = write(tmp_path / "1.vital", srate=500.0)
    channels = vital_io.read_channels(tmp_path / "1.vital", ALIASES)
    for channel, name in zip(ALIASES, signals):
        samples, srate = channels[channel]
        assert srate == 500.0
        np.testing.assert_allclose(samples, signals[name])


def test_track_aliases_pick_the_first_name_the_file_has(tmp_path):
    signals = write(tmp_path / "1.vital", names=("Intellivue/ABP", "Intellivue/PLETH"))
    channels = vital_io.read_channels(tmp_path / "1.vital", ALIASES)
    np.testing.assert_allclose(channels["abp"][0], signals["Intellivue/ABP"])
    np.testing.assert_allclose(channels["ppg"][0], signals["Intellivue/PLETH"])
    # a name matches whole or after the device, never as a loose suffix
    with pytest.raises(CaseError, match="required abp track is missing"):
        vital_io.read_channels(tmp_path / "1.vital", {"abp": ["BP"]})


def test_wfdb_records_load_like_vital_files(tmp_path):
    """MIMIC-style WFDB records (ABP, PLETH, II at 125 Hz) read through the same aliases."""
    t = np.arange(125 * 60) / 125
    abp = 90 + 20 * np.sin(2 * np.pi * 1.2 * t)
    ppg = np.sin(2 * np.pi * 1.2 * t)
    wfdb.wrsamp("3000003_0001", fs=125, units=["mmHg", "NU"], sig_name=["ABP", "PLETH"],
                p_signal=np.column_stack([abp, ppg]), fmt=["16", "16"], write_dir=str(tmp_path))
    channels = vital_io.read_channels(tmp_path / "3000003_0001.hea", ALIASES)
    samples, srate = channels["abp"]
    assert srate == 125.0 and len(samples) == len(t)
    np.testing.assert_allclose(samples, abp, atol=0.01)
    assert list(vital_io.recording_files(tmp_path)) == ["3000003_0001"]


def test_corrupt_truncated_and_missing_track_are_case_errors(tmp_path):
    (tmp_path / "bad.vital").write_bytes(b"not a vital file" * 10)
    with pytest.raises(CaseError, match="bad.vital: unreadable") as err:
        vital_io.read_channels(tmp_path / "bad.vital", ALIASES)
    assert err.value.reason == "unreadable"
    write(tmp_path / "2.vital")
    with pytest.raises(CaseError, match="required ecg track is missing") as err:
        vital_io.read_channels(tmp_path / "2.vital", {**ALIASES, "ecg": ["SNUADC/ECG_II"]})
    assert err.value.reason == "missing_track"
    data = (tmp_path / "2.vital").read_bytes()
    (tmp_path / "3.vital").write_bytes(data[: len(data) // 3])
    with pytest.raises(CaseError):
        vital_io.read_channels(tmp_path / "3.vital", ALIASES)


def test_a_numeric_rate_track_is_not_a_waveform(tmp_path):
    write(tmp_path / "1.vital", srate=1.0)
    with pytest.raises(CaseError, match="sample rate 1.0 Hz") as err:
        vital_io.read_channels(tmp_path / "1.vital", ALIASES)
    assert err.value.reason == "bad_srate"


def test_vital_files_lists_caseid_named_files(tmp_path):
    write(tmp_path / "12.vital")
    (tmp_path / "notes.vital").write_text("")
    (tmp_path / "readme.txt").write_text("")
    assert list(vital_io.vital_files(tmp_path)) == [12]
    with pytest.raises(PipelineError, match="directory not found"):
        vital_io.vital_files(tmp_path / "nope")


@pytest.mark.parametrize("bad", [[], "", [""], 3])
def test_bad_track_params_are_one_line(bad):
    with pytest.raises(PipelineError, match="data.tracks.abp"):
        vital_io.track_aliases({"abp": bad})
