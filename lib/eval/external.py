"""External validation in words: the internal and external results side by side (the external report's
first section), and the optional recalibration on a held-out part of the external cohort.

Internal = the training cohort's test split (stage evaluate's details.json); external = a second cohort
scored by the same frozen model, calibrators, thresholds and alarm operating points (stage
external_evaluate). Each cohort's CIs come from its own subject bootstrap, so they are not paired: a
difference is read from the two intervals, not tested.
"""
from lib.eval.report import _cohort_section, _fmt, _num, _table, monitor_name, scorer_name

OFF_REPORT = ("# External validation\n\nExternal validation is off (`external.source: none`). Set `external.source` "
              "to `demo`, `local` or `vitaldb` (params.yaml, docs/data.md) and rerun `dvc repro`.\n")

# The published change from a development cohort to an external one in the same setting (forward analysis):
# the zero-shot forecaster TiRex-2 on a public benchmark of time-series foundation models for intraoperative
# hypotension, VitalDB (2,665 test subjects) -> the external MOVER cohort, whose prevalence is 2-3x VitalDB's.
PUBLISHED_AUROC = {5.0: (0.929, 0.898), 15.0: (0.849, 0.853)}   # horizon (min) -> (VitalDB, MOVER)
PUBLISHED_SHIFT = ("Published, same setting (forward AUROC, zero-shot TiRex-2 on a public benchmark): VitalDB "
                   "0.929 → MOVER 0.898 at 5 min (−0.031) and 0.849 → 0.853 at 15 min; MAE 5.46 → 5.86 mmHg at "
                   "5 min. MOVER's hypotension prevalence is 2–3× VitalDB's. The simulated second hospital "
                   "(`external.source: demo`) was given that prevalence ratio by design: agreement with these figures "
                   "tests the pipeline, not the model.")
ROWS = (("auroc", "AUROC"), ("auprc", "AUPRC"), ("brier", "Brier"), ("ece", "ECE"))
ALARM_KEYS = (("event_sensitivity", "event sensitivity", 2), ("false_alarms_per_hour", "false alarms / h", 2),
              ("lead_time_min", "lead time, min", 1))


def comparison(internal: dict, external: dict, provenance) -> list:
    """Markdown lines: cohorts, ranking and calibration per scorer, alarms, the published reference and the
    recalibration (when run), internal beside external. `internal`/`external` are details.json mappings."""
    source = provenance.source
    lines = ["## Internal and external validation, side by side", "",
             f"Internal: the training cohort's test split. External: the `{source}` cohort, every case test. The "
             "model, its calibrator, every baseline, each decision threshold and each alarm operating point were "
             "fitted on the training cohort and are applied unchanged; the external windows were cut with the "
             "training cohort's rule and normalised with its train statistics. Subjects of the training cohort "
             "are never drawn into an external cohort from the same case table. CIs: a subject bootstrap within "
             "each cohort (not paired across cohorts).", "",
             *_cohort_section({"internal test": internal["cohort"].get("test", {}),
                               "external": external["cohort"].get("external", {})}), "",
             f"Window level at {external.get('horizon_min', 0):g} min, each scorer at its val-chosen threshold:", "",
             *_scorer_table(internal["window"], external["window"]), "",
             *_backward_lines(internal, external),
             *_alarm_lines(internal, external), PUBLISHED_SHIFT, "",
             *_reading(internal["window"], external["window"], external.get("horizon_min"))]
    if external.get("recalibration"):
        lines += recalibration_lines(external["recalibration"])
    return lines + ["", "## The external cohort in full", ""]


def _scorer_table(internal: dict, external: dict) -> list:
    header = ["scorer", *(f"{label} {side}" for _, label in ROWS[:1] for side in ("internal", "external")),
              "ΔAUROC", *(f"{label} int / ext" for _, label in ROWS[1:]), "cal.-in-the-large int / ext",
              "cal. slope int / ext"]
    rows = []
    for name, ext in external.items():
        if name.startswith("gain_over_"):
            continue
        inn = internal.get(name, {})
        delta = (ext["auroc"] - inn["auroc"]) if ext.get("auroc") is not None and inn.get("auroc") is not None \
            else None
        rows.append([scorer_name(name), _fmt(inn, "auroc"), _fmt(ext, "auroc"), _num(delta),
                     *(f"{_num(inn.get(k))} / {_num(ext.get(k))}" for k, _ in ROWS[1:]),
                     f"{_num(inn.get('calibration_in_the_large'))} / {_num(ext.get('calibration_in_the_large'))}",
                     f"{_num(inn.get('calibration_slope'), 2)} / {_num(ext.get('calibration_slope'), 2)}"])
    return _table(header, rows) + ["", "Calibration-in-the-large: mean predicted risk minus the observed rate "
                                   "(> 0: risk overestimated); calibration slope: 1 when calibrated, < 1 too extreme."]


def _backward_lines(internal: dict, external: dict) -> list:
    inn, ext = internal.get("backward", {}).get("window", {}), external.get("backward", {}).get("window", {})
    if not ext:
        return []
    cells = [f"{monitor_name(n)} {_num(inn.get(n, {}).get('auroc'))} → {_num(s.get('auroc'))}" for n, s in ext.items()
             if not n.startswith("gain_over_")]
    return [f"Backward (case-control) AUROC, internal → external: {'; '.join(cells)}.", ""]


def _alarm_lines(internal: dict, external: dict) -> list:
    inn, ext = internal.get("alarms", {}).get("scorers", {}), external.get("alarms", {}).get("scorers", {})
    if not ext:
        return []
    rows = []
    for name, points in ext.items():
        point = points.get("val_threshold", points.get(external["alarms"].get("fixed_map_point", ""), {}))
        other = inn.get(name, {})
        other = other.get("val_threshold", other.get(internal.get("alarms", {}).get("fixed_map_point", ""), {}))
        rows.append([monitor_name(name), *(f"{_num(other.get(k), d)} / {_num(point.get(k), d)}"
                                          for k, _, d in ALARM_KEYS)])
    return ["Alarms at the operating point chosen on val (internal / external):", "",
            *_table(["scorer", *(label for _, label, _ in ALARM_KEYS)], rows), ""]


def _reading(internal: dict, external: dict, horizon_min=None) -> list:
    """One sentence on the model's drop, against the published one."""
    inn, ext = internal.get("ttm", {}), external.get("ttm", {})
    if inn.get("auroc") is None or ext.get("auroc") is None:
        return ["The model's external AUROC is n/a (too few subjects or positive subjects).", ""]
    drop = ext["auroc"] - inn["auroc"]
    overlap = ext.get("auroc_ci_high") is not None and inn.get("auroc_ci_low") is not None and \
        ext["auroc_ci_high"] >= inn["auroc_ci_low"] and inn["auroc_ci_high"] >= ext["auroc_ci_low"]
    published = PUBLISHED_AUROC.get(float(horizon_min)) if horizon_min is not None else None
    beside = (f" (published at {horizon_min:g} min: {published[1] - published[0]:+.3f})" if published else
              " (no published figure at this horizon)")
    return [f"The model's AUROC moves {drop:+.3f} from internal to external{beside}; the two intervals "
            f"{'overlap' if overlap else 'do not overlap'}.", ""]


def recalibration_lines(recal: dict) -> list:
    """The recalibration on a held-out part of the external cohort, apart from the validation above."""
    d = recal["definition"]
    lines = ["### Recalibration on the external cohort (reported apart)", "",
             f"Each calibrator refitted on {d['fit_subjects']} external subjects ({d['fraction']:.0%}, "
             f"{d['fit_windows']:,} windows) and scored on the other {d['scored_subjects']} "
             f"({d['scored_windows']:,} windows), beside the original calibration on the same windows.", ""]
    if recal.get("na_reason"):
        return lines + [f"n/a: {recal['na_reason']}.", ""]
    rows = []
    for name, before in recal["original"].items():
        if name.startswith("gain_over_"):
            continue
        after = recal["recalibrated"][name]
        rows.append([scorer_name(name), *(f"{_fmt(before, k)} → {_fmt(after, k)}" for k in ("brier", "ece")),
                     f"{_num(before.get('calibration_in_the_large'))} → {_num(after.get('calibration_in_the_large'))}",
                     f"{_num(before.get('calibration_slope'), 2)} → {_num(after.get('calibration_slope'), 2)}"])
    return lines + _table(["scorer", "Brier", "ECE", "cal.-in-the-large", "cal. slope"], rows) + [""]
