"""Window-level views that put a scorer beside the plain current MAP: the 65-75 mmHg gray zone, a
comparison matched on current MAP, and the decision curve.

- **Gray zone** (`gray_zone_auroc`): on VitalDB and Karolinska data, a hypotension model beat a MAP
  threshold only where the current MAP is 65-75 mmHg, the range where ranking is hard (Chaari et al.,
  J Clin Monit Comput 2025); most of a forward AUROC comes from the easy windows far from 65 (HPI:
  forward AUROC 0.923, MAP alone 0.932, Anesthesiology 2024;141(3):443). Each scorer's AUROC on those
  windows, and the reference's gain over every other scorer, paired on the same subject-bootstrap
  replicates.
- **Matched on current MAP** (`map_matched_auroc`, in the spirit of Chaari's MAP-gap matching): the
  AUROC over positive-negative pairs whose current MAP lies in the same `bin_mmhg` band, i.e. how
  well a scorer ranks windows the current MAP cannot tell apart (pairs pooled over bands; a MAP
  alarm scores about 0.5 here by construction).
- **Decision curve** (`decision_curve`; Vickers & Elkin, Med Decis Making 2006;26:565; for VitalDB
  models, Huber et al., Anesth Analg 2024;139:617): net benefit = TP/n - FP/n * pt/(1 - pt) of
  treating the windows whose probability is at least the threshold probability pt, against treating
  all (prevalence - (1 - prevalence) * pt/(1 - pt)) and none (0), over pt in 0-20 %.

CIs are percentile intervals of a bootstrap over subjects (`lib.eval.metrics.with_ci`), n/a below
`min_subjects` subjects or `min_positive_subjects` subjects with a positive window
(`lib.eval.metrics.na_reason`).
"""
import numpy as np

from lib.eval import metrics

GRAY_ZONE_MMHG = (65.0, 75.0)   # Chaari et al. 2025
DECISION_THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(21))   # 0 to 20 %


def gray_zone_mask(map_now, zone=GRAY_ZONE_MMHG) -> np.ndarray:
    """Windows whose current MAP lies in [zone[0], zone[1]] mmHg (NaN: outside)."""
    m = np.asarray(map_now, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (m >= zone[0]) & (m <= zone[1])


def _counts(y, subjects) -> dict:
    y, subjects = np.asarray(y), np.asarray(subjects)
    return {"windows": int(len(y)), "positives": int((y == 1).sum()), "subjects": int(len(np.unique(subjects))),
            "positive_subjects": int(len(np.unique(subjects[y == 1])))}


def _report(y, tables: dict, subjects: metrics.Subjects, reference, n_boot, seed, level, min_subjects,
            min_positive_subjects) -> dict:
    """Each scorer's AUROC from its RankingTable (`tables`), with the gains of `reference` over the others."""
    who = subjects.ids[subjects.row]
    out = {"counts": _counts(y, who)}
    if len(y) == 0 or np.min(y) == np.max(y):
        return {**out, "na_reason": f"{int(np.sum(y))} positive and {int(len(y) - np.sum(y))} negative windows; "
                                    "both are needed"}

    def metric_fn(counts):
        values = {f"{name}/auroc": table.metrics(counts)[0] for name, table in tables.items()}
        if reference in tables:
            for other in tables:
                if other != reference:
                    values[f"gain_over_{other}/auroc"] = values[f"{reference}/auroc"] - values[f"{other}/auroc"]
        return values

    width = max(table.n_cells for table in tables.values())
    flat = metrics.with_ci(metric_fn, len(subjects), n_boot, seed, level, width)
    level_out = {}
    for key, value in flat.items():
        head, _, tail = key.partition("/")
        level_out.setdefault(head, {})[tail] = value
    reason = metrics.na_reason(who, y, min_subjects, min_positive_subjects)
    if reason is not None:
        level_out = {name: metrics.blank(stats, reason) for name, stats in level_out.items()}
    return {**out, "window": level_out}


def gray_zone_auroc(y, scores: dict, map_now, subjects, zone=GRAY_ZONE_MMHG, reference: str | None = None,
                    n_boot: int = 1000, seed: int = 0, level: float = 0.95, min_subjects: int = 0,
                    min_positive_subjects: int = 0) -> dict:
    """Each scorer's AUROC on the windows whose current MAP is within `zone` (module doc).

    `scores` {scorer: per-window score (higher: more risk)}, e.g. the calibrated probabilities and
    the MAP alarm's `lib.eval.alarms.map_risk`. {"definition", "counts", "window": {scorer: {auroc,
    auroc_ci_low, auroc_ci_high, auroc_ci_dropped}, gain_over_<other>: {auroc...} (reference minus
    other, paired)}}; `na_reason` (and no "window") when the zone holds one class only, and the
    statistics n/a (None) below the subject minimums."""
    y = np.asarray(y, dtype=np.float64)
    mask = gray_zone_mask(map_now, zone)
    y_in, who = y[mask], metrics.Subjects(np.asarray(subjects)[mask])
    tables = {name: metrics.RankingTable(y_in, np.asarray(s, dtype=np.float64)[mask], who)
              for name, s in scores.items()} if len(y_in) else {}
    out = _report(y_in, tables, who, reference, n_boot, seed, level, min_subjects, min_positive_subjects)
    return {"definition": {"map_low": float(zone[0]), "map_high": float(zone[1])}, **out}


def map_matched_auroc(y, scores: dict, map_now, subjects, bin_mmhg: float = 2.0, zone=None,
                      reference: str | None = None, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                      min_subjects: int = 0, min_positive_subjects: int = 0) -> dict:
    """AUROC over the positive-negative pairs whose current MAP lies in the same `bin_mmhg` band
    (module doc), per scorer, with the gains over the others; over the windows with a current MAP
    (within `zone` (lo, hi) mmHg when given). Output as `gray_zone_auroc`."""
    y = np.asarray(y, dtype=np.float64)
    m = np.asarray(map_now, dtype=np.float64)
    mask = np.isfinite(m) if zone is None else gray_zone_mask(m, zone)
    y_in, who = y[mask], metrics.Subjects(np.asarray(subjects)[mask])
    band = np.floor(m[mask] / bin_mmhg).astype(np.int64)
    tables = {name: metrics.RankingTable(y_in, np.asarray(s, dtype=np.float64)[mask], who, band)
              for name, s in scores.items()} if len(y_in) else {}
    both = sum(1 for b in np.unique(band) if 0 < y_in[band == b].sum() < (band == b).sum())
    out = _report(y_in, tables, who, reference, n_boot, seed, level, min_subjects, min_positive_subjects)
    definition = {"bin_mmhg": float(bin_mmhg), "bands_with_both_classes": int(both),
                  "zone": None if zone is None else [float(zone[0]), float(zone[1])]}
    return {"definition": definition, **out}


def net_benefit(y, prob, thresholds=DECISION_THRESHOLDS) -> np.ndarray:
    """Net benefit per threshold probability pt of treating the windows with prob >= pt:
    TP/n - FP/n * pt / (1 - pt) (Vickers & Elkin 2006)."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(prob, dtype=np.float64)
    pt = np.asarray(thresholds, dtype=np.float64)
    if np.any((pt < 0) | (pt >= 1)):
        raise ValueError("threshold probabilities must lie in [0, 1)")
    n = max(len(y), 1)
    treated = p[None, :] >= pt[:, None]
    tp, fp = treated @ y, treated @ (1 - y)
    return tp / n - fp / n * pt / (1 - pt)


def decision_curve(y, probabilities: dict, thresholds=DECISION_THRESHOLDS) -> list:
    """Rows for a `dvc plots` JSON (x: "threshold", y: every other key): per threshold probability pt,
    the net benefit of each scorer (`probabilities` {scorer: calibrated probability per window}), of
    treating all windows (prevalence - (1 - prevalence) * pt/(1 - pt)) and of treating none (0)."""
    y = np.asarray(y, dtype=np.float64)
    pt = np.asarray(thresholds, dtype=np.float64)
    prevalence = float(y.mean()) if len(y) else 0.0
    columns = {name: net_benefit(y, p, pt) for name, p in probabilities.items()}
    columns["treat_all"] = prevalence - (1 - prevalence) * pt / (1 - pt)
    columns["treat_none"] = np.zeros(len(pt))
    return [{"threshold": round(float(x), 4), **{name: round(float(v[i]), 6) for name, v in columns.items()}}
            for i, x in enumerate(pt)]
