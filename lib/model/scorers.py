"""The scorer registry: every baseline the TTM model (`MODEL`) is compared with, one class each.

A scorer is fitted on train (val for early stopping), calibrated on val by the baselines stage like
the model (`lib.eval.calibration`), and scores windows with a logit each. Adding one is one class
and one registration:

    @register
    class MyScorer(Scorer):
        name, display_name = "my_lr", "LR on my features"
        def fit(self, train, val, cfg, input_stats, device) -> dict: ...   # a summary, {} if nothing to say
        def score(self, split, horizon_min, device) -> np.ndarray: ...     # a logit per window, in order
        def save(self, directory) -> None: ...
        @classmethod
        def load(cls, directory) -> "MyScorer": ...

Everything else loops over `REGISTRY`, in registration order (the order of evaluate's outputs and
the report's rows): the baselines stage (`fit_scorers`, `save_scorers`), evaluate (`score_saved`),
the report's display names (`display_names`), the headline metrics, and dvc.yaml's ROC overlay
(tests/test_scorers.py checks it lists `roc_<name>.json` of every registered scorer).

The baselines stage records what each scorer was fitted on in `calibration.json` (`fitted_on`,
with the horizon): that file is the manifest `score_saved` scores, and it refuses a horizon the
scorers were not trained for.
"""
import json
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from lib.core.config import BaselinesConfig
from lib.core.errors import PipelineError
from lib.core.schema import CONTEXT, CONTEXT_SOURCES, MODEL
from lib.data.dataset import Split, load_split
from lib.model.baselines import TrendForecaster, WindowCNN, logistic_baseline, logistic_logits, trend_inputs
from lib.model.inference import predict
from lib.model.loop import train_model
from lib.model.ttm import save_torch

MODEL_DISPLAY_NAME = "TTM (this model)"   # MODEL (lib.core.schema): the model every scorer is compared with
MANIFEST = "calibration.json"   # the baselines stage's calibration per fitted scorer (its `fitted_on`)


class Scorer:
    """One baseline: `name` (file names, details.json keys), `display_name` (the report), `fit` on
    train (val for early stopping; returns a summary), `score` windows (a logit each), `save`/`load`
    its fitted state in the baselines folder."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    channels: tuple = ()   # the waveform channels it reads from a split (the CNN's); the others read columns
    measured_on: tuple = ("abp",)   # the channels its inputs are measured on: without one it cannot score

    @classmethod
    def enabled(cls, cfg: BaselinesConfig) -> bool:
        """Whether the baselines stage fits this scorer at these params (evaluate scores what it fitted)."""
        return True

    def fit(self, train: Split, val: Split, cfg: BaselinesConfig, input_stats: dict, device) -> dict:
        raise NotImplementedError

    def score(self, split: Split, horizon_min: float, device) -> np.ndarray:
        raise NotImplementedError

    def save(self, directory) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, directory) -> "Scorer":
        raise NotImplementedError


REGISTRY: dict = {}   # name -> Scorer subclass, in registration order


def register(cls):
    """Class decorator: add a Scorer to `REGISTRY` (after those registered before it)."""
    if cls.name in REGISTRY or cls.name == MODEL:
        raise ValueError(f"scorer {cls.name!r} is already registered")
    REGISTRY[cls.name] = cls
    return cls


def display_names() -> dict:
    """{name: display name} of the model and every registered scorer, in order."""
    return {MODEL: MODEL_DISPLAY_NAME, **{name: cls.display_name for name, cls in REGISTRY.items()}}


# --- the baselines -----------------------------------------------------------------------------

class LogisticScorer(Scorer):
    """Median imputation → standardisation → logistic regression on `features` (columns of the
    split's context matrix, ordered as `lib.core.schema.CONTEXT`); saved as `<name>.joblib`."""

    features: ClassVar[tuple]

    def __init__(self, pipeline=None):
        self.pipeline = pipeline

    @property
    def measured_on(self) -> tuple:
        return tuple(dict.fromkeys(CONTEXT_SOURCES[f] for f in self.features))

    def inputs(self, split: Split) -> np.ndarray:
        return split.context[:, [list(CONTEXT).index(f) for f in self.features]]

    def fit(self, train, val, cfg, input_stats, device) -> dict:
        self.pipeline = logistic_baseline().fit(self.inputs(train), train.targets)
        return {}

    def score(self, split, horizon_min, device) -> np.ndarray:
        return logistic_logits(self.pipeline, self.inputs(split))

    def save(self, directory) -> None:
        import joblib
        joblib.dump(self.pipeline, Path(directory) / f"{self.name}.joblib")

    @classmethod
    def load(cls, directory) -> "LogisticScorer":
        import joblib
        return cls(joblib.load(Path(directory) / f"{cls.name}.joblib"))


@register
class MapLR(LogisticScorer):
    """The window's current MAP alone: the bar published hypotension predictors must beat
    (hypotension soon is mostly low pressure now)."""

    name, display_name = "map_lr", "LR on current MAP"
    features = ("map",)


@register
class ContextLR(LogisticScorer):
    """The past-only context features (MAP, MAP trend, HR, pulse pressure; a missing MAP trend is
    imputed with the train median)."""

    name, display_name = "context_lr", "LR on context features"
    features = tuple(CONTEXT)


@register
class TrendLR(LogisticScorer):
    """The classical trend features of the window's trend view (current MAP, its 5-min slope,
    minimum and SD, current HR: `trend.classic_features`): the bar a model of the trend must clear,
    not only current MAP. The trend view's bin width (trend.step_s) is read back, when loaded,
    from the zero-shot forecaster's settings (`ttm_zeroshot.json`), which the same stage writes."""

    name, display_name = "trend_lr", "LR on trend features"
    measured_on = ("abp", "ecg")   # its current HR comes from the ECG

    def __init__(self, pipeline=None, step_s: int | None = None):
        super().__init__(pipeline)
        self.step_s = step_s

    def inputs(self, split: Split) -> np.ndarray:
        return trend_inputs(split, self.step_s)

    def fit(self, train, val, cfg, input_stats, device) -> dict:
        self.step_s = cfg.trend_step_s
        return super().fit(train, val, cfg, input_stats, device)

    @classmethod
    def load(cls, directory) -> "TrendLR":
        scorer = super().load(directory)
        scorer.step_s = json.loads((Path(directory) / f"{ZeroShotTTM.name}.json").read_text())["step_s"]
        return scorer


@register
class CNN(Scorer):
    """A small 1-D CNN on the raw windows (the VitalDB example's approach; `WindowCNN`), trained with
    the same loop, loss and early stopping as the model (lib.model.loop.train_model) from the train
    split's z-scores; saved as `cnn.pt` (channels and weights)."""

    name, display_name = "cnn", "1-D CNN on raw windows"

    def __init__(self, model: WindowCNN | None = None):
        self.model = model

    @property
    def channels(self) -> list:
        return list(self.model.channels)

    @property
    def measured_on(self) -> tuple:
        return tuple(self.channels)

    def fit(self, train, val, cfg, input_stats, device) -> dict:
        torch.manual_seed(cfg.cnn_loop.seed)   # the CNN's initial weights
        cnn = WindowCNN(cfg.channels)
        cnn.set_input_stats(input_stats)
        summary = train_model(cnn, train, val, cfg.cnn_loop, device)
        self.model = cnn.cpu()
        return summary

    def score(self, split, horizon_min, device) -> np.ndarray:
        if list(split.channels) != self.channels:
            split = replace(split, channels=self.channels)
        return predict(self.model.to(device), split, device)

    def save(self, directory) -> None:
        save_torch(Path(directory) / "cnn.pt", {"channels": self.channels, "state": self.model.cpu().state_dict()})

    @classmethod
    def load(cls, directory) -> "CNN":
        saved = torch.load(Path(directory) / "cnn.pt", map_location="cpu", weights_only=False)
        cnn = WindowCNN(saved["channels"])
        cnn.load_state_dict(saved["state"])
        return cls(cnn)


class ForecastScorer(Scorer):
    """TTM r2 forecasting the window's MAP trend (`TrendForecaster`); score = 65 mmHg minus the soft
    minimum of its forecast over (e, e + h]. Evaluate also reads its MAP forecast per label minute
    (`score_and_forecast`). Saved as `<name>.json` (settings) and, fine-tuned, `<name>.pt`."""

    def __init__(self, forecaster: TrendForecaster | None = None):
        self.forecaster = forecaster

    def score_and_forecast(self, split: Split, horizon_min: float, minutes=()) -> tuple:
        """(logits (n,), {m: mean forecast MAP over [e + m, e + m + 1 min) (n,)} for the `minutes` the
        forecast covers)."""
        return self.forecaster.score(split, horizon_min, minutes)

    def score(self, split, horizon_min, device) -> np.ndarray:
        return self.score_and_forecast(split, horizon_min)[0]

    def save(self, directory) -> None:
        self.forecaster.save(directory, self.name)

    @classmethod
    def load(cls, directory) -> "ForecastScorer":
        return cls(TrendForecaster.load(directory, cls.name))


@register
class ZeroShotTTM(ForecastScorer):
    """TTM r2 as what it was pre-trained to be: a zero-shot forecaster of the MAP trend
    (`lib.model.forecast`). Nothing is trained; like every scorer it is calibrated on val."""

    name, display_name = "ttm_zeroshot", "TTM zero-shot MAP forecast"

    def fit(self, train, val, cfg, input_stats, device) -> dict:
        self.forecaster = TrendForecaster(cfg.weights_dir, cfg.trend_step_s, cfg.forecast_softness_mmhg)
        return {"trained": False, **self.forecaster.to_dict()}


@register
class FinetunedTTM(ForecastScorer):
    """The same forecaster with its decoder and head fine-tuned on train windows' MAP trend rows
    (IBM's few-shot recipe, `TrendForecaster.fit`); only with trend.finetune."""

    name, display_name = "ttm_finetuned", "TTM fine-tuned MAP forecast"

    @classmethod
    def enabled(cls, cfg: BaselinesConfig) -> bool:
        return cfg.forecast_finetune.enabled

    def fit(self, train, val, cfg, input_stats, device) -> dict:
        self.forecaster = TrendForecaster(cfg.weights_dir, cfg.trend_step_s, cfg.forecast_softness_mmhg)
        return {**self.forecaster.to_dict(), **self.forecaster.fit(train, val, cfg.forecast_finetune,
                                                                      cfg.cnn_loop.seed)}


# --- what the stages call ----------------------------------------------------------------------

def fit_scorers(train: Split, val: Split, cfg: BaselinesConfig, input_stats: dict, device) -> tuple:
    """Fit every registered scorer `enabled` at `cfg` on `train` (the CNN early-stopping on `val`,
    from `input_stats`' z-scores), in registry order.

    Returns ({name: fitted Scorer (on the CPU)}, {name: val logits}, {name: its fit summary}).
    """
    fitted, val_logits, summaries = {}, {}, {}
    for name, cls in REGISTRY.items():
        if not cls.enabled(cfg):
            continue
        scorer = cls()
        summaries[name] = scorer.fit(train, val, cfg, input_stats, device)
        fitted[name], val_logits[name] = scorer, scorer.score(val, cfg.horizon_min, "cpu")
    return fitted, val_logits, summaries


def save_scorers(directory, fitted: dict) -> None:
    """Each fitted scorer's files in `directory` (`score_saved` reads them back); the stage adds the
    manifest (calibration.json)."""
    for scorer in fitted.values():
        scorer.save(directory)


def manifest(directory) -> dict:
    """{name: calibration state} from the baselines stage's calibration.json."""
    try:
        states = json.loads((Path(directory) / MANIFEST).read_text())
        unknown = sorted(set(states) - set(REGISTRY))
        if unknown:
            raise KeyError(", ".join(unknown))
        return states
    except (OSError, ValueError, KeyError) as err:
        raise PipelineError(f"baselines in {directory} are missing or corrupt ({type(err).__name__}: {MANIFEST}); "
                            "rerun dvc repro baselines") from err


def trained_horizon(directory, states: dict | None = None) -> float | None:
    """The prediction horizon (min) the scorers in `directory` were fitted at (their `fitted_on` in
    the manifest, or in `states` when given); None when none records one."""
    states = manifest(directory) if states is None else states
    horizons = {float(s["fitted_on"]["horizon_min"]) for s in states.values()
                if isinstance(s.get("fitted_on"), dict) and "horizon_min" in s["fitted_on"]}
    if len(horizons) > 1:
        raise PipelineError(f"baselines in {directory} were fitted at several horizons ({sorted(horizons)} min); "
                            "rerun dvc repro baselines")
    return horizons.pop() if horizons else None


def load_saved(directory, horizon_min: float) -> dict:
    """{name: Scorer} of every scorer the baselines stage fitted (those its calibration.json lists), in
    registry order; refuses a horizon the scorers were not fitted at."""
    directory = Path(directory)
    states = manifest(directory)
    trained, horizon_min = trained_horizon(directory, states), float(horizon_min)
    if trained is None:
        raise PipelineError(f"baselines in {directory} record no horizon (fitted_on in {MANIFEST}); "
                            "rerun dvc repro baselines")
    if trained != horizon_min:
        raise PipelineError(f"baselines in {directory} were fitted at a {trained:g}-min horizon, the model predicts "
                            f"{horizon_min:g} min ahead: set train.horizon_min to {horizon_min:g} and rerun "
                            "dvc repro baselines")
    try:
        return {name: REGISTRY[name].load(directory) for name in REGISTRY if name in states}
    except Exception as err:
        raise PipelineError(f"baselines in {directory} are missing or corrupt ({type(err).__name__}); "
                            "rerun dvc repro baselines") from err


def score_loaded(loaded: dict, windows_path, horizon_min: float, device, forecast_minutes=(),
                 every_window: bool = False) -> tuple:
    """`score_saved` with the scorers already loaded (`load_saved`)."""
    channels = list(dict.fromkeys(c for scorer in loaded.values() for c in scorer.channels))
    split = load_split(windows_path, "clf", horizon_min, channels, CONTEXT, every_window=every_window)
    logits, forecasts = {}, {}
    for name, scorer in loaded.items():
        if isinstance(scorer, ForecastScorer):
            logits[name], forecasts[name] = scorer.score_and_forecast(split, horizon_min, forecast_minutes)
        else:
            logits[name] = scorer.score(split, horizon_min, device)
    return logits, forecasts


def score_saved(directory, windows_path, horizon_min: float, device, forecast_minutes=(),
                every_window: bool = False) -> tuple:
    """({scorer: logits}, {forecaster: {minutes: its mean MAP forecast over that label minute}}) of
    every scorer the baselines stage fitted (those its calibration.json lists), in registry order, on
    the windows of `windows_path` labelled at `horizon_min` (the model's windows, same order).
    Refuses a horizon the scorers were not fitted at. `every_window`: all the file's windows (`load_split`)."""
    return score_loaded(load_saved(directory, horizon_min), windows_path, float(horizon_min), device,
                        forecast_minutes, every_window)
