"""One case from `.vital` file to labelled, quality-gated windows (the windows stage's unit of work).

Everything is computed on the whole recording once (resampling, filters, beat detection, the
1-Hz MAP trace) and then sliced into windows by index arithmetic, vectorised over windows.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lib.core.config import WindowSpec
from lib.core.errors import CaseError
from lib.core.schema import BEAT_PRESSURES, CHANNELS, label_column, map_ahead_column
from lib.data.vital_io import read_channels
from lib.signal import beats, filters, labels, quality



def window_columns(spec: WindowSpec) -> dict:
    """Per-window HDF5 columns and their dtypes (besides `signals`, `caseid`, `subjectid`)."""
    cols = {label_column(h): np.int8 for h in spec.horizons_min}
    cols.update({map_ahead_column(h): np.float32 for h in spec.horizons_min})
    cols.update({name: np.float32 for name in (*BEAT_PRESSURES, "hr", "map_now", "map_slope", "t_end_s")})
    return cols


def _filtered_channels(tracks, spec):
    """Resample every channel to spec.fs, filter it, and return (filtered, abp_raw, invalid)."""
    resampled = {}
    for channel in CHANNELS:
        samples, srate = tracks[channel]
        resampled[channel] = filters.resample_to(samples, srate, spec.fs)
    n = min(len(x) for x, _ in resampled.values())
    abp_raw, abp_invalid = resampled["abp"][0][:n], resampled["abp"][1][:n]
    filtered = {
        "abp": filters.lowpass_abp(abp_raw, spec.fs, spec.abp_lowpass_hz),
        "ppg": filters.bandpass_ppg(resampled["ppg"][0][:n], spec.fs, *spec.ppg_band),
        "ecg": filters.bandpass_ecg(resampled["ecg"][0][:n], spec.fs, *spec.ecg_band),
    }
    invalid = np.zeros(n, dtype=bool)
    for _, mask in resampled.values():
        invalid |= mask[:n]
    return filtered, abp_raw, abp_invalid, filters.dilate(invalid, int(spec.ringing_margin_s * spec.fs))


def process_case(path, track_aliases: dict, spec: WindowSpec) -> dict:
    """Read, resample, filter, gate, label and window one case.

    `track_aliases` maps 'abp'/'ppg'/'ecg' to lists of track names (`vital_io.read_channels`). Returns the kept windows'
    arrays (`signals` (n, 3, length) float32 and the columns of `spec.columns()`), plus
    `reasons` {reason: count} for every dropped window, `horizon_reasons` {horizon: {reason:
    count}} for gated-in windows without a label at that horizon, `n_windows`, and `examples`
    {reason or 'kept': one (3, length) window} for the data-quality report. Raises CaseError
    for a case that cannot be used at all.
    """
    tracks = read_channels(path, {c: track_aliases[c] for c in CHANNELS})
    for channel, (samples, _) in tracks.items():
        finite = samples[np.isfinite(samples)]
        if finite.size == 0:
            raise CaseError(f"{path}: the {channel.upper()} track has no finite samples (all NaN)", "all_nan")
        if finite.max() - finite.min() < 1e-6:
            raise CaseError(f"{path}: the {channel.upper()} track is a flat line at {finite[0]:g} for the whole "
                            "recording (disconnected?)", "flatline")
    filtered, abp_raw, abp_invalid, invalid = _filtered_channels(tracks, spec)
    n, fs, length = len(abp_raw), spec.fs, spec.length
    need = length + int((min(spec.horizons_min) * 60 + spec.label_duration_s) * fs)
    if n < need:
        raise CaseError(f"{path}: recording is {n / fs:.0f} s, shorter than one window plus "
                        f"the {min(spec.horizons_min):g}-min horizon and its label minute", "too_short")

    def windows_of(x):  # strided views, no copies
        return sliding_window_view(x, length)[::spec.stride]

    starts = np.arange(0, n - length + 1, spec.stride)
    views = {c: windows_of(filtered[c]) for c in CHANNELS}
    r_peaks = beats.ecg_r_peaks(filtered["ecg"], fs)
    abp_peaks = beats.abp_systolic_peaks(filtered["abp"], fs)
    ppg_peaks = beats.ppg_systolic_peaks(filtered["ppg"], fs)
    pressures = beats.abp_beat_pressures(filtered["abp"], abp_peaks, starts, length)
    checks = quality.gate_checks(
        views["abp"], views["ppg"], views["ecg"], windows_of(invalid), pressures,
        beats.count_in_windows(ppg_peaks, starts, length)[1], beats.bsqi(*r_peaks, fs, starts, length), spec.limits)
    reasons = quality.window_rejections(checks)

    map_1hz = labels.map_per_second(abp_raw, abp_invalid, fs)
    t_end = (starts + length) / fs
    columns = {name: pressures[name] for name in BEAT_PRESSURES}
    columns.update(hr=beats.heart_rate(r_peaks[0], fs, starts, length), t_end_s=t_end,
                   map_now=labels.map_at_end(map_1hz, t_end),
                   map_slope=labels.past_map_slope(map_1hz, t_end, spec.slope_window_s))
    labelled_any = np.zeros(len(starts), dtype=bool)
    horizon_reasons, shortest_reason = {}, None
    for h in sorted(spec.horizons_min):
        y, why, map_ahead = labels.hypotension_labels(map_1hz, t_end, h * 60, spec.label_duration_s,
                                                      spec.map_threshold, spec.label_min_valid)
        columns[label_column(h)] = np.where(np.isnan(y), -1, y)
        columns[map_ahead_column(h)] = map_ahead
        labelled_any |= np.isfinite(y)
        shortest_reason = why if shortest_reason is None else shortest_reason
        horizon_reasons[f"{h:g}"] = _count(why[(reasons == "") & (why != "")])
    # A window that passes the gates but has no label at any horizon is dropped; its reason is
    # the one at the shortest horizon (e.g. already hypotensive, or too near the recording end).
    reasons = np.where((reasons == "") & ~labelled_any, shortest_reason, reasons)
    keep = reasons == ""

    examples = {str(r) or "kept": np.stack([views[c][np.argmax(reasons == r)] for c in CHANNELS]).astype(np.float32)
                for r in np.unique(reasons)}
    out = {"signals": np.stack([views[c][keep] for c in CHANNELS], axis=1).astype(np.float32)}
    out.update({name: np.asarray(columns[name])[keep].astype(dtype) for name, dtype in window_columns(spec).items()})
    out.update(reasons=_count(reasons[~keep]), horizon_reasons=horizon_reasons, n_windows=int(len(starts)),
               examples=examples)
    return out


def _count(reasons: np.ndarray) -> dict:
    values, counts = np.unique(reasons.astype(str), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}
