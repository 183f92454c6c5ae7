"""Post-hoc calibration and the decision threshold, fitted on the validation split only.

Every calibrator maps a model's logits to probabilities with scikit-learn's fit/predict shape and
round-trips through a small JSON artifact (`to_dict` / `calibrator_from_dict`), which the
calibrate and baselines stages write and evaluate loads. The threshold rule is applied to the
calibrated val probabilities; evaluate uses the threshold as it is.
"""
import json

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve

from lib.core.atomic import atomic_path, write_json
from lib.core.errors import PipelineError
from lib.core.params import THRESHOLD_RULES, Calibrate
from lib.eval.metrics import expected_calibration_error


def _check_two_classes(y, method: str) -> None:
    if len(np.unique(y)) < 2:
        raise PipelineError(f"calibrate: the validation split has a single class; {method} cannot be fitted")


class TemperatureScaler:
    """p = sigmoid(logit / T), T fitted by minimising the negative log-likelihood (scipy)."""

    method = "temperature"

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def fit(self, logits, y):
        logits, y = np.asarray(logits, dtype=np.float64), np.asarray(y, dtype=np.float64)
        _check_two_classes(y, self.method)

        def nll(log_t):
            z = logits / np.exp(log_t)
            return float(np.mean(np.logaddexp(0, z) - y * z))

        self.temperature = float(np.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded").x))
        return self

    def predict_proba(self, logits):
        return expit(np.asarray(logits, dtype=np.float64) / self.temperature)

    def to_dict(self) -> dict:
        return {"temperature": self.temperature}


class PlattScaler:
    """p = sigmoid(a * logit + b) by unpenalised logistic regression (Platt 1999).

    Unlike temperature scaling it also moves the intercept, which a class-weighted loss shifts.
    """

    method = "platt"

    def __init__(self, slope: float = 1.0, intercept: float = 0.0):
        self.slope, self.intercept = slope, intercept

    def fit(self, logits, y):
        _check_two_classes(y, self.method)
        lr = LogisticRegression(C=np.inf).fit(np.asarray(logits, dtype=np.float64)[:, None], np.asarray(y))
        self.slope, self.intercept = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        # A negative slope (the model ranks val windows the wrong way round) is kept: flattening it
        # would hide the problem behind probabilities at the prevalence and a meaningless threshold.
        # `Calibration` records it (`ranks_backwards`) and evaluate names the scorer.
        return self

    def predict_proba(self, logits):
        return expit(self.slope * np.asarray(logits, dtype=np.float64) + self.intercept)

    def to_dict(self) -> dict:
        return {"slope": self.slope, "intercept": self.intercept}


class IsotonicCalibrator:
    """Monotone step-wise map from logit to probability (scikit-learn IsotonicRegression).

    Stored as its breakpoints; predictions interpolate linearly between them and clip outside,
    exactly as IsotonicRegression(out_of_bounds="clip").predict does.
    """

    method = "isotonic"

    def __init__(self, x=(), y=()):
        self.x, self.y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def fit(self, logits, y):
        _check_two_classes(y, self.method)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(np.asarray(logits, dtype=np.float64), np.asarray(y, dtype=np.float64))
        self.x, self.y = iso.X_thresholds_, iso.y_thresholds_
        return self

    def predict_proba(self, logits):
        return np.interp(np.asarray(logits, dtype=np.float64), self.x, self.y)

    def to_dict(self) -> dict:
        return {"x": [float(v) for v in self.x], "y": [float(v) for v in self.y]}


CALIBRATORS = {c.method: c for c in (TemperatureScaler, PlattScaler, IsotonicCalibrator)}


def make_calibrator(method: str):
    if method not in CALIBRATORS:
        raise PipelineError(f"params.yaml: calibrate.method={method!r}: expected one of {', '.join(CALIBRATORS)}")
    return CALIBRATORS[method]()


def youden_threshold(y, probabilities) -> float:
    """Probability threshold maximising sensitivity + specificity - 1."""
    fpr, tpr, thresholds = roc_curve(y, probabilities)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def sensitivity_threshold(y, probabilities, target: float) -> float:
    """The highest threshold whose sensitivity reaches `target` (the most specific such rule)."""
    _, tpr, thresholds = roc_curve(y, probabilities)
    return float(min(thresholds[int(np.argmax(tpr >= target - 1e-12))], 1.0))


def choose_threshold(y, probabilities, rule: str, target_sensitivity: float) -> float:
    if rule == "youden":
        return youden_threshold(y, probabilities)
    if rule == "sensitivity":
        if not 0 < target_sensitivity <= 1:
            raise PipelineError(f"params.yaml: calibrate.target_sensitivity={target_sensitivity}: must be in (0, 1]")
        return sensitivity_threshold(y, probabilities, target_sensitivity)
    raise PipelineError(f"params.yaml: calibrate.threshold_rule={rule!r}: expected one of {', '.join(THRESHOLD_RULES)}")


class Calibration:
    """A fitted calibrator and the decision threshold chosen with it (both from val).

    `val_auroc` is the raw logits' AUROC on val; `ranks_backwards` is true when it is below 0.5 or
    the Platt slope is negative: the scorer ranks val windows the wrong way round. A Platt map then
    keeps its negative slope, i.e. calibration inverts the scorer's ranking (its test metrics are the
    inverted score's), and a temperature or isotonic map flattens it; either way it is recorded here
    and evaluate names the scorer, never silently.
    """

    def __init__(self, calibrator, threshold: float, threshold_rule: str, fitted_on: dict,
                 target_sensitivity: float | None = None, val_auroc: float | None = None):
        self.calibrator, self.threshold = calibrator, threshold
        self.threshold_rule, self.fitted_on = threshold_rule, fitted_on
        self.target_sensitivity = target_sensitivity   # only for the sensitivity rule (the report names it)
        self.val_auroc = val_auroc

    @property
    def ranks_backwards(self) -> bool:
        slope = getattr(self.calibrator, "slope", 1.0)
        return bool(slope < 0 or (self.val_auroc is not None and self.val_auroc < 0.5))

    @classmethod
    def fit(cls, logits, y, method: str, threshold_rule: str, target_sensitivity: float, fitted_on: dict):
        calibrator = make_calibrator(method).fit(logits, y)
        threshold = choose_threshold(y, calibrator.predict_proba(logits), threshold_rule, target_sensitivity)
        val_auroc = float(roc_auc_score(np.asarray(y), np.asarray(logits, dtype=np.float64)))
        calibration = cls(calibrator, threshold, threshold_rule, fitted_on,
                          float(target_sensitivity) if threshold_rule == "sensitivity" else None, val_auroc)
        if calibration.ranks_backwards:
            slope = getattr(calibrator, "slope", None)
            print(f"calibrate: warning: the scorer ranks val windows backwards (val AUROC {val_auroc:.3f}"
                  + (f", Platt slope {slope:.3g}: calibration inverts its ranking" if slope is not None else "")
                  + "); recorded as ranks_backwards")
        return calibration

    def backwards(self) -> dict:
        """{ranks_backwards, val_auroc, and the Platt slope when there is one}: what evaluate reports."""
        slope = getattr(self.calibrator, "slope", None)
        return {"ranks_backwards": self.ranks_backwards, "val_auroc": self.val_auroc,
                **({} if slope is None else {"slope": slope})}

    def predict_proba(self, logits):
        return self.calibrator.predict_proba(logits)

    def to_dict(self) -> dict:
        target = {} if self.target_sensitivity is None else {"target_sensitivity": self.target_sensitivity}
        return {"method": self.calibrator.method, **self.calibrator.to_dict(), "threshold": self.threshold,
                "threshold_rule": self.threshold_rule, **target, "fitted_on": self.fitted_on,
                "val_auroc": self.val_auroc, "ranks_backwards": self.ranks_backwards}

    @classmethod
    def from_dict(cls, state: dict):
        method = state["method"]
        keys = {"temperature": ["temperature"], "platt": ["slope", "intercept"], "isotonic": ["x", "y"]}[method]
        calibrator = CALIBRATORS[method](*(state[k] for k in keys))
        return cls(calibrator, float(state["threshold"]), state["threshold_rule"], state["fitted_on"],
                   state.get("target_sensitivity"), state.get("val_auroc"))

    def save(self, path) -> None:
        write_json(path, self.to_dict())

    def summary(self, logits, y, n_bins: int) -> dict:
        """What the fit did on its own (val) data: ECE before/after (equal-width and equal-mass bins),
        the threshold, the method's state, and whether the scorer ranks val backwards."""
        state = {k: v for k, v in self.calibrator.to_dict().items() if not isinstance(v, list)}
        raw, after = expit(np.asarray(logits, dtype=np.float64)), self.predict_proba(logits)
        return {"method": self.calibrator.method, **state, "threshold": self.threshold,
                "threshold_rule": self.threshold_rule, "val_auroc": self.val_auroc,
                "ranks_backwards": self.ranks_backwards,
                "val_ece_before": expected_calibration_error(y, raw, n_bins),
                "val_ece_after": expected_calibration_error(y, after, n_bins),
                "val_ece_mass_before": expected_calibration_error(y, raw, n_bins, "mass"),
                "val_ece_mass_after": expected_calibration_error(y, after, n_bins, "mass")}

    @classmethod
    def load(cls, path):
        return _read(path, cls.from_dict, "calibrate")


def read_calibrations(path) -> dict:
    """{name: Calibration} from the baselines stage's calibration.json."""
    return _read(path, lambda states: {name: Calibration.from_dict(s) for name, s in states.items()}, "baselines")


def _read(path, parse, stage: str):
    try:
        return parse(json.loads(open(path).read()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PipelineError(f"calibrator {path} is missing or corrupt ({type(err).__name__}); "
                            f"rerun dvc repro {stage}") from err


VAL_SCORES = "val_scores.parquet"   # the baselines stage's file of its scorers' val logits, in its directory


def write_val_scores(path, rows, logits: dict) -> None:
    """The val logits each calibrator was fitted on: one row per val window (`row`: its row in the val
    windows file) and a column per scorer. evaluate chooses the alarms' operating points on them
    instead of predicting val again (`read_val_scores`)."""
    frame = pd.DataFrame({"row": np.asarray(rows, dtype=np.int64),
                          **{name: np.asarray(z, dtype=np.float32) for name, z in logits.items()}})
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_val_scores(path, stage: str) -> tuple:
    """(rows, {scorer: val logits}) from `write_val_scores`' file; one line naming the stage that writes it."""
    try:
        frame = pd.read_parquet(path)
        return frame["row"].to_numpy(), {name: frame[name].to_numpy() for name in frame.columns if name != "row"}
    except (OSError, ValueError, KeyError) as err:
        raise PipelineError(f"val scores {path} are missing or corrupt ({type(err).__name__}); "
                            f"rerun dvc repro {stage}") from err


def fit_on_val(logits, y, cfg: Calibrate, fitted_on: dict):
    """`Calibration.fit` as the calibrate section says; returns it and its val summary."""
    calibration = Calibration.fit(logits, y, cfg.method, cfg.threshold_rule, cfg.target_sensitivity, fitted_on)
    return calibration, calibration.summary(logits, y, cfg.ece_bins)
