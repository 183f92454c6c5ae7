"""A scorer judged as a monitor is judged: alarms on each case's timeline, event-level metrics, and the
plain MAP alarm every monitor already has.

Window-level AUROC says how well a score ranks windows; a clinician meets the score as alarms on a
patient's timeline. This module turns per-window risks into causal alarms and scores them per IOH
event and per hour of monitoring, as hypotension-prediction validations do:

- event sensitivity, the time from alarm to event, PPV per alarm and missed events: the Hypotension
  Prediction Index's event-level validation (Rellum et al., Eur J Anaesthesiol 2025; forward analysis,
  Anesthesiology 2024;141(3):443);
- alarm burden (false alarms per hour, share of time in alarm, PPV of a warning, share of events
  warned of, timeliness): Scully & Daluwatte, J Biomed Inform 2017;75:14;
- the comparator: an alarm on the current MAP below X mmHg. HPI alarms were equivalent to a MAP
  alarm at 72-73 mmHg (Mulder et al., Anesthesiology 2024), so X = 72 is one fixed operating point
  (`MULDER_MAP_MMHG`); X is also chosen on val for the same targets as the scorers' thresholds.

**Timelines** (`case_timelines`). The windows of a case, sorted by end time, and its IOH events
(MAP < 65 mmHg for >= 1 min, `lib.signal.labels.ioh_events`), recovered from the windows' own event
timing columns (`lib.signal.labels.event_timing`): `next_onset_s` (seconds from the window end to the
next onset; NaN when none follows) gives every onset that some window of the case precedes, and
`event_distance_s` (0 inside an event, else the seconds to the nearest event) marks the windows inside
an event and, for windows after one, its end (end = t - event_distance_s, exact when the previous
event's end is nearer than the next onset, an upper bound otherwise). An event no window precedes
began before monitoring did and is not counted. Each window stands for the time from its end to the
next window of its case, at most one stride (`step_s`); the monitoring time outside events is that,
cut at the next onset, over the windows outside events. Windows the windows stage dropped (quality
gates, already hypotensive, the post-event gap) are time not monitored.

**Alarms** (`alarms`; `AlarmRule`). Decided at window ends from the past only. An alarm starts at
the first window end where the risk has stayed at or above the threshold for `hold_s` (every window
from the one that crossed up to this one at or above it, consecutive windows at most 1.5 strides
apart; hold_s = 0: at the crossing itself). After an alarm starts, no alarm starts for
`refractory_s`: a second crossing inside the refractory time raises none while it lies inside it,
and alarms at the first window after it if the risk is still high then. With `rearm` True (default)
a risk that stays high alarms again every `refractory_s`, as a monitor's alarm condition that
persists sounds again once silenced; with `rearm` False an alarm episode (a run of windows at or
above the threshold) raises at most one alarm, as in alarm-episode analyses (Sci Rep 2017;7:8551),
where a low threshold can then miss events: one alarm at the start of a long high stretch, too
early to warn of the event at its end. NaN risk is below every threshold. Time in alarm is the
time (outside events) of the windows whose risk is at or above the threshold.

**Event-level metrics** (`event_metrics`), per operating point, for a lead window [lead_min_s,
lead_max_s] before onset:

- an event is *caught* when an alarm starts outside an event with its next onset (the first onset
  after the alarm) this event, lead_min_s to lead_max_s ahead; the lead time is that of the earliest
  such alarm. An event counts (is *evaluable*) when at least one window outside events ends in its
  lead window, i.e. the monitor could have warned of it. Event sensitivity = caught / evaluable
  events; missed events = evaluable - caught.
- an alarm that starts during an event is neither a warning nor a false alarm (`alarms_in_event`);
  an alarm outside events is *false* when no onset follows within lead_max_s; PPV per alarm = alarms
  followed by an onset within lead_max_s / alarms outside events.
- false alarms per hour of monitoring outside events; share of that time in alarm.

Every metric has a subject-bootstrap percentile CI: whole subjects are resampled with replacement
(`lib.eval.metrics.subject_bootstrap`: with the same seed and test subjects, the same replicates as
the window-level metrics wherever their blocks are the same size), so a subject drawn twice brings
all its events, alarms and hours twice. The per-subject sufficient statistics (events, caught,
alarms, false alarms, monitoring and alarm seconds, lead times) are computed once per operating
point; a replicate is then a (replicates, subjects) count matrix times these tables. Below
`min_subjects` subjects or `min_positive_subjects` subjects with an evaluable event the metrics are
n/a (None, with `na_reason`; the counts kept).

**Operating points** are chosen on val only (`operating_points`): the val-chosen probability
threshold; for each event-sensitivity target the highest threshold whose val event sensitivity
reaches it; for each alarm budget the lowest threshold whose val false alarms per hour stay within
it. The MAP comparator is a scorer like the others (`map_risk`: risk = -MAP, threshold = -X, so the
same alarm code fires when MAP < X).
"""
from dataclasses import asdict, dataclass, field

import numpy as np

from lib.core.schema import EVENT_DISTANCE, NEXT_ONSET
from lib.eval import metrics

MULDER_MAP_MMHG = 72.0   # Mulder et al., Anesthesiology 2024: HPI alarms ~ a MAP alarm at 72-73 mmHg
MAX_GAP_STRIDES = 1.5    # consecutive windows further apart than this many strides break an alarm's hold
EPS = 1e-6               # s: float32 window ends
RATIO_METRICS = ("event_sensitivity", "lead_time_min", "lead_time_q1_min", "lead_time_q3_min",
                 "false_alarms_per_hour", "ppv_alarm", "time_in_alarm", "missed_events")
COUNTS = ("subjects", "positive_subjects", "events", "events_total", "caught", "missed", "alarms",
          "false_alarms", "alarms_in_event", "monitoring_h")


@dataclass(frozen=True)
class AlarmRule:
    """How risk becomes alarms and alarms meet events (module doc). Times in seconds."""

    hold_s: float = 30.0          # the risk stays >= threshold this long before an alarm starts
    refractory_s: float = 300.0   # no new alarm this long after one starts
    lead_min_s: float = 0.0       # an alarm warns of an onset lead_min_s .. lead_max_s ahead
    lead_max_s: float = 900.0
    rearm: bool = True            # a risk that stays high alarms again every refractory_s (False: once per episode)

    def __post_init__(self):
        if min(self.hold_s, self.refractory_s, self.lead_min_s) < 0 or self.lead_max_s < self.lead_min_s:
            raise ValueError(f"alarm rule {self}: times must be >= 0 and lead_min_s <= lead_max_s")


# --- timelines ------------------------------------------------------------------------------------

@dataclass
class Timelines:
    """Windows grouped into per-case timelines, sorted by (case, window end); see the module doc.

    Per-window arrays are in sorted order; `order` maps them to the caller's order (sorted = caller[order]),
    so a risk array in the caller's order is `risk[order]` here (`sort`)."""

    order: np.ndarray          # (n,) int: caller index of each sorted window
    cases: np.ndarray          # (C,) case ids
    subjects: np.ndarray       # (S,) subject ids, sorted (np.unique)
    case: np.ndarray           # (n,) case index of each window
    subject: np.ndarray        # (n,) subject index of each window
    case_subject: np.ndarray   # (C,) subject index of each case
    t: np.ndarray              # (n,) window end (s from the recording start), float64
    next_onset: np.ndarray     # (n,) s from the window end to the next onset; NaN: none follows
    in_event: np.ndarray       # (n,) bool: the window ends inside an IOH event
    event: np.ndarray          # (n,) index of the next event (the one next_onset points at); -1: none
    dt: np.ndarray             # (n,) s the window stands for: to the next window of its case, at most step_s
    monitor: np.ndarray        # (n,) s of that outside events (0 inside one; cut at the next onset)
    step_s: float              # the stride (median spacing of consecutive windows of a case)
    event_case: np.ndarray     # (E,) case index of each event
    event_subject: np.ndarray  # (E,) subject index
    event_onset: np.ndarray    # (E,) onset (s from the recording start)
    event_end: np.ndarray      # (E,) end where a later window tells it (exact or an upper bound); NaN: unknown
    cache: dict = field(default_factory=dict, repr=False, compare=False)   # threshold-free sums, computed once

    @property
    def n_windows(self) -> int:
        return len(self.t)

    def sort(self, values) -> np.ndarray:
        """Per-window `values` in the caller's order, in the timelines' (case, time) order (float64)."""
        values = np.asarray(values, dtype=np.float64)
        if len(values) != len(self.order):
            raise ValueError(f"{len(values)} values for {len(self.order)} windows")
        return values[self.order]

    def monitor_per_subject(self) -> np.ndarray:
        """(S,) seconds monitored outside events per subject."""
        if "monitor_per_subject" not in self.cache:
            self.cache["monitor_per_subject"] = np.bincount(self.subject, self.monitor,
                                                            minlength=len(self.subjects)).astype(np.float64)
        return self.cache["monitor_per_subject"]

    def monitoring_s(self) -> np.ndarray:
        """(C,) seconds monitored outside events per case."""
        return np.bincount(self.case, self.monitor, minlength=len(self.cases))


def case_timelines(caseid, subjectid, t_end_s, next_onset_s, event_distance_s, step_s: float | None = None,
                   tolerance_s: float = 0.5) -> Timelines:
    """Per-case timelines of the windows (module doc) from their per-window columns, any order.

    `next_onset_s` / `event_distance_s` are the windows file's event timing columns
    (`lib.core.schema.EVENT_TIMING`); NaN next onset: no event follows in the case; NaN distance: the
    case has no event. `step_s`: the stride; by default the median spacing of consecutive windows of a
    case. Onsets of one event seen from several windows (float32 times) agree within `tolerance_s`.
    A case must belong to a single subject (ValueError otherwise).
    """
    caseid, subjectid = np.asarray(caseid), np.asarray(subjectid)
    t_all = np.asarray(t_end_s, dtype=np.float64)
    n = len(t_all)
    if not (len(caseid) == len(subjectid) == len(next_onset_s) == len(event_distance_s) == n):
        raise ValueError("case_timelines: every per-window array needs the same length")
    order = np.lexsort((t_all, caseid))
    cases, case = np.unique(caseid[order], return_inverse=True)
    subjects, subject = np.unique(subjectid[order], return_inverse=True)
    case, subject = case.reshape(-1), subject.reshape(-1)
    t = t_all[order]
    nxt = np.asarray(next_onset_s, dtype=np.float64)[order]
    dist = np.asarray(event_distance_s, dtype=np.float64)[order]
    first = np.r_[True, case[1:] != case[:-1]] if n else np.zeros(0, dtype=bool)
    case_subject = subject[first]
    if n and np.any(subject != case_subject[case]):
        raise ValueError("case_timelines: a case's windows belong to more than one subject")
    same = ~first[1:]
    gaps = np.diff(t)[same]
    if step_s is None:
        positive = gaps[gaps > EPS]
        step_s = float(np.median(positive)) if len(positive) else 1.0
    dt = np.full(n, float(step_s))
    if n > 1:
        dt[:-1] = np.where(same, np.minimum(np.diff(t), step_s), step_s)
    with np.errstate(invalid="ignore"):
        in_event = dist <= EPS   # NaN (no event in the case) compares False
    monitor = np.where(in_event, 0.0, np.fmin(dt, nxt))   # fmin: a NaN next onset leaves dt
    # events: the onsets the windows point at, one per cluster of agreeing (float32) values per case
    has = np.flatnonzero(np.isfinite(nxt))
    onset_abs = t[has] + nxt[has]
    by = np.lexsort((onset_abs, case[has]))
    o, c = onset_abs[by], case[has][by]
    new = np.r_[True, (c[1:] != c[:-1]) | (np.diff(o) > tolerance_s)] if len(o) else np.zeros(0, dtype=bool)
    cluster = np.cumsum(new) - 1
    event = np.full(n, -1, dtype=np.int64)
    event[has[by]] = cluster
    event_onset, event_case = o[new], c[new]
    event_end = _event_ends(case, t, nxt, dist, event_case, event_onset, len(event_onset))
    return Timelines(order=order, cases=cases, subjects=subjects, case=case, subject=subject,
                     case_subject=case_subject, t=t, next_onset=nxt, in_event=in_event, event=event, dt=dt,
                     monitor=monitor, step_s=float(step_s), event_case=event_case,
                     event_subject=case_subject[event_case] if len(event_case) else np.zeros(0, dtype=np.int64),
                     event_onset=event_onset, event_end=event_end)


def _event_ends(case, t, nxt, dist, event_case, event_onset, n_events):
    """Each event's end from the windows after it and before the next onset: t - event_distance_s is the
    end when the distance is to that end, and >= the end when it is to the next onset, so the least such
    value is the end wherever one window tells it exactly (NaN where no window follows the event)."""
    end = np.full(n_events, np.inf)
    if n_events and len(t):
        span = float(max(np.ptp(t), np.ptp(event_onset))) + 1.0
        base = float(min(t.min(), event_onset.min()))
        ekey = event_case * span + (event_onset - base)
        wkey = case * span + (t - base)
        prev = np.searchsorted(ekey, wkey, side="right") - 1          # last event of the case with onset <= t
        ok = (prev >= 0) & (dist > EPS) & np.isfinite(dist)
        ok &= event_case[np.clip(prev, 0, None)] == case
        np.minimum.at(end, prev[ok], t[ok] - dist[ok])
    return np.where(np.isfinite(end), end, np.nan)


def timelines_from_windows(ids, step_s: float | None = None) -> Timelines:
    """`case_timelines` of an evaluation's windows (`lib.eval.evaluation.TestWindows`: caseid, subjectid,
    t_end and the event timing columns in `timing`); ValueError when the file had no timing columns."""
    if not ids.timing:
        raise ValueError("the windows file has no event timing columns; rerun the windows stage")
    return case_timelines(ids.caseid, ids.subjectid, ids.t_end, ids.timing[NEXT_ONSET], ids.timing[EVENT_DISTANCE],
                          step_s)


# --- alarms ---------------------------------------------------------------------------------------

def _runs(case, t, high, max_gap_s):
    """Index of the first window of each window's run at or above the threshold (-1 where not high)."""
    n = len(t)
    idx = np.arange(n)
    joined = np.zeros(n, dtype=bool)
    if n > 1:
        joined[1:] = (case[1:] == case[:-1]) & (np.diff(t) <= max_gap_s + EPS) & high[:-1]
    start = high & ~joined
    run_start = np.maximum.accumulate(np.where(start, idx, -1)) if n else idx
    return np.where(high, run_start, -1)


def hold_minimum(case, t, risk, hold_s: float, step_s: float) -> np.ndarray:
    """Per window, the least risk over the linked windows (same case, no gap above MAX_GAP_STRIDES strides)
    back to the latest one at least hold_s before it; -inf where the linked windows do not reach that far
    back, or a risk among them is NaN. A window completes an alarm's hold at a threshold exactly when this
    is at or above it, so a threshold search computes it once instead of the runs at every threshold."""
    risk = np.where(np.isnan(risk), -np.inf, np.asarray(risk, dtype=np.float64))
    n, index = len(t), np.arange(len(t))
    linked = np.zeros(n, dtype=bool)
    linked[1:] = (case[1:] == case[:-1]) & (np.diff(t) <= MAX_GAP_STRIDES * step_s + EPS)
    segment_start = np.maximum.accumulate(np.where(linked, 0, index)) if n else index
    least, pending = risk.copy(), np.ones(n, dtype=bool)
    reached = np.zeros(n, dtype=bool)
    for back in range(n):   # the hold's windows, one step further back per pass
        i = index[pending] if back else index
        inside = i - back >= segment_start[i]
        i = i[inside]
        least[i] = np.minimum(least[i], risk[i - back])
        done = t[i] - t[i - back] >= hold_s - EPS
        reached[i[done]] = True
        pending[:] = False
        pending[i[~done]] = True
        if not pending.any():
            break
    return np.where(reached, least, -np.inf)


def _alarm_windows(case, t, risk, threshold: float, hold_s: float, refractory_s: float, rearm: bool,
                   step_s: float, held=None) -> np.ndarray:
    """Sorted indices of the windows where an alarm starts (module doc), all cases at once: the hold is
    vectorised; the refractory time advances every case's chain of alarms together (one numpy step per
    alarm of the case with the most). `held`: hold_minimum of these windows and risks, when the caller has it."""
    if held is not None and rearm:   # the runs are needed only to alarm once per episode
        cand = np.flatnonzero(held >= threshold)
        run = None
    else:
        with np.errstate(invalid="ignore"):
            high = np.asarray(risk, dtype=np.float64) >= threshold   # NaN: not high
        run = _runs(case, t, high, MAX_GAP_STRIDES * step_s)
        cand = np.flatnonzero(high & (t - t[np.clip(run, 0, None)] >= hold_s - EPS))
    if len(cand) == 0:
        return cand
    c_case, c_t = case[cand], t[cand]
    c_run = None if run is None else run[cand]
    if refractory_s <= 0 and rearm:
        return cand
    ptr = np.flatnonzero(np.r_[True, c_case[1:] != c_case[:-1]])   # each case's first candidate
    # searchsorted on (case, time): cases are sorted, times sorted within a case
    span = float(np.ptp(t)) + 1.0   # orders the cases; a target past a case's last candidate ends its chain
    key = c_case * span + (c_t - t.min())
    chosen = []
    while len(ptr):
        chosen.append(ptr)
        nxt = np.searchsorted(key, key[ptr] + max(refractory_s, 0.0) - EPS, side="left")
        if refractory_s <= 0:
            nxt = np.maximum(nxt, ptr + 1)
        if not rearm:   # the episode has alarmed: its next candidate is in a later run
            nxt = np.maximum(nxt, np.searchsorted(c_run, c_run[ptr], side="right"))
        keep = nxt < len(cand)
        keep[keep] = c_case[nxt[keep]] == c_case[ptr[keep]]
        ptr = nxt[keep]
    return cand[np.sort(np.concatenate(chosen))]


def alarms(times, risk, threshold: float, hold_s: float = 30.0, refractory_s: float = 300.0, rearm: bool = True,
           step_s: float | None = None):
    """One case's alarms (module doc): (alarm start times (k,), intervals (m, 2) [start, end) where the
    risk is at or above the threshold).

    `times`: the window ends (s, any order), `risk` per window. An interval runs from the end of the
    first window of a run at or above the threshold to one stride (`step_s`; default the median spacing)
    after its last window's end, or to the next window if that comes sooner. Causal: an alarm at a
    window end depends only on the risks of windows ending by then.
    """
    times, risk = np.asarray(times, dtype=np.float64), np.asarray(risk, dtype=np.float64)
    order = np.argsort(times, kind="stable")
    t, r = times[order], risk[order]
    if step_s is None:
        gaps = np.diff(t)
        gaps = gaps[gaps > EPS]
        step_s = float(np.median(gaps)) if len(gaps) else 1.0
    case = np.zeros(len(t), dtype=np.int64)
    starts = t[_alarm_windows(case, t, r, threshold, hold_s, refractory_s, rearm, step_s)]
    with np.errstate(invalid="ignore"):
        high = r >= threshold
    run = _runs(case, t, high, MAX_GAP_STRIDES * step_s)
    dt = np.full(len(t), float(step_s))
    dt[:-1] = np.minimum(np.diff(t), step_s)
    heads = np.flatnonzero(high & (run == np.arange(len(t))))
    lasts = np.flatnonzero(high & np.r_[run[1:] != run[:-1], True])   # each run's last window, aligned with heads
    intervals = np.stack([t[heads], t[lasts] + dt[lasts]], axis=1) if len(heads) else np.zeros((0, 2))
    return starts, intervals


# --- event-level metrics --------------------------------------------------------------------------

@dataclass
class SubjectTable:
    """Per-subject sufficient statistics of one scorer at one threshold (arrays (S,)), and the lead
    times (s) of the caught events with their subject."""

    events: np.ndarray           # evaluable events
    caught: np.ndarray
    alarms: np.ndarray           # alarms starting outside events
    false_alarms: np.ndarray
    alarms_in_event: np.ndarray
    monitor_s: np.ndarray        # monitoring outside events
    alarm_s: np.ndarray          # of which at or above the threshold
    lead_s: np.ndarray           # (caught,) lead time of each caught event
    lead_subject: np.ndarray     # (caught,) its subject index
    events_total: int = 0        # events with an onset some window precedes (evaluable or not)


def _evaluable(tl: Timelines, rule: AlarmRule) -> np.ndarray:
    """(E,) bool: events some window outside an event precedes by lead_min_s .. lead_max_s (threshold-free)."""
    key = ("evaluable", rule.lead_min_s, rule.lead_max_s)
    if key not in tl.cache:
        E = len(tl.event_onset)
        with np.errstate(invalid="ignore"):
            in_window = (~tl.in_event & (tl.next_onset >= rule.lead_min_s - EPS)
                         & (tl.next_onset <= rule.lead_max_s + EPS))
        tl.cache[key] = np.bincount(tl.event[in_window], minlength=E) > 0 if E else np.zeros(0, dtype=bool)
    return tl.cache[key]


def subject_table(tl: Timelines, risk_sorted, threshold: float, rule: AlarmRule, held=None) -> SubjectTable:
    """The per-subject statistics of the alarms at `threshold` (risk already in the timelines' order;
    `held`: its hold_minimum, when the caller has it)."""
    S, E = len(tl.subjects), len(tl.event_onset)
    risk_sorted = np.asarray(risk_sorted, dtype=np.float64)
    a = _alarm_windows(tl.case, tl.t, risk_sorted, threshold, rule.hold_s, rule.refractory_s, rule.rearm, tl.step_s,
                       held)
    lead = tl.next_onset[a]
    inside = tl.in_event[a]
    with np.errstate(invalid="ignore"):
        followed = ~inside & (lead <= rule.lead_max_s + EPS)      # NaN lead: nothing follows
        timely = followed & (lead >= rule.lead_min_s - EPS)
    evaluable = _evaluable(tl, rule)
    best = np.full(E, -np.inf)
    np.maximum.at(best, tl.event[a[timely]], lead[timely])      # the earliest warning of each event
    caught = np.isfinite(best) & evaluable
    with np.errstate(invalid="ignore"):
        high = risk_sorted >= threshold

    def per_subject(mask_or_values, who):
        return np.bincount(who, mask_or_values, minlength=S).astype(np.float64)

    return SubjectTable(
        events=per_subject(evaluable.astype(float), tl.event_subject),
        caught=per_subject(caught.astype(float), tl.event_subject),
        alarms=per_subject((~inside).astype(float), tl.subject[a]),
        false_alarms=per_subject((~inside & ~followed).astype(float), tl.subject[a]),
        alarms_in_event=per_subject(inside.astype(float), tl.subject[a]),
        monitor_s=tl.monitor_per_subject(), alarm_s=per_subject(tl.monitor * high, tl.subject),
        lead_s=best[caught], lead_subject=tl.event_subject[caught], events_total=E)


def weighted_quantiles(values, owner, weights, qs) -> dict:
    """Quantiles `qs` of `values` per row of `weights` (replicates, owners): each value counted as often
    as its owner was drawn; linear interpolation, as np.percentile of the repeated values (NaN when a
    row holds none)."""
    values, owner = np.asarray(values, dtype=np.float64), np.asarray(owner)
    out = {q: np.full(len(weights), np.nan) for q in qs}
    if len(values) == 0:
        return out
    by = np.argsort(values, kind="stable")
    v, w = values[by], weights[:, owner[by]]
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1]
    for q in qs:
        pos = q * (total - 1)
        lo, frac = np.floor(pos), pos - np.floor(pos)
        i_lo = np.minimum((cum <= lo[:, None]).sum(axis=1), len(v) - 1)
        i_hi = np.minimum((cum <= lo[:, None] + 1).sum(axis=1), len(v) - 1)
        out[q] = np.where(total > 0, v[i_lo] + frac * (v[i_hi] - v[i_lo]), np.nan)
    return out


def table_metrics(table: SubjectTable, weights) -> dict:
    """RATIO_METRICS per row of `weights` (replicates, subjects): the sums of the table's columns over
    the drawn subjects (a subject drawn k times counts k times); None: every subject once (the point)."""
    weights = np.ones((1, len(table.events))) if weights is None else weights

    def total(column):
        return weights @ column
    events, caught, alarms_ = total(table.events), total(table.caught), total(table.alarms)
    monitor = total(table.monitor_s)
    q = weighted_quantiles(table.lead_s / 60.0, table.lead_subject, weights, (0.25, 0.5, 0.75))
    return {"event_sensitivity": metrics._ratio(caught, events), "lead_time_min": q[0.5],
            "lead_time_q1_min": q[0.25], "lead_time_q3_min": q[0.75],
            "false_alarms_per_hour": metrics._ratio(total(table.false_alarms), monitor / 3600.0),
            "ppv_alarm": metrics._ratio(alarms_ - total(table.false_alarms), alarms_),
            "time_in_alarm": metrics._ratio(total(table.alarm_s), monitor), "missed_events": events - caught}


def alarm_na_reason(table: SubjectTable, min_subjects: int, min_positive_subjects: int) -> str | None:
    """Why the event-level statistics cannot speak (too few subjects, or too few with an evaluable IOH
    event, for a subject bootstrap to mean anything); None when they can (metrics.na_reason's rule)."""
    n, positive = len(table.events), int((table.events > 0).sum())
    if n < min_subjects:
        return f"{n} subject{'s' if n != 1 else ''} (< {min_subjects})"
    if min_positive_subjects and positive < min_positive_subjects:
        return f"{positive} subject{'s' if positive != 1 else ''} with an IOH event (< {min_positive_subjects})"
    return None


def counts(table: SubjectTable) -> dict:
    events, caught = int(table.events.sum()), int(table.caught.sum())
    return {"subjects": int(len(table.events)), "positive_subjects": int((table.events > 0).sum()),
            "events": events, "events_total": int(table.events_total), "caught": caught, "missed": events - caught,
            "alarms": int(table.alarms.sum()), "false_alarms": int(table.false_alarms.sum()),
            "alarms_in_event": int(table.alarms_in_event.sum()), "monitoring_h": float(table.monitor_s.sum() / 3600)}


def event_metrics(tl: Timelines, risk, threshold: float, rule: AlarmRule = AlarmRule(), n_boot: int = 1000,
                  seed: int = 0, level: float = 0.95, min_subjects: int = 0, min_positive_subjects: int = 0) -> dict:
    """Event-level statistics of one scorer at one threshold (module doc), `risk` in the caller's order.

    {threshold, COUNTS..., each RATIO_METRICS with _ci_low, _ci_high, _ci_dropped (metrics.with_ci)}; the
    ratio metrics and CIs None with an `na_reason` below `min_subjects` subjects or
    `min_positive_subjects` subjects with an evaluable event. Lead times in minutes; false alarms per
    hour of monitoring outside events; time_in_alarm a share of that time."""
    table = subject_table(tl, tl.sort(risk), threshold, rule)
    stats = metrics.with_ci(lambda w: table_metrics(table, w), len(tl.subjects), n_boot, seed, level)
    out = {"threshold": float(threshold), **counts(table), **stats}
    reason = alarm_na_reason(table, min_subjects, min_positive_subjects)
    return out if reason is None else metrics.blank(out, reason, keep=("threshold", *COUNTS))


def point_metrics(tl: Timelines, risk_sorted, threshold: float, rule: AlarmRule, held=None) -> dict:
    """Point estimates (no CI) of RATIO_METRICS and the counts; risk in the timelines' order (`held`: its
    hold_minimum, when the caller has it)."""
    table = subject_table(tl, risk_sorted, threshold, rule, held)
    point = table_metrics(table, np.ones((1, len(tl.subjects))))
    return {**counts(table), **{k: float(v[0]) for k, v in point.items()}}


# --- operating points (val only) ------------------------------------------------------------------

@dataclass
class OperatingPoint:
    """A threshold and why: chosen on val (`rule`: val_threshold | sensitivity | budget | fixed), its
    target (a sensitivity or false alarms per hour) and what val showed there; `threshold` None where
    no threshold reaches the target on val."""

    name: str
    rule: str
    threshold: float | None
    target: float | None = None
    val_event_sensitivity: float | None = None
    val_false_alarms_per_hour: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def candidate_thresholds(risk, n_grid: int = 200) -> np.ndarray:
    """Ascending candidate thresholds: the distinct finite risks, or `n_grid` of their quantiles when more."""
    r = np.unique(np.asarray(risk, dtype=np.float64))
    r = r[np.isfinite(r)]
    if len(r) <= n_grid:
        return r
    return np.unique(np.quantile(r, np.linspace(0, 1, n_grid), method="nearest"))


def _measured(tl: Timelines, risk_sorted, rule: AlarmRule):
    """point_metrics at a threshold, each threshold measured once (the searches of one scorer share them)."""
    seen, held = {}, hold_minimum(tl.case, tl.t, risk_sorted, rule.hold_s, tl.step_s)

    def at(threshold: float) -> dict:
        if threshold not in seen:
            seen[threshold] = point_metrics(tl, risk_sorted, threshold, rule, held)
        return seen[threshold]
    return at


def _search(tl: Timelines, risk_sorted, rule: AlarmRule, metric: str, ok, highest: bool, n_grid: int, measured=None):
    """The highest (or lowest) candidate threshold whose val `metric` satisfies `ok`: a coarse grid of
    quantiles, then every distinct risk between the chosen grid point and its neighbour on the failing
    side (the exact answer when the metric is monotone there). (threshold, value) or (None, None).
    `measured`: a `_measured` of these timelines, risks and rule, to share measurements between searches."""
    values = np.unique(risk_sorted[np.isfinite(risk_sorted)])
    measured = measured or _measured(tl, risk_sorted, rule)

    def best(grid):
        for thr in (grid[::-1] if highest else grid):
            value = measured(float(thr))[metric]
            if np.isfinite(value) and ok(value):
                return thr, value
        return None, None

    grid = candidate_thresholds(values, n_grid)
    thr, value = best(grid)
    if thr is None:
        return None, None
    i = int(np.searchsorted(grid, thr))
    neighbour = grid[i + 1] if highest and i + 1 < len(grid) else (grid[i - 1] if not highest and i > 0 else None)
    if neighbour is not None:
        lo, hi = sorted((thr, neighbour))
        between = values[(values > lo) & (values < hi)]
        if len(between):
            finer, finer_value = best(candidate_thresholds(between, n_grid))
            if finer is not None and (finer > thr if highest else finer < thr):
                thr, value = finer, finer_value
    return float(thr), float(value)


def sensitivity_threshold(tl: Timelines, risk, target: float, rule: AlarmRule = AlarmRule(),
                          n_grid: int = 200) -> tuple:
    """(the highest threshold whose event sensitivity on these (val) timelines reaches `target`, that
    sensitivity); (None, None) when no threshold reaches it."""
    return _search(tl, tl.sort(risk), rule, "event_sensitivity", lambda v: v >= target - 1e-12, True, n_grid)


def budget_threshold(tl: Timelines, risk, budget_per_hour: float, rule: AlarmRule = AlarmRule(),
                     n_grid: int = 200) -> tuple:
    """(the lowest threshold whose false alarms per hour on these (val) timelines stay within
    `budget_per_hour`, that rate); (None, None) when none does."""
    return _search(tl, tl.sort(risk), rule, "false_alarms_per_hour", lambda v: v <= budget_per_hour + 1e-12,
                   False, n_grid)


def point_name(rule: str, target: float | None = None) -> str:
    """Operating point keys: val_threshold, sensitivity_0.8, budget_1_per_h, fixed (or a given name)."""
    if rule == "sensitivity":
        return f"sensitivity_{target:g}"
    if rule == "budget":
        return f"budget_{target:g}_per_h"
    return rule


def operating_points(val: Timelines, val_risk, rule: AlarmRule = AlarmRule(), val_threshold: float | None = None,
                     targets=(0.8, 0.9), budgets=(1.0, 2.0), fixed: dict | None = None,
                     n_grid: int = 200) -> dict:
    """{name: OperatingPoint} of one scorer, chosen on its val timelines and val risks only:
    `val_threshold` (the calibrate stage's, when given), one per event-sensitivity target
    (`sensitivity_threshold`), one per false-alarm budget (`budget_threshold`), and `fixed` {name:
    threshold} as given (e.g. the MAP alarm at 72 mmHg: {"map_72": map_threshold(72)})."""
    risk_sorted = val.sort(val_risk)
    measured = _measured(val, risk_sorted, rule)
    chosen = []   # (name, rule, threshold, target)
    if val_threshold is not None:
        chosen.append(("val_threshold", "val_threshold", float(val_threshold), None))
    for target in targets:
        thr = _search(val, risk_sorted, rule, "event_sensitivity", lambda v, x=target: v >= x - 1e-12, True, n_grid,
                      measured)[0]
        chosen.append((point_name("sensitivity", target), "sensitivity", thr, float(target)))
    for budget in budgets:
        thr = _search(val, risk_sorted, rule, "false_alarms_per_hour", lambda v, x=budget: v <= x + 1e-12, False,
                      n_grid, measured)[0]
        chosen.append((point_name("budget", budget), "budget", thr, float(budget)))
    chosen += [(name, "fixed", float(thr), None) for name, thr in (fixed or {}).items()]
    points = {}
    for name, how, thr, target in chosen:
        seen = measured(thr) if thr is not None else {}
        points[name] = OperatingPoint(name, how, thr, target, _float(seen.get("event_sensitivity")),
                                      _float(seen.get("false_alarms_per_hour")))
    return points


def _float(value):
    return float(value) if value is not None and np.isfinite(value) else None


def alarm_report(test: Timelines, risk, points: dict, rule: AlarmRule = AlarmRule(), n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95, min_subjects: int = 0, min_positive_subjects: int = 0) -> dict:
    """{point name: event_metrics on the test timelines at that OperatingPoint's threshold, plus the
    point's `rule`, `target`, `val_event_sensitivity` and `val_false_alarms_per_hour`}; a point without
    a threshold (its target not reachable on val) gets only those and an `na_reason`. Every point uses
    the same bootstrap replicates (same seed and subjects)."""
    out = {}
    for name, point in points.items():
        about = {k: v for k, v in point.to_dict().items() if k not in ("name", "threshold")}
        if point.threshold is None:
            out[name] = {**about, "threshold": None, "na_reason": "no threshold reaches the target on val"}
            continue
        out[name] = {**about, **event_metrics(test, risk, point.threshold, rule, n_boot, seed, level, min_subjects,
                                              min_positive_subjects)}
    return out


# --- the MAP alarm ----------------------------------------------------------------------------------

def map_risk(map_now) -> np.ndarray:
    """The MAP alarm as a scorer: risk = -current MAP (mmHg; NaN stays NaN, never alarming)."""
    return -np.asarray(map_now, dtype=np.float64)


def map_threshold(x_mmhg: float) -> float:
    """The threshold on `map_risk` at which the alarm fires when the current MAP < `x_mmhg` (strictly:
    risk >= the next float above -x)."""
    return float(np.nextafter(-float(x_mmhg), np.inf))


def map_level(threshold: float | None) -> float | None:
    """The MAP (mmHg) a `map_risk` threshold alarms below (inverse of map_threshold, rounded to 0.01)."""
    return None if threshold is None else round(-float(threshold), 2)


def describe(rule: AlarmRule) -> str:
    """The alarm rule in one sentence for report.md."""
    rearm = ("a risk that stays high alarms again every refractory period" if rule.rearm else
             "an episode of high risk raises at most one alarm")
    return (f"An alarm starts when the calibrated risk has stayed at or above the threshold for {rule.hold_s:g} s "
            f"(decided at the window end where the hold is complete); no new alarm starts within "
            f"{rule.refractory_s:g} s of one, and {rearm}. An alarm warns of an IOH event when the event begins "
            f"{rule.lead_min_s / 60:g} to {rule.lead_max_s / 60:g} min after it; an alarm with no onset within "
            f"{rule.lead_max_s / 60:g} min is false, and an alarm during an event is neither.")
