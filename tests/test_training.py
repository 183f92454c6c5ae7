"""lib/model/loop.py and training.py on synthetic cached embeddings: the loop learns, accumulates,
stops early, schedules, resumes."""
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import model_config
from sklearn.metrics import roc_auc_score

from lib.core.config import LoopConfig
from lib.core.errors import PipelineError
from lib.data.dataset import Split
from lib.model.inference import predict
from lib.model.loop import EarlyStopping, make_schedule, train_model, val_sample
from lib.model.training import fit, fit_scalers
from lib.model.ttm import build_model

LOOP = LoopConfig(epochs=4, batch_size=64, grad_accum_steps=1, lr=1e-2, weight_decay=0.0, grad_clip=1.0,
                  schedule="cosine", warmup_frac=0.1, early_stopping_patience=0, monitor="val_auroc", amp="auto",
                  windows_per_epoch=0, seed=3)
CPU = torch.device("cpu")


def synthetic_split(n, seed, shift=0.0):
    """Embeddings whose ABP loc decides the label (low pressure → hypotension), 10 % positives."""
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n, 3, 194)).astype(np.float32)
    embeddings[:, 0, 192] = rng.normal(80 + shift, 12, size=n)
    targets = (embeddings[:, 0, 192] < np.quantile(embeddings[:, 0, 192], 0.1)).astype(np.float32)
    context = np.stack([embeddings[:, 0, 192], rng.normal(size=n), rng.normal(70, 10, size=n),
                        rng.normal(45, 8, size=n), rng.random(n) > 0.05, rng.random(n) > 0.05],   # + observed flags
                       axis=1).astype(np.float32)
    context[: n // 10, 1] = np.nan  # map_slope missing early in a case
    return Split(Path("synthetic.h5"), np.arange(n), targets, context, ["abp", "ppg", "ecg"], embeddings)


@pytest.fixture(scope="module")
def data():
    return synthetic_split(5000, 0), synthetic_split(1000, 1)


def fm_model(train, seed=0):
    torch.manual_seed(seed)
    model = build_model(model_config())
    fit_scalers(model, train)
    return model


def test_the_level_aware_head_learns_the_pressure_rule(data):
    train, val = data
    model = fm_model(train)
    summary = train_model(model, train, val, LOOP, CPU)
    assert summary["best_val_auroc"] > 0.95 and summary["epochs_run"] == 4


def test_feature_scaler_is_fitted_on_train_and_ignores_missing_values(data):
    train, _ = data
    model = fm_model(train)
    slope = train.context[:, 1]
    assert model.feature_mean[-5].item() == pytest.approx(np.nanmean(slope), abs=1e-5)
    assert model.feature_std[-5].item() == pytest.approx(np.nanstd(slope), rel=1e-4)


def test_gradient_accumulation_equals_the_larger_batch(data):
    train, val = data
    one, two = fm_model(train), fm_model(train)
    train_model(one, train, val, replace(LOOP, epochs=2, batch_size=64, grad_accum_steps=1), CPU)
    train_model(two, train, val, replace(LOOP, epochs=2, batch_size=32, grad_accum_steps=2), CPU)
    # Same windows per optimiser step in the same order: the same weights up to float rounding.
    for a, b in zip(one.head.parameters(), two.head.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_early_stopping_keeps_the_best_epoch(data):
    train, val = data
    # Shuffled train labels: the head memorises noise and the val loss soon only rises.
    noise = Split(train.path, train.indices, np.random.default_rng(0).permutation(train.targets), train.context,
                  train.channels, train.embeddings)
    model = fm_model(train)
    summary = train_model(model, noise, val, replace(LOOP, epochs=20, early_stopping_patience=2, monitor="val_loss"),
                          CPU)
    assert summary["early_stopped"] and summary["epochs_run"] < 20
    assert summary["epochs_run"] - summary["best_epoch"] == 2
    # the last epoch's val metrics beside the best's: the val loss rose after the best epoch
    assert summary["last_epoch"] == summary["epochs_run"] and summary["last_val_loss"] > summary["best_val_loss"]


def test_same_seed_same_weights_other_seed_other_weights(data):
    train, val = data
    runs = []
    for seed in [3, 3, 4]:
        model = fm_model(train)
        train_model(model, train, val, replace(LOOP, epochs=2, seed=seed), CPU)
        runs.append(torch.cat([p.detach().flatten() for p in model.head.parameters()]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_cosine_schedule_warms_up_then_decays_to_zero():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = make_schedule(optimizer, "cosine", 1.0, total_steps=100, warmup_frac=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.001


def test_a_single_class_split_cannot_train_a_classifier(data):
    train, val = data
    one_class = Split(train.path, train.indices, np.zeros_like(train.targets), train.context, train.channels,
                      train.embeddings)
    with pytest.raises(PipelineError, match="train split has only one class"):
        train_model(fm_model(train), one_class, val, LOOP, CPU)


@pytest.mark.parametrize("engine, bf16", [("torchscript", False), ("eager", True)])
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_training_refuses_a_model_run_by_an_inference_engine(data, engine, bf16):
    train, val = data
    model = fm_model(train).freeze_for_inference(engine, bf16)
    label = f"{engine}+bf16" if bf16 else engine
    scaler = model.feature_mean.clone()
    with pytest.raises(PipelineError, match=f"run by the inference engine {re.escape(label)} .*needs the eager model"):
        fit(model, train, val, None, CPU)   # refused before the scalers are refitted
    assert torch.equal(model.feature_mean, scaler)
    with pytest.raises(PipelineError, match=f"inference engine {re.escape(label)} "):
        train_model(model, train, val, LOOP, CPU)
    with pytest.raises(PipelineError, match="inference engine torchscript "):   # a TorchScript module itself
        train_model(torch.jit.script(torch.nn.Linear(2, 1)), train, val, LOOP, CPU)
    model.freeze_for_inference("eager")   # back to the eager model: it trains
    assert model.inference_engine == "eager"
    assert train_model(model, train, val, replace(LOOP, epochs=1), CPU)["epochs_run"] == 1


def test_early_stopping_keeps_the_best_record_and_state_and_counts_bad_epochs():
    model = torch.nn.Linear(2, 1)
    stopper = EarlyStopping("val_loss", patience=2)
    assert not stopper.update({"epoch": 1, "val_loss": float("nan")}, model)   # undefined: not a best
    assert stopper.best is None
    assert not stopper.update({"epoch": 2, "val_loss": 0.5}, model)
    best_weight = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not stopper.update({"epoch": 3, "val_loss": 0.6}, model)
    assert stopper.update({"epoch": 4, "val_loss": 0.5}, model)     # not better than the best: stop
    assert stopper.best["epoch"] == 2 and torch.equal(stopper.best_state["weight"], best_weight)
    assert not EarlyStopping("val_auroc").update({"epoch": 1, "val_auroc": 0.6}, model)   # patience 0: never


def test_a_run_stopped_after_an_epoch_resumes_to_the_uninterrupted_result(data, tmp_path):
    train, val = data
    loop = replace(LOOP, epochs=3)
    whole = fm_model(train)
    expected = train_model(whole, train, val, loop, CPU)

    def crash_in_epoch_2(record, replayed=False):
        if record["epoch"] == 2:
            raise KeyboardInterrupt   # before epoch 2's state is saved
    with pytest.raises(KeyboardInterrupt):
        train_model(fm_model(train), train, val, loop, CPU, resume_path=tmp_path / "r", fingerprint="a",
                    log_epoch=crash_in_epoch_2)
    logged = []
    resumed = fm_model(train)
    summary = train_model(resumed, train, val, loop, CPU, resume_path=tmp_path / "r", fingerprint="a",
                          log_epoch=lambda record, replayed=False: logged.append((record["epoch"], replayed)))
    # the log goes on where it stopped: epoch 1 replayed from the resume state, then epochs 2 and 3
    assert logged == [(1, True), (2, False), (3, False)] and summary == expected
    for a, b in zip(resumed.head.parameters(), whole.head.parameters()):
        assert torch.equal(a, b)
    other = train_model(fm_model(train), train, val, loop, CPU, resume_path=tmp_path / "r", fingerprint="b")
    assert other == expected   # a state of other params is ignored


def test_a_candidate_no_epoch_beats_is_what_the_model_keeps(data):
    """LP-FT's warm-up head competes with the fine-tuning epochs: when none beats it on val, the
    checkpoint holds the candidate's state (best_epoch 0), not the best of the worse epochs."""
    train, val = data
    model = fm_model(train)
    from lib.model.ttm import trained_state
    before = trained_state(model)
    summary = train_model(model, train, val, replace(LOOP, epochs=2), CPU,
                          candidate=({"epoch": 0, "val_auroc": 1.0, "val_loss": 0.0}, before))
    assert summary["best_epoch"] == 0 and summary["best_val_auroc"] == 1.0 and summary["epochs_run"] == 2
    for key, value in trained_state(model).items():
        assert torch.equal(value, before[key]), key
    # a candidate the epochs do beat is dropped
    beaten = train_model(fm_model(train), train, val, replace(LOOP, epochs=2), CPU,
                         candidate=({"epoch": 0, "val_auroc": 0.5, "val_loss": 9.0}, before))
    assert beaten["best_epoch"] == 2 and beaten["best_val_auroc"] > 0.9


def test_lp_ft_summary_says_whether_the_warm_up_head_was_kept(data, monkeypatch):
    """fit in ft mode: the warm-up's best (record epoch 0) is the fine-tuning loop's candidate."""
    import lib.model.training as training
    train, val = data
    seen = []
    real = training.train_model

    def spy(model, tr, va, cfg, device, **kw):
        seen.append(kw.get("candidate"))
        summary = real(model, tr, va, replace(cfg, epochs=1), device, **kw)
        return summary if kw.get("candidate") is None else {**summary, "best_epoch": 0}
    monkeypatch.setattr(training, "train_model", spy)
    monkeypatch.setattr(training, "without_embeddings", lambda split: split)   # stay on the cached embeddings
    monkeypatch.setattr(training, "backbone_frozen", lambda model: __import__("contextlib").nullcontext())
    from lib.core.config import TrainConfig
    from lib.core.params import Finetune, Train
    cfg = TrainConfig(Train(epochs=1), Finetune(lora=True, head_warmup_epochs=1))
    summary = fit(fm_model(train), train, val, cfg, CPU)
    assert seen[0] is None and seen[1][0]["epoch"] == 0 and seen[1][0]["val_auroc"] == summary["head_warmup_best_val"]
    assert summary["kept"] == "warmup"


def test_val_windows_per_epoch_scores_every_epoch_on_one_seeded_sample(data):
    train, val = data
    model = fm_model(train)
    summary = train_model(model, train, val, replace(LOOP, epochs=1, val_windows_per_epoch=300), CPU)
    sample = val_sample(val, 300, LOOP.seed, "clf")
    # The record was measured on the sample (one epoch: the restored weights are the epoch's), not on val.
    logits = predict(model, sample, CPU)
    assert summary["best_val_auroc"] == pytest.approx(roc_auc_score(sample.targets, logits), abs=1e-6)
    assert summary["best_val_auroc"] != pytest.approx(roc_auc_score(val.targets, predict(model, val, CPU)), abs=1e-6)
    assert summary["n_val_windows"] == len(val) and summary["n_val_windows_per_epoch"] == 300
    # One draw: rows sorted and distinct, targets, context and embeddings those of its rows, and the
    # same windows on every call with the seed (every epoch, LP-FT's warm-up), others with another seed.
    positions = np.searchsorted(val.indices, sample.indices)
    assert len(np.unique(sample.indices)) == 300 and np.all(np.diff(sample.indices) > 0)
    assert np.array_equal(val.indices[positions], sample.indices)
    np.testing.assert_array_equal(sample.targets, val.targets[positions])
    np.testing.assert_array_equal(sample.context, val.context[positions])
    np.testing.assert_array_equal(sample.embeddings, val.embeddings[positions])
    assert np.array_equal(val_sample(val, 300, LOOP.seed, "clf").indices, sample.indices)
    assert not np.array_equal(val_sample(val, 300, LOOP.seed + 1, "clf").indices, sample.indices)
    # 0 and anything >= the split mean all of val; a sample without positives is refused by name.
    assert val_sample(val, 0, 3, "clf") is val and val_sample(val, len(val), 3, "clf") is val
    negatives = replace(val, targets=np.zeros_like(val.targets))
    with pytest.raises(PipelineError, match="sample of 300 windows per epoch"):
        val_sample(negatives, 300, 3, "clf")
