"""stages/train.py on the tiny pipeline's windows: determinism, resume after SIGKILL, DDP on gloo, errors."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import ROOT, run_stage

FT = {"finetune": {"unfreeze_last_n_blocks": 1, "windows_per_epoch": 256, "head_warmup_epochs": 2},
      "head": {"type": "mlp", "hidden_dims": [32]},
      "train": {"epochs": 3}}


def prepare(tiny, work, overrides):
    params = yaml.safe_load((tiny / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return [str(tiny / "data" / "windows"), str(tiny / "data" / "embeddings"), str(work / "model.pt"),
            str(work / "live")]


def train(tiny, work, overrides=None, processes=1):
    args = prepare(tiny, work, overrides or {})
    script = str(ROOT / "stages" / "train.py")
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone",
                                         f"--nproc_per_node={processes}"]
    return subprocess.run([sys.executable, *launcher, script, *args], cwd=work, capture_output=True, text=True)


def outputs(work):
    return (work / "model.pt").read_bytes(), json.loads((work / "live" / "metrics.json").read_text())


def test_same_params_and_seed_give_an_identical_checkpoint_and_metrics(tiny_pipeline, tmp_path):
    runs = [train(tiny_pipeline, tmp_path / name) for name in ["a", "b"]]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")
    assert "mode fm" in runs[0].stdout and "trainable parameters 589 of" in runs[0].stdout


def test_a_killed_run_resumes_and_ends_like_an_uninterrupted_one(tiny_pipeline, tmp_path):
    whole = train(tiny_pipeline, tmp_path / "whole", FT)
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "mode ft" in whole.stdout
    # one line per epoch: the 2 warm-up epochs, then the 3 fine-tuning ones, each with its seconds
    lines = [line for line in whole.stdout.splitlines() if re.match(r"(warm-up )?epoch \d+/\d+ ", line)]
    assert [line.split()[0] for line in lines] == ["warm-up", "warm-up", "epoch", "epoch", "epoch"], whole.stdout
    assert all(re.search(r"train_loss [\d.]+ +val_loss [\d.]+ +val_auroc [\d.]+ +lr \S+ +[\d.]+ s$", line)
               for line in lines), lines

    work = tmp_path / "killed"
    args = prepare(tiny_pipeline, work, FT)
    proc = subprocess.Popen([sys.executable, str(ROOT / "stages" / "train.py"), *args], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume = work / "model.pt.resume"
    deadline = time.time() + 300
    while not resume.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # after the head warm-up and the first fine-tuning epoch
    proc.wait()
    assert resume.exists() and not (work / "model.pt").exists()
    # the log of the epochs it finished is there, readable: the 2 warm-up epochs and at least one more
    partial = json.loads((work / "live" / "metrics.json").read_text())
    assert partial["step"] >= 2 and "val_auroc" in partial
    assert len((work / "live/plots/metrics/val_auroc.tsv").read_text().splitlines()) - 1 >= 3

    rerun = train(tiny_pipeline, work, FT)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming after epoch" in rerun.stdout and "(from the resume state)" in rerun.stdout
    assert outputs(work) == outputs(tmp_path / "whole")
    for plot in ["train_loss", "val_loss", "val_auroc"]:
        path = f"live/plots/metrics/{plot}.tsv"
        assert (work / path).read_text() == (tmp_path / "whole" / path).read_text()
    assert not resume.exists() and not (work / "model.pt.warmup.resume").exists()


def test_resume_state_from_other_params_is_ignored(tiny_pipeline, tmp_path):
    first = train(tiny_pipeline, tmp_path, {"train": {"epochs": 2}})
    assert first.returncode == 0
    (tmp_path / "model.pt.resume").write_bytes(b"garbage")  # as if left by a crash of another run
    again = train(tiny_pipeline, tmp_path, {"train": {"epochs": 2}})
    assert again.returncode == 0 and "ignoring resume state" in again.stdout


def test_two_gloo_processes_match_single_process_training(tiny_pipeline, tmp_path):
    single = train(tiny_pipeline, tmp_path / "single")
    ddp = train(tiny_pipeline, tmp_path / "ddp", processes=2)
    assert single.returncode == 0 and ddp.returncode == 0, ddp.stderr[-3000:]
    assert "2 process(es)" in ddp.stdout
    a = torch.load(tmp_path / "single" / "model.pt", weights_only=False)
    b = torch.load(tmp_path / "ddp" / "model.pt", weights_only=False)
    # Each optimiser step sees the same 64 windows, split 32 + 32 over the processes; only the
    # float summation order (and DistributedSampler's padding of an odd epoch) differs.
    for key in a["state"]:
        torch.testing.assert_close(a["state"][key], b["state"][key], rtol=1e-3, atol=1e-3)
    assert a["summary"]["best_val_auroc"] == pytest.approx(b["summary"]["best_val_auroc"], abs=0.01)


def test_regression_task_trains_and_evaluates_blood_pressure(tiny_pipeline, tmp_path):
    # the tiny cohort has a handful of test subjects: let the statistics speak (they are n/a below min_subjects)
    overrides = {"train": {"task": "reg", "epochs": 3}, "model": {"input_channels": ["ppg", "ecg"]},
                 "evaluate": {"min_subjects": 1}}
    result = train(tiny_pipeline, tmp_path, overrides)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert summary["task"] == "reg" and summary["monitor"] == "val_loss"
    assert summary["context_features"] == "hr,ppg_observed,ecg_observed"
    (tmp_path / "models").mkdir()
    (tmp_path / "model.pt").rename(tmp_path / "models" / "model.pt")
    (tmp_path / "data").symlink_to(tiny_pipeline / "data")
    for stage in ["calibrate", "evaluate"]:
        done = run_stage(stage, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    details = json.loads((tmp_path / "metrics/evaluate/details.json").read_text())
    headline = json.loads((tmp_path / "metrics/evaluate/metrics.json").read_text())
    for target in ["sbp", "dbp", "map"]:
        m = details["window"][target]
        assert headline[target]["mae"] == m["mae"] and headline[target]["sd"] == m["sd"]
        assert 0 < m["mae"] < 40 and m["sd"] > 0 and m["mae_ci_low"] <= m["mae"] <= m["mae_ci_high"]
        assert m["bhs_grade"] in "ABCD" and isinstance(m["aami_pass"], bool)
    assert (tmp_path / "metrics/evaluate/plots/images/bland_altman.png").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"lora": {"target_modules": ["q_proj"]}, "finetune": {"lora": True}}, "lora.target_modules: q_proj match no"),
    ({"train": {"schedule": "linear"}}, "train.schedule='linear'"),
    ({"train": {"monitor": "val_auroc", "task": "reg"}, "model": {"input_channels": ["ppg"]}}, "train.monitor"),
    ({"train": {"horizon_min": 7}}, "no column label_7min"),
    ({"train": {"batch_size": 0}}, "train.batch_size=0: must be an integer >= 1"),
])
def test_bad_params_stop_with_one_line(tiny_pipeline, tmp_path, overrides, message):
    result = train(tiny_pipeline, tmp_path, overrides)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
