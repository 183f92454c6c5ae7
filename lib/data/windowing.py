"""Recordings to labelled, quality-gated windows: one case (`process_case`), one split (`write_split`).

Everything is computed on the whole recording once (resampling, filters, beat detection, the
1-Hz MAP trace) and then sliced into windows by index arithmetic, vectorised over windows. A
split's cases run in parallel and stream, case by case, into one HDF5 file (lib.data.windows_h5).
"""
import sys
from collections import Counter
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from lib.core.errors import CaseError, CaseSkip, PipelineError
from lib.core.parallel import parallel_imap
from lib.core.params import Trend, Windows
from lib.core.schema import (
    BEAT_PRESSURES,
    CHANNELS,
    EVENT_TIMING,
    NUMERIC_TRENDS,
    OBSERVED,
    TREND,
    TREND_BLOCK,
    label_column,
    map_ahead_column,
)
from lib.data.vital_io import read_recording
from lib.data.windows_h5 import WindowWriter, window_blocks, window_columns
from lib.signal import beats, filters, labels, quality, trend

DEFAULT_TREND = Trend()   # the trend view as params.yaml ships it


HR_RANGE, TREND_MAX_AGE_S = (20.0, 250.0), 10.0


def trend_view(context_map, columns: dict, starts: np.ndarray, t_end: np.ndarray, spec: Windows,
               numerics: dict | None = None, trend_spec: Trend = DEFAULT_TREND) -> tuple:
    """The trend view of every window: ((n, len(TREND), context) float16 bin means, NaN where unobserved,
    {row: 'numeric' or 'waveform'}, the source of each row that has a numeric alternative).

    A row in NUMERIC_TRENDS (MAP, HR) comes from the recording's monitor numeric track when `numerics`
    {data.tracks key: (times_s, values) or None} holds one with a plausible sample (MAP in windows.map_range,
    HR in HR_RANGE; implausible samples are left out). Otherwise, and for pulse pressure, it comes from the
    waveform: MAP from the past-only 1-Hz trace; HR and pulse pressure from the past-only beat statistics of the
    windows on the stride-independent grid of window ends (start a multiple of the window length, so train and
    the overlapping test windows sample them alike). Numeric samples and beat statistics are each held for up to
    TREND_MAX_AGE_S as a 1-Hz trace (`trend.numeric_track_1hz`: a sample at t informs only seconds >= t). Every
    bin is past-only (`trend.trend_means`).
    """
    grid = starts % spec.length == 0
    plausible = {"map": spec.map_range, "hr": HR_RANGE, "pp": spec.pulse_pressure_range}
    n_seconds = len(context_map)

    def held(times, values, lo, hi):   # plausible samples as a past-only 1-Hz trace
        values = np.where((values >= lo) & (values <= hi), values, np.nan)
        return trend.numeric_track_1hz(times, values, n_seconds, TREND_MAX_AGE_S)

    rows, sources = [], {}
    for name in TREND:
        lo, hi = plausible[name]
        numeric = (numerics or {}).get(NUMERIC_TRENDS.get(name))
        if numeric is not None and ((numeric[1] >= lo) & (numeric[1] <= hi)).any():
            sources[name] = "numeric"
            trace = held(*numeric, lo, hi)
        elif name == "map":
            trace = context_map
        else:
            trace = held(t_end[grid], columns[name][grid], lo, hi)
        if name in NUMERIC_TRENDS:
            sources.setdefault(name, "waveform")
        rows.append(trend.trend_means(trace, t_end, trend_spec.step_s, trend_spec.context))
    return np.stack(rows, axis=1).astype(np.float16), sources


def _filtered_channels(tracks, spec):
    """Resample every channel to spec.fs and filter it: (filtered, abp_raw, abp_invalid, {channel: invalid})
    with each channel's gaps grown by the filter-ringing margin."""
    resampled = {}
    for channel in CHANNELS:
        samples, srate = tracks[channel]
        resampled[channel] = filters.resample_to(samples, srate, spec.fs)
    n = min(len(x) for x, _ in resampled.values())
    abp_raw, abp_invalid = resampled["abp"][0][:n], resampled["abp"][1][:n]
    filtered = {
        "abp": filters.lowpass_abp(abp_raw, spec.fs, spec.abp_lowpass_hz),
        "ppg": filters.bandpass_ppg(resampled["ppg"][0][:n], spec.fs, *spec.ppg_band_hz),
        "ecg": filters.bandpass_ecg(resampled["ecg"][0][:n], spec.fs, *spec.ecg_band_hz),
    }
    margin = int(spec.RINGING_MARGIN_S * spec.fs)
    return filtered, abp_raw, abp_invalid, {c: filters.dilate(mask[:n], margin) for c, (_, mask) in resampled.items()}


def process_case(path, track_aliases: dict, spec: Windows, trend_spec: Trend = DEFAULT_TREND,
                 every_window: bool = False) -> "CaseWindows":
    """Read, resample, filter, gate, label and window one case.

    `track_aliases` maps 'abp'/'ppg'/'ecg' (and optionally the numeric tracks' keys, map_numeric/hr_numeric) to
    lists of track names (`vital_io.read_recording`). Returns the kept windows' arrays (`signals` (n, 3, length)
    float32, the trend view and the columns of `window_columns`) and what happened to the others
    (`CaseWindows`). A kept window's PPG/ECG that failed its gates is stored NaN. Raises CaseError
    for a case that cannot be used at all.

    `every_window` (scoring a recording, not building a dataset): keep every window that passes the gates,
    labelled or not (label -1), accept a recording as short as one window, read a missing PPG or ECG track as
    masked throughout (`CaseWindows.absent`), and return the 1-Hz MAP trace and the IOH events
    (`CaseWindows.timeline`).
    """
    # the optional numeric tracks feed only the trend view; features and labels stay waveform-derived
    numeric_keys = [key for key in NUMERIC_TRENDS.values() if key in track_aliases]
    optional = ("ppg", "ecg") if every_window else ()
    tracks, numerics = read_recording(path, {c: track_aliases[c] for c in (*CHANNELS, *numeric_keys)},
                                      optional=optional)
    absent = [c for c in CHANNELS if c not in tracks]
    for channel in absent:   # an absent channel: flat zeros, marked invalid below, so its gates mask it
        tracks[channel] = (np.zeros_like(tracks["abp"][0]), tracks["abp"][1])
    for channel, (samples, _) in list(tracks.items()):
        if channel in absent:
            continue
        finite_mask = np.isfinite(samples)
        finite = samples if finite_mask.all() else samples[finite_mask]
        if every_window and channel != "abp" and (finite.size == 0 or finite.max() - finite.min() < 1e-6):
            absent.append(channel)   # no usable signal: masked throughout, as a missing track
            tracks[channel] = (np.zeros_like(tracks["abp"][0]), tracks["abp"][1])
            continue
        if finite.size == 0:
            raise CaseError(f"{path}: the {channel.upper()} track has no finite samples (all NaN)", "all_nan")
        if finite.max() - finite.min() < 1e-6:
            raise CaseError(f"{path}: the {channel.upper()} track is a flat line at {finite[0]:g} for the whole "
                            "recording (disconnected?)", "flatline")
    # every step below computes in float64: each track is converted once, not by each step
    tracks = {c: (np.asarray(samples, dtype=np.float64), srate) for c, (samples, srate) in tracks.items()}
    filtered, abp_raw, abp_invalid, invalid = _filtered_channels(tracks, spec)
    for channel in absent:
        invalid[channel] = np.ones_like(invalid[channel])
    n, fs, length = len(abp_raw), spec.fs, spec.length
    if every_window and n < length:
        raise CaseError(f"{path}: recording is {n / fs:.1f} s, shorter than one {length / fs:.1f}-s window",
                        "too_short")
    need = length + int((min(spec.horizons_min) * 60 + spec.LABEL_DURATION_S) * fs)
    if n < need and not every_window:
        raise CaseError(f"{path}: recording is {n / fs:.0f} s, shorter than one window plus "
                        f"the {min(spec.horizons_min):g}-min horizon and its label minute", "too_short")

    def windows_of(x):  # strided views, no copies
        return sliding_window_view(x, length)[::spec.stride]

    starts = np.arange(0, n - length + 1, spec.stride)
    views = {c: windows_of(filtered[c]) for c in CHANNELS}
    r_peaks = beats.ecg_r_peaks(filtered["ecg"], fs)
    ppg_peaks = beats.ppg_systolic_peaks(filtered["ppg"], fs)
    t_end = (starts + length) / fs
    # The window's own pressures and heart rate (features, gates and regression targets) come from
    # the recorded samples before its end only; the PPG/ECG gates may look a few seconds ahead.
    pressures = beats.past_abp_pressures(*tracks["abp"], t_end, length / fs, spec.abp_lowpass_hz)
    checks = quality.gate_checks(
        views["abp"], views["ppg"], views["ecg"], {c: windows_of(invalid[c]) for c in CHANNELS}, pressures,
        beats.count_in_windows(ppg_peaks, starts, length)[1], beats.bsqi(*r_peaks, fs, starts, length), spec)
    reasons = quality.window_rejections(checks)
    masks = quality.channel_masks(checks)

    map_1hz = labels.map_per_second(abp_raw, abp_invalid, fs)
    columns = {name: pressures[name] for name in BEAT_PRESSURES}
    context_map = _past_only_map_trace(*tracks["abp"], map_1hz)
    columns.update({OBSERVED[c]: (masks[c] == "").astype(np.float32) for c in OBSERVED})
    # hr stays what the past-only detector measured where the ECG is masked (the gates may look ahead): its
    # flag, ecg_observed, says the channel failed its gates there
    columns.update(hr=beats.past_heart_rate(*tracks["ecg"], t_end, length / fs, spec.ecg_band_hz), t_end_s=t_end,
                   map_now=labels.map_at_end(context_map, t_end),
                   map_slope=labels.past_map_slope(context_map, t_end, spec.map_slope_window_s))
    events = labels.ioh_events(map_1hz, spec.map_threshold, spec.LABEL_DURATION_S, spec.label_min_valid)
    columns.update(zip(EVENT_TIMING, labels.event_timing(*events, t_end), strict=True))
    labelled_any = np.zeros(len(starts), dtype=bool)
    horizon_reasons, shortest_reason = {}, None
    for h in sorted(spec.horizons_min):
        y, why, map_ahead = labels.hypotension_labels(map_1hz, t_end, h * 60, spec.LABEL_DURATION_S,
                                                      spec.map_threshold, spec.label_min_valid, spec.label_rule,
                                                      spec.post_event_gap_min * 60, events)
        columns[label_column(h)] = np.where(np.isnan(y), -1, y)
        columns[map_ahead_column(h)] = map_ahead
        labelled_any |= np.isfinite(y)
        shortest_reason = why if shortest_reason is None else shortest_reason
        horizon_reasons[f"{h:g}"] = _count(why[(reasons == "") & (why != "")])
    # A window that passes the gates but has no label at any horizon is dropped; its reason is
    # the one at the shortest horizon (e.g. already hypotensive, or too near the recording end).
    if not every_window:
        reasons = np.where((reasons == "") & ~labelled_any, shortest_reason, reasons)
    keep = reasons == ""

    def example(at):
        return np.stack([views[c][at] for c in CHANNELS]).astype(np.float32)

    examples = {str(r) or "kept": example(np.argmax(reasons == r)) for r in np.unique(reasons)}
    for why in masks.values():
        examples.update({str(r): example(np.argmax(keep & (why == r))) for r in np.unique(why[keep]) if r})
    signals = np.stack([views[c][keep] for c in CHANNELS], axis=1).astype(np.float32)
    for channel, why in masks.items():   # a masked channel is stored as unobserved (NaN)
        signals[why[keep] != "", CHANNELS.index(channel)] = np.nan
    trend_rows, trend_source = trend_view(context_map, columns, starts, t_end, spec, numerics, trend_spec)
    arrays = {"signals": signals, TREND_BLOCK: trend_rows[keep]}
    arrays.update({name: np.asarray(columns[name])[keep].astype(dtype) for name, dtype in window_columns(spec).items()})
    return CaseWindows(arrays=arrays, trend_source=trend_source, reasons=_count(reasons[~keep]),
                       masked={c: _count(why[keep & (why != "")]) for c, why in masks.items()},
                       horizon_reasons=horizon_reasons, n_windows=int(len(starts)), examples=examples,
                       absent=absent, timeline={"map_1hz": map_1hz, "events": events} if every_window else None)


def _past_only_map_trace(abp: np.ndarray, srate: float, fallback: np.ndarray) -> np.ndarray:
    """The 1-Hz MAP trace for context features, from the recorded (not resampled) ABP samples.

    Second k uses only samples in [k-1, k+1) at the original rate, and only complete seconds
    exist, so its value does not depend on any later sample (resample_poly looks ahead).
    `fallback` (the resampled trace) is used when the recording rate is not a whole number of Hz.
    """
    if srate <= 0 or abs(srate - round(srate)) > 1e-9:
        return fallback
    filled, invalid = filters.fill_gaps(abp)  # bridged samples are invalid, so their values never count
    return labels.map_per_second(filled, invalid, int(round(srate)))


def _count(reasons: np.ndarray) -> dict:
    values, counts = np.unique(reasons.astype(str), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}


@dataclass
class CaseWindows:
    """One case's windows, as `process_case` returns them: the kept windows' arrays and what happened
    to the others."""

    arrays: dict            # dataset name -> per kept window: signals, the trend view, every window column
    trend_source: dict      # trend row -> numeric | waveform (rows that have a numeric alternative)
    reasons: dict           # why windows were dropped: reason -> windows
    masked: dict            # channel -> {reason: kept windows where its gates masked it}
    horizon_reasons: dict   # horizon -> {reason: gated windows left unlabelled at it}
    n_windows: int          # windows cut before the gates
    examples: dict          # reason (or 'kept') -> one example window (channels, samples)
    absent: list = field(default_factory=list)   # channels the recording has no track for (every_window only)
    timeline: dict | None = None   # every_window: the 1-Hz MAP trace ('map_1hz') and IOH events ('events':
    #                                (onsets_s, ends_s)), labels.ioh_events of it

    @property
    def kept(self) -> int:
        return len(self.arrays["signals"])


@dataclass
class SplitSummary:
    """What the windows stage did to one split's cases (its metrics, and the input of the report)."""

    cases: int = 0
    skipped_cases: Counter = field(default_factory=Counter)    # reason -> cases
    windows_total: int = 0
    windows: int = 0
    rejected: Counter = field(default_factory=Counter)         # reason -> windows
    labelled: Counter = field(default_factory=Counter)         # horizon -> labelled windows
    positives: Counter = field(default_factory=Counter)        # horizon -> positive windows
    unlabelled: dict = field(default_factory=dict)             # horizon -> Counter(reason)
    masked: dict = field(default_factory=dict)                 # channel -> Counter(reason), among kept windows
    # channel -> horizon -> [labelled, positives] of the windows where that channel is masked / observed
    masked_labels: dict = field(default_factory=dict)
    observed_labels: dict = field(default_factory=dict)
    trend_source: dict = field(default_factory=dict)           # trend row -> Counter(numeric|waveform): cases

    def to_dict(self) -> dict:
        return {"cases": self.cases, "cases_used": self.cases - sum(self.skipped_cases.values()),
                "skipped_cases": dict(sorted(self.skipped_cases.items())), "windows_total": self.windows_total,
                "windows": self.windows, "usable_fraction": round(self.windows / max(self.windows_total, 1), 4),
                "rejected": dict(sorted(self.rejected.items())),
                "horizons": {h: {"labelled": self.labelled[h], "positives": self.positives[h],
                                 "positive_rate": round(self.positives[h] / max(self.labelled[h], 1), 4),
                                 "unlabelled": dict(sorted(self.unlabelled[h].items()))}
                             for h in self.unlabelled},
                "masked": self.masking(),
                "trend_source": {row: dict(sorted(cases.items())) for row, cases in self.trend_source.items()}}

    def masking(self) -> dict:
        """{channel: `_masking`}: PPG/ECG masking counts (also stored in the split file's `masking` attribute)."""
        return {c: self._masking(c) for c in self.masked}

    @classmethod
    def empty(cls, cases: int, horizons) -> "SplitSummary":
        return cls(cases=cases, unlabelled={h: Counter() for h in horizons}, masked={c: Counter() for c in OBSERVED},
                   trend_source={row: Counter() for row in NUMERIC_TRENDS},
                   masked_labels={c: {h: [0, 0] for h in horizons} for c in OBSERVED},
                   observed_labels={c: {h: [0, 0] for h in horizons} for c in OBSERVED})

    def add(self, result: "CaseWindows") -> dict:
        """Count one processed case; returns its {horizon: (labelled, positives)}."""
        self.rejected.update(result.reasons)
        for row, source in result.trend_source.items():
            self.trend_source[row][source] += 1
        for channel, counts in result.masked.items():
            self.masked[channel].update(counts)
        label_counts = {}
        for h, reasons in result.horizon_reasons.items():
            self.unlabelled[h].update(reasons)
            y = result.arrays[label_column(h)]
            label_counts[h] = (int((y >= 0).sum()), int((y == 1).sum()))
            self.labelled[h] += label_counts[h][0]
            self.positives[h] += label_counts[h][1]
            for channel, flag in OBSERVED.items():
                seen = result.arrays[flag] > 0
                for table, where in ((self.observed_labels, seen), (self.masked_labels, ~seen)):
                    table[channel][h][0] += int((y[where] >= 0).sum())
                    table[channel][h][1] += int((y[where] == 1).sum())
        self.windows += result.kept
        self.windows_total += result.n_windows
        return label_counts

    def _masking(self, channel: str) -> dict:
        """How often the channel's gates masked it, and the prevalence where it was masked vs observed
        (a gate that masks mostly positive windows would bias a model that ignores the flag)."""
        def rate(labelled, positives):
            return round(positives / labelled, 4) if labelled else None

        return {"windows": sum(self.masked[channel].values()),
                "fraction": round(sum(self.masked[channel].values()) / max(self.windows, 1), 4),
                "reasons": dict(sorted(self.masked[channel].items())),
                "prevalence": {h: {"masked": rate(*self.masked_labels[channel][h]),
                                   "observed": rate(*self.observed_labels[channel][h]),
                                   "masked_labelled": self.masked_labels[channel][h][0]}
                               for h in self.unlabelled}}


def _case_or_skip(path, aliases, spec, trend_spec) -> "CaseWindows | CaseSkip":
    """process_case, with a case that cannot be used (CaseError) or keeps no window as a skip."""
    try:
        result = process_case(path, aliases, spec, trend_spec)
    except CaseError as err:
        return CaseSkip(err.reason, str(err))
    if result.kept == 0:
        return CaseSkip("no_usable_windows",
                        f"{path}: no usable window: all {result.n_windows} rejected ({_top(result.reasons)})")
    return result


def _top(reasons: dict, n: int = 3) -> str:
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{reason} {count}" for reason, count in top)


def write_split(split: str, cases: list, path, spec: Windows, trend_spec: Trend, aliases: dict, attrs: dict, report,
                workers: int, stats=None) -> SplitSummary:
    """Process one split's cases in parallel and stream their windows into one HDF5 file.

    `cases` is [(caseid, subjectid, recording path)]. A case that cannot be used is a counted skip
    with one line on stderr; `stats` (a StandardScaler, train only) accumulates per-channel
    statistics over every observed (not masked) sample of the kept windows. Raises when no case
    gives a window.
    """
    summary = SplitSummary.empty(len(cases), [f"{h:g}" for h in spec.horizons_min])
    work = partial(_case_or_skip, aliases=aliases, spec=spec, trend_spec=trend_spec)
    with ExitStack() as stack:
        writer = stack.enter_context(WindowWriter(path, CHANNELS, spec.length, window_columns(spec),
                                                  {**attrs, "split": split}, window_blocks(trend_spec), spec.dtype))
        results = stack.enter_context(closing(parallel_imap(work, [p for _, _, p in cases], workers, split)))
        for (caseid, subjectid, _), result in zip(cases, results, strict=True):
            if isinstance(result, CaseSkip):
                print(f"skip case {caseid}: {result.message}", file=sys.stderr)
                summary.skipped_cases[result.reason] += 1
                report.add_case(split, caseid, subjectid, result.reason)
                continue
            ids = {"caseid": np.full(result.kept, caseid, dtype=np.int32),
                   "subjectid": np.full(result.kept, subjectid, dtype=np.int32)}
            writer.append({**result.arrays, **ids}, where=f"split {split}, case {caseid}")
            if stats is not None:   # masked (NaN) samples are ignored
                stats.partial_fit(result.arrays["signals"].transpose(0, 2, 1).reshape(-1, len(CHANNELS)))
            label_counts = summary.add(result)
            report.add_case(split, caseid, subjectid, None, result, label_counts)
        writer.set_attrs({"masking": summary.masking()})
        if stats is not None:
            writer.set_attrs({"normalisation": normalisation_stats(stats)})
    if summary.windows == 0:
        raise PipelineError(f"split {split}: no usable windows from {len(cases)} cases "
                            f"(skipped: {dict(summary.skipped_cases)}, rejected: {dict(summary.rejected)})")
    return summary


def file_attrs(spec: Windows, trend_spec: Trend, aliases: dict) -> dict:
    """What a windows file records of how its windows were made (the rule `windows_h5.window_rule` reads back):
    the sample rate, the windows.* keys of `spec` (the train split's), the trend view, the track aliases."""
    return {"fs": spec.fs, "params": {**spec.to_attrs(), "label_duration_s": spec.LABEL_DURATION_S,
                                      "trend": trend_spec.to_attrs()}, "tracks": aliases}


def normalisation_stats(scaler) -> dict:
    """A fitted StandardScaler's per-channel statistics, as the windows files store them."""
    return {"fitted_on": "train", "channels": list(CHANNELS), "mean": [round(float(v), 6) for v in scaler.mean_],
            "std": [round(float(v), 6) for v in scaler.scale_],
            "samples": [int(v) for v in np.broadcast_to(scaler.n_samples_seen_, len(CHANNELS))]}
