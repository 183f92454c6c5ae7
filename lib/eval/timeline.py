"""One scored recording as a timeline a clinician reads at a glance (`ttm-ioh score`'s figure).

Top panel: MAP with the hypotension threshold and alarm starts; bottom panel: each scorer's risk, its alarm
threshold and alarm starts. IOH events are shaded in both. Time runs in minutes from the recording's start.
The caller saves the figure (`lib.eval.report.save_png`, 100 dpi: FIGSIZE is 1400x700 px).
"""
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

matplotlib.use("Agg")

FIGSIZE = (14, 7)
# Fixed, distinguishable colours in the order scorers are given (the model first): the same scorer keeps
# its colour from one recording's figure to the next. Red is kept for hypotension.
SCORER_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan")
EVENT_COLOR = "tab:red"
EVENT_ALPHA = 0.15
MARKER_STEP = 0.05   # alarm-marker rows above risk 1, one per scorer, so coinciding alarms stay visible
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.005, 1.0), "fontsize": "small", "frameon": False}


def timeline_figure(t_s, map_now, risks: dict, events, title: str, map_1hz=None, map_threshold: float = 65.0,
                    horizon_min: float | None = None):
    """One recording's scored timeline, what a clinician reads at a glance (a matplotlib Figure).

    `t_s` (n,) window end times in seconds from the recording's start; `map_now` (n,) each window's current
    MAP (mmHg, NaN allowed); `map_1hz` (m,) an optional 1-Hz MAP trace (second k: MAP over second k);
    `risks` {display name: (risk (n,) probabilities with NaN, alarm threshold, alarm start times (k,) s)},
    drawn in order; `events` (onset_s, end_s) pairs of IOH events, or None when no labels could be derived.
    """
    t_min = np.asarray(t_s, dtype=np.float64) / 60
    fig, (map_ax, risk_ax) = plt.subplots(2, 1, figsize=FIGSIZE, sharex=True, layout="constrained")
    fig.suptitle(title)
    _draw_map(map_ax, t_min, map_now, map_1hz, map_threshold)
    _draw_risks(risk_ax, map_ax, t_min, risks)
    event_handle = _shade_events((map_ax, risk_ax), events)
    if t_min.size == 0:
        _note(risk_ax, "no usable window", center=True)
    risk_ax.set_ylabel(f"P(IOH within {horizon_min:g} min)" if horizon_min is not None else "P(IOH)")
    risk_ax.set_xlabel("minutes from start")
    risk_ax.set_xlim(0, max(risk_ax.get_xlim()[1], 1.0))   # at least a minute when there is nothing to show
    _legends(map_ax, risk_ax, event_handle)
    return fig


def _draw_map(ax, t_min, map_now, map_1hz, map_threshold: float) -> None:
    """MAP per window over the thin 1-Hz trace, and the dashed hypotension threshold."""
    shown = [np.asarray(map_now, dtype=np.float64)]
    if map_1hz is not None:
        map_1hz = np.asarray(map_1hz, dtype=np.float64)
        ax.plot((np.arange(map_1hz.size) + 0.5) / 60, map_1hz, color="0.65", linewidth=0.6, label="MAP (1 s)")
        shown.append(map_1hz)
    ax.plot(t_min, shown[0], color="black", linewidth=1.2, label="MAP (window)")
    ax.axhline(map_threshold, color=EVENT_COLOR, linestyle="--", linewidth=1.0, label=f"{map_threshold:g} mmHg")
    ax.set_ylim(*_map_limits(np.concatenate(shown), map_threshold))
    ax.set_ylabel("MAP (mmHg)")


def _map_limits(values, map_threshold: float) -> tuple:
    """MAP axis limits that keep the clinical range in view and artefact spikes from squashing it."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 2 * map_threshold
    low, high = np.percentile(values, [0.5, 99.5])
    return max(0.0, min(low, map_threshold) - 10), max(high, 2 * map_threshold) + 10


def _draw_risks(ax, map_ax, t_min, risks: dict) -> None:
    """Each scorer's risk line, its dashed threshold and its alarm starts (markers; lines on the MAP panel)."""
    for i, (name, (risk, threshold, alarm_times)) in enumerate(risks.items()):
        color = SCORER_COLORS[i % len(SCORER_COLORS)]
        risk = np.asarray(risk, dtype=np.float64)
        alarm_min = np.asarray([] if alarm_times is None else alarm_times, dtype=np.float64) / 60
        ax.plot(t_min, risk, color=color, linewidth=1.2, label=_risk_label(name, risk, threshold, alarm_min.size))
        if np.isfinite(risk).any() and _has_threshold(threshold):   # an unscored scorer's threshold means nothing
            ax.axhline(threshold, color=color, linestyle="--", linewidth=1.0)
        ax.plot(alarm_min, np.full(alarm_min.size, 1 + MARKER_STEP * (i + 1)), linestyle="none", marker="v",
                markersize=7, color=color)
        map_ax.vlines(alarm_min, 0, 1, transform=map_ax.get_xaxis_transform(), colors=color, linewidth=0.8)
    ax.set_ylim(-0.02, 1 + MARKER_STEP * (len(risks) + 1))
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1])


def _risk_label(name: str, risk, threshold, n_alarms: int) -> str:
    if not np.isfinite(risk).any():
        return f"{name} (not scored)"
    shown = f"threshold {threshold:.2f}, " if _has_threshold(threshold) else ""
    return f"{name}: {shown}{n_alarms} alarm{'' if n_alarms == 1 else 's'}"


def _has_threshold(threshold) -> bool:
    return threshold is not None and bool(np.isfinite(threshold))


def _shade_events(axes, events):
    """Shade each IOH event in every panel; the legend handle, or None after noting there are no labels."""
    if events is None:
        _note(axes[0], "no ABP-derived labels")
        return None
    spans = np.asarray(events, dtype=np.float64).reshape(-1, 2) / 60
    for ax in axes:
        for onset, end in spans:
            ax.axvspan(onset, end, color=EVENT_COLOR, alpha=EVENT_ALPHA, linewidth=0)
    label = "IOH event" if len(spans) else "IOH event (none)"
    return Patch(color=EVENT_COLOR, alpha=EVENT_ALPHA, label=label)


def _note(ax, text: str, center: bool = False) -> None:
    """A grey note on a panel: in its centre, or in its top-left corner, clear of most data."""
    where = {"x": 0.5, "y": 0.5, "ha": "center", "va": "center"} if center else \
        {"x": 0.01, "y": 0.96, "ha": "left", "va": "top"}
    ax.text(s=text, transform=ax.transAxes, color="0.3", fontsize="medium", **where)


def _legends(map_ax, risk_ax, event_handle) -> None:
    """Legends right of the panels, with proxies for what every scorer draws alike (threshold, alarm)."""
    extra = [] if event_handle is None else [event_handle]
    alarm_line = Line2D([], [], color="0.4", linewidth=0.8, label="alarm start")
    map_handles, _ = map_ax.get_legend_handles_labels()
    map_ax.legend(handles=[*map_handles, alarm_line, *extra], **LEGEND)
    threshold = Line2D([], [], color="0.4", linestyle="--", label="alarm threshold")
    alarm_marker = Line2D([], [], color="0.4", linestyle="none", marker="v", label="alarm start")
    risk_handles, _ = risk_ax.get_legend_handles_labels()
    risk_ax.legend(handles=[*risk_handles, threshold, alarm_marker, *extra], **LEGEND)
