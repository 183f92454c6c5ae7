"""The scorer registry (lib.model.scorers): one class and one registration make a scorer that the
baselines stage fits and calibrates, evaluate scores, the report names and dvc.yaml's ROC overlay shows."""
import dataclasses
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml
from test_baselines import write_calibrations, write_windows

from lib.core.atomic import write_json
from lib.core.config import BaselinesConfig, LoopConfig
from lib.core.errors import PipelineError
from lib.core.params import Evaluate
from lib.core.schema import CONTEXT
from lib.data.dataset import load_split
from lib.eval import evaluation, report
from lib.eval.calibration import read_calibrations
from lib.model import baselines, scorers

ROOT = Path(__file__).resolve().parents[1]
ROC_OVERLAY = "ROC, TTM vs baselines (test windows)"   # dvc.yaml's plot of every scorer's ROC
ROC_FILE = "metrics/evaluate/plots/custom/roc_{}.json"  # evaluate writes one per scorer (classifier_plots)


def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def config(horizon_min: float = 5.0) -> BaselinesConfig:
    loop = LoopConfig(epochs=1, batch_size=64, lr=1e-3, windows_per_epoch=128, seed=0)
    return BaselinesConfig(task="clf", horizon_min=horizon_min, channels=("abp", "ppg"), cnn_loop=loop, device="cpu")


def roc_overlay_problems(dvc: dict, cfg: BaselinesConfig) -> list:
    """What dvc.yaml's ROC overlay lacks or holds too many of: it lists the ROC file of the model and of
    every registered scorer the baselines stage fits at `cfg` (and no file evaluate does not write, or
    `dvc plots show` fails on it), with the line to paste."""
    entry = next(e[ROC_OVERLAY] for e in dvc["plots"] if isinstance(e, dict) and ROC_OVERLAY in e)
    listed = list(entry["y"])
    wanted = [ROC_FILE.format(name) for name in (scorers.MODEL, *(n for n, c in scorers.REGISTRY.items()
                                                                  if c.enabled(cfg)))]
    return ([f"dvc.yaml, plots, {ROC_OVERLAY!r} lacks a scorer; add under its y:\n        {path}: tpr"
             for path in wanted if path not in listed]
            + [f"dvc.yaml, plots, {ROC_OVERLAY!r}: {path} is not written by evaluate at params.yaml's values; remove it"
               for path in listed if path not in wanted])


DECISION_CURVE = "Decision curve (net benefit by threshold probability, test windows)"


def test_the_decision_curve_plot_lists_every_registered_scorer():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    entry = next(e[DECISION_CURVE] for e in dvc["plots"] if isinstance(e, dict) and DECISION_CURVE in e)
    cfg = BaselinesConfig.from_params(params())
    wanted = [scorers.MODEL, *(n for n, c in scorers.REGISTRY.items() if c.enabled(cfg)), "treat_all", "treat_none"]
    assert entry["y"] == {"metrics/evaluate/plots/custom/decision_curve.json": wanted}, \
        f"dvc.yaml, plots, {DECISION_CURVE!r}: its y should be {wanted}"


def test_the_roc_overlay_lists_every_registered_scorer():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    problems = roc_overlay_problems(dvc, BaselinesConfig.from_params(params()))
    assert not problems, "\n".join(problems)


def test_display_names_and_rows_come_from_the_registry():
    assert list(report.SCORER_NAMES) == [scorers.MODEL, *scorers.REGISTRY] == list(scorers.display_names())
    assert report.SCORER_NAMES["trend_lr"] == scorers.REGISTRY["trend_lr"].display_name
    assert report.scorer_name("not_registered") == "not_registered"
    with pytest.raises(ValueError, match="already registered"):
        scorers.register(scorers.REGISTRY["cnn"])
    with pytest.raises(ValueError, match="already registered"):
        scorers.register(type("Model", (scorers.Scorer,), {"name": scorers.MODEL, "display_name": "x"}))


class Toy(scorers.Scorer):
    """The smallest scorer: how far the current MAP lies below the train median, in train SDs."""

    name, display_name = "toy", "Toy: MAP below the train median"

    def __init__(self, centre: float | None = None, scale: float | None = None):
        self.centre, self.scale = centre, scale

    @staticmethod
    def current_map(split) -> np.ndarray:
        return split.context[:, list(CONTEXT).index("map")]

    def fit(self, train, val, cfg, input_stats, device) -> dict:
        current = self.current_map(train)
        self.centre, self.scale = float(np.nanmedian(current)), float(np.nanstd(current))
        return {"centre": self.centre, "scale": self.scale}

    def score(self, split, horizon_min, device) -> np.ndarray:
        return np.nan_to_num((self.centre - self.current_map(split)) / self.scale).astype(np.float32)

    def save(self, directory) -> None:
        (Path(directory) / "toy.json").write_text(json.dumps({"centre": self.centre, "scale": self.scale}))

    @classmethod
    def load(cls, directory) -> "Toy":
        return cls(**json.loads((Path(directory) / "toy.json").read_text()))


@pytest.fixture
def toy_registry(monkeypatch):
    """The registry with map_lr and, registered for this test only, the toy scorer."""
    monkeypatch.setattr(scorers, "REGISTRY", {"map_lr": scorers.REGISTRY["map_lr"]})
    scorers.register(Toy)
    return scorers.REGISTRY


def test_the_roc_overlay_test_catches_a_scorer_without_a_plot(monkeypatch):
    monkeypatch.setattr(scorers, "REGISTRY", dict(scorers.REGISTRY))
    scorers.register(Toy)
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    problems = roc_overlay_problems(dvc, BaselinesConfig.from_params(params()))
    assert problems == [f"dvc.yaml, plots, {ROC_OVERLAY!r} lacks a scorer; add under its y:\n"
                        f"        {ROC_FILE.format('toy')}: tpr"]


def fit_and_save(tmp_path, horizon_min: float = 5.0):
    """The baselines stage on synthetic train/val windows: (baselines folder, fit summaries)."""
    for split, n, seed in (("train", 300, 0), ("val", 100, 1), ("test", 400, 2)):
        write_windows(tmp_path / f"{split}.h5", n, seed)
    cfg = config(horizon_min)
    train, val = baselines.load_baseline_splits(tmp_path, cfg)
    fitted, val_logits, summaries = scorers.fit_scorers(train, val, cfg, {}, "cpu")
    out = tmp_path / "baselines"
    out.mkdir()
    scorers.save_scorers(out, fitted)
    write_calibrations(out, val_logits, val.targets, horizon_min)
    return out, summaries


def test_a_registered_scorer_is_fitted_calibrated_scored_evaluated_and_reported(toy_registry, tmp_path):
    directory, summaries = fit_and_save(tmp_path)
    assert list(summaries) == ["map_lr", "toy"] and summaries["toy"]["scale"] > 0
    calibrations = read_calibrations(directory / "calibration.json")   # calibrated on val like the model
    assert calibrations["toy"].fitted_on["split"] == "val"
    logits, forecasts = scorers.score_saved(directory, tmp_path / "test.h5", 5.0, "cpu")
    assert list(logits) == ["map_lr", "toy"] and forecasts == {}
    y = np.asarray(load_split(tmp_path / "test.h5", "clf", 5.0, [], CONTEXT).targets)
    assert len(logits["toy"]) == len(y)
    # evaluate: the model (here a stand-in scoring as map_lr) and every scorer, in registry order
    predictions = {scorers.MODEL: logits["map_lr"], **logits}
    calibrations[scorers.MODEL] = calibrations["map_lr"]
    subjects = np.arange(len(y)) // 20
    ids = evaluation.TestWindows(caseid=subjects, subjectid=subjects, t_end=np.tile(np.arange(20) * 2.048, 20),
                                 window_s=4.096)
    clinical = pd.DataFrame({"caseid": np.unique(subjects), "subjectid": np.unique(subjects)})
    details, figures = evaluation.evaluate_classifier(y, predictions, calibrations, ids, Evaluate(bootstrap=20),
                                                      clinical, horizon_min=5.0)
    for fig in figures.images.values():
        plt.close(fig)
    assert [n for n in details.window if not n.startswith("gain_")] == ["ttm", "map_lr", "toy"]
    assert details.window["toy"]["auroc"] > 0.9 and "gain_over_toy" in details.window
    assert set(details.val_ranking) == {"ttm", "map_lr", "toy"}
    assert "roc_toy" in {plot.name for plot in figures.plots}
    head = evaluation.headline(details)
    assert head["toy"]["auroc"] == details.window["toy"]["auroc"]
    write_json(tmp_path / "details.json", details.to_dict())
    assert json.loads((tmp_path / "details.json").read_text())["window"]["toy"]["auroc"] == head["toy"]["auroc"]
    provenance = report.Provenance(source="demo", window_s=4.096, model={"channels": ["abp"]}, training={},
                                   windows={})
    report.write_report(tmp_path / "report.md", dataclasses.replace(details, mode="fm"), provenance, {})
    text = (tmp_path / "report.md").read_text()
    assert f"| {Toy.display_name} | {report._fmt(details.window['toy'], 'auroc')} |" in text   # metrics table
    assert text.count(f"| {Toy.display_name} |") >= 4   # window, voted, gains, calibration, forward/backward


def test_baselines_refuse_a_horizon_they_were_not_trained_for(toy_registry, tmp_path):
    directory, _ = fit_and_save(tmp_path, horizon_min=5.0)
    assert scorers.trained_horizon(directory) == 5.0
    with pytest.raises(PipelineError, match="fitted at a 5-min horizon, the model predicts 10 min ahead") as err:
        scorers.score_saved(directory, tmp_path / "test.h5", 10.0, "cpu")
    assert "\n" not in str(err.value) and "train.horizon_min" in str(err.value)
    states = json.loads((directory / "calibration.json").read_text())
    for state in states.values():
        del state["fitted_on"]["horizon_min"]
    (directory / "calibration.json").write_text(json.dumps(states))
    with pytest.raises(PipelineError, match="record no horizon"):
        scorers.score_saved(directory, tmp_path / "test.h5", 5.0, "cpu")
    (directory / "calibration.json").write_text(json.dumps({"unknown": {}}))
    with pytest.raises(PipelineError, match="missing or corrupt"):
        scorers.score_saved(directory, tmp_path / "test.h5", 5.0, "cpu")
