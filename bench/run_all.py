"""Every figure of bench/RESULTS.md, from one command; RESULTS.md is rewritten whole.

usage: python bench/run_all.py [--scales 0.25 1 4] [--only default scale calibration speed] [--set KEY=VALUE ...]
                               [--before REV] [--results bench/results] [--out bench/RESULTS.md]

default (the pipeline as params.yaml has it, in a fresh clone of this commit):
1. Full `dvc repro -f` (its own empty DVC cache), stage by stage, then the no-op `dvc repro`.
2. TTM inference as `evaluate` runs it (checkpoint, test windows, batches), eager vs the frozen
   TorchScript backbone, and the share of the CPU's measured matmul FLOP rate it reaches.
3. Train epoch time per mode (fm, LoRA, last 2 blocks unfrozen + LoRA) on the demo windows.
4. A pyinstrument profile of the slowest stage of (1).
scale (bench/scale.py): `/usr/bin/time -v dvc exp run --temp -S demo.n_cases=N -S splits.fasttrack=false`
   in a fresh clone per scale (N = scale x the default demo.n_cases): per-stage wall time, peak RSS
   of the process tree and of the largest process, outputs' size, cost per signal hour, log-log
   slopes, the projection to the full VitalDB selection (13,123 h) and the PNG.
calibration: the demo simulator against published figures (lib.data.demo.calibration_figures, fast
   path, 300 cases per seed; the check tests/test_demo_calibration.py makes).
speed: evaluate's statistics at 1x/4x/16x the demo's test set (bench/evaluate_statistics.py), the windows
   stage's and the demo simulator's cost per signal hour at 100 and 500 Hz (bench/windows_rate.py,
   bench/simulator_rate.py), each now and at commit --before.
With --only, the sections not named keep their figures from run_all.json. Raw figures go to
bench/results/*.json; the profile to bench/results/profile_<stage>.txt.
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

import psutil
import torch
import yaml
from scale import default_cases, plot, project, run_scale  # bench/ is this script's directory

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
SECTIONS = ["default", "scale", "calibration", "speed"]
SPEED_BEFORE = "2ac4951"   # speed's "before": window-weighted bootstrap, per-segment beat detectors, gzip level 6
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
       # stages import lib/ from the clone they run in (cwd), else from this checkout
       "PYTHONPATH": os.pathsep.join(filter(None, [".", str(ROOT), os.environ.get("PYTHONPATH")]))}
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


def profile(clone: Path, stage: str) -> str:
    """pyinstrument over the stage's own command; the text report is saved, its top returned."""
    cmd = yaml.safe_load((clone / "dvc.yaml").read_text())["stages"][stage]["cmd"].split()
    out = RESULTS / f"profile_{stage}.txt"
    started = time.perf_counter()
    sh([sys.executable, "-m", "pyinstrument", "--show-all", "-o", str(out), *cmd[1:]], clone)
    return f"{time.perf_counter() - started:.1f}"


PUBLISHED = {"5": 0.932, "10": 0.929, "15": 0.932}   # MAP alone, forward analysis (Anesthesiology 2024;141:443)


def demo_calibration(seeds=(1, 2), cases: int = 300) -> dict:
    """The simulator against published figures: per seed, AUROC and coefficient of LR on the current MAP
    per horizon, positive rate, share of cases with IOH and of first events post-induction; a table."""
    from lib.core.params import Demo
    from lib.data import demo
    from lib.data.cohort import DEMO_CRITERIA, load_clinical
    from lib.data.vitaldb_source import select_cases

    cfg = Demo.from_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    rows = select_cases(load_clinical(ROOT / "data" / "vitaldb" / "clinical_information.csv"), DEMO_CRITERIA)[0]
    runs = [demo.calibration_figures(rows, cases, seed, cfg.ioh_fraction) for seed in seeds]
    lines = ["| seed | cases | AUROC MAP 5 / 10 / 15 min | coef 5 / 10 / 15 | positive rate 5 / 10 / 15 | "
             "cases with IOH | first event post-induction |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        cells = {key: " / ".join(f"{v[key]:.3f}" for v in r["horizons"].values())
                 for key in ("auroc", "coef", "positive_rate")}
        lines.append(f"| {r['seed']} | {r['cases']} | {cells['auroc']} | {cells['coef']} | {cells['positive_rate']} "
                     f"| {r['event_share']:.0%} | {r['post_induction_share']:.0%} |")
    lines.append(f"| published | 2,022 | {' / '.join(f'{v:.3f}' for v in PUBLISHED.values())} | < 0 | | 30-70 % "
                 "(see the test) | >= 20 % |")
    return {"ioh_fraction": cfg.ioh_fraction, "published_map_auroc": PUBLISHED, "runs": runs,
            "markdown": "\n".join(lines)}


def speed(before: str) -> None:
    """evaluate's statistics, the windows stage and the demo simulator, each by its own script (its JSON in
    bench/results, read by report.py), at this checkout and at commit `before`: evaluate_statistics.py takes
    the older lib/ itself; the other two run in a worktree of `before` (the script copied in: it times the
    stage functions that commit has), the windows stage on the very same recordings."""
    sh([sys.executable, "bench/evaluate_statistics.py", "--before", before], ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        tree, cases = Path(tmp) / "before", Path(tmp) / "cases"
        sh(["git", "worktree", "add", "--detach", str(tree), before], ROOT)
        try:
            for script, extra in (("windows_rate.py", ["--cases-dir", str(cases)]), ("simulator_rate.py", [])):
                stem = script.removesuffix(".py")
                sh([sys.executable, f"bench/{script}", *extra], ROOT)
                (tree / "bench" / script).write_text((ROOT / "bench" / script).read_text())
                sh([sys.executable, f"bench/{script}", *extra, "--no-profile", "--out",
                    str(RESULTS / f"{stem}_before.json")], tree)
        finally:
            sh(["git", "worktree", "remove", "--force", str(tree)], ROOT)


def default_run(figures: dict) -> None:
    """Sections 1-3 and 5: the default pipeline (demo cohort, fasttrack as in params.yaml) in a fresh clone."""
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        sh(["git", "clone", "-q", str(ROOT), str(clone)], tmp)
        figures["repro"] = full_repro(clone)
        cohort = json.loads((clone / "metrics/cohort.json").read_text())
        figures["repro"].update(cases=cohort["cases"], signal_hours=cohort["hours"],
                                fasttrack=yaml.safe_load((clone / "params.yaml").read_text())["splits"]["fasttrack"])
        print(json.dumps(figures["repro"]), flush=True)
        figures["inference"] = inference(clone)
        print(json.dumps(figures["inference"]), flush=True)
        figures["epochs"] = epoch_times(clone)
        print(json.dumps(figures["epochs"]), flush=True)
        slowest = max(figures["repro"]["stages_s"], key=figures["repro"]["stages_s"].get)
        figures["profile"] = {"stage": slowest, "profiled_wall_s": profile(clone, slowest)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.25, 1, 4],
                        help="multiples of the default demo.n_cases for the scale section")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS,
                        help="measure only these sections; the others keep their figures from the JSON")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="extra `dvc exp run -S` override for every scale run (quick checks only)")
    parser.add_argument("--before", default=SPEED_BEFORE, help="the commit the speed section compares with")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of run_all.json and the PNG")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / "run_all.json"
    figures = json.loads(path.read_text()) if path.exists() and set(args.only) != set(SECTIONS) else {}
    figures.pop("scaling", None)   # the 1x/2x/4x tables of the old 48-case demo: replaced by "scale"
    figures.update(cpu=f"{psutil.cpu_count()} cores", torch_threads=torch.get_num_threads(),
                   commit=sh(["git", "rev-parse", "--short", "HEAD"], ROOT).stdout.strip())
    if "default" in args.only:
        default_run(figures)
    if "scale" in args.only:
        rows = []
        for scale in args.scales:
            rate = matmul_gflops()   # the CPU's speed around the run: a shared CPU's varies between runs
            rows.append({**run_scale(scale, args.sets), "matmul_gflops": [round(rate, 1), round(matmul_gflops(), 1)]})
            print(json.dumps(rows[-1]), flush=True)
        figures["scale"] = {"default_cases": default_cases(), "sets": args.sets, "rows": rows,
                            "projection": project(rows), "commit": figures["commit"]}
        plot(rows, args.results / "scaling.png")
    if "calibration" in args.only:
        figures["demo_calibration"] = demo_calibration()
    if "speed" in args.only:
        speed(args.before)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    from report import write_results  # bench/ is on sys.path: the script runs from it
    write_results(figures, args.out, args.results / "scaling.png")


if __name__ == "__main__":
    main()
