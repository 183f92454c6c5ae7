"""Metrics with 95 % confidence intervals by bootstrap over subjects, and overlap voting.

A bootstrap replicate resamples subjects (not windows: windows of one patient are correlated)
with replacement. Every statistic reported is a function of per-subject sums: confusion counts,
squared errors and calibration gaps per bin (`ClassifierTable`), positives and negatives per score
cell (`RankingTable`), errors and their squares (`ErrorTable`), and the alarms' event and time
sums (lib.eval.alarms.SubjectTable). Such a table is built once per scorer and level; a replicate
is a row of a (replicates, subjects) count matrix (`subject_bootstrap`: how often each subject was
drawn) times the table, so the CIs cost what the subjects cost, whatever the number of windows.

Point estimates are computed on the windows and are exact. The replicates are exact too (the same
as weighting every window by its subject's count), except the ranking metrics of a scorer with
more distinct scores than a table holds cells (`GRID_CELLS`): then neighbouring scores share a
cell, ties within a cell count one half, and a replicate's AUROC or average precision moves by
less than 1e-3 (tests/test_metrics.py). The weighted AUROC and average precision equal
scikit-learn's `roc_auc_score` / `average_precision_score` with `sample_weight` (tested).
"""
import numpy as np

from lib.core.params import VOTING

CLF_METRICS = ("auroc", "auprc", "accuracy", "sensitivity", "specificity", "ppv", "f1", "brier", "ece", "ece_mass")
REG_METRICS = ("mae", "me", "sd")
GRID_CELLS = 4096           # score cells per ranking table at most (each cell a per-subject count of positives
GRID_ELEMENTS = 2_000_000   # and of negatives); and subjects x cells at most (two float64 tables: 32 MB) ...
MIN_CELLS = 1024            # ... but never fewer cells than this, however many subjects
BOOTSTRAP_ELEMENTS = 4_000_000   # replicates x table width per count-matrix product: bounds the temporaries
BOOTSTRAP_BLOCK = 1000      # replicates drawn at a time, at most


def _ratio(a, b):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _total(values):
    """The point estimate of a weighted sum over windows: a (1, windows) row of ones times the values."""
    values = np.asarray(values, dtype=np.float64)
    return np.ones((1, len(values))) @ values


class Subjects:
    """The distinct subjects of some windows (sorted) and each window's row among them: the rows of
    every per-subject table, the columns of the bootstrap's count matrices."""

    def __init__(self, subjectid):
        self.ids, row = np.unique(np.asarray(subjectid), return_inverse=True)
        self.row = row.reshape(-1)

    def __len__(self) -> int:
        return len(self.ids)

    def sums(self, values) -> np.ndarray:
        """Per-subject sums of per-window values: (windows,) -> (subjects,), (windows, k) -> (subjects, k)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            return np.bincount(self.row, weights=values, minlength=len(self))
        return np.stack([self.sums(column) for column in values.T], axis=1)

    def histogram(self, cell, values, n_cells: int) -> np.ndarray:
        """(subjects, n_cells): per subject, the sum of `values` over its windows in each cell (`cell`: per window)."""
        index = self.row * n_cells + np.asarray(cell, dtype=np.int64)
        return np.bincount(index, weights=np.asarray(values, dtype=np.float64),
                           minlength=len(self) * n_cells).reshape(len(self), n_cells)


def subject_bootstrap(n_subjects: int, n_boot: int, seed: int, width: int = 1):
    """Yield count matrices (block, n_subjects): per replicate, how often each subject was drawn.
    `width`: the widest table the counts multiply; blocks keep block x width within BOOTSTRAP_ELEMENTS.
    The draws depend only on `n_subjects`, `n_boot` and `seed` (not on the blocks)."""
    rng = np.random.default_rng(seed)
    per_block = max(1, min(BOOTSTRAP_BLOCK, BOOTSTRAP_ELEMENTS // max(width, 1)))
    for start in range(0, n_boot, per_block):
        block = min(per_block, n_boot - start)
        draws = rng.integers(0, n_subjects, size=(block, n_subjects))
        offset = (np.arange(block) * n_subjects)[:, None]
        yield np.bincount((draws + offset).ravel(), minlength=block * n_subjects).reshape(block, n_subjects) \
            .astype(np.float64)


def with_ci(metric_fn, n_subjects: int, n_boot: int, seed: int, level: float = 0.95, width: int = 1) -> dict:
    """{name: point, name_ci_low, name_ci_high, name_ci_dropped} for the arrays `metric_fn` returns:
    `metric_fn(None)` the point estimates (shape (1,)), `metric_fn(counts)` one value per replicate
    (row of `counts`, (replicates, n_subjects)); `width` as subject_bootstrap takes it.

    The interval is the percentile interval of the subject-bootstrap replicates; replicates where a
    metric is undefined (e.g. one class only) are left out of that metric's interval, and counted
    (`name_ci_dropped`), so a reader knows on how many replicates the interval rests.
    """
    point = metric_fn(None)
    replicates = {k: [] for k in point}
    for counts in subject_bootstrap(n_subjects, n_boot, seed, width):
        for k, v in metric_fn(counts).items():
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


# --- ranking: AUROC and average precision ----------------------------------------------------------

def _ranking(pos, neg):
    """(AUROC, average precision) per row of `pos`, `neg` (replicates, groups): the weighted positives and
    negatives of each group of tied scores, groups ascending in score."""
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    # AUROC: P(score of a positive > a negative's), ties counted one half.
    auroc = _ratio((pos * (np.cumsum(neg, axis=1) - neg + 0.5 * neg)).sum(axis=1), n_pos * n_neg)
    # Average precision: sum over descending thresholds of precision x recall increment.
    tp, fp = np.cumsum(pos[:, ::-1], axis=1), np.cumsum(neg[:, ::-1], axis=1)
    precision = _ratio(tp, tp + fp)
    auprc = _ratio(np.nansum(np.where(pos[:, ::-1] > 0, precision * pos[:, ::-1], 0), axis=1), n_pos)
    return auroc, np.where((n_pos > 0) & (n_neg > 0), auprc, np.nan)


def _banded_auroc(pos, neg, band_first, group_band):
    """Per row: P(score of a positive > a negative's) over the pairs in the same band, ties one half (pairs
    pooled over bands); groups sorted by (band, score), `band_first` each band's first group."""
    before = np.cumsum(neg, axis=1) - neg                  # negatives in earlier groups, any band
    below = before - before[:, band_first][:, group_band]  # ... of the same band
    concordant = (pos * (below + 0.5 * neg)).sum(axis=1)
    pairs = np.add.reduceat(pos, band_first, axis=1) * np.add.reduceat(neg, band_first, axis=1)
    return _ratio(concordant, pairs.sum(axis=1))


def ranking_metrics(y, scores, weights):
    """Weighted AUROC and average precision, one per row of `weights` (replicates, windows)."""
    order = np.argsort(scores, kind="mergesort")
    s, labels = np.asarray(scores)[order], np.asarray(y, dtype=np.float64)[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    w = np.asarray(weights, dtype=np.float64)[:, order]
    return _ranking(np.add.reduceat(w * labels, starts, axis=1), np.add.reduceat(w * (1 - labels), starts, axis=1))


def _new_cell(starts, n: int, max_cells: int) -> np.ndarray:
    """Which groups of tied scores (first ranks `starts`, ascending, of `n`) start a new cell of at most about
    `max_cells`: one half of the cells split the ranks evenly (the AUROC weighs every rank alike), the other
    half grows geometrically from the highest score (the average precision hangs on the top ranks: there
    every window keeps its own cell, and a cell never spans more than ~1 % of the ranks above it)."""
    half = max(max_cells // 2, 1)
    even = starts * half // max(n, 1)
    from_top = n - starts          # ranks from the top, 1 = the highest score
    geometric = np.floor(np.log(from_top) * (half / np.log(max(n, 2)))).astype(np.int64)
    return np.r_[True, (even[1:] != even[:-1]) | (geometric[1:] != geometric[:-1])]


class RankingTable:
    """One scorer's ranking of some windows: per subject, its positives and negatives in each score cell
    (cells ascending in score; within a `band` per window when given, e.g. a current-MAP band), and the
    exact point estimates. A cell is a group of tied scores while the groups fit the grid (`exact`; at most
    GRID_CELLS cells, GRID_ELEMENTS subjects x cells); beyond, neighbouring groups share cells (`_new_cell`),
    so the tables and every replicate cost the same whatever the number of windows."""

    def __init__(self, y, scores, subjects: Subjects, band=None):
        y, scores = np.asarray(y, dtype=np.float64), np.asarray(scores)
        n = len(y)
        order = np.argsort(scores, kind="mergesort") if band is None else np.lexsort((scores, np.asarray(band)))
        s = scores[order]
        new_band = np.zeros(n, dtype=bool)
        new_band[:1] = True
        if band is not None:
            b = np.asarray(band)[order]
            new_band[1:] = b[1:] != b[:-1]
        new_group = new_band.copy()
        new_group[1:] |= s[1:] != s[:-1]
        starts = np.flatnonzero(new_group)
        labels = y[order]
        pos, neg = np.add.reduceat(labels, starts)[None], np.add.reduceat(1 - labels, starts)[None]
        if band is None:
            self.point = _ranking(pos, neg)
        else:
            group_band_start = new_band[starts]
            self.point = (_banded_auroc(pos, neg, np.flatnonzero(group_band_start),
                                        np.cumsum(group_band_start) - 1),)
        max_cells = min(GRID_CELLS, max(MIN_CELLS, GRID_ELEMENTS // max(len(subjects), 1)))
        self.exact = len(starts) <= max_cells
        cut = new_group
        if not self.exact:
            cut = np.zeros(n, dtype=bool)
            cut[starts[_new_cell(starts, n, max_cells) | new_band[starts]]] = True
        cell_sorted = np.cumsum(cut) - 1
        self.n_cells = int(cell_sorted[-1]) + 1 if n else 0
        cell = np.empty(n, dtype=np.int64)
        cell[order] = cell_sorted
        self.pos = subjects.histogram(cell, y, self.n_cells)
        self.neg = subjects.histogram(cell, 1 - y, self.n_cells)
        cell_band_start = new_band[cut]
        self.band_first, self.cell_band = np.flatnonzero(cell_band_start), np.cumsum(cell_band_start) - 1
        self.banded = band is not None

    def metrics(self, counts) -> tuple:
        """(AUROC, average precision) per row of `counts` (replicates, subjects); the exact point estimates
        for None. Banded: (AUROC within bands,)."""
        if counts is None:
            return self.point
        pos, neg = counts @ self.pos, counts @ self.neg
        if self.banded:
            return (_banded_auroc(pos, neg, self.band_first, self.cell_band),)
        return _ranking(pos, neg)


# --- classification: thresholds, Brier, calibration ------------------------------------------------

def calibration_bins(p, n_bins: int = 15, strategy: str = "width") -> np.ndarray:
    """Each probability's reliability bin. `width`: equal-width bins on [0, 1]; `mass`: equal-mass bins
    (edges at the quantiles of `p`, fixed for every replicate)."""
    if strategy == "mass":
        edges = np.quantile(p, np.linspace(0, 1, n_bins + 1)[1:-1]) if len(p) else np.array([])
        return np.searchsorted(edges, p, side="right")
    return np.clip((p * n_bins).astype(int), 0, n_bins - 1)


def _calibration_gap(y, p, n_bins: int, strategy: str) -> np.ndarray:
    """Sum over reliability bins of |sum of (observed - predicted)|, every window once; shape (1,)."""
    bins = calibration_bins(p, n_bins, strategy)
    gap = np.zeros(1)
    for b in np.unique(bins):
        members = bins == b
        gap += np.abs(_total(y[members] - p[members]))
    return gap


def calibration_error(y, p, n_bins: int = 15, strategy: str = "width") -> np.ndarray:
    """ECE of every window once, shape (1,): sum over bins of |observed - predicted| weighted by bin share.

    Confidence is the predicted probability of the positive class (binary reliability diagram). When
    most probabilities are small, the equal-width ECE sees little more than calibration-in-the-large
    (one or two bins hold nearly every window); equal mass (`strategy` "mass") resolves the
    low-probability range where the windows are.
    """
    return _ratio(_calibration_gap(y, p, n_bins, strategy), np.array([float(len(y))]))


def _confusion(y, predicted) -> np.ndarray:
    """(windows, 4): each window's tp, fp, fn, tn indicator."""
    return np.stack([y * predicted, (1 - y) * predicted, y * (1 - predicted), (1 - y) * (1 - predicted)], axis=1)


def _classification(confusion, squared, gap, gap_mass, auroc, auprc) -> dict:
    """CLF_METRICS and the confusion counts from weighted sums, one value per row."""
    tp, fp, fn, tn = confusion
    total = tp + fp + fn + tn
    return {"auroc": auroc, "auprc": auprc, "accuracy": _ratio(tp + tn, total), "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp), "ppv": _ratio(tp, tp + fp), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "brier": _ratio(squared, total), "ece": _ratio(gap, total), "ece_mass": _ratio(gap_mass, total),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def _point_classification(y, p, threshold: float, n_bins: int, ranking: tuple) -> dict:
    predicted = (p >= threshold).astype(np.float64)
    confusion = [_total(column) for column in _confusion(y, predicted).T]
    return _classification(confusion, _total((p - y) ** 2), _calibration_gap(y, p, n_bins, "width"),
                           _calibration_gap(y, p, n_bins, "mass"), *ranking)


class ClassifierTable:
    """One scorer's calibrated probabilities on some windows at its threshold, as per-subject tables
    (confusion counts, squared errors, calibration gaps per bin, the ranking's cells) and its exact
    point estimates: every CLF_METRICS statistic of a bootstrap replicate is a count matrix times them."""

    def __init__(self, y, p, threshold: float, subjects: Subjects, n_bins: int = 15):
        y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
        self.ranking = RankingTable(y, p, subjects)
        predicted = (p >= threshold).astype(np.float64)
        self.confusion = subjects.sums(_confusion(y, predicted))
        self.squared = subjects.sums((p - y) ** 2)
        self.gaps = {strategy: subjects.histogram(calibration_bins(p, n_bins, strategy), y - p, n_bins)
                     for strategy in ("width", "mass")}
        self.point = _point_classification(y, p, threshold, n_bins, self.ranking.point)
        self.width = max(self.ranking.n_cells, n_bins)

    def metrics(self, counts) -> dict:
        """CLF_METRICS and the confusion counts per row of `counts` (replicates, subjects); the point estimates
        for None."""
        if counts is None:
            return self.point
        return _classification((counts @ self.confusion).T, counts @ self.squared,
                               np.abs(counts @ self.gaps["width"]).sum(axis=1),
                               np.abs(counts @ self.gaps["mass"]).sum(axis=1), *self.ranking.metrics(counts))


def classification_metrics(y, probabilities, threshold: float, n_bins: int = 15) -> dict:
    """Point estimates (every window once) of CLF_METRICS and the confusion counts."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(probabilities, dtype=np.float64)
    out = _point_classification(y, p, threshold, n_bins, ranking_metrics(y, p, np.ones((1, len(y)))))
    return {k: (int(v[0]) if k in ("tp", "fp", "tn", "fn") else float(v[0])) for k, v in out.items()}


def expected_calibration_error(y, probabilities, n_bins: int = 15, strategy: str = "width") -> float:
    return float(calibration_error(np.asarray(y, dtype=float), np.asarray(probabilities, dtype=float), n_bins,
                                   strategy)[0])


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

class ErrorTable:
    """One estimate's errors on some windows as per-subject sums (windows, errors, |errors|, squares) and
    its exact point estimates: MAE, ME and SD of a bootstrap replicate are a count matrix times them."""

    def __init__(self, errors, subjects: Subjects):
        e = np.asarray(errors, dtype=np.float64)
        self.sums = subjects.sums(np.stack([np.ones_like(e), e, np.abs(e), e * e], axis=1))
        self.point = weighted_errors(e, np.ones((1, len(e))))
        self.width = 4

    def metrics(self, counts) -> dict:
        """{mae, me, sd} per row of `counts` (replicates, subjects); the point estimates for None."""
        if counts is None:
            return self.point
        total, first, absolute, second = (counts @ self.sums).T
        me = _ratio(first, total)
        sd = np.sqrt(np.maximum(_ratio(second - first * me, total - 1), 0))   # sum of (e - me)^2 = second - first x me
        return {"mae": _ratio(absolute, total), "me": me, "sd": sd}


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
