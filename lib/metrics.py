"""Classification metrics (scikit-learn) and expected calibration error."""
import numpy as np
from sklearn import metrics


def expected_calibration_error(y, probabilities, n_bins: int = 15) -> float:
    """ECE with equal-width bins: sum over bins of |accuracy - confidence| weighted by bin share.

    Confidence is the predicted probability of the positive class (binary reliability diagram).
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    total = np.bincount(bins, minlength=n_bins)
    observed = np.bincount(bins, weights=y, minlength=n_bins)
    predicted = np.bincount(bins, weights=p, minlength=n_bins)
    used = total > 0
    return float(np.sum(np.abs(observed[used] - predicted[used])) / len(y))


def classification_metrics(y, probabilities, threshold: float, n_bins: int = 15) -> dict:
    """Threshold-free and thresholded metrics for binary labels `y`."""
    y = np.asarray(y).astype(int)
    p = np.asarray(probabilities, dtype=float)
    predicted = (p >= threshold).astype(int)
    tn, fp, fn, tp = metrics.confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    two_classes = len(np.unique(y)) == 2
    return {
        "auroc": float(metrics.roc_auc_score(y, p)) if two_classes else float("nan"),
        "auprc": float(metrics.average_precision_score(y, p)) if two_classes else float("nan"),
        "accuracy": float(metrics.accuracy_score(y, predicted)),
        "f1": float(metrics.f1_score(y, predicted, zero_division=0)),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "brier": float(metrics.brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p, n_bins),
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
    }


def regression_metrics(targets, predictions, names) -> dict:
    """Per target (columns, mmHg): MAE, mean error (bias) and SD of the error (prediction − reference)."""
    errors = np.asarray(predictions, dtype=float) - np.asarray(targets, dtype=float)
    out = {}
    for i, name in enumerate(names):
        e = errors[:, i]
        out.update({f"{name}_mae": float(np.mean(np.abs(e))), f"{name}_me": float(np.mean(e)),
                    f"{name}_sd": float(np.std(e, ddof=1)) if len(e) > 1 else float("nan")})
    return out
