"""Stage cv_fold@k: one fold of cross-validation over train+val, grouped by subject.

StratifiedGroupKFold (scikit-learn) assigns every subject of train+val to one of `cv.n_folds`
folds, stratified by label. Fold k is held out and scored; fold k+1 (mod n) is the inner
validation split for early stopping, calibration and the threshold; the model trains on the rest
exactly as the train stage would (same params, modes, loop). The test split is never read.
With `cv.enabled: false` the stage only records that it is off.

usage: python stages/cv_fold.py <fold> <windows_dir> <embeddings_dir> <metrics_json>
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold

from lib.model import ttm
from lib.core import config as params
from lib.data import windows_h5
from lib.core.atomic import write_json
from lib.eval.calibration import fit_on_val
from lib.core.errors import PipelineError, run_stage
from lib.eval.metrics import classification_metrics, regression_metrics
from lib.model.training import fit, load_split, pick_device, predict, resolve_monitor, subset

KEYS = ["enabled", "n_folds", "folds", "seed"]


def fold_of_each_window(y, subjects, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per window; all windows of a subject share one fold."""
    if len(np.unique(subjects)) < n_folds:
        raise PipelineError(f"params.yaml: cv.n_folds={n_folds} but train+val has only "
                            f"{len(np.unique(subjects))} subjects")
    folds = np.empty(len(y), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(y)), y, subjects)):
        folds[held_out] = k
    return folds


def main(argv):
    fold, windows_dir, embeddings_dir, metrics_path = int(argv[0]), Path(argv[1]), Path(argv[2]), argv[3]
    p = params.load("cv", "model", "finetune", "lora", "head", "train", "calibrate")
    cv, t = p["cv"], p["train"]
    params.require(cv, "cv", KEYS)
    n_folds = int(cv["n_folds"])
    if n_folds < 3 or list(cv["folds"]) != list(range(n_folds)):
        raise PipelineError(f"params.yaml: cv.folds={cv['folds']} must be [0, ..., n_folds-1] with cv.n_folds="
                            f"{n_folds} >= 3 (one DVC stage per fold)")
    if not cv["enabled"]:
        write_json(metrics_path, {"enabled": False, "fold": fold})
        return
    torch.manual_seed(t["seed"])
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = pick_device(t["device"])
    model = ttm.build_model(**ttm.model_config(p))
    model.set_input_stats(windows_h5.attrs(windows_dir / "train.h5")["normalisation"])
    with tempfile.TemporaryDirectory() as tmp:
        # train+val as one file (virtual: nothing copied), windows and cached embeddings alike.
        pooled, pooled_embeddings = Path(tmp) / "trainval.h5", Path(tmp) / "trainval_embeddings.h5"
        sources = [windows_dir / "train.h5", windows_dir / "val.h5"]
        windows_h5.concat_virtual(sources, pooled, extra_attrs={"split": "train+val"})
        windows_h5.concat_virtual([embeddings_dir / "train.h5", embeddings_dir / "val.h5"], pooled_embeddings,
                                  extra_attrs={"windows_count": sum(windows_h5.count(s) for s in sources)})
        data = load_split(pooled, t["task"], float(t["horizon_min"]), model.channels, model.context,
                          pooled_embeddings, ttm.embedding_settings(p["model"]))
        subjects = windows_h5.read_columns(pooled, ["subjectid"])["subjectid"][data.indices]
        strata = data.targets if t["task"] == "clf" else np.zeros(len(data))
        folds = fold_of_each_window(strata, subjects, n_folds, int(cv["seed"]))
        inner = (fold + 1) % n_folds
        held_out, val = subset(data, np.flatnonzero(folds == fold)), subset(data, np.flatnonzero(folds == inner))
        train = subset(data, np.flatnonzero((folds != fold) & (folds != inner)))
        summary = fit(model, train, val, p, resolve_monitor(t["task"], t["monitor"]), device)
        outputs = predict(model, held_out, device)
        result = {"enabled": True, "fold": fold, "inner_val_fold": inner,
                  "train_subjects": int(len(np.unique(subjects[np.isin(folds, [fold, inner], invert=True)]))),
                  "held_out_subjects": int(len(np.unique(subjects[folds == fold]))),
                  "held_out_windows": int(len(held_out)), "best_epoch": summary["best_epoch"]}
        if t["task"] == "clf":
            calibration, _ = fit_on_val(predict(model, val, device), val.targets, p["calibrate"],
                                        {"split": f"cv fold {inner}", "windows": int(len(val))})
            probabilities = calibration.predict_proba(outputs)
            result.update(positives=int(held_out.targets.sum()),
                          **classification_metrics(held_out.targets, probabilities, calibration.threshold,
                                                   int(p["calibrate"]["ece_bins"])))
        else:
            pressures = model.to_mmhg(torch.from_numpy(outputs)).numpy()
            result.update(regression_metrics(held_out.targets, pressures, ttm.REG_TARGETS))
    write_json(metrics_path, result)


if __name__ == "__main__":
    run_stage(main)
