import numpy as np

from lib.signal.labels import (
    describe_rule,
    event_timing,
    has_hypotension,
    hypotension_labels,
    ioh_events,
    map_at_end,
    map_per_second,
    past_map_slope,
)

FS = 125


def test_map_per_second_is_a_two_second_mean():
    trace = map_per_second(np.repeat([80.0, 90.0, 70.0], FS), np.zeros(3 * FS, dtype=bool), FS)
    assert np.isnan(trace[0])
    assert trace[1] == 85.0 and trace[2] == 80.0


def test_map_per_second_masks_gaps_flush_and_zeroing():
    abp = np.repeat([80.0, 80.0, 80.0, 300.0, 0.0, 80.0, 80.0], FS)
    invalid = np.zeros(len(abp), dtype=bool)
    invalid[:10] = True  # a gap in the first second
    trace = map_per_second(abp, invalid, FS)
    assert np.isnan(trace[1])            # touches the gap
    assert trace[2] == 80.0
    assert np.isnan(trace[3]) and np.isnan(trace[4]) and np.isnan(trace[5])  # flush, then zero
    assert trace[6] == 80.0


def test_label_rule_on_hand_built_map_trace():
    # 20 min at MAP 80; hypotension (55) over [600, 720) s; a NaN gap over [1000, 1060) s.
    trace = np.full(1200, 80.0)
    trace[600:720] = 55.0
    trace[1000:1060] = np.nan
    ends = [299.0, 300.0, 360.0, 361.0, 750.0, 725.0, 1150.0, 700.0, 299.5]
    labels, reasons, map_ahead = hypotension_labels(trace, np.array(ends), horizon_s=300, duration_s=60, threshold=65,
                                                    min_valid=0.8, rule="at")
    assert labels[0] == 0                 # minute [599, 659): its first second is 80 mmHg
    assert labels[1] == 1                 # minute [600, 660): below 65 throughout
    assert labels[2] == 1                 # minute [660, 720)
    assert labels[3] == 0                 # minute [661, 721): the last second has recovered
    assert labels[4] == 0 and reasons[4] == ""   # [1050, 1110): 50/60 s valid, all normal
    assert np.isnan(labels[5]) and reasons[5] == "label_artefact"   # [1025, 1085): 25/60 s valid
    assert np.isnan(labels[6]) and reasons[6] == "label_past_end"
    assert np.isnan(labels[7]) and reasons[7] == "already_hypotensive"
    assert labels[8] == 1                 # minute starts at ceil(599.5) = 600
    assert map_ahead[1] == 55.0 and map_ahead[0] == (80 + 59 * 55) / 60
    assert map_ahead[4] == 80.0           # the mean of the valid seconds only
    assert np.isnan(map_ahead[5]) and np.isnan(map_ahead[7])


def test_episode_at_recording_end():
    trace = np.full(700, 80.0)
    trace[640:] = 50.0                    # an episode that runs off the end of the recording
    labels, reasons, _ = hypotension_labels(trace, np.array([340.0, 341.0, 400.0]), horizon_s=300, duration_s=60,
                                            rule="at")
    assert labels[0] == 1                 # [640, 700): the last complete minute
    assert np.isnan(labels[1]) and reasons[1] == "label_past_end"
    assert reasons[2] == "label_past_end"


def test_has_hypotension_needs_a_full_minute_below_65():
    trace = np.full(600, 80.0)
    trace[100:159] = 60.0
    assert not has_hypotension(trace)
    trace[100:160] = 60.0
    assert has_hypotension(trace)
    trace[130] = np.nan                   # a short gap is tolerated: 59 of 60 s valid and below
    assert has_hypotension(trace)
    trace[100:115] = np.nan               # from its first valid second the run is 45 s
    assert not has_hypotension(trace)


def test_every_horizon_uses_the_same_rule():
    trace = np.full(2400, 80.0)
    trace[1500:1560] = 50.0
    ends = np.array([1200.0])
    got = {h: hypotension_labels(trace, ends, horizon_s=h * 60, rule="at")[0][0] for h in (5, 10, 15)}
    assert got == {5: 1.0, 10: 0.0, 15: 0.0}
    late = hypotension_labels(trace, np.array([1500.0]), horizon_s=15 * 60, rule="at")
    assert np.isnan(late[0][0]) and late[1][0] == "label_past_end"   # 1500 + 900 + 60 > 2400


def test_nan_gap_at_the_window_end_makes_the_label_unknown():
    trace = np.full(1200, 80.0)
    trace[295:300] = np.nan
    labels, reasons, _ = hypotension_labels(trace, np.array([300.0]), horizon_s=300, rule="at")
    assert np.isnan(labels[0]) and reasons[0] == "map_now_invalid"
    assert np.isnan(map_at_end(trace, np.array([300.0]))[0]) and map_at_end(trace, np.array([301.0]))[0] == 80.0


def test_past_map_slope_uses_only_the_past():
    t = np.arange(1200.0)
    trace = 100 - t / 60            # falls 1 mmHg per minute
    trace[700:] = 200.0             # the future must not matter
    slope = past_map_slope(trace, np.array([600.0, 30.0]), span_s=300, min_valid_s=60)
    assert abs(slope[0] + 1.0) < 1e-9
    assert np.isnan(slope[1])       # only 30 s of history: too little for a trend
    trace[400:500] = np.nan         # gaps are skipped, not interpolated
    assert abs(past_map_slope(trace, np.array([600.0]))[0] + 1.0) < 1e-9


def test_ioh_events_onset_end_and_tolerance():
    trace = np.full(1200, 80.0)
    trace[100:170] = 60.0                 # 70 s: an event
    trace[300:350] = 60.0                 # 50 s: too short
    trace[500:520] = np.nan               # a gap at the start of a run is not its onset
    trace[520:600] = 60.0
    trace[800:900] = 60.0
    trace[830:840] = np.nan               # 10 s gap inside: tolerated (50 of 60 s valid), the run goes on
    trace[900:960] = np.nan               # trailing gap: the event ends at its last valid second below
    onsets, ends = ioh_events(trace)
    assert onsets.tolist() == [100, 520, 800] and ends.tolist() == [170, 600, 900]
    trace[1100:1160] = 60.0
    trace[1105:1120] = np.nan             # only 45 of 60 s valid in every minute from a valid second
    assert 1100 not in ioh_events(trace)[0]
    assert ioh_events(trace, min_valid=0.7)[0][-1] == 1100
    assert len(ioh_events(np.full(30, 50.0))[0]) == 0          # shorter than a minute


def within(trace, ends, horizon_s=300, gap_s=600):
    return hypotension_labels(trace, np.array(ends, dtype=float), horizon_s=horizon_s, rule="within",
                              post_event_gap_s=gap_s)


def test_forward_rule_on_hand_built_map_trace():
    trace = np.full(2400, 80.0)
    trace[1000:1100] = 55.0               # event [1000, 1100)
    ends = [600, 699, 700, 701, 999, 1000, 1050, 1100, 1699, 1700, 2040, 2041]
    y, why, map_ahead = within(trace, ends)
    assert y[0] == 0 and why[0] == ""     # onset 400 s after (t, t+300]
    assert y[1] == 0                      # onset at t + 301
    assert y[2] == 1                      # onset exactly at t + h: inside (t, t+h]
    assert y[3] == 1 and y[4] == 1        # onset 1 s after t: still positive
    assert np.isnan(y[5]) and why[5] == "in_event"           # the event begins exactly at t
    assert why[6] == "already_hypotensive" and why[7] == "already_hypotensive"   # MAP at t is 55
    assert np.isnan(y[8]) and why[8] == "post_event"         # 599 s after the end, gap 600 s
    assert y[9] == 0 and why[9] == ""     # the gap is over
    assert y[10] == 0                     # (2040, 2340] + the 60 s confirming minute ends at 2400
    assert np.isnan(y[11]) and why[11] == "label_past_end"
    assert map_ahead[9] == 80.0 and np.isnan(map_ahead[5])


def test_forward_rule_gaps_and_horizons():
    trace = np.full(2400, 80.0)
    trace[1500:1560] = 50.0
    got = {h: within(trace, [1200.0], h * 60)[0][0] for h in (5, 10, 15)}
    assert got == {5: 1.0, 10: 1.0, 15: 1.0}  # an event within h: positive at every longer horizon
    assert within(trace, [1199.0], 5 * 60)[0][0] == 0 and within(trace, [599.0], 15 * 60)[0][0] == 0
    gappy = np.full(2400, 80.0)
    gappy[250:600] = np.nan               # 210 of the 360 s in (100, 460] are missing: no negative
    y, why, _ = within(gappy, [100.0, 700.0])
    assert np.isnan(y[0]) and why[0] == "label_artefact" and y[1] == 0
    gappy[500:560] = 55.0                 # an event seen in the gap is still a positive
    assert within(gappy, [240.0])[0][0] == 1
    nan_now = np.full(2400, 80.0)
    nan_now[295:300] = np.nan
    assert within(nan_now, [300.0])[1][0] == "map_now_invalid"
    assert within(trace, [1600.0], gap_s=0)[0][0] == 0   # no gap: labelled right after the event


def test_event_timing_columns():
    trace = np.full(2400, 80.0)
    trace[1000:1100] = 55.0
    trace[1800:1900] = 55.0
    next_onset, distance = event_timing(*ioh_events(trace), np.array([100.0, 1000.0, 1050.0, 1150.0, 1500.0, 2000.0]))
    np.testing.assert_array_equal(next_onset, [900, 800, 750, 650, 300, np.nan])
    np.testing.assert_array_equal(distance, [900, 0, 0, 50, 300, 100])
    none = event_timing(*ioh_events(np.full(600, 80.0)), np.array([10.0]))
    assert np.isnan(none[0][0]) and np.isnan(none[1][0])


def test_describe_rule_names_the_configured_rule():
    forward = describe_rule(65, [5, 10], 60, 0.8, "within", 10)
    assert "begins within (t, t + h min]" in forward and "within 10 min after one ends" in forward
    assert "throughout the minute starting at t + 5 min" in describe_rule(65, [5], 60, 0.8, "at")
    assert describe_rule(65, [5]) == describe_rule(65, [5], 60, 0.8, "at")   # old callers: the 'at' rule
