"""The test-split evaluation evaluate writes: every scorer (the TTM model and the baselines) at
window level and after overlap voting, the model's gain over each baseline, subgroups, and for
regression the AAMI/BHS criteria; 95 % CIs by bootstrap over subjects throughout. For
classification, the backward (case-control) analysis beside the forward one (lib.eval.backward),
and n/a (None with an `na_reason`) wherever too few subjects or positive subjects stand behind a number.

`evaluate_classifier` / `evaluate_regressor` are the science, on arrays: they return the detailed
summary (`Details`: the `details.json` report.md is built from) and the figures. `headline` picks the
few numbers DVC tracks as metrics. Nothing here reads params.yaml or a model.

Gains are paired: model and baseline are scored on the same bootstrap replicate, so the interval
of the difference accounts for the test subjects they share.
"""
from dataclasses import asdict, dataclass, field

import h5py
import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.metrics import precision_recall_curve, roc_curve

from lib.core.errors import PipelineError
from lib.core.params import Evaluate
from lib.core.schema import MAP_NOW, REG_TARGETS, label_column
from lib.data import windows_h5
from lib.eval import alarms, backward, decision, metrics, report
from lib.model.scorers import MODEL

GAIN_METRICS = ("auroc", "auprc", "brier")
SUBGROUP_METRICS = ("auroc", "auprc", "sensitivity", "specificity", "ppv", "brier", "ece")
# The DVC metrics (metrics/evaluate/metrics.json): per scorer or target, window level; plus the test counts.
HEADLINE = {"clf": ("auroc", "auroc_ci_low", "auroc_ci_high", "auprc", "brier", "ece"),
            "reg": ("mae", "mae_ci_low", "mae_ci_high", "me", "me_ci_low", "me_ci_high", "sd", "sd_ci_low",
                    "sd_ci_high")}
HEADLINE_BASELINE = ("auroc",)   # clf: a baseline's forward AUROC (its CI is in details.json and report.md)
# clf: per scorer (and the MAP alarm) its alarms at the val-chosen operating point (the MAP alarm's: the fixed MAP)
HEADLINE_ALARM = ("event_sensitivity", "false_alarms_per_hour", "lead_time_min")
HEADLINE_COUNTS = {"clf": ("subjects", "windows", "positives"), "reg": ("subjects", "windows")}
HEADLINE_BACKWARD = "auroc_backward"   # per scorer (clf): the backward (case-control) AUROC beside the forward one
REFERENCE = MODEL   # the model ("ttm"); every other scorer is a baseline (lib.model.scorers)


@dataclass
class TestWindows:
    """Who and when each test window is (aligned with the predictions)."""

    caseid: np.ndarray
    subjectid: np.ndarray
    t_end: np.ndarray
    window_s: float
    timing: dict = field(default_factory=dict)   # backward.TIMING_COLUMNS when the file has them all, else {}


@dataclass
class Counts:
    """The windows (and their cases and subjects) a level of the evaluation scores."""

    windows: int
    positives: int
    cases: int
    subjects: int
    positive_subjects: int


@dataclass
class Details:
    """evaluate's detailed summary: what report.md is built from, and details.json (`to_dict`).

    `evaluate_classifier` / `evaluate_regressor` fill the evaluation (the clf-only fields stay at
    their defaults for reg and are left out of details.json); the stage adds the horizon, the
    training mode, the cohort table, the masking counts and the MAP forecasts' errors. Per-scorer
    statistics stay dicts of metric names (`lib.eval.metrics`)."""

    task: str                           # clf | reg
    counts: Counts                      # the labelled test windows
    bootstrap: int                      # subject-bootstrap replicates
    voting: str
    overlap: float
    window: dict                        # {scorer (clf) or target (reg): statistics}; clf: also gain_over_<baseline>
    voted: dict | None = None           # the same after overlap voting; None when evaluate.voting is none
    threshold: float | None = None      # clf: the model's val-chosen threshold
    calibration: str | None = None      # clf: the model's calibration method
    ece_before: float | None = None     # clf: the model's raw sigmoid, before calibration (None where n/a)
    ece_mass_before: float | None = None
    brier_before: float | None = None
    val_ranking: dict = field(default_factory=dict)   # clf: {scorer: its val fit's ranking check}
    backward: dict = field(default_factory=dict)      # clf: the backward (case-control) analysis
    subgroups: dict = field(default_factory=dict)     # clf: {"attribute=group": the model's statistics}
    horizon_min: float | None = None    # the stage's: from the checkpoint
    mode: str = "?"                     # the checkpoint's training mode
    cohort: dict = field(default_factory=dict)        # {split: cohort_table row}
    masking: dict = field(default_factory=dict)       # read_masking
    forecast: dict = field(default_factory=dict)      # {forecaster: forecast_report}; {} when none
    monitor: dict = field(default_factory=dict)       # clf: monitor_report (alarms, gray zone, decision curve)
    recalibration: dict = field(default_factory=dict)  # clf, external cohort: run.recalibration_report; {} when off

    def to_dict(self) -> dict:
        """details.json: the fields as keys (counts as a dict), without the clf-only ones for reg, `voted`
        without voting and `forecast` without forecasters."""
        clf = self.task == "clf"
        out = {"horizon_min": self.horizon_min, "mode": self.mode, "task": self.task, "counts": asdict(self.counts),
               "bootstrap": self.bootstrap, "voting": self.voting, "overlap": self.overlap}
        if clf:
            out.update(threshold=self.threshold, calibration=self.calibration, ece_before=self.ece_before,
                       ece_mass_before=self.ece_mass_before, brier_before=self.brier_before,
                       val_ranking=self.val_ranking)
        out["window"] = self.window
        if self.voted is not None:
            out["voted"] = self.voted
        if clf:
            out.update(backward=self.backward, subgroups=self.subgroups)
        out.update(cohort=self.cohort, masking=self.masking)
        if self.forecast:
            out["forecast"] = self.forecast
        if clf and self.monitor:
            out.update(self.monitor)
        if clf and self.recalibration:
            out["recalibration"] = self.recalibration
        return out


@dataclass
class Bootstrap:
    n: int = 1000
    seed: int = 0
    level: float = 0.95

    @classmethod
    def from_config(cls, cfg: Evaluate) -> "Bootstrap":
        return cls(cfg.bootstrap, cfg.seed, cfg.ci_level)


@dataclass
class LivePlot:
    """One dvclive plot as data: `kind` is a dvclive sklearn plot (roc, precision_recall, calibration,
    confusion_matrix; `data` = (y_true, y_score)) or "custom" (`data` = (datapoints,), for log_plot)."""

    kind: str
    name: str
    data: tuple
    options: dict = field(default_factory=dict)


@dataclass
class Figures:
    images: dict = field(default_factory=dict)   # caption -> matplotlib figure (a PNG report.md shows)
    plots: list = field(default_factory=list)    # LivePlot, for `dvc plots`


def read_clinical(path) -> pd.DataFrame:
    """The cohort's own clinical table (`data/cohort/clinical.csv`: the cohort stage writes every
    VitalDB column, empty where unknown); only `caseid` is required here."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise PipelineError(f"clinical table {path}: cannot read it ({type(err).__name__}); "
                            "rerun dvc repro cohort") from err
    if "caseid" not in table or table["caseid"].duplicated().any():
        raise PipelineError(f"clinical table {path}: needs a caseid column with one row per case; "
                            "rerun dvc repro cohort")
    return table


def read_test_windows(path, indices) -> TestWindows:
    """Who and when the test windows at rows `indices` of the windows file `path` are; the window
    duration is the file's own (its `signals` length over its `fs` attribute). The event timing
    columns (the backward analysis) are read when the file has them all; older files have none."""
    with h5py.File(path, "r") as f:
        window_s = f["signals"].shape[-1] / float(f.attrs["fs"])
        columns = {name: f[name][:][indices] for name in ("caseid", "subjectid", "t_end_s")}
        timing = ({name: f[name][:][indices] for name in backward.TIMING_COLUMNS}
                  if all(name in f for name in backward.TIMING_COLUMNS) else {})
    return TestWindows(columns["caseid"], columns["subjectid"], columns["t_end_s"], window_s, timing)


def _nest(flat: dict) -> dict:
    """{"ttm/auroc": v} → {"ttm": {"auroc": v}}."""
    out = {}
    for key, value in flat.items():
        head, _, tail = key.partition("/")
        out.setdefault(head, {})[tail] = value
    return out


def classification_report(y, probabilities: dict, thresholds: dict, ids: TestWindows, boot: Bootstrap,
                          n_bins: int, reference: str = REFERENCE) -> dict:
    """Metrics (with CIs) of each scorer's calibrated probabilities at its val-chosen threshold,
    and `reference`'s gain over every other scorer."""
    y = np.asarray(y, dtype=np.float64)
    others = [name for name in probabilities if name != reference]
    subjects = metrics.Subjects(ids.subjectid)
    tables = {name: metrics.ClassifierTable(y, p, thresholds[name], subjects, n_bins)
              for name, p in probabilities.items()}

    def metric_fn(counts):
        out = {f"{name}/{key}": value for name, table in tables.items()
               for key, value in table.metrics(counts).items() if key in metrics.CLF_METRICS}
        for other in others:
            for key in GAIN_METRICS:   # brier: lower is better, so the gain is other − reference
                sign = -1 if key == "brier" else 1
                out[f"gain_over_{other}/{key}"] = sign * (out[f"{reference}/{key}"] - out[f"{other}/{key}"])
        return out

    out = _nest(metrics.with_ci(metric_fn, len(subjects), boot.n, boot.seed, boot.level,
                                max(table.width for table in tables.values())))
    for name, p in probabilities.items():   # logistic recalibration on test (point estimates)
        out[name].update(metrics.calibration_slope(y, p))
        # calibration-in-the-large: mean predicted risk minus the observed rate (> 0: risk overestimated)
        out[name]["calibration_in_the_large"] = float(np.mean(p) - np.mean(y)) if len(y) else float("nan")
    return out


def gated(level: dict, reason: str | None) -> dict:
    """A report level ({scorer: stats}) with every scorer's statistics n/a (None, with `na_reason`)
    when `reason` says they cannot speak; unchanged otherwise."""
    return level if reason is None else {name: metrics.blank(stats, reason) for name, stats in level.items()}


def na_reason_for(y, ids: TestWindows, cfg: Evaluate) -> str | None:
    """Why statistics over these windows are n/a (too few subjects or positive subjects); None when they are not."""
    return metrics.na_reason(ids.subjectid, y, cfg.min_subjects, cfg.min_positive_subjects)


def voted(scores: dict, thresholds: dict, ids: TestWindows, mode: str):
    """(voted scores, thresholds for them): soft keeps each scorer's threshold, hard votes at 0.5."""
    out = {name: metrics.vote(p, ids.caseid, ids.t_end, ids.window_s, mode, thresholds[name])
           for name, p in scores.items()}
    return out, (thresholds if mode == "soft" else {name: 0.5 for name in scores})


def counts(y, ids: TestWindows) -> Counts:
    y = np.asarray(y)
    return Counts(windows=int(len(y)), positives=int((y == 1).sum()), cases=int(len(np.unique(ids.caseid))),
                  subjects=int(len(np.unique(ids.subjectid))),
                  positive_subjects=int(len(np.unique(np.asarray(ids.subjectid)[y == 1]))))


def _numbers(table: pd.DataFrame, column: str) -> np.ndarray:
    """A clinical column as floats, NaN where unknown (empty, absent or not a number)."""
    if column not in table:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)


def _sex(table: pd.DataFrame) -> pd.Series:
    """The sex column, NaN where unknown."""
    if "sex" not in table:
        return pd.Series(np.nan, index=table.index, dtype=object)
    return table["sex"].mask(table["sex"] == "")


def subgroups(clinical: pd.DataFrame, caseids, age_bands) -> dict:
    """{attribute: group label per window (a pandas Categorical, categories sorted)} for sex, age band
    and ASA class (per case); 'unknown' where the clinical table does not say. Worked out once per
    case, then spread to the windows as category codes (memory: a byte per window, not a table row)."""
    cases, inverse = np.unique(np.asarray(caseids), return_inverse=True)
    table = clinical.set_index("caseid").reindex(cases)
    edges = [-np.inf, *age_bands, np.inf]
    names = [f"<{age_bands[0]:g}", *[f"{a:g}-{b - 1:g}" for a, b in zip(age_bands[:-1], age_bands[1:])],
             f">={age_bands[-1]:g}"]
    age = pd.cut(_numbers(table, "age"), edges, right=False, labels=names)
    asa = _numbers(table, "asa")
    asa_class = np.where(np.isnan(asa), "unknown", np.where(asa >= 3, "3+", np.nan_to_num(asa).astype(int).astype(str)))
    per_case = {"sex": _sex(table).fillna("unknown").astype(str).to_numpy(),
                "age": pd.Series(age).astype(object).fillna("unknown").astype(str).to_numpy(), "asa": asa_class}
    out = {}
    for attribute, labels in per_case.items():
        categories, codes = np.unique(np.asarray(labels, dtype=str), return_inverse=True)
        out[attribute] = pd.Categorical.from_codes(codes.reshape(-1)[inverse.reshape(-1)], categories)
    return out


def subgroup_report(y, p, threshold: float, groups: dict, ids: TestWindows, boot: Bootstrap, n_bins: int,
                    min_subjects: int = 0, min_positive_subjects: int = 0) -> dict:
    """The model's metrics within each subgroup, with subject-bootstrap CIs inside the subgroup; n/a
    (None, with `na_reason`; the counts kept) in a group with too few subjects or positive subjects."""
    y = np.asarray(y, dtype=np.float64)
    out = {}
    for attribute, labels in groups.items():
        labels = pd.Categorical(labels)   # categories sorted; a window's group is its code
        for code, group in enumerate(labels.categories):
            mask = labels.codes == code
            sub = TestWindows(ids.caseid[mask], ids.subjectid[mask], ids.t_end[mask], ids.window_s)
            y_group = y[mask]
            table = metrics.ClassifierTable(y_group, np.asarray(p)[mask], threshold, metrics.Subjects(sub.subjectid),
                                            n_bins)
            group_counts = asdict(counts(y_group, sub))
            reason = metrics.na_reason(sub.subjectid, y_group, min_subjects, min_positive_subjects)
            stats = metrics.with_ci(lambda c, table=table: {k: v for k, v in table.metrics(c).items()
                                                            if k in SUBGROUP_METRICS},
                                    group_counts["subjects"], boot.n, boot.seed, boot.level, table.width)
            out[f"{attribute}={group}"] = {**group_counts, **(stats if reason is None else
                                                              metrics.blank(stats, reason))}
    return out


def regression_report(targets, predictions, names, ids: TestWindows, boot: Bootstrap, min_subjects: int = 0) -> dict:
    """Per target: MAE, ME, SD of the error (with CIs), AAMI pass/fail and BHS grade; every value n/a
    (with the reason) below `min_subjects` test subjects."""
    errors = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    n_subjects = len(np.unique(ids.subjectid))
    if n_subjects < min_subjects:
        reason = f"{n_subjects} test subjects (< evaluate.min_subjects = {min_subjects})"
        blank = {f"{k}{part}": None for k in ("mae", "me", "sd") for part in ("", "_ci_low", "_ci_high", "_ci_dropped")}
        return {name: {**blank, "aami_pass": None, "bhs_grade": None, "na_reason": reason} for name in names}
    out, subjects = {}, metrics.Subjects(ids.subjectid)
    for i, name in enumerate(names):
        e = errors[:, i]
        table = metrics.ErrorTable(e, subjects)
        stats = metrics.with_ci(table.metrics, len(subjects), boot.n, boot.seed, boot.level, table.width)
        out[name] = {**stats, "aami_pass": metrics.aami_pass(stats["me"], stats["sd"]),
                     "aami_subjects_ok": bool(len(np.unique(ids.subjectid)) >= 85),
                     "bhs_grade": metrics.bhs_grade(e), **metrics.bhs_shares(e)}
    return out


def forecast_report(forecasts: dict, actual: dict, subjects, cfg: Evaluate) -> dict:
    """A MAP forecaster's (ttm_zeroshot, ttm_finetuned) forecast error per horizon: {minutes: windows,
    subjects, MAE, ME, SD (mmHg, forecast minus the mean MAP over the label minute that followed) with subject-bootstrap
    CIs}, on the windows whose label minute has a valid MAP; n/a (with the reason) below
    `cfg.min_subjects` subjects. Published anchor: 7 min ahead, MAE 4 ± 2 mmHg internal and 7 ± 3 on
    VitalDB (Kapral et al. 2024)."""
    boot, out = Bootstrap.from_config(cfg), {}
    for minutes, forecast in sorted(forecasts.items()):
        ok = np.isfinite(forecast) & np.isfinite(actual[minutes])
        who = np.asarray(subjects)[ok]
        key, n_subjects = f"{float(minutes):g}", int(len(np.unique(who)))
        if n_subjects < cfg.min_subjects:
            out[key] = {"windows": int(ok.sum()), "subjects": n_subjects,
                        "na_reason": f"{n_subjects} subjects with a valid MAP ahead (< evaluate.min_subjects)"}
            continue
        errors = (np.asarray(forecast, dtype=np.float64) - actual[minutes])[ok]
        table = metrics.ErrorTable(errors, metrics.Subjects(who))
        out[key] = {"windows": int(ok.sum()), "subjects": n_subjects,
                    **metrics.with_ci(table.metrics, n_subjects, boot.n, boot.seed, boot.level, table.width)}
    return out


def cohort_table(split_columns: dict, clinical: pd.DataFrame, horizon_min: float) -> dict:
    """Per split: cases, subjects, labelled windows, prevalence at the horizon, demographics
    (NaN where the clinical table knows none of the split's cases)."""
    out = {}
    for split, cols in split_columns.items():
        y = cols[label_column(horizon_min)]
        labelled = y >= 0
        caseids = np.unique(cols["caseid"])
        table = clinical.set_index("caseid").reindex(caseids)
        age, asa = _numbers(table, "age"), _numbers(table, "asa")
        sex, known_age = _sex(table), np.isfinite(age)
        out[split] = {"cases": int(len(caseids)), "subjects": int(len(np.unique(cols["subjectid"]))),
                      "windows": int(labelled.sum()), "positives": int((y == 1).sum()),
                      "prevalence": float((y == 1).sum() / max(labelled.sum(), 1)),
                      "age_mean": float(np.nanmean(age)) if known_age.any() else float("nan"),
                      "age_sd": float(np.nanstd(age, ddof=1)) if known_age.sum() > 1 else float("nan"),
                      "female_pct": float(100 * (sex == "F").mean()) if sex.notna().any() else float("nan"),
                      "asa_3plus_pct": float(100 * (asa >= 3).mean()) if np.isfinite(asa).any() else float("nan")}
    return out


def read_cohort_table(files: dict, clinical: pd.DataFrame, horizon_min: float) -> dict:
    """`cohort_table` of the windows files {split: path} (train, val and test; an external cohort's test)."""
    names = ["caseid", "subjectid", label_column(horizon_min)]
    return cohort_table({split: windows_h5.read_columns(path, names) for split, path in files.items()},
                        clinical, horizon_min)


def read_masking(files: dict) -> dict:
    """{split: {channel: masked windows, reasons, prevalence masked vs observed}} as the windows stage
    counted them (the split files' `masking` attribute; {} for files written without one)."""
    return {split: windows_h5.attrs(path).get("masking", {}) for split, path in files.items()}


# --- the two evaluations --------------------------------------------------------------------------

def backward_report(probabilities: dict, thresholds: dict, ids: TestWindows, cfg: Evaluate,
                    horizon_min: float | None, reference: str = REFERENCE) -> dict:
    """The backward (case-control) analysis beside the forward one: every scorer on the windows
    `backward.backward_selection` keeps (clear cases h minutes before an event onset, clear controls
    far from any event with a reassuring MAP), labelled by that selection, with subject-bootstrap CIs.
    The selection is made among the windows the forward analysis scores (labelled at the horizon).

    {"definition", "counts", "window": {scorer: stats}}; with `na_reason` (and no `window`) when the
    windows file has no event timing columns or the horizon is unknown, and the statistics n/a when
    the selection has too few subjects or positive subjects."""
    definition = {"horizon_min": horizon_min, "tolerance_s": cfg.backward_tolerance_s,
                  "gap_min": cfg.backward_gap_min, "min_map": cfg.backward_min_map}
    if not ids.timing:
        return {"definition": definition, "na_reason": backward.NO_TIMING}
    if horizon_min is None:
        return {"definition": definition, "na_reason": "the prediction horizon is unknown"}
    t = ids.timing
    mask, y = backward.backward_selection(t[backward.NEXT_ONSET], t[backward.EVENT_DISTANCE], t[backward.MAP_NOW],
                                          horizon_min, cfg.backward_tolerance_s, cfg.backward_gap_min,
                                          cfg.backward_min_map)
    sub = TestWindows(ids.caseid[mask], ids.subjectid[mask], ids.t_end[mask], ids.window_s)
    out = {"definition": definition, "counts": asdict(counts(y, sub))}
    if not mask.any() or y.min() == y.max():
        return {**out, "na_reason": f"the selection holds {int(y.sum())} positive and {int((1 - y).sum())} "
                                    "negative windows; both are needed"}
    level = classification_report(y, {name: p[mask] for name, p in probabilities.items()}, thresholds, sub,
                                  Bootstrap.from_config(cfg), cfg.ece_bins, reference)
    return {**out, "window": gated(level, na_reason_for(y, sub, cfg))}


def evaluate_classifier(y, logits: dict, calibrations: dict, ids: TestWindows, cfg: Evaluate,
                        clinical: pd.DataFrame, reference: str = REFERENCE, horizon_min: float | None = None):
    """(Details, figures) of every scorer on the labelled test windows.

    `logits` {scorer: raw logits (n,)} and `calibrations` {scorer: lib.eval.calibration.Calibration
    fitted on val} hold the model (`reference`) and the baselines; `y` the labels; `clinical` the
    cohort's clinical table (subgroups). Each scorer is calibrated and thresholded as its val fit chose.
    Statistics over too few subjects (or positive subjects; `cfg.min_*`) are n/a with the reason;
    `val_ranking` records, per scorer, whether it ranked val backwards; `backward` is the case-control
    analysis at `horizon_min` (n/a without it or without the windows' event timing columns).
    """
    y = np.asarray(y)
    boot, bins = Bootstrap.from_config(cfg), cfg.ece_bins
    probabilities = {name: calibrations[name].predict_proba(z) for name, z in logits.items()}
    thresholds = {name: calibrations[name].threshold for name in logits}
    model = calibrations[reference]
    raw = expit(np.asarray(logits[reference], dtype=np.float64))
    before = metrics.classification_metrics(y, raw, 0.5, bins)
    reason = na_reason_for(y, ids, cfg)
    before = {k: (None if reason else before[k]) for k in ("ece", "ece_mass", "brier")}
    summary = Details(task="clf", counts=counts(y, ids), bootstrap=cfg.bootstrap, voting=cfg.voting,
                      overlap=cfg.overlap, threshold=model.threshold, calibration=model.calibrator.method,
                      ece_before=before["ece"], ece_mass_before=before["ece_mass"], brier_before=before["brier"],
                      val_ranking={name: calibrations[name].backwards() for name in logits},
                      window=gated(classification_report(y, probabilities, thresholds, ids, boot, bins, reference),
                                   reason), horizon_min=horizon_min)
    if cfg.voting != "none":
        voted_scores, voted_thresholds = voted(probabilities, thresholds, ids, cfg.voting)
        summary.voted = gated(classification_report(y, voted_scores, voted_thresholds, ids, boot, bins, reference),
                              reason)
        del voted_scores   # a probability per window and scorer: not held through the levels below
    summary.backward = backward_report(probabilities, thresholds, ids, cfg, horizon_min, reference)
    groups = subgroups(clinical, ids.caseid, list(cfg.age_bands))
    summary.subgroups = subgroup_report(y, probabilities[reference], model.threshold, groups, ids, boot, bins,
                                        cfg.min_subjects, cfg.min_positive_subjects)
    figures = Figures(
        images={"ROC": report.roc_figure(y, probabilities, summary.window),
                "Reliability before and after calibration": report.reliability_figure(
                    y, raw, probabilities[reference], bins)},
        plots=classifier_plots(y, raw, probabilities, thresholds, bins, reference))
    return summary, figures


MAP_ALARM = "map_alarm"   # the comparator every monitor has: current MAP below X mmHg (lib.eval.alarms.map_risk)


def alarm_rule(cfg: Evaluate) -> alarms.AlarmRule:
    a = cfg.alarm
    return alarms.AlarmRule(hold_s=a.hold_s, refractory_s=a.refractory_s, lead_min_s=0.0,
                            lead_max_s=a.lead_max_min * 60)


def monitor_report(y, probabilities: dict, ids: TestWindows, val_probabilities: dict, val_ids: TestWindows,
                   thresholds: dict, cfg: Evaluate, reference: str = REFERENCE) -> tuple:
    """(the monitor analyses for details.json, their dvc plots): every scorer and the MAP alarm as
    alarms on the test cases' timelines, at operating points chosen on val only (the val-chosen
    threshold, the event-sensitivity targets, the false-alarm budgets; the MAP alarm also at the fixed
    evaluate.alarm.map_alarm_mmhg); AUROC in the MAP gray zone and matched on current MAP; the decision
    curve. `val_probabilities` are each scorer's calibrated val probabilities, `val_ids` their windows."""
    a, boot = cfg.alarm, Bootstrap.from_config(cfg)
    rule = alarm_rule(cfg)
    test_tl, val_tl = alarms.timelines_from_windows(ids), alarms.timelines_from_windows(val_ids)
    test_map, val_map = ids.timing[MAP_NOW], val_ids.timing[MAP_NOW]
    n_a = {"n_boot": boot.n, "seed": boot.seed, "level": boot.level, "min_subjects": cfg.min_subjects,
           "min_positive_subjects": cfg.min_positive_subjects}
    per_scorer = {}
    for name, p in probabilities.items():
        points = alarms.operating_points(val_tl, val_probabilities[name], rule, thresholds[name],
                                         a.sensitivity_targets, a.false_alarm_budgets_per_h)
        per_scorer[name] = alarms.alarm_report(test_tl, p, points, rule, **n_a)
    fixed = f"map_{a.map_alarm_mmhg:g}"
    points = alarms.operating_points(val_tl, alarms.map_risk(val_map), rule, None, a.sensitivity_targets,
                                     a.false_alarm_budgets_per_h, {fixed: alarms.map_threshold(a.map_alarm_mmhg)})
    per_scorer[MAP_ALARM] = alarms.alarm_report(test_tl, alarms.map_risk(test_map), points, rule, **n_a)
    for point in per_scorer[MAP_ALARM].values():   # its thresholds as what a clinician sets: MAP < X mmHg
        point["map_mmhg"] = alarms.map_level(point.get("threshold"))
    curve = decision.decision_curve(y, probabilities)
    out = {"alarms": {"rule": alarms.describe(rule), "fixed_map_point": fixed, "scorers": per_scorer},
           "gray_zone": decision.gray_zone_auroc(y, probabilities, test_map, ids.subjectid, a.gray_zone_mmhg,
                                                 reference, **n_a),
           "map_matched": decision.map_matched_auroc(y, probabilities, test_map, ids.subjectid, reference=reference,
                                                     **n_a),
           "decision_curve": curve}
    plot = LivePlot("custom", "decision_curve", (curve,),
                    {"x": "threshold", "y": [*probabilities, "treat_all", "treat_none"], "template": "simple",
                     "title": "Decision curve: net benefit by threshold probability (test windows)"})
    return out, [plot]


# Points per dvclive curve. The plots are git-tracked outputs (cache: false): thinned to a fixed size,
# they stay the same size and take the same memory whatever the test set (sklearn's curves have up
# to one point per window: 6 MB of precision-recall at 40,000 windows, 350 MB at all of VitalDB).
PLOT_POINTS = 400


def curve_points(kind: str, y, p, max_points: int = PLOT_POINTS) -> list:
    """ROC (`kind` "roc": fpr, tpr, threshold) or precision-recall ("precision_recall": recall,
    precision, threshold) points of scores `p` against labels `y`, as dvclive writes them, thinned
    evenly along sklearn's curve to at most `max_points` (both ends kept)."""
    if kind == "roc":
        fpr, tpr, threshold = roc_curve(y, p)
        columns = {"fpr": fpr, "tpr": tpr, "threshold": threshold}
    else:
        precision, recall, threshold = precision_recall_curve(y, p)
        columns = {"recall": recall[:-1], "precision": precision[:-1], "threshold": threshold}
    n = len(columns["threshold"])
    keep = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))
    return [{k: (round(float(v[i]), 6) if np.isfinite(v[i]) else None) for k, v in columns.items()} for i in keep]


def classifier_plots(y, raw, probabilities: dict, thresholds: dict, bins: int, reference: str = REFERENCE) -> list:
    """dvc plots data, each of a fixed size: ROC per scorer, and the model's precision-recall,
    reliability before and after calibration, confusion counts at its threshold and score histogram
    by class."""
    ttm = probabilities[reference]
    plots = [LivePlot("custom", f"roc_{name}", (curve_points("roc", y, p),),
                      {"x": "fpr", "y": "tpr", "template": "simple", "title": f"ROC, {name} (test windows)"})
             for name, p in probabilities.items()]
    predicted = (ttm >= thresholds[reference]).astype(int)
    confusion = [{"cell": f"actual {a}, predicted {b}", "windows": int(np.sum((y == a) & (predicted == b)))}
                 for a in (1, 0) for b in (1, 0)]
    plots += [LivePlot("custom", "precision_recall", (curve_points("precision_recall", y, ttm),),
                       {"x": "recall", "y": "precision", "template": "simple",
                        "title": "Precision-recall, TTM (test windows)"}),
              LivePlot("calibration", "calibration_before", (y, raw), {"n_bins": bins}),
              LivePlot("calibration", "calibration_after", (y, ttm), {"n_bins": bins}),
              LivePlot("custom", "confusion", (confusion,),
                       {"x": "windows", "y": "cell", "template": "bar_horizontal",
                        "title": "TTM at its val threshold: test windows per cell"})]
    edges = np.linspace(0, 1, 21)
    histogram = [{"score": f"{lo:.2f}", "negatives": int(n), "positives": int(q)} for lo, n, q in
                 zip(edges[:-1], np.histogram(ttm[y == 0], edges)[0], np.histogram(ttm[y == 1], edges)[0])]
    plots.append(LivePlot("custom", "score_histogram", (histogram,),
                          {"x": "score", "y": ["negatives", "positives"], "template": "bar_horizontal",
                           "title": "TTM calibrated score by class (test windows)"}))
    return plots


def evaluate_regressor(targets, pressures, ids: TestWindows, cfg: Evaluate, names=REG_TARGETS):
    """(Details, figures) of the cuffless estimates `pressures` (mmHg, (n, len(names))) against the
    window's beat-derived `targets`; overlapping estimates of a pressure are averaged when voting."""
    targets, pressures = np.asarray(targets), np.asarray(pressures)
    boot = Bootstrap.from_config(cfg)
    # n/a below cfg.min_subjects; the report also states AAMI's own >= 85 subjects beside the table
    summary = Details(task="reg", counts=counts(targets[:, 0], ids), bootstrap=cfg.bootstrap, voting=cfg.voting,
                      overlap=cfg.overlap, window=regression_report(targets, pressures, names, ids, boot,
                                                                    cfg.min_subjects))
    if cfg.voting != "none":   # soft or hard alike: a pressure's estimates are averaged
        voted_pressures = np.stack([metrics.vote(pressures[:, i], ids.caseid, ids.t_end, ids.window_s, "soft")
                                    for i in range(len(names))], axis=1)
        summary.voted = regression_report(targets, voted_pressures, names, ids, boot, cfg.min_subjects)
    plots = []
    for i, name in enumerate(names):
        mean, diff = (pressures[:, i] + targets[:, i]) / 2, pressures[:, i] - targets[:, i]
        step = max(1, len(mean) // 2000)   # a readable scatter: at most ~2,000 points
        points = [{"mean": float(a), "difference": float(b)} for a, b in zip(mean[::step], diff[::step])]
        plots.append(LivePlot("custom", f"bland_altman_{name}", (points,),
                              {"x": "mean", "y": "difference", "template": "scatter",
                               "title": f"Bland-Altman {name.upper()}"}))
    return summary, Figures({"Bland-Altman": report.bland_altman_figure(targets, pressures, names)}, plots)


def headline(summary: Details) -> dict:
    """The few numbers DVC tracks (`dvc exp show`, `dvc metrics diff`): per target (reg) or for the
    model (clf) the window-level HEADLINE metrics (None where n/a), per baseline (clf) its AUROC with
    CI (HEADLINE_BASELINE), for clf every scorer's backward AUROC beside them (None where the backward
    analysis is n/a), the test split's counts, and each MAP forecaster's MAE per horizon."""
    task = summary.task
    out = {name: {key: stats[key] for key in (HEADLINE[task] if task == "reg" or name == REFERENCE
                                                else HEADLINE_BASELINE)}
           for name, stats in summary.window.items() if not name.startswith("gain_over_")}
    if task == "clf":
        level = summary.backward.get("window", {})
        for name in out:
            out[name][HEADLINE_BACKWARD] = level.get(name, {}).get("auroc")
        monitor = summary.monitor.get("alarms", {})
        for name, points in monitor.get("scorers", {}).items():
            point = points.get("val_threshold", points.get(monitor["fixed_map_point"], {}))
            out.setdefault(name, {}).update({key: point.get(key) for key in HEADLINE_ALARM})
    test = asdict(summary.counts)
    out["test"] = {key: test[key] for key in HEADLINE_COUNTS[task]}
    for name, per_minute in summary.forecast.items():
        out[f"{name}_forecast"] = {f"mae_{m}min": stats.get("mae") for m, stats in per_minute.items()}
    return out
