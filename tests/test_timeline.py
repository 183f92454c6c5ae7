"""`timeline_figure`: one scored recording's MAP, IOH events, risks, thresholds and alarms."""
import struct

import matplotlib.pyplot as plt
import numpy as np
import pytest

from lib.eval.report import save_png
from lib.eval.timeline import timeline_figure

T_S = np.arange(60.0, 1860.0, 30.0)                      # 30 min of windows, one every 30 s
MAP_NOW = 80 - 20 * np.exp(-((T_S - 900) / 120) ** 2)     # a dip below 65 mmHg around minute 15
EVENTS = [(840.0, 960.0), (1500.0, 1580.0)]
MODEL_ALARMS = np.array([780.0, 1440.0])
LR_ALARMS = np.array([850.0])


def risks(lr_risk=None):
    model = np.clip((80 - MAP_NOW) / 20, 0, 1)
    model[:3] = np.nan   # the first windows lack history
    lr = np.clip((75 - MAP_NOW) / 15, 0, 1) if lr_risk is None else lr_risk
    return {"TTM (this model)": (model, 0.4, MODEL_ALARMS), "LR on current MAP": (lr, 0.6, LR_ALARMS)}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def dashed_levels(ax) -> dict:
    """{y: colour} of the horizontal dashed lines on a panel."""
    return {line.get_ydata()[0]: line.get_color() for line in ax.lines
            if line.get_linestyle() == "--" and len(set(line.get_ydata())) == 1}


def scorer_colours(ax) -> dict:
    """{scorer: colour} of the scored risk lines, in drawing order (their labels are 'name: threshold ...')."""
    return {line.get_label().split(":")[0]: line.get_color() for line in ax.lines if ":" in line.get_label()}


def legend_texts(ax) -> list:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def test_panels_show_map_threshold_events_risks_and_alarms():
    fig = timeline_figure(T_S, MAP_NOW, risks(), EVENTS, "case 7", map_1hz=np.full(1860, 80.0), horizon_min=5)
    assert len(fig.axes) == 2
    map_ax, risk_ax = fig.axes
    assert fig.get_suptitle() == "case 7"
    assert risk_ax.get_ylabel() == "P(IOH within 5 min)"
    assert 65.0 in dashed_levels(map_ax) and "65 mmHg" in legend_texts(map_ax)
    # each scorer's threshold, dashed in its line's colour
    colours = scorer_colours(risk_ax)
    assert dashed_levels(risk_ax) == {0.4: colours["TTM (this model)"], 0.6: colours["LR on current MAP"]}
    # every event shaded in both panels, named once per legend
    assert len(map_ax.patches) == len(risk_ax.patches) == len(EVENTS)
    assert "IOH event" in legend_texts(map_ax) and "IOH event" in legend_texts(risk_ax)
    assert sorted(patch.get_x() for patch in map_ax.patches) == [onset / 60 for onset, _ in EVENTS]


def test_alarm_starts_are_markers_on_the_risk_panel_and_lines_on_the_map_panel():
    map_ax, risk_ax = timeline_figure(T_S, MAP_NOW, risks(), EVENTS, "case 7").axes
    markers = [line for line in risk_ax.lines if line.get_marker() == "v"]
    assert [list(line.get_xdata()) for line in markers] == [list(MODEL_ALARMS / 60), list(LR_ALARMS / 60)]
    assert all(min(line.get_ydata()) > 1 for line in markers)   # above the risk curves
    assert [line.get_color() for line in markers] == list(scorer_colours(risk_ax).values())
    starts = sorted(segment[0, 0] for lines in map_ax.collections for segment in lines.get_segments())
    assert starts == sorted([*MODEL_ALARMS / 60, *LR_ALARMS / 60])


def test_unscored_scorer_zero_alarms_and_no_labels_are_said():
    scored = risks(lr_risk=np.full(len(T_S), np.nan))
    scored["LR on current MAP"] = (*scored["LR on current MAP"][:2], [])
    map_ax, risk_ax = timeline_figure(T_S, MAP_NOW, scored, None, "case 8").axes
    assert "LR on current MAP (not scored)" in legend_texts(risk_ax)
    assert "TTM (this model): threshold 0.40, 2 alarms" in legend_texts(risk_ax)
    assert 0.6 not in dashed_levels(risk_ax)   # no threshold for a scorer without scores
    assert [len(line.get_xdata()) for line in risk_ax.lines if line.get_marker() == "v"] == [2, 0]
    assert "no ABP-derived labels" in [text.get_text() for text in map_ax.texts]
    assert not map_ax.patches and not risk_ax.patches


def test_no_window_gives_a_figure_that_says_so():
    fig = timeline_figure([], [], {"TTM (this model)": ([], 0.4, [])}, [], "case 9")
    map_ax, risk_ax = fig.axes
    assert "no usable window" in [text.get_text() for text in risk_ax.texts]
    assert "TTM (this model) (not scored)" in legend_texts(risk_ax)
    assert "IOH event (none)" in legend_texts(map_ax)


def test_saved_png_is_1400_by_700_and_reproducible(tmp_path):
    for name in ("a.png", "b.png"):
        save_png(timeline_figure(T_S, MAP_NOW, risks(), EVENTS, "case 7", map_1hz=np.full(1860, 80.0)),
                 tmp_path / name)
    data = (tmp_path / "a.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1400, 700)   # IHDR width, height
    assert data == (tmp_path / "b.png").read_bytes()
