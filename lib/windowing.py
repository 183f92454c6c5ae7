"""One case from `.vital` file to labelled, quality-gated windows (the windows stage's unit of work)."""
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lib import labels, quality, signals
from lib.errors import CaseError
from lib.vital_io import read_tracks

CHANNELS = ("abp", "ppg", "ecg")


@dataclass(frozen=True)
class WindowSpec:
    """How windows are cut and labelled (the stage fills it from params.yaml → windows)."""

    fs: int = 125
    length: int = 512
    stride: int = 512
    horizon_min: float = 5.0
    label_duration_s: int = 60
    map_threshold: float = 65.0
    label_min_valid: float = 0.8
    ringing_margin_s: float = 1.0


def process_case(path, track_names: dict, spec: WindowSpec) -> dict:
    """Read, resample, filter, window, gate and label one case.

    `track_names` maps 'abp'/'ppg'/'ecg' to the file's track names. Returns arrays for the kept
    windows (`signals` (n, 3, length) float32, `label`, `map_now`, `t_end_s`) and
    `reasons`: {reason: count} for every dropped window. Raises CaseError for a case that
    cannot be used at all.
    """
    tracks = read_tracks(path, [track_names[c] for c in CHANNELS])
    resampled = {}
    for channel in CHANNELS:
        samples, srate = tracks[track_names[channel]]
        resampled[channel] = signals.resample_to(samples, srate, spec.fs)
    n = min(len(x) for x, _ in resampled.values())
    need = spec.length + int((spec.horizon_min * 60 + spec.label_duration_s) * spec.fs)
    if n < need:
        raise CaseError(f"{path}: recording is {n / spec.fs:.0f} s, shorter than one window plus "
                        f"the {spec.horizon_min:g}-min horizon", "too_short")
    abp_raw, abp_invalid = resampled["abp"][0][:n], resampled["abp"][1][:n]
    if abp_invalid.all():
        raise CaseError(f"{path}: track {track_names['abp']} has no finite samples", "all_nan")

    filtered = {
        "abp": signals.lowpass_abp(abp_raw, spec.fs),
        "ppg": signals.bandpass_ppg(resampled["ppg"][0][:n], spec.fs),
        "ecg": signals.bandpass_ecg(resampled["ecg"][0][:n], spec.fs),
    }
    invalid = np.zeros(n, dtype=bool)
    for _, mask in resampled.values():
        invalid |= mask[:n]
    invalid = signals.dilate(invalid, int(spec.ringing_margin_s * spec.fs))

    def windows_of(x):
        return sliding_window_view(x, spec.length)[:: spec.stride]

    views = {c: windows_of(filtered[c]) for c in CHANNELS}
    bad = windows_of(invalid)
    reasons = quality.window_rejections(views["abp"], views["ppg"], views["ecg"], bad)

    map_1hz = labels.map_per_second(abp_raw, abp_invalid, spec.fs)
    starts = np.arange(len(reasons)) * spec.stride
    t_end = (starts + spec.length) / spec.fs
    label, label_reasons = labels.hypotension_labels(
        map_1hz, t_end, spec.horizon_min * 60, spec.label_duration_s, spec.map_threshold,
        spec.label_min_valid)
    reasons = np.where(reasons == "", label_reasons, reasons)
    keep = reasons == ""
    counts = dict(zip(*np.unique(reasons[~keep].astype(str), return_counts=True)))
    stacked = np.stack([views[c][keep] for c in CHANNELS], axis=1).astype(np.float32)
    now_idx = np.floor(t_end[keep]).astype(np.int64) - 1
    return {
        "signals": stacked,
        "label": label[keep].astype(np.int8),
        "map_now": map_1hz[now_idx].astype(np.float32),
        "t_end_s": t_end[keep].astype(np.float32),
        "reasons": {str(k): int(v) for k, v in counts.items()},
        "n_windows": int(len(reasons)),
    }
