"""The test-split evaluation evaluate writes: every scorer (the TTM model and the baselines) at
window level and after overlap voting, the model's gain over each baseline, subgroups, and for
regression the AAMI/BHS criteria; 95 % CIs by bootstrap over subjects throughout.

Gains are paired: model and baseline are scored on the same bootstrap replicate, so the interval
of the difference accounts for the test subjects they share.
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lib.eval import metrics

GAIN_METRICS = ("auroc", "auprc", "brier")
SUBGROUP_METRICS = ("auroc", "auprc", "sensitivity", "specificity", "ppv", "brier", "ece")


@dataclass
class TestWindows:
    """Who and when each test window is (aligned with the predictions)."""

    caseid: np.ndarray
    subjectid: np.ndarray
    t_end: np.ndarray
    window_s: float


@dataclass
class Bootstrap:
    n: int = 1000
    seed: int = 0
    level: float = 0.95


def _nest(flat: dict) -> dict:
    """{"ttm/auroc": v} → {"ttm": {"auroc": v}}."""
    out = {}
    for key, value in flat.items():
        head, _, tail = key.partition("/")
        out.setdefault(head, {})[tail] = value
    return out


def classification_report(y, probabilities: dict, thresholds: dict, ids: TestWindows, boot: Bootstrap,
                          n_bins: int, reference: str = "ttm") -> dict:
    """Metrics (with CIs) of each scorer's calibrated probabilities at its val-chosen threshold,
    and `reference`'s gain over every other scorer."""
    y = np.asarray(y, dtype=np.float64)
    others = [name for name in probabilities if name != reference]

    def metric_fn(weights):
        out = {}
        for name, p in probabilities.items():
            for key, value in metrics.weighted_classification(y, p, thresholds[name], weights, n_bins).items():
                if key in metrics.CLF_METRICS:
                    out[f"{name}/{key}"] = value
        for other in others:
            for key in GAIN_METRICS:   # brier: lower is better, so the gain is other − reference
                sign = -1 if key == "brier" else 1
                out[f"gain_over_{other}/{key}"] = sign * (out[f"{reference}/{key}"] - out[f"{other}/{key}"])
        return out

    return _nest(metrics.with_ci(metric_fn, len(y), ids.subjectid, boot.n, boot.seed, boot.level))


def voted(scores: dict, thresholds: dict, ids: TestWindows, mode: str):
    """(voted scores, thresholds for them): soft keeps each scorer's threshold, hard votes at 0.5."""
    out = {name: metrics.vote(p, ids.caseid, ids.t_end, ids.window_s, mode, thresholds[name])
           for name, p in scores.items()}
    return out, (thresholds if mode == "soft" else {name: 0.5 for name in scores})


def counts(y, ids: TestWindows) -> dict:
    y = np.asarray(y)
    return {"windows": int(len(y)), "positives": int((y == 1).sum()), "cases": int(len(np.unique(ids.caseid))),
            "subjects": int(len(np.unique(ids.subjectid)))}


def subgroups(clinical: pd.DataFrame, caseids, age_bands) -> dict:
    """{attribute: array of group labels per window} for sex, age band and ASA class (per case)."""
    table = clinical.set_index("caseid").reindex(np.asarray(caseids))
    edges = [-np.inf, *age_bands, np.inf]
    names = [f"<{age_bands[0]:g}", *[f"{a:g}-{b - 1:g}" for a, b in zip(age_bands[:-1], age_bands[1:])],
             f">={age_bands[-1]:g}"]
    age = pd.cut(table["age"].to_numpy(dtype=float), edges, right=False, labels=names)
    asa = table["asa"].to_numpy(dtype=float)
    asa_class = np.where(np.isnan(asa), "unknown", np.where(asa >= 3, "3+", np.nan_to_num(asa).astype(int).astype(str)))
    return {"sex": table["sex"].fillna("unknown").astype(str).to_numpy(),
            "age": np.asarray(age.astype(str)), "asa": asa_class}


def subgroup_report(y, p, threshold: float, groups: dict, ids: TestWindows, boot: Bootstrap, n_bins: int) -> dict:
    """The model's metrics within each subgroup, with subject-bootstrap CIs inside the subgroup."""
    y = np.asarray(y, dtype=np.float64)
    out = {}
    for attribute, labels in groups.items():
        for group in sorted(set(labels)):
            mask = labels == group
            sub = TestWindows(ids.caseid[mask], ids.subjectid[mask], ids.t_end[mask], ids.window_s)

            def metric_fn(weights, mask=mask):
                m = metrics.weighted_classification(y[mask], p[mask], threshold, weights, n_bins)
                return {k: m[k] for k in SUBGROUP_METRICS}

            out[f"{attribute}={group}"] = {**counts(y[mask], sub),
                                           **metrics.with_ci(metric_fn, int(mask.sum()), sub.subjectid,
                                                             boot.n, boot.seed, boot.level)}
    return out


def regression_report(targets, predictions, names, ids: TestWindows, boot: Bootstrap) -> dict:
    """Per target: MAE, ME, SD of the error (with CIs), AAMI pass/fail and BHS grade."""
    errors = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    out = {}
    for i, name in enumerate(names):
        e = errors[:, i]
        stats = metrics.with_ci(lambda w: metrics.weighted_errors(e, w), len(e), ids.subjectid, boot.n,
                                boot.seed, boot.level)
        out[name] = {**stats, "aami_pass": metrics.aami_pass(stats["me"], stats["sd"]),
                     "aami_subjects_ok": bool(len(np.unique(ids.subjectid)) >= 85),
                     "bhs_grade": metrics.bhs_grade(e), **metrics.bhs_shares(e)}
    return out


def cohort_table(split_columns: dict, clinical: pd.DataFrame, horizon_min: float) -> dict:
    """Per split: cases, subjects, labelled windows, prevalence at the horizon, demographics."""
    from lib.data.windows_h5 import label_column

    out = {}
    for split, cols in split_columns.items():
        y = cols[label_column(horizon_min)]
        labelled = y >= 0
        caseids = np.unique(cols["caseid"])
        table = clinical.set_index("caseid").reindex(caseids)
        age = table["age"].to_numpy(dtype=float)
        out[split] = {"cases": int(len(caseids)), "subjects": int(len(np.unique(cols["subjectid"]))),
                      "windows": int(labelled.sum()), "positives": int((y == 1).sum()),
                      "prevalence": float((y == 1).sum() / max(labelled.sum(), 1)),
                      "age_mean": float(np.nanmean(age)),
                      "age_sd": float(np.nanstd(age, ddof=1)) if np.isfinite(age).sum() > 1 else float("nan"),
                      "female_pct": float(100 * (table["sex"] == "F").mean()),
                      "asa_3plus_pct": float(100 * (table["asa"] >= 3).mean())}
    return out
