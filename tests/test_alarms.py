"""Alarms on hand-built case timelines (lib.eval.alarms) and the window-level comparisons with the current
MAP (lib.eval.decision)."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lib.eval import alarms as al
from lib.eval import decision
from lib.signal.labels import event_timing

STEP = 2.0   # s between window ends in these timelines


def case(caseid, subject, t_end, onsets=(), ends=(), risk=None, drop_in_event=False):
    """One case's windows as the windows file holds them: event timing from lib.signal.labels."""
    t = np.asarray(t_end, dtype=float)
    nxt, dist = event_timing(np.asarray(onsets, dtype=np.int64), np.asarray(ends, dtype=np.int64), t)
    keep = ~(dist == 0) if drop_in_event else np.ones(len(t), dtype=bool)
    r = np.zeros(len(t)) if risk is None else np.asarray(risk, dtype=float)
    return {"caseid": np.full(keep.sum(), caseid), "subjectid": np.full(keep.sum(), subject), "t": t[keep],
            "next_onset": nxt[keep], "distance": dist[keep], "risk": r[keep]}


def join(*cases):
    return {k: np.concatenate([c[k] for c in cases]) for k in cases[0]}


def timelines(windows, **kw):
    return al.case_timelines(windows["caseid"], windows["subjectid"], windows["t"], windows["next_onset"],
                             windows["distance"], **kw)


def rule(**kw):
    return al.AlarmRule(**{"hold_s": 0.0, "refractory_s": 300.0, "lead_min_s": 0.0, "lead_max_s": 900.0, **kw})


def high_between(t, lo, hi):
    return ((t >= lo) & (t <= hi)).astype(float)


# --- timelines ------------------------------------------------------------------------------------

def test_timelines_recover_onsets_ends_and_monitoring_outside_events():
    t = np.arange(10, 4000, STEP)
    w = join(case(1, "a", t, onsets=[1000, 2500], ends=[1100, 2560], drop_in_event=True),
             case(2, "b", t[:500]))
    w["t"] = w["t"].astype(np.float32)                      # the windows file stores float32
    w["next_onset"] = w["next_onset"].astype(np.float32)
    tl = timelines(w)
    assert tl.step_s == pytest.approx(STEP)
    assert list(tl.event_onset) == pytest.approx([1000, 2500], abs=0.01)
    assert list(tl.event_end) == pytest.approx([1100, 2560], abs=0.01)
    assert list(tl.event_subject) == [0, 0]
    # case 1 monitors every window's 2 s except the last window's before each onset (cut at the onset)
    monitored = tl.monitoring_s()
    assert monitored[1] == pytest.approx(500 * STEP)
    assert monitored[0] == pytest.approx(np.sum(np.fmin(STEP, tl.next_onset[tl.case == 0])), abs=1e-6)
    assert monitored[0] < len(t) * STEP - 150   # the events' minutes are not monitoring time


def test_timelines_mark_windows_inside_events_and_events_before_monitoring_do_not_count():
    t = np.arange(100, 3000, STEP)
    tl = timelines(case(1, "a", t, onsets=[50, 1000], ends=[300, 1200]))
    assert tl.in_event[(tl.t >= 1000) & (tl.t < 1200)].all() and tl.in_event[tl.t < 300].all()
    # (event_timing's distance is 0 at an event's exclusive end too: that window counts as inside)
    assert not tl.in_event[(tl.t > 300) & (tl.t < 1000)].any()
    assert list(tl.event_onset) == [1000]   # the event at 50 s began before the first window


def test_a_case_in_two_subjects_is_refused():
    w = case(1, "a", np.arange(0, 100, STEP))
    w["subjectid"][-1] = "b"
    with pytest.raises(ValueError, match="more than one subject"):
        timelines(w)


# --- alarms: hold, refractory ---------------------------------------------------------------------

def test_a_one_window_spike_shorter_than_the_hold_raises_no_alarm():
    t = np.arange(0, 600, STEP)
    spike = (t == 100).astype(float)
    assert len(al.alarms(t, spike, 0.5, hold_s=10)[0]) == 0
    assert list(al.alarms(t, spike, 0.5, hold_s=0)[0]) == [100]
    # risk high from 200 s on: the alarm starts where the hold is complete (decided at that window end)
    assert list(al.alarms(t, high_between(t, 200, 260), 0.5, hold_s=10)[0]) == [210]
    assert list(al.alarms(t, high_between(t, 200, 208), 0.5, hold_s=10)[0]) == []   # 8 s < hold


def test_a_missing_window_breaks_the_hold():
    t = np.r_[np.arange(0, 100, STEP), np.arange(120, 300, STEP)]   # no window between 98 and 120 s
    r = high_between(t, 90, 140)
    assert list(al.alarms(t, r, 0.5, hold_s=10)[0]) == [130]   # the run restarts at 120 s
    assert list(al.alarms(np.arange(0, 300, STEP), high_between(np.arange(0, 300, STEP), 90, 140), 0.5,
                          hold_s=10)[0]) == [100]


def test_a_second_crossing_inside_the_refractory_time_raises_no_second_alarm():
    t = np.arange(0, 2000, STEP)
    r = high_between(t, 100, 110) + high_between(t, 200, 210) + high_between(t, 500, 510)
    starts = al.alarms(t, r, 0.5, hold_s=0, refractory_s=300)[0]
    assert list(starts) == [100, 500]   # 200 is 100 s after the first alarm; 500 is 400 s after it
    assert list(al.alarms(t, r, 0.5, hold_s=0, refractory_s=50)[0]) == [100, 200, 500]


def test_a_high_risk_that_persists_alarms_once_or_every_refractory_period_when_rearmed():
    t = np.arange(0, 2000, STEP)
    r = high_between(t, 100, 1000)
    assert list(al.alarms(t, r, 0.5, hold_s=0, refractory_s=300, rearm=False)[0]) == [100]
    assert list(al.alarms(t, r, 0.5, hold_s=0, refractory_s=300, rearm=True)[0]) == [100, 400, 700, 1000]
    # a crossing inside the refractory time that is still high when it ends alarms then
    r2 = high_between(t, 100, 104) + high_between(t, 200, 500)
    assert list(al.alarms(t, r2, 0.5, hold_s=0, refractory_s=300, rearm=False)[0]) == [100, 400]


def test_time_in_alarm_intervals():
    t = np.arange(0, 100, STEP)
    starts, intervals = al.alarms(t, high_between(t, 10, 20) + high_between(t, 50, 52), 0.5, hold_s=0)
    assert intervals.tolist() == [[10, 22], [50, 54]]
    assert list(starts) == [10]   # 50 lies in the 300-s refractory time


def naive_alarms(t, r, thr, hold, refractory, rearm, max_gap):
    """A per-window reference implementation of the documented rule."""
    out, start, alarmed, last, prev_t, prev_high = [], None, False, -np.inf, None, False
    for ti, ri in zip(t, r):
        high = ri >= thr
        if high and not (prev_high and ti - prev_t <= max_gap + 1e-6):
            start, alarmed = ti, False
        if high and ti - start >= hold - 1e-6 and ti >= last + refractory - 1e-6 and (rearm or not alarmed):
            out.append(ti)
            last, alarmed = ti, True
        prev_t, prev_high = ti, high
    return out


@pytest.mark.parametrize("hold, refractory, rearm", [(0, 0, False), (0, 0, True), (10, 60, False), (10, 60, True),
                                                     (30, 300, False), (4, 17, True)])
def test_vectorised_alarms_over_many_cases_match_a_per_window_reference(hold, refractory, rearm):
    rng = np.random.default_rng(1)
    windows = []
    for c in range(5):
        t = np.sort(rng.choice(np.arange(0, 3000, STEP), 1200, replace=False))   # gaps from dropped windows
        r = np.convolve(rng.random(len(t)), np.ones(5) / 5, mode="same")
        r[rng.random(len(t)) < 0.01] = np.nan
        windows.append(case(c, f"s{c % 3}", t, risk=r))
    w = join(*windows)
    perm = rng.permutation(len(w["t"]))   # the caller's order does not matter
    w = {k: v[perm] for k, v in w.items()}
    tl = timelines(w, step_s=STEP)
    risk = tl.sort(w["risk"])
    got = al._alarm_windows(tl.case, tl.t, risk, 0.55, hold, refractory, rearm, tl.step_s)
    for c in range(5):
        mine = tl.case == c
        expected = naive_alarms(tl.t[mine], risk[mine], 0.55, hold, refractory, rearm, 1.5 * STEP)
        assert list(tl.t[got[tl.case[got] == c]]) == expected
    # a threshold search's shortcut: the hold's least risk, once, gives the same alarms at every threshold
    held = al.hold_minimum(tl.case, tl.t, risk, hold, tl.step_s)
    for threshold in (0.3, 0.5, 0.55, 0.62, 0.7):
        np.testing.assert_array_equal(
            al._alarm_windows(tl.case, tl.t, risk, threshold, hold, refractory, rearm, tl.step_s, held),
            al._alarm_windows(tl.case, tl.t, risk, threshold, hold, refractory, rearm, tl.step_s))


# --- event-level metrics --------------------------------------------------------------------------

def test_an_alarm_3_min_before_onset_counts_with_a_lead_time_of_3_min():
    t = np.arange(10, 3000, STEP)
    w = case(1, "a", t, onsets=[1000], ends=[1100], risk=high_between(t, 820, 830), drop_in_event=True)
    tl = timelines(w)
    m = al.event_metrics(tl, w["risk"], 0.5, rule(), n_boot=50)
    assert m["events"] == 1 and m["caught"] == 1 and m["missed"] == 0
    assert m["event_sensitivity"] == 1.0 and m["missed_events"] == 0
    assert m["lead_time_min"] == pytest.approx(3.0)
    assert m["false_alarms"] == 0 and m["false_alarms_per_hour"] == 0 and m["ppv_alarm"] == 1.0
    # 20 min ahead, outside a 15-min lead window: a false alarm, and the event is missed
    w2 = case(1, "a", t, onsets=[2000], ends=[2100], risk=(t == 800).astype(float), drop_in_event=True)
    m2 = al.event_metrics(timelines(w2), w2["risk"], 0.5, rule(), n_boot=20)
    assert m2["events"] == 1 and m2["caught"] == 0 and m2["missed"] == 1 and m2["false_alarms"] == 1
    assert m2["false_alarms_per_hour"] == pytest.approx(1 / m2["monitoring_h"]) and m2["ppv_alarm"] == 0.0


def test_the_lead_window_lower_bound_and_the_earliest_warning():
    t = np.arange(10, 3000, STEP)
    r = (np.isin(t, [700, 970])).astype(float)   # 5 min and 30 s before onset
    w = case(1, "a", t, onsets=[1000], ends=[1100], risk=r, drop_in_event=True)
    tl = timelines(w)
    both = al.point_metrics(tl, tl.sort(w["risk"]), 0.5, rule(refractory_s=0))
    assert both["caught"] == 1 and both["lead_time_min"] == pytest.approx(5.0) and both["alarms"] == 2
    late = al.point_metrics(tl, tl.sort((w["t"] == 970).astype(float)), 0.5, rule(lead_min_s=60))
    # 30 s ahead: too late to warn with a 1-min minimum lead, but an onset follows, so not false
    assert late["caught"] == 0 and late["false_alarms"] == 0 and late["ppv_alarm"] == 1.0


def test_risk_above_threshold_during_an_event_is_not_a_false_alarm():
    t = np.arange(10, 3000, STEP)
    w = case(1, "a", t, onsets=[1000], ends=[1300], risk=high_between(t, 1000, 1290))   # windows inside kept
    tl = timelines(w)
    m = al.event_metrics(tl, w["risk"], 0.5, rule(), n_boot=20)
    assert m["alarms_in_event"] == 1 and m["false_alarms"] == 0 and m["alarms"] == 0
    assert m["false_alarms_per_hour"] == 0 and m["time_in_alarm"] == 0
    assert m["caught"] == 0 and m["missed"] == 1
    # the same risk after the event, with no onset following: a false alarm
    after = al.point_metrics(tl, tl.sort(high_between(t, 1500, 1510)), 0.5, rule())
    assert after["false_alarms"] == 1 and after["ppv_alarm"] == 0.0


def test_time_in_alarm_is_a_share_of_monitoring_outside_events():
    t = np.arange(0, 3600, STEP)
    w = case(1, "a", t, risk=high_between(t, 0, 359 * STEP))   # 360 of 1800 windows
    m = al.point_metrics(timelines(w), w["risk"], 0.5, rule())
    assert m["time_in_alarm"] == pytest.approx(0.2) and m["monitoring_h"] == pytest.approx(1.0)
    assert m["false_alarms_per_hour"] == pytest.approx(3.0)   # at 0, 300 and 600 s: the risk stays high
    assert al.point_metrics(timelines(w), w["risk"], 0.5, rule(rearm=False))["false_alarms_per_hour"] == 1.0


def two_subjects():
    """Subject a: 2 events, one caught 5 min ahead; subject b: 1 event, missed, and one false alarm."""
    t = np.arange(10, 4000, STEP)
    a = case(1, "a", t, onsets=[1000, 3000], ends=[1100, 3100], risk=(t == 700).astype(float), drop_in_event=True)
    b = case(2, "b", t, onsets=[2000], ends=[2100], risk=(t == 3500).astype(float), drop_in_event=True)
    return join(a, b)


def test_the_bootstrap_moves_whole_subjects():
    w = two_subjects()
    tl = timelines(w)
    table = al.subject_table(tl, tl.sort(w["risk"]), 0.5, rule())
    assert table.events.tolist() == [2, 1] and table.caught.tolist() == [1, 0]
    assert table.false_alarms.tolist() == [0, 1]
    # a replicate drawing subject a twice and b once: a's events, catches and hours all count twice
    weights = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    m = al.table_metrics(table, weights)
    assert m["event_sensitivity"].tolist() == pytest.approx([2 / 5, 0.0, 0.5])
    assert m["missed_events"].tolist() == [3, 3, 1]
    hours = table.monitor_s / 3600
    assert m["false_alarms_per_hour"].tolist() == pytest.approx([1 / (2 * hours[0] + hours[1]), 1 / hours[1], 0.0])
    assert np.isnan(m["lead_time_min"][1]) and m["lead_time_min"][0] == pytest.approx(5.0)
    # the replicates are metrics.subject_bootstrap's: counts per subject
    out = al.event_metrics(tl, w["risk"], 0.5, rule(), n_boot=200, seed=3)
    assert out["event_sensitivity"] == pytest.approx(1 / 3)
    assert 0 <= out["event_sensitivity_ci_low"] <= 1 / 3 <= out["event_sensitivity_ci_high"] <= 1


def test_weighted_quantiles_equal_percentiles_of_the_repeated_values():
    rng = np.random.default_rng(0)
    values, owner = rng.random(9), rng.integers(0, 4, 9)
    weights = rng.integers(0, 3, (6, 4)).astype(float)
    q = al.weighted_quantiles(values, owner, weights, (0.25, 0.5, 0.75))
    for i, w in enumerate(weights):
        repeated = np.repeat(values, w[owner].astype(int))
        for level in (0.25, 0.5, 0.75):
            expected = np.percentile(repeated, 100 * level) if len(repeated) else np.nan
            assert q[level][i] == pytest.approx(expected, nan_ok=True)


def test_too_few_subjects_or_subjects_with_an_event_make_the_statistics_na():
    w = two_subjects()
    tl = timelines(w)
    out = al.event_metrics(tl, w["risk"], 0.5, rule(), n_boot=20, min_subjects=3)
    assert out["event_sensitivity"] is None and out["events"] == 3 and "2 subjects" in out["na_reason"]
    out = al.event_metrics(tl, w["risk"], 0.5, rule(), n_boot=20, min_subjects=2, min_positive_subjects=3)
    assert out["false_alarms_per_hour"] is None and "with an IOH event" in out["na_reason"]


# --- operating points on val ----------------------------------------------------------------------

def val_timelines(n_cases=12, seed=0):
    """Cases with one event each at 2000 s; the risk rises before it, more or less early, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(10, 4000, STEP)
    windows = []
    for c in range(n_cases):
        ramp = np.clip((t - (2000 - rng.uniform(60, 900))) / 600, 0, 1) * rng.uniform(0.5, 1.0) * (t < 2000)
        r = np.clip(ramp + 0.3 * rng.random(len(t)) * (rng.random(len(t)) < 0.05), 0, 1)
        windows.append(case(c, f"s{c}", t, onsets=[2000], ends=[2100], risk=np.round(r, 3), drop_in_event=True))
    return join(*windows)


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9])
def test_the_sensitivity_threshold_reaches_its_target_on_val_and_is_the_highest_that_does(target):
    w = val_timelines()
    tl = timelines(w)
    r = rule(hold_s=4)
    thr, value = al.sensitivity_threshold(tl, w["risk"], target, r)
    assert value >= target
    assert al.point_metrics(tl, tl.sort(w["risk"]), thr, r)["event_sensitivity"] == value
    higher = np.unique(w["risk"][w["risk"] > thr])
    assert all(al.point_metrics(tl, tl.sort(w["risk"]), h, r)["event_sensitivity"] < target for h in higher)


@pytest.mark.parametrize("budget", [0.5, 2.0])
def test_the_budget_threshold_keeps_false_alarms_within_budget_and_is_the_lowest_that_does(budget):
    w = val_timelines()
    tl = timelines(w)
    r = rule()
    thr, value = al.budget_threshold(tl, w["risk"], budget, r)
    assert value <= budget
    lower = np.unique(w["risk"][w["risk"] < thr])
    assert all(al.point_metrics(tl, tl.sort(w["risk"]), x, r)["false_alarms_per_hour"] > budget for x in lower)


def test_operating_points_and_the_report_on_test():
    w = val_timelines()
    tl = timelines(w)
    points = al.operating_points(tl, w["risk"], rule(), val_threshold=0.5, targets=(0.8, 1.01), budgets=(1.0,))
    assert set(points) == {"val_threshold", "sensitivity_0.8", "sensitivity_1.01", "budget_1_per_h"}
    assert points["sensitivity_1.01"].threshold is None
    report = al.alarm_report(timelines(val_timelines(seed=1)), val_timelines(seed=1)["risk"], points, rule(),
                             n_boot=50)
    assert report["sensitivity_1.01"]["na_reason"]
    assert report["sensitivity_0.8"]["event_sensitivity"] is not None
    assert report["sensitivity_0.8"]["rule"] == "sensitivity" and report["sensitivity_0.8"]["target"] == 0.8


# --- the MAP alarm --------------------------------------------------------------------------------

def test_the_map_alarm_at_72_fires_when_map_is_below_72():
    t = np.arange(0, 20, STEP)
    map_now = np.array([80, 75, 72, 72, 71.9, 71, 73, 74, 70, np.nan])
    starts, intervals = al.alarms(t, al.map_risk(map_now), al.map_threshold(al.MULDER_MAP_MMHG), hold_s=0,
                                  refractory_s=0, rearm=False)
    assert list(starts) == [8, 16]   # MAP 71.9 (not 72.0) and, a new episode, 70
    assert intervals.tolist() == [[8, 12], [16, 18]]
    assert al.map_level(al.map_threshold(72)) == 72.0


def test_the_map_alarm_is_a_scorer_for_the_val_selection():
    w = val_timelines()
    tl = timelines(w)
    map_now = 90 - 25 * w["risk"]   # lower MAP where the risk is higher
    thr, value = al.sensitivity_threshold(tl, al.map_risk(map_now), 0.8, rule())
    assert value >= 0.8 and 65 < al.map_level(thr) < 90


# --- gray zone, matched, decision curve -----------------------------------------------------------

def test_gray_zone_auroc_is_the_auroc_of_the_windows_at_65_to_75_mmhg():
    rng = np.random.default_rng(0)
    n = 3000
    map_now = rng.uniform(55, 100, n)
    y = (rng.random(n) < 1 / (1 + np.exp((map_now - 68) / 4))).astype(int)
    model = -map_now + rng.normal(0, 3, n) + 4 * y
    subjects = rng.integers(0, 30, n)
    scores = {"ttm": model, "map": al.map_risk(map_now)}
    out = decision.gray_zone_auroc(y, scores, map_now, subjects, reference="ttm", n_boot=100, min_subjects=10)
    zone = (map_now >= 65) & (map_now <= 75)
    assert out["counts"]["windows"] == zone.sum()
    assert out["window"]["ttm"]["auroc"] == pytest.approx(roc_auc_score(y[zone], model[zone]))
    assert out["window"]["gain_over_map"]["auroc"] == pytest.approx(
        roc_auc_score(y[zone], model[zone]) - roc_auc_score(y[zone], -map_now[zone]))
    matched = decision.map_matched_auroc(y, scores, map_now, subjects, bin_mmhg=1.0, reference="ttm", n_boot=50)
    assert matched["window"]["ttm"]["auroc"] > 0.6 > matched["window"]["map"]["auroc"] > 0.4
    # the matched AUROC pools each band's pairs: sum of band AUROC x pairs over the sum of pairs
    band = np.floor(map_now / 1.0)
    pairs = aucs = 0.0
    for b in np.unique(band):
        yb, sb = y[band == b], model[band == b]
        if 0 < yb.sum() < len(yb):
            n_pairs = yb.sum() * (len(yb) - yb.sum())
            pairs, aucs = pairs + n_pairs, aucs + n_pairs * roc_auc_score(yb, sb)
    assert matched["window"]["ttm"]["auroc"] == pytest.approx(aucs / pairs)
    few = decision.gray_zone_auroc(y, scores, map_now, subjects, n_boot=20, min_subjects=31)
    assert few["window"]["ttm"]["auroc"] is None and few["window"]["ttm"]["na_reason"]


def test_decision_curve_treat_none_is_zero_and_treat_all_matches_prevalence():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.1).astype(int)
    p = np.clip(0.1 + 0.3 * y + rng.normal(0, 0.05, 500), 0, 1)
    rows = decision.decision_curve(y, {"ttm": p})
    prevalence = y.mean()
    assert [r["threshold"] for r in rows] == pytest.approx(np.linspace(0, 0.2, 21))
    for r in rows:
        pt = r["threshold"]
        assert r["treat_none"] == 0
        assert r["treat_all"] == pytest.approx(prevalence - (1 - prevalence) * pt / (1 - pt), abs=1e-6)
    assert rows[0]["ttm"] == pytest.approx(rows[0]["treat_all"], abs=1e-6)   # pt 0: every window treated
    pt = 0.15
    tp, fp = np.sum((p >= pt) & (y == 1)), np.sum((p >= pt) & (y == 0))
    assert rows[15]["ttm"] == pytest.approx(tp / 500 - fp / 500 * pt / (1 - pt), abs=1e-6)
