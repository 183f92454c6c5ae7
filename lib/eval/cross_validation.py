"""One fold of cross-validation over train+val, grouped by subject (the cv_fold@k stages).

StratifiedGroupKFold (scikit-learn) assigns every subject of train+val to one of `cv.n_folds`
folds, stratified by label. Fold k is held out and scored; fold k+1 (mod n) is the inner
validation split for early stopping, calibration and the threshold; the model trains on the rest
exactly as the train stage would (same params, modes, loop). The test split is never read.
"""
import tempfile
from pathlib import Path

import numpy as np
import torch

from lib.core.config import ModelConfig, TrainConfig
from lib.core.params import CV, Calibrate
from lib.core.schema import REG_TARGETS
from lib.data import windows_h5
from lib.data.dataset import Split, load_split, subset
from lib.data.splits import fold_of_each_window
from lib.eval.calibration import fit_on_val
from lib.eval.metrics import classification_metrics, regression_metrics
from lib.model import ttm
from lib.model.inference import pick_device, predict
from lib.model.training import fit


def run(fold: int, windows_dir: Path, embeddings_dir: Path, cv: CV, model_cfg: ModelConfig, train: TrainConfig,
        calibrate: Calibrate, cache_key: dict) -> dict:
    """Fold `fold`'s metrics: the model built from `model_cfg`, trained as `train` says on the other folds
    (but the inner one), calibrated as `calibrate` says on the inner fold, scored on the held-out fold."""
    torch.manual_seed(train.train.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = pick_device(train.train.device)
    model = ttm.build_model(model_cfg)
    model.set_input_stats(windows_h5.attrs(windows_dir / "train.h5")["normalisation"])
    with tempfile.TemporaryDirectory() as tmp:
        data, subjects = pooled_split(windows_dir, embeddings_dir, Path(tmp), train.train.task,
                                      train.train.horizon_min, model, cache_key)
        return run_fold(model, data, subjects, fold, cv, train, calibrate, device)


def pooled_split(windows_dir: Path, embeddings_dir: Path, tmp: Path, task: str, horizon_min: float, model,
                 cache_key: dict) -> tuple:
    """train+val as one split (HDF5 virtual datasets: nothing is copied), with its cached
    embeddings, and the subject of each of its windows."""
    pooled, pooled_embeddings = tmp / "trainval.h5", tmp / "trainval_embeddings.h5"
    sources = [windows_dir / "train.h5", windows_dir / "val.h5"]
    windows_h5.concat_virtual(sources, pooled, extra_attrs={"split": "train+val"})
    windows_h5.concat_virtual([embeddings_dir / "train.h5", embeddings_dir / "val.h5"], pooled_embeddings,
                              extra_attrs={"windows_count": sum(windows_h5.count(s) for s in sources)})
    data = load_split(pooled, task, horizon_min, model.channels, model.context, pooled_embeddings, cache_key)
    subjects = windows_h5.read_columns(pooled, ["subjectid"])["subjectid"][data.indices]
    return data, subjects


def run_fold(model, data: Split, subjects, fold: int, cv: CV, t: TrainConfig, calibrate: Calibrate,
             device) -> dict:
    """Train on the folds other than `fold` and `fold + 1`, early-stop and calibrate on `fold + 1`,
    score `fold`. Returns the fold's metrics."""
    n_folds = cv.n_folds
    strata = data.targets if t.train.task == "clf" else np.zeros(len(data))
    folds = fold_of_each_window(strata, subjects, n_folds, cv.seed)
    inner = (fold + 1) % n_folds
    held_out, val = subset(data, np.flatnonzero(folds == fold)), subset(data, np.flatnonzero(folds == inner))
    train = subset(data, np.flatnonzero((folds != fold) & (folds != inner)))
    summary = fit(model, train, val, t, device)
    outputs = predict(model, held_out, device)
    result = {"enabled": True, "fold": fold, "inner_val_fold": inner,
              "train_subjects": int(len(np.unique(subjects[np.isin(folds, [fold, inner], invert=True)]))),
              "held_out_subjects": int(len(np.unique(subjects[folds == fold]))),
              "held_out_windows": int(len(held_out)), "best_epoch": summary["best_epoch"]}
    if t.train.task == "clf":
        calibration, _ = fit_on_val(predict(model, val, device), val.targets, calibrate,
                                    {"split": f"cv fold {inner}", "windows": int(len(val))})
        probabilities = calibration.predict_proba(outputs)
        result.update(positives=int(held_out.targets.sum()),
                      **classification_metrics(held_out.targets, probabilities, calibration.threshold,
                                               calibrate.ece_bins))
    else:
        pressures = model.to_mmhg(torch.from_numpy(outputs)).numpy()
        result.update(regression_metrics(held_out.targets, pressures, REG_TARGETS))
    return result
