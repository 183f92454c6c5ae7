"""Post-hoc calibration fitted on the validation split only (scikit-learn's fit/predict shape)."""
import json

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.metrics import roc_curve

from lib.atomic import write_json
from lib.errors import PipelineError


class TemperatureScaler:
    """p = sigmoid(logit / T), T fitted by minimising the negative log-likelihood on val."""

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def fit(self, logits, y):
        logits, y = np.asarray(logits, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if len(np.unique(y)) < 2:
            raise PipelineError("calibrate: the validation split has a single class; temperature cannot be fitted")

        def nll(log_t):
            z = logits / np.exp(log_t)
            return float(np.mean(np.logaddexp(0, z) - y * z))

        self.temperature = float(np.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded").x))
        return self

    def predict_proba(self, logits):
        return expit(np.asarray(logits, dtype=np.float64) / self.temperature)


def youden_threshold(y, probabilities) -> float:
    """Probability threshold maximising sensitivity + specificity - 1 (chosen on val only)."""
    fpr, tpr, thresholds = roc_curve(y, probabilities)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def save_calibrator(path, scaler: TemperatureScaler, threshold: float, fitted_on: dict) -> None:
    write_json(path, {"method": "temperature", "temperature": scaler.temperature,
                      "threshold": threshold, "fitted_on": fitted_on})


def load_calibrator(path):
    try:
        state = json.loads(open(path).read())
        return TemperatureScaler(float(state["temperature"])), float(state["threshold"])
    except (OSError, ValueError, KeyError) as err:
        raise PipelineError(f"calibrator {path} is missing or corrupt ({type(err).__name__}); "
                            "rerun dvc repro calibrate") from err
