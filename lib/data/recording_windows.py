"""A recording's windows for scoring, cut by the rule a trained model's checkpoint keeps.

Kept apart from lib/score.py so that `ttm-ioh score` can window recordings in worker processes while the
main process imports the model's libraries: this module imports neither the model nor, until a recording
is windowed, the beat detectors.
"""
from dataclasses import dataclass, replace
from pathlib import Path

from lib.core.errors import CaseError, CaseSkip, PipelineError
from lib.core.params import Trend, Windows, track_aliases


@dataclass(frozen=True)
class WindowRule:
    """How the model's training windows were made (its checkpoint's `windows`), at the stride to score with."""

    spec: Windows            # the windows.* keys, `stride` the scoring one
    trend: Trend
    tracks: dict             # channel -> track names
    attrs: dict              # the checkpoint's window_rule (the scored windows file's attributes)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, path, stride: int | None = None) -> "WindowRule":
        """The rule in `ckpt`; `stride` samples between windows (default half a window: the test split's at
        evaluate.overlap 0.5)."""
        rule = ckpt.get("windows")
        if not rule:
            raise PipelineError(f"{path}: the checkpoint does not record its windowing rule; rerun dvc repro train")
        params = {k: v for k, v in rule["params"].items() if k not in ("label_duration_s", "trend")}
        spec = Windows.from_mapping("checkpoint windows", {**params, "workers": 1})
        stride = stride or max(1, spec.length // 2)
        if spec.length % stride and stride % spec.length:
            # the trend view's beat statistics are sampled on the grid of window starts that are multiples of the
            # window length (windowing.trend_view): a stride off that grid would leave them unobserved
            raise PipelineError(f"--stride {stride}: must divide the window length ({spec.length} samples) or be a "
                                "multiple of it")
        spec = replace(spec, stride=stride)
        return cls(spec, Trend(**rule["params"]["trend"]), track_aliases(rule["tracks"]), rule)


def read_rule(models_dir="models", stride: int | None = None) -> WindowRule:
    """The windowing rule of the checkpoint in `models_dir` (without building the model)."""
    import torch

    path = Path(models_dir) / "model.pt"
    if not path.is_file():
        raise PipelineError(f"checkpoint {path} not found: run dvc repro (or pass --models)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise PipelineError(f"checkpoint {path} is corrupt ({type(err).__name__}); rerun dvc repro -f train") from err
    return WindowRule.from_checkpoint(ckpt, path, stride)


def window_recording(path, rule: "WindowRule"):
    """Every window of the recording that passes the quality gates (`process_case(every_window=True)`); a
    recording that cannot be scored at all is a CaseSkip (unreadable, no ABP track, shorter than a window,
    no window passes the gates)."""
    from lib.data.vital_io import check_complete
    from lib.data.windowing import process_case  # scipy.signal and the beat detectors: in the worker only

    try:
        if Path(path).suffix == ".vital":   # vitaldb reads a cut-off file as a shorter recording
            check_complete(Path(path))
        case = process_case(path, rule.tracks, rule.spec, rule.trend, every_window=True)
    except CaseError as err:
        return CaseSkip(err.reason, str(err))
    if case.kept == 0:
        top = ", ".join(f"{r} {n}" for r, n in sorted(case.reasons.items(), key=lambda kv: -kv[1])[:3])
        return CaseSkip("no_usable_windows", f"{path}: no window passes the quality gates ({case.n_windows} "
                                             f"windows: {top})")
    return case


def window_file(path, models_dir="models", stride: int | None = None):
    """`window_recording` of `path` by the rule of the checkpoint in `models_dir` (a worker's whole job)."""
    return window_recording(path, read_rule(models_dir, stride))
