"""Score any recording with the trained model and every baseline: the library behind `ttm-ioh score`.

A recording is windowed as the model's training windows were: the rule its checkpoint keeps
(`windows_h5.window_rule`: the windows.* and trend.* keys, the track aliases, the train split's
normalisation), at the test split's stride, past-only, with the same quality gates and per-channel masks.
Every window that passes the gates is scored, labelled or not. Each scorer's logits are calibrated as on
val, and its alarms are raised at its val-chosen threshold by the alarm rule of `evaluate.alarm`
(lib.eval.alarms: hold, refractory). For the windows evaluate scores, the probabilities are evaluate's
(tests/test_score.py checks it on the test split's recordings).

    bundle = load_bundle("models")
    scores = score_recording("case.vital", bundle)   # RecordingScores: a table per window, alarms, events
    write_outputs(scores, "scores/", vital_dir="scored/")
"""
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.errors import CaseError, CaseSkip, PipelineError
from lib.core.params import Alarm, Inference
from lib.core.schema import CHANNELS, CONTEXT_SOURCES, OBSERVED, label_column
from lib.data.dataset import checkpoint_split
from lib.data.recording_windows import WindowRule, window_recording
from lib.data.windows_h5 import WindowWriter, window_blocks, window_columns
from lib.eval import alarms
from lib.eval.calibration import Calibration, read_calibrations
from lib.model.inference import pick_device, predict
from lib.model.scorers import MODEL, display_names, load_saved, score_loaded
from lib.model.ttm import load_checkpoint

MAP_LR = "map_lr"             # the baseline the timeline shows beside the model
DEFAULT_ALARM = Alarm()       # evaluate.alarm as params.yaml ships it
RISK_TRACK, ALARM_TRACK = "TTM/IOH_RISK", "TTM/IOH_ALARM"   # what --write-vital adds (risk 0-100; 100 at alarms)


@dataclass
class Bundle:
    """The trained model, its baselines and calibrators, and the windowing rule they were trained with."""

    model: object
    horizon_min: float
    baselines: dict          # {name: Scorer}, as the baselines stage fitted them
    calibrations: dict       # {name: Calibration}: the model's and each baseline's, fitted on val
    rule: WindowRule
    device: object

    def measured_on(self, name: str) -> tuple:
        """The channels a scorer's inputs are measured on."""
        if name == MODEL:
            waves = [c for c in self.model.channels if c in CHANNELS]
            return tuple(dict.fromkeys([*waves, *(CONTEXT_SOURCES[f] for f in self.model.context)]))
        return tuple(self.baselines[name].measured_on)


def load_bundle(models_dir="models", device: str = "cpu", inference: Inference | None = None,
                stride: int | None = None) -> Bundle:
    """The model (`model.pt`), its calibrator (`calibrator.json`) and the baselines (`baselines/`) in
    `models_dir`, as `dvc repro` leaves them. Eager inference by default: bit-identical to the pipeline's
    torchscript engine, and nothing to trace for one recording."""
    models_dir = Path(models_dir)
    dev = pick_device(device)
    model, ckpt = load_checkpoint(models_dir / "model.pt", dev, inference or Inference(engine="eager"))
    if model.task != "clf":
        raise PipelineError(f"{models_dir / 'model.pt'}: a blood-pressure regressor (train.task=reg); "
                            "ttm-ioh score needs the hypotension classifier (train.task=clf)")
    rule = WindowRule.from_checkpoint(ckpt, models_dir / "model.pt", stride)
    horizon = float(ckpt["horizon_min"])
    calibrations = {MODEL: Calibration.load(models_dir / "calibrator.json"),
                    **read_calibrations(models_dir / "baselines" / "calibration.json")}
    return Bundle(model, horizon, load_saved(models_dir / "baselines", horizon), calibrations, rule, dev)


@dataclass
class RecordingScores:
    """One recording's scores: `frame` has a row per scored window (time_s: its end, s from the recording's
    start; map_mmhg; masked channels; the label where the ABP allows one; risk_<scorer> and alarm_<scorer>)."""

    path: Path
    frame: pd.DataFrame
    thresholds: dict         # {scorer: its val-chosen threshold}
    alarm_times: dict        # {scorer: alarm start times (s)}
    not_scored: dict         # {scorer: why not}
    absent: list             # channels the recording has no track for
    map_1hz: np.ndarray      # 1-Hz MAP from the ABP waveform (NaN where invalid)
    events: tuple            # IOH events (onsets_s, ends_s) derived from it
    horizon_min: float
    names: dict = field(default_factory=display_names)
    map_threshold: float = 65.0   # mmHg: windows.map_threshold of the model's labels


def score_recording(path, bundle: Bundle, alarm: Alarm = DEFAULT_ALARM, case=None) -> RecordingScores:
    """Window and score one recording (module doc), or score its windows `case` when already cut
    (`window_recording` with `bundle.rule`). Raises CaseError naming the file when it cannot be scored at all."""
    path = Path(path)
    case = window_recording(path, bundle.rule) if case is None else case
    if isinstance(case, CaseSkip):
        raise CaseError(case.message, case.reason)
    arrays = case.arrays
    with tempfile.TemporaryDirectory(prefix="ttm-ioh-score-") as tmp:
        windows = Path(tmp) / "windows.h5"
        _write_windows(windows, arrays, bundle.rule)
        split = checkpoint_split(bundle.model, {"horizon_min": bundle.horizon_min}, windows, every_window=True)
        logits = {MODEL: predict(bundle.model, split, bundle.device)}
        logits.update(score_loaded(bundle.baselines, windows, bundle.horizon_min, bundle.device,
                                   every_window=True)[0])
    t = arrays["t_end_s"].astype(np.float64)
    label = arrays[label_column(bundle.horizon_min)]
    masked = [";".join(c for c, flag in OBSERVED.items() if arrays[flag][i] <= 0) for i in range(len(t))]
    spec = bundle.rule.spec
    frame = pd.DataFrame({"time_s": t, "map_mmhg": arrays["map_now"].astype(np.float64), "masked": masked,
                          f"ioh_{spec.label_rule}_{bundle.horizon_min:g}min": np.where(label >= 0, label, np.nan)})
    not_scored = {name: f"no {'/'.join(c.upper() for c in bundle.measured_on(name) if c in case.absent)} track"
                  for name in logits if set(bundle.measured_on(name)) & set(case.absent)}
    # as load_split: without ABP among a scorer's inputs, a window whose every input channel is masked is not scored
    baseline_channels = list(dict.fromkeys(c for s in bundle.baselines.values() for c in s.channels))
    unscored = {name: _inputs_masked(arrays, bundle.model.channels if name == MODEL else baseline_channels)
                for name in logits}
    thresholds, alarm_times = {}, {}
    for name, z in logits.items():
        calibration = bundle.calibrations[name]
        risk = np.full(len(t), np.nan) if name in not_scored else calibration.predict_proba(z)
        risk = np.where(unscored[name], np.nan, risk)
        thresholds[name] = calibration.threshold
        alarm_times[name] = alarms.alarms(t, risk, calibration.threshold, alarm.hold_s, alarm.refractory_s)[0]
        frame[f"risk_{name}"] = risk
        frame[f"alarm_{name}"] = np.isin(t, alarm_times[name]).astype(np.int8)
    map_alarm = f"map_below_{alarm.map_alarm_mmhg:g}"   # the plain MAP alarm every monitor has
    alarm_times[map_alarm] = alarms.alarms(t, alarms.map_risk(frame["map_mmhg"]), alarms.map_threshold(
        alarm.map_alarm_mmhg), alarm.hold_s, alarm.refractory_s)[0]
    frame[f"alarm_{map_alarm}"] = np.isin(t, alarm_times[map_alarm]).astype(np.int8)
    names = {**display_names(), map_alarm: f"MAP < {alarm.map_alarm_mmhg:g} mmHg"}
    return RecordingScores(path, frame, thresholds, alarm_times, not_scored, list(case.absent),
                           case.timeline["map_1hz"], case.timeline["events"], bundle.horizon_min, names,
                           spec.map_threshold)


def _inputs_masked(arrays: dict, channels) -> np.ndarray:
    """Per window: every one of `channels` masked by its quality gates (never when ABP is among them)."""
    flags = [OBSERVED[c] for c in channels if c in OBSERVED]
    if not flags or len(flags) != len(channels):
        return np.zeros(len(arrays["t_end_s"]), dtype=bool)
    return ~np.logical_or.reduce([arrays[f] > 0 for f in flags])


def _write_windows(path, arrays: dict, rule: WindowRule) -> None:
    """The recording's windows as a windows file (the pipeline's readers, stored as its training windows were)."""
    spec = rule.spec
    with WindowWriter(path, CHANNELS, spec.length, window_columns(spec), {**rule.attrs, "stride": spec.stride,
                      "split": "score"}, window_blocks(rule.trend), spec.dtype) as writer:
        n = len(arrays["signals"])
        writer.append({**arrays, "caseid": np.zeros(n, dtype=np.int32), "subjectid": np.zeros(n, dtype=np.int32)},
                      where=str(path))


def write_outputs(scores: RecordingScores, out_dir, vital_dir=None) -> list:
    """`<name>.csv` and `<name>.png` in `out_dir` (and, with `vital_dir`, `<name>.vital`: a copy of the recording
    with the model's risk, 0-100, and its alarms as numeric tracks); returns the paths written."""
    from lib.core.atomic import atomic_path
    from lib.data.vital_io import write_risk_tracks
    from lib.eval.report import save_png
    from lib.eval.timeline import timeline_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = scores.path.stem
    written = [out_dir / f"{stem}.csv", out_dir / f"{stem}.png"]
    with atomic_path(written[0]) as tmp:
        scores.frame.to_csv(tmp, index=False, float_format="%.6g")
    shown = [name for name in (MODEL, MAP_LR) if f"risk_{name}" in scores.frame]
    risks = {scores.names[name]: (scores.frame[f"risk_{name}"].to_numpy(), scores.thresholds[name],
                                  scores.alarm_times[name]) for name in shown}
    onsets, ends = scores.events
    fig = timeline_figure(scores.frame["time_s"].to_numpy(), scores.frame["map_mmhg"].to_numpy(), risks,
                          list(zip(onsets, ends, strict=True)), f"{scores.path.name}: risk of IOH within "
                          f"{scores.horizon_min:g} min", map_1hz=scores.map_1hz, map_threshold=scores.map_threshold,
                          horizon_min=scores.horizon_min)
    save_png(fig, written[1])
    if vital_dir is not None:
        vital_path = Path(vital_dir) / f"{stem}.vital"
        Path(vital_dir).mkdir(parents=True, exist_ok=True)
        t = scores.frame["time_s"].to_numpy()
        write_risk_tracks(scores.path, vital_path, t, {
            RISK_TRACK: 100 * scores.frame[f"risk_{MODEL}"].to_numpy(),
            ALARM_TRACK: np.where(scores.frame[f"alarm_{MODEL}"].to_numpy() > 0, 100.0, np.nan)})
        written.append(vital_path)
    return written
