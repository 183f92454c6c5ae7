"""Metrics with 95 % confidence intervals by bootstrap over subjects, and overlap voting.

A bootstrap replicate resamples subjects (not windows: windows of one patient are correlated)
with replacement; a window's weight in that replicate is how often its subject was drawn. All
metrics are computed for many replicates at once from a (replicates, windows) weight matrix,
with the scores sorted once, so 1,000 replicates cost about as much as a few sklearn calls.
The weighted AUROC and average precision equal scikit-learn's `roc_auc_score` /
`average_precision_score` with `sample_weight` (tested); the point estimate is weight 1 everywhere.
"""
import numpy as np

from lib.core.params import VOTING

CLF_METRICS = ("auroc", "auprc", "accuracy", "sensitivity", "specificity", "ppv", "f1", "brier", "ece", "ece_mass")
REG_METRICS = ("mae", "me", "sd")
BOOTSTRAP_BLOCK = 100      # replicates per weight matrix ...
BOOTSTRAP_ELEMENTS = 4_000_000   # ... and at most this many replicates x windows in it: ranking_metrics'
# temporaries are several such matrices (about 0.5 GB in all at this cap), so their memory does not
# grow with the test set (measured at 160,000 windows: 1,176 MB peak with 100 replicates per block,
# 329 MB with 25). Test sets up to 40,000 windows (the default demo's 39,865) keep blocks of 100.


def _ratio(a, b):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


class Ranking:
    """The windows sorted by score (stable) and the groups of tied scores: sorted once per scorer,
    then used by every bootstrap block (`ranking_metrics(..., ranking=...)`)."""

    def __init__(self, y, scores):
        index = np.int32 if len(scores) < 2**31 else np.int64   # compact: one is kept per scorer
        self.order = np.argsort(scores, kind="mergesort").astype(index)
        s = np.asarray(scores)[self.order]
        self.labels = np.asarray(y)[self.order].astype(np.int8)
        self.starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]).astype(index)   # tied scores' groups, ascending


def ranking_metrics(y, scores, weights, ranking: Ranking | None = None):
    """Weighted AUROC and average precision, one per row of `weights` (replicates, windows).
    `ranking`: Ranking(y, scores), when the caller has it (the bootstrap: one sort for all blocks)."""
    ranking = ranking or Ranking(y, scores)
    y, w, starts = ranking.labels.astype(np.float64), weights[:, ranking.order], ranking.starts
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * (1 - y), starts, axis=1)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    # AUROC: P(score of a positive > a negative's), ties counted one half.
    auroc = _ratio((pos * (np.cumsum(neg, axis=1) - neg + 0.5 * neg)).sum(axis=1), n_pos * n_neg)
    # Average precision: sum over descending thresholds of precision x recall increment.
    tp, fp = np.cumsum(pos[:, ::-1], axis=1), np.cumsum(neg[:, ::-1], axis=1)
    precision = _ratio(tp, tp + fp)
    auprc = _ratio(np.nansum(np.where(pos[:, ::-1] > 0, precision * pos[:, ::-1], 0), axis=1), n_pos)
    auprc = np.where((n_pos > 0) & (n_neg > 0), auprc, np.nan)
    return auroc, auprc


def calibration_error(y, p, weights, n_bins: int = 15, strategy: str = "width"):
    """ECE: sum over bins of |observed - predicted| weighted by bin share.

    Confidence is the predicted probability of the positive class (binary reliability diagram).
    `width`: equal-width bins on [0, 1]; `mass`: equal-mass bins (edges at the quantiles of `p`, the
    same for every replicate). When most probabilities are small, the equal-width ECE sees little
    more than calibration-in-the-large (one or two bins hold nearly every window); equal mass
    resolves the low-probability range where the windows are.
    """
    if strategy == "mass":
        edges = np.quantile(p, np.linspace(0, 1, n_bins + 1)[1:-1]) if len(p) else np.array([])
        bins = np.searchsorted(edges, p, side="right")
    else:
        bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    gap = np.zeros(len(weights))
    for b in np.unique(bins):
        members = bins == b
        gap += np.abs(weights[:, members] @ (y[members] - p[members]))
    return _ratio(gap, weights.sum(axis=1))


def weighted_classification(y, p, threshold: float, weights, n_bins: int = 15, ranking: Ranking | None = None) -> dict:
    """Every metric of CLF_METRICS per row of `weights`, plus the weighted confusion counts
    (`ranking`: Ranking(y, p), as ranking_metrics takes it)."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    predicted = (p >= threshold).astype(np.float64)
    tp, fp = weights @ (y * predicted), weights @ ((1 - y) * predicted)
    fn, tn = weights @ (y * (1 - predicted)), weights @ ((1 - y) * (1 - predicted))
    total = tp + fp + fn + tn
    auroc, auprc = ranking_metrics(y, p, weights, ranking)
    return {"auroc": auroc, "auprc": auprc, "accuracy": _ratio(tp + tn, total), "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp), "ppv": _ratio(tp, tp + fp), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "brier": _ratio(weights @ (p - y) ** 2, total), "ece": calibration_error(y, p, weights, n_bins),
            "ece_mass": calibration_error(y, p, weights, n_bins, "mass"),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def classification_metrics(y, probabilities, threshold: float, n_bins: int = 15) -> dict:
    """Point estimates (every window weight 1) of CLF_METRICS and the confusion counts."""
    out = weighted_classification(y, probabilities, threshold, np.ones((1, len(y))), n_bins)
    return {k: (int(v[0]) if k in ("tp", "fp", "tn", "fn") else float(v[0])) for k, v in out.items()}


def expected_calibration_error(y, probabilities, n_bins: int = 15, strategy: str = "width") -> float:
    return float(calibration_error(np.asarray(y, dtype=float), np.asarray(probabilities, dtype=float),
                                   np.ones((1, len(y))), n_bins, strategy)[0])


def calibration_slope(y, probabilities) -> dict:
    """Logistic recalibration: y ~ intercept + slope * logit(p), unpenalised (Cox 1958).

    Slope 1 and intercept 0 for a calibrated score; slope < 1: too extreme, > 1: too timid; a
    negative slope means the probabilities rank the outcome backwards. NaN with one class only.
    """
    from sklearn.linear_model import LogisticRegression
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1 - 1e-12)
    z = np.log(p) - np.log1p(-p)
    if len(np.unique(y)) < 2 or np.ptp(z) == 0:
        return {"calibration_slope": float("nan"), "calibration_intercept": float("nan")}
    lr = LogisticRegression(C=np.inf, max_iter=1000).fit(z[:, None], y)
    return {"calibration_slope": float(lr.coef_[0, 0]), "calibration_intercept": float(lr.intercept_[0])}


def na_reason(subjects, y, min_subjects: int, min_positive_subjects: int) -> str | None:
    """Why statistics over these windows cannot speak (too few subjects, or too few with a positive
    window, for a subject bootstrap to mean anything); None when they can."""
    subjects = np.asarray(subjects)
    n = len(np.unique(subjects))
    if n < min_subjects:
        return f"{n} subject{'s' if n != 1 else ''} (< {min_subjects})"
    if y is not None and min_positive_subjects:
        positive = len(np.unique(subjects[np.asarray(y) == 1]))
        if positive < min_positive_subjects:
            plural = "s" if positive != 1 else ""
            return f"{positive} subject{plural} with a positive window (< {min_positive_subjects})"
    return None


def blank(stats: dict, reason: str, keep=()) -> dict:
    """`stats` with every value except those in `keep` (counts) set to None, and the reason why."""
    return {**{k: (v if k in keep else None) for k, v in stats.items()}, "na_reason": reason}


def weighted_errors(errors, weights) -> dict:
    """MAE, mean error and SD of the error (frequency weights, ddof 1) per row of `weights`."""
    total = weights.sum(axis=1)
    me = _ratio(weights @ errors, total)
    var = _ratio((weights * (errors[None, :] - me[:, None]) ** 2).sum(axis=1), total - 1)
    return {"mae": _ratio(weights @ np.abs(errors), total), "me": me, "sd": np.sqrt(var)}


def regression_metrics(targets, predictions, names) -> dict:
    """Point estimates per target column (mmHg): {name}_mae, {name}_me, {name}_sd."""
    errors = np.asarray(predictions, dtype=float) - np.asarray(targets, dtype=float)
    ones = np.ones((1, len(errors)))
    return {f"{name}_{k}": float(v[0]) for i, name in enumerate(names)
            for k, v in weighted_errors(errors[:, i], ones).items()}


def subject_bootstrap(subjects, n_boot: int, seed: int):
    """Yield weight matrices (block, windows): per replicate, how often each window's subject was drawn."""
    unique, inverse = np.unique(np.asarray(subjects), return_inverse=True)
    rng = np.random.default_rng(seed)
    per_block = max(1, min(BOOTSTRAP_BLOCK, BOOTSTRAP_ELEMENTS // max(len(inverse), 1)))
    for start in range(0, n_boot, per_block):
        block = min(per_block, n_boot - start)
        draws = rng.integers(0, len(unique), size=(block, len(unique)))
        counts = np.zeros((block, len(unique)))
        np.add.at(counts, (np.arange(block)[:, None], draws), 1)
        yield counts[:, inverse]


def with_ci(metric_fn, n_windows: int, subjects, n_boot: int, seed: int, level: float = 0.95) -> dict:
    """{name: point, name_ci_low, name_ci_high, name_ci_dropped} for the arrays `metric_fn(weights)` returns.

    The interval is the percentile interval of the subject-bootstrap replicates; replicates where a
    metric is undefined (e.g. one class only) are left out of that metric's interval, and counted
    (`name_ci_dropped`), so a reader knows on how many replicates the interval rests.
    """
    point = metric_fn(np.ones((1, n_windows)))
    replicates = {k: [] for k in point}
    for weights in subject_bootstrap(subjects, n_boot, seed):
        for k, v in metric_fn(weights).items():
            replicates[k].append(v)
    tail = 100 * (1 - level) / 2
    out = {}
    for k, v in point.items():
        out[k] = float(v[0])
        values = np.concatenate(replicates[k]) if replicates[k] else np.array([np.nan])
        finite = values[np.isfinite(values)]
        low, high = np.percentile(finite, [tail, 100 - tail]) if len(finite) else (np.nan, np.nan)
        out[f"{k}_ci_low"], out[f"{k}_ci_high"] = float(low), float(high)
        out[f"{k}_ci_dropped"] = int(len(values) - len(finite))
    return out


# --- regression: the AAMI/ISO 81060-2 criterion and the British Hypertension Society grade ---

BHS_GRADES = (("A", (60, 85, 95)), ("B", (50, 75, 90)), ("C", (40, 65, 85)))


def aami_pass(mean_error: float, sd_error: float) -> bool:
    """AAMI: |mean error| <= 5 mmHg and SD <= 8 mmHg (the standard also asks for >= 85 subjects)."""
    return bool(abs(mean_error) <= 5 and sd_error <= 8)


def bhs_grade(errors) -> str:
    """A/B/C when the shares of |error| within 5/10/15 mmHg all reach that grade's %; D otherwise."""
    shares = [100 * np.mean(np.abs(errors) <= limit) for limit in (5, 10, 15)]
    for grade, minimum in BHS_GRADES:
        if all(s >= m for s, m in zip(shares, minimum)):
            return grade
    return "D"


def bhs_shares(errors) -> dict:
    return {f"within_{limit}": float(100 * np.mean(np.abs(errors) <= limit)) for limit in (5, 10, 15)}


# --- overlap voting ---


def vote(scores, caseids, t_end, window_s: float, mode: str, threshold: float = 0.5):
    """Combine the predictions of overlapping windows, causally, per case and time step.

    At each window's end, every window of the same case that overlaps it and has ended by then
    (end in (t - window_s, t]) votes. `soft`: mean probability; `hard`: share of windows with
    probability >= `threshold` (a majority, ties counting as positive, is then >= 0.5). Windows are
    returned in their input order. No window from the future contributes, so the voted score
    could be computed at the bedside at that moment.
    """
    if mode not in VOTING:
        raise ValueError(f"voting mode {mode!r}: expected one of {', '.join(VOTING)}")
    scores, caseids, t_end = np.asarray(scores, float), np.asarray(caseids), np.asarray(t_end, float)
    if mode == "none":
        return scores.copy()
    values = scores if mode == "soft" else (scores >= threshold).astype(float)
    order = np.lexsort((t_end, caseids))
    case_sorted, t_sorted, v_sorted = caseids[order], t_end[order], values[order]
    # Per window, the first window of its case ending after t - window_s (searchsorted on (case, time)).
    _, case_start, case_rank = np.unique(case_sorted, return_index=True, return_inverse=True)
    span = float(np.ptp(t_end)) + 2 * window_s + 1
    key = case_rank * span + t_sorted
    first = np.searchsorted(key, key - window_s + 1e-6, side="left")
    first = np.maximum(first, case_start[case_rank])
    cumulative = np.r_[0, np.cumsum(v_sorted)]
    voted_sorted = (cumulative[np.arange(len(key)) + 1] - cumulative[first]) / (np.arange(len(key)) + 1 - first)
    voted = np.empty_like(voted_sorted)
    voted[order] = voted_sorted
    return voted
