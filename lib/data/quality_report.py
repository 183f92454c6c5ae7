"""The windows stage's data-quality report: what a person looks at before training.

Writes into one directory:
* `cases.csv`: one row per case (split, usable fraction, rejects by reason, labels and
  prevalence per horizon); `dvc plots show` draws the usable fraction per case from it;
* `usable_fraction.png`: usable fraction per case, coloured by split;
* `examples.png`: one example window per channel for a kept window and for each reject reason;
* `index.html`: the per-split table and both figures.
"""
import html

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.core.atomic import atomic_dir
from lib.core.schema import CHANNELS
from lib.signal.labels import describe_rule
from lib.signal.quality import GATE_ORDER

LABEL_REASONS = ["label_past_end", "label_artefact", "already_hypotensive", "map_now_invalid"]
UNITS = {"abp": "mmHg", "ppg": "a.u.", "ecg": "mV"}


class QualityReport:
    def __init__(self, spec):
        self.spec = spec
        self.rows = []
        self.examples = {}   # reason -> (caseid, window), the first met in processing order

    def add_case(self, split, caseid, subjectid, skip_reason, result=None, label_counts=None) -> None:
        """One case: skipped (`skip_reason`), or processed (`result`, lib.data.windowing.CaseWindows and
        `label_counts` {horizon: (labelled, positives)})."""
        row = {"split": split, "caseid": int(caseid), "subjectid": int(subjectid), "skipped": skip_reason or ""}
        if result is None:
            self.rows.append(row)
            return
        row.update(windows_total=result.n_windows, windows_kept=result.kept,
                   usable_fraction=round(result.kept / max(result.n_windows, 1), 4))
        # ABP gates and label reasons drop windows; PPG/ECG gates mask that channel in a kept window
        masked = {reason: n for counts in result.masked.values() for reason, n in counts.items()}
        row.update({reason: result.reasons.get(reason, masked.get(reason, 0))
                    for reason in GATE_ORDER + LABEL_REASONS})
        for h, (labelled, positives) in label_counts.items():
            row[f"labelled_{h}min"] = labelled
            row[f"positives_{h}min"] = positives
            row[f"prevalence_{h}min"] = round(positives / labelled, 4) if labelled else float("nan")
        self.rows.append(row)
        for reason, window in result.examples.items():
            self.examples.setdefault(reason, (int(caseid), window))

    def write(self, out_dir) -> None:
        table = pd.DataFrame(self.rows)
        with atomic_dir(out_dir) as tmp:
            table.to_csv(tmp / "cases.csv", index=False)
            self._usable_fraction_png(table, tmp / "usable_fraction.png")
            self._examples_png(tmp / "examples.png")
            (tmp / "index.html").write_text(self._html(table))

    def _usable_fraction_png(self, table, path) -> None:
        used = table[table["skipped"] == ""].reset_index(drop=True)
        fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(used)), 3.2))
        colours = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
        ax.bar(np.arange(len(used)), used["usable_fraction"], color=[colours.get(s, "grey") for s in used["split"]])
        ax.set_xticks(np.arange(len(used)), used["caseid"], rotation=90, fontsize=6)
        ax.set_ylim(0, 1)
        ax.set_ylabel("usable fraction of windows")
        ax.set_xlabel("case (blue train, orange val, green test)")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def _examples_png(self, path) -> None:
        order = [r for r in ["kept", *GATE_ORDER, *LABEL_REASONS] if r in self.examples]
        fig, axes = plt.subplots(max(len(order), 1), len(CHANNELS), figsize=(11, 1.4 * max(len(order), 1)),
                                 squeeze=False)
        t = np.arange(self.spec.length) / self.spec.fs
        for row, reason in enumerate(order):
            caseid, window = self.examples[reason]
            for col, channel in enumerate(CHANNELS):
                ax = axes[row, col]
                ax.plot(t, window[col], lw=0.7, color="tab:green" if reason == "kept" else "tab:red")
                ax.tick_params(labelsize=6)
                if row == 0:
                    ax.set_title(f"{channel} ({UNITS[channel]})", fontsize=8)
                if col == 0:
                    ax.set_ylabel(f"{reason}\ncase {caseid}", fontsize=7)
        axes[-1, 0].set_xlabel("s", fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)

    def _html(self, table) -> str:
        numeric = [c for c in table.columns if c not in ("split", "caseid", "subjectid", "skipped")]
        per_split = table.groupby("split", sort=False)[numeric].sum(min_count=1)
        per_split["usable_fraction"] = (per_split["windows_kept"] / per_split["windows_total"]).round(4)
        for h in self.spec.horizons_min:
            per_split[f"prevalence_{h:g}min"] = (per_split[f"positives_{h:g}min"]
                                                 / per_split[f"labelled_{h:g}min"]).round(4)
        return (f"<!doctype html><meta charset='utf-8'><title>Windows: data quality</title>"
                f"<h1>Windows: data quality</h1><p>{html.escape(self._rule())}</p>"
                f"<h2>Per split</h2><p>ABP gate and label reasons count dropped windows; PPG and ECG gate "
                f"reasons count kept windows where that channel is masked (stored NaN, flagged to the models).</p>"
                f"{per_split.T.to_html(na_rep='')}"
                f"<h2>Usable fraction per case</h2><img src='usable_fraction.png'>"
                f"<h2>Example windows: kept, and the first rejected or masked by each reason</h2>"
                f"<img src='examples.png'>"
                f"<h2>Per case</h2>{table.to_html(index=False, na_rep='')}")

    def _rule(self) -> str:
        s = self.spec
        return (f"{s.length}-sample windows at {s.fs} Hz, stride {s.stride}. "
                + describe_rule(s.map_threshold, s.horizons_min, s.LABEL_DURATION_S, s.label_min_valid,
                                s.label_rule, s.post_event_gap_min)
                + f" Gates: ECG bSQI >= {s.ecg_sqi_min:g}, PPG sSQI >= "
                f"{s.ppg_ssqi_min:g}, >= {s.min_beats} beats, MAP {s.map_range}, "
                f"pulse pressure {s.pulse_pressure_range} mmHg.")
