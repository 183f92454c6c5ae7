"""Every performance figure of bench/RESULTS.md, from one command.

usage: python bench/run_all.py [--scales 1 2 4] [--out bench/RESULTS.md]

1. Full `dvc repro -f` in a fresh clone of this commit (its own empty DVC cache), stage by
   stage, then the no-op `dvc repro`.
2. TTM inference as `evaluate` runs it (checkpoint, test windows, batches), eager vs the frozen
   TorchScript backbone, and the share of the CPU's measured matmul FLOP rate it reaches.
3. Train epoch time per mode (fm, LoRA, last 2 blocks unfrozen + LoRA) on the demo windows.
4. Scaling at 1x, 2x, 4x the demo cohort: windows stage and fm training (embed + train), wall
   time and peak RSS of the process tree; table and PNG.
5. A pyinstrument profile of the slowest stage of (1).
Raw figures go to bench/results/*.json; the profile to bench/results/profile_<stage>.txt.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import psutil
import torch
import yaml
from windows_throughput import timed_tree  # bench/ is this script's directory

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
MODES = {"fm (frozen backbone, cached embeddings)": {},
         "LoRA (r 8) on every mixer layer": {"finetune": {"lora": True}},
         "last 2 blocks unfrozen + LoRA": {"finetune": {"lora": True, "unfreeze_last_n_blocks": 2}}}


def sh(cmd, cwd, **kw):
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, **kw)
    if result.returncode:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{result.stderr[-3000:]}")
    return result


def full_repro(clone: Path) -> dict:
    """Wall time of `dvc repro -f` in a fresh clone, per stage (from the 'Running stage' lines), and no-op.

    Forced: without -f, stages whose outputs are all committed to git (evaluate's metrics, cv) and
    whose inputs come out byte-identical are rightly skipped, which would hide their cost."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-f"], cwd=clone, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stages, current, mark = {}, None, started
    for line in proc.stdout:
        found = re.match(r"Running stage '([^']+)'", line)
        if found:
            now = time.perf_counter()
            if current:
                stages[current] = round(now - mark, 1)
            current, mark = found.group(1), now
    if proc.wait():
        sys.exit("dvc repro failed in the fresh clone")
    total = time.perf_counter() - started
    stages[current] = round(time.perf_counter() - mark, 1)
    started = time.perf_counter()
    noop = sh([sys.executable, "-m", "dvc", "repro"], clone)
    return {"full_s": round(total, 1), "stages_s": stages, "noop_s": round(time.perf_counter() - started, 1),
            "noop_output": noop.stdout.strip().splitlines()[-1]}


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - started) / 1e9


def inference(clone: Path) -> dict:
    """evaluate's TTM inference on the test windows: windows/s eager and frozen, FLOPs, CPU share."""
    from torch.utils.flop_counter import FlopCounterMode

    from lib.data.dataset import checkpoint_split
    from lib.model.inference import predict
    from lib.model.ttm import load_checkpoint

    model, ckpt = load_checkpoint(clone / "models/model.pt")
    split = checkpoint_split(model, ckpt, clone / "data/windows/test.h5")
    out = {"windows": len(split), "threads": torch.get_num_threads()}
    for name in ["frozen", "eager"]:
        if name == "eager":
            object.__setattr__(model, "_frozen_backbone", None)
        predict(model, checkpoint_split(model, ckpt, clone / "data/windows/val.h5"), "cpu")   # warm-up
        started = time.perf_counter()
        predict(model, split, "cpu")
        out[f"{name}_windows_per_s"] = round(len(split) / (time.perf_counter() - started))
    x = torch.randn(64, 3, 512)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.embed(x)
    out["gflop_per_window"] = round(counter.get_total_flops() / 64 / 1e9, 4)
    out["cpu_matmul_gflops"] = round(matmul_gflops(), 1)
    achieved = out["frozen_windows_per_s"] * out["gflop_per_window"]
    out["share_of_cpu_flops"] = round(achieved / out["cpu_matmul_gflops"], 3)
    return out


def epoch_times(clone: Path) -> dict:
    """Seconds per training epoch for each mode (2 epochs, no warm-up; the stage's own timer)."""
    out = {}
    for name, overrides in MODES.items():
        with tempfile.TemporaryDirectory() as tmp:
            params = yaml.safe_load((clone / "params.yaml").read_text())
            params["model"]["weights_dir"] = str(clone / params["model"]["weights_dir"])
            params["train"].update(epochs=2, early_stopping_patience=0)
            params["finetune"]["head_warmup_epochs"] = 0
            for section, values in overrides.items():
                params[section].update(values)
            Path(tmp, "params.yaml").write_text(yaml.safe_dump(params))
            run = sh([sys.executable, str(ROOT / "stages/train.py"), str(clone / "data/windows"),
                      str(clone / "data/embeddings"), f"{tmp}/model.pt", f"{tmp}/live"], tmp)
            seconds = float(re.search(r"train: ([\d.]+) s", run.stdout).group(1))
            windows = params["finetune"]["windows_per_epoch"] if overrides else "all"
            out[name] = {"epoch_s": round(seconds / 2, 1), "train_windows_per_epoch": windows}
    return out


def scaling(scales) -> list:
    """Windows stage and fm training (embed + train) at several multiples of the demo cohort."""
    rows = []
    for scale in scales:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            params = yaml.safe_load((ROOT / "params.yaml").read_text())
            params["data"]["clinical_csv"] = str(ROOT / params["data"]["clinical_csv"])
            params["model"]["weights_dir"] = str(ROOT / params["model"]["weights_dir"])
            params["demo"].update(n_cases=48 * scale, n_multi_case_subjects=8 * scale)
            params["splits"]["fasttrack"] = False
            (work / "params.yaml").write_text(yaml.safe_dump(params))
            sh([sys.executable, str(ROOT / "stages/cohort.py"), "data/cohort", "metrics/cohort.json"], work)
            sh([sys.executable, str(ROOT / "stages/splits.py"), "data/cohort/cases.csv", "data/splits.json",
                "metrics/splits.json"], work)
            row = {"scale": scale, "signal_hours": json.loads((work / "metrics/cohort.json").read_text())["hours"]}
            for name, cmd in [
                ("windows", ["stages/windows.py", "data/cohort/cases.csv", "data/splits.json", "data/windows",
                             "metrics/windows.json", "metrics/windows_report"]),
                ("embed", ["stages/embed.py", "data/windows", "data/embeddings"]),
                ("train", ["stages/train.py", "data/windows", "data/embeddings", "models/model.pt", "metrics/train"]),
            ]:
                wall, rss_tree, _ = timed_tree([str(ROOT / cmd[0]), *cmd[1:]], work)
                row[f"{name}_s"], row[f"{name}_rss_mb"] = round(wall, 1), round(rss_tree)
            counts = json.loads((work / "metrics/windows.json").read_text())
            row["train_val_windows"] = counts["train"]["windows"] + counts["val"]["windows"]
            row["windows_x_real_time"] = round(row["signal_hours"] * 3600 / row["windows_s"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def scaling_plot(rows, path: Path) -> None:
    scales = [r["scale"] for r in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for name, label in [("windows", "windows stage"), ("fm", "fm training (embed + train)")]:
        seconds = [r["windows_s"] if name == "windows" else r["embed_s"] + r["train_s"] for r in rows]
        memory = [r["windows_rss_mb"] if name == "windows" else max(r["embed_rss_mb"], r["train_rss_mb"]) for r in rows]
        ax_t.plot(scales, seconds, "o-", label=label)
        ax_t.plot(scales, [seconds[0] * s / scales[0] for s in scales], ":", color="grey")
        ax_m.plot(scales, memory, "o-", label=label)
    ax_t.set(xlabel="cohort size (x demo)", ylabel="wall time (s)", title="time (dotted: linear from 1x)")
    ax_m.set(xlabel="cohort size (x demo)", ylabel="peak RSS of the process tree (MB)", title="memory", ylim=(0, None))
    for ax in (ax_t, ax_m):
        ax.set_xticks(scales)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def profile(clone: Path, stage: str) -> str:
    """pyinstrument over the stage's own command; the text report is saved, its top returned."""
    cmd = yaml.safe_load((clone / "dvc.yaml").read_text())["stages"][stage]["cmd"].split()
    out = RESULTS / f"profile_{stage}.txt"
    started = time.perf_counter()
    sh([sys.executable, "-m", "pyinstrument", "--show-all", "-o", str(out), *cmd[1:]], clone)
    return f"{time.perf_counter() - started:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures = {"cpu": f"{psutil.cpu_count()} cores", "torch_threads": torch.get_num_threads(),
               "commit": sh(["git", "rev-parse", "--short", "HEAD"], ROOT).stdout.strip()}
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        sh(["git", "clone", "-q", str(ROOT), str(clone)], tmp)
        figures["repro"] = full_repro(clone)
        print(json.dumps(figures["repro"]), flush=True)
        figures["inference"] = inference(clone)
        print(json.dumps(figures["inference"]), flush=True)
        figures["epochs"] = epoch_times(clone)
        print(json.dumps(figures["epochs"]), flush=True)
        slowest = max(figures["repro"]["stages_s"], key=figures["repro"]["stages_s"].get)
        figures["profile"] = {"stage": slowest, "profiled_wall_s": profile(clone, slowest)}
    figures["scaling"] = scaling(args.scales)
    scaling_plot(figures["scaling"], RESULTS / "scaling.png")
    (RESULTS / "run_all.json").write_text(json.dumps(figures, indent=2) + "\n")
    from bench.report import write_results
    write_results(figures, Path(args.out))


if __name__ == "__main__":
    main()
