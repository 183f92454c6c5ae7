"""Stage cv_fold@k: one fold of cross-validation over train+val, grouped by subject.

Fold k is held out and scored; fold k+1 (mod n) is the inner validation split for early stopping,
calibration and the threshold; the model trains on the rest exactly as the train stage would
(lib.eval.cross_validation). The test split is never read. With `cv.enabled: false` the stage only
records that it is off, without loading torch or the model.

usage: python stages/cv_fold.py <fold> <windows_dir> <embeddings_dir> <metrics_json>
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
from pathlib import Path
from typing import NamedTuple

from lib.core.atomic import write_json
from lib.core.config import EmbeddingConfig, ModelConfig, TrainConfig
from lib.core.errors import run_stage
from lib.core.memory import keep_heap_bounded
from lib.core.params import CV, Calibrate, read_params


class Config(NamedTuple):
    cv: CV
    model: ModelConfig
    embedding: EmbeddingConfig
    train: TrainConfig
    calibrate: Calibrate


def config(params) -> Config:
    return Config(CV.from_params(params), ModelConfig.from_params(params), EmbeddingConfig.from_params(params),
                  TrainConfig.from_params(params), Calibrate.from_params(params))


def main(argv):
    keep_heap_bounded()   # freed memory goes back to the OS while the stage streams (lib/core/memory.py)
    fold, windows_dir, embeddings_dir, metrics_path = int(argv[0]), Path(argv[1]), Path(argv[2]), argv[3]
    cfg = config(read_params())
    if not cfg.cv.enabled:
        write_json(metrics_path, {"enabled": False, "fold": fold})
        return
    # Imported here: a disabled fold (the default) never loads torch or the model.
    from lib.eval import cross_validation
    write_json(metrics_path, cross_validation.run(fold, windows_dir, embeddings_dir, cfg.cv, cfg.model, cfg.train,
                                                  cfg.calibrate, cfg.embedding.cache_key()))


if __name__ == "__main__":
    run_stage(main)
