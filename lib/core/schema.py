"""What a window holds: the names every package shares, defined once.

The windows stage writes these columns, the model and the baselines read them, evaluate reports them.
"""
CHANNELS = ("abp", "ppg", "ecg")   # order of the windows files' `signals` (n, channel, sample)
# Past-only context features of a window (lib.data.windowing) and the channel each is measured on:
# the level-aware head uses those whose channel is an input, the logistic baselines all of them.
# A PPG or ECG that failed its quality gates in a window is masked there (stored as NaN); its OBSERVED flag
# (1.0 observed, 0.0 masked) is a context feature, so the head and the baselines know it is missing.
OBSERVED = {"ppg": "ppg_observed", "ecg": "ecg_observed"}
CONTEXT_SOURCES = {"map": "abp", "map_slope": "abp", "hr": "ecg", "pp": "abp",
                   **{flag: channel for channel, flag in OBSERVED.items()}}
CONTEXT = tuple(CONTEXT_SOURCES)
MODEL = "ttm"   # the trained model's name among the scorers (its scores' column, its results' key)
BEAT_PRESSURES = ("sbp", "dbp", "map", "pp")   # the window's own beat-derived pressures (mmHg)
REG_TARGETS = ("sbp", "dbp", "map")            # task reg: what the cuffless model estimates
# Per-window IOH event timing (float32 s, lib.signal.labels.event_timing), for backward (case-control) analyses:
# to the next event onset after the window end (NaN: none follows), and to the nearest event (0 inside one,
# NaN: the recording has no event).
NEXT_ONSET, EVENT_DISTANCE = "next_onset_s", "event_distance_s"
EVENT_TIMING = (NEXT_ONSET, EVENT_DISTANCE)
MAP_NOW = "map_now"   # the window's current MAP (mmHg; the backward analysis's negatives need it reassuring)
# The trend view (lib.signal.trend, trend.* in params.yaml): per window a block `trend` (n, len(TREND), context)
# of past-only step_s-second bin means ending at the window end, NaN where a bin is unobserved.
TREND = ("map", "hr", "pp")
TREND_BLOCK = "trend"
# Trend rows a recording's own monitor numerics may supply (lib.data.windowing.trend_view): trend row -> the
# data.tracks key of its optional numeric track (e.g. Solar8000/ART_MBP, Solar8000/HR; never required).
NUMERIC_TRENDS = {"map": "map_numeric", "hr": "hr_numeric"}
# Model inputs by view (model.views): the waveform view's channels, the trend view's series. The embed stage's
# cache holds every input in this order (the trend ones only with RevIN scaling).
TREND_INPUTS = tuple(f"{name}_trend" for name in TREND)
INPUTS = (*CHANNELS, *TREND_INPUTS)


def label_column(horizon_min) -> str:
    """Name of the label column for a horizon in minutes (int8: 1 hypotension, 0 none, -1 unknown)."""
    return f"label_{float(horizon_min):g}min"


def map_ahead_column(horizon_min) -> str:
    """Name of the regression target: mean MAP over the label minute at that horizon."""
    return f"map_{float(horizon_min):g}min"
