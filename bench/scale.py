"""Scale benchmark: the whole pipeline at several multiples of the default demo cohort.

For each scale s, in a fresh `git clone` of this commit (its own empty DVC cache, in a temporary
folder removed afterwards):

    /usr/bin/time -v dvc exp run --temp -S demo.n_cases=round(s x default) -S splits.fasttrack=false

(whole train/val, no fasttrack cap). Measured per stage: wall time (between dvc's "Running stage"
lines, so DVC's hashing and caching of the stage's outputs counts), peak RSS of the whole process
tree (dvc + stage + workers, sampled every 0.2 s with psutil) and of the largest single process,
and the size of the stage's outputs (dvc.lock of the experiment). Per scale: signal hours
(metrics/cohort.json), windows (metrics/windows.json), the DVC cache's size, and GNU time's
"Maximum resident set size" (the largest process of the run).

`project` turns the rows into cost per signal hour, log-log slopes and a projection to the full
VitalDB default selection; `plot` draws the PNG. bench/run_all.py calls all three
(`python bench/run_all.py --only scale [--scales 0.25 1 4]`); bench/report.py writes the section.
bench/gpu.py runs the same measurement (`run_cases`) on a GPU host.
"""
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
FULL_VITALDB = {"hours": 13123, "cases": 3313}   # VitalDB's default selection (data.select), whole
RSS_LIMIT_MB = 2048                                # memory budget of the largest process (2 GB)
CPU_STAGES = ("cohort", "windows")                 # spread over data.workers / windows.workers processes
GPU_STAGES = ("embed", "train", "calibrate", "baselines", "evaluate")   # TTM / CNN forward and backward
FIXED_SIZE = "external_"   # stages of the external cohort: its own size (external.demo), not demo.n_cases
ASSUMED = {"cores": 16, "cpu_efficiency": 0.8, "gpu_speedup": 10}
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
       # the stages import lib/ from the experiment's own copy, not from wherever the venv was installed
       "PYTHONPATH": os.pathsep.join(filter(None, [".", os.environ.get("PYTHONPATH")]))}


def default_cases() -> int:
    return int(yaml.safe_load((ROOT / "params.yaml").read_text())["demo"]["n_cases"])


class TreeSampler(threading.Thread):
    """Peak RSS of a process and all its descendants, summed and largest single, per current `stage`."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.proc, self.every, self.stage = psutil.Process(pid), every, None
        self.peaks, self.done = {}, threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                break
            rss = []
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    rss.append(p.memory_info().rss)
            if rss:
                tree, one = self.peaks.get(self.stage, (0, 0))
                self.peaks[self.stage] = (max(tree, sum(rss)), max(one, max(rss)))
            time.sleep(self.every)


def stage_group(name: str) -> str:
    return re.sub(r"@.*", "", name)   # cv_fold@0..4 -> cv_fold


def exp_run(clone: Path, n_cases: int, sets: list) -> dict:
    """`/usr/bin/time -v dvc exp run --temp ...` in `clone`: per-stage wall and RSS, time's max RSS."""
    dvc = Path(sys.executable).parent / "dvc"
    dvc_cmd = [str(dvc)] if dvc.exists() else [sys.executable, "-m", "dvc"]
    overrides = [f"demo.n_cases={n_cases}", "splits.fasttrack=false", *sets]
    timefile = clone.parent / "time-v.txt"
    cmd = ["/usr/bin/time", "-v", "-o", str(timefile), *dvc_cmd, "exp", "run", "--temp",
           *[a for s in overrides for a in ("-S", s)]]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=clone, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    walls, current, mark, log = {}, None, started, []
    for line in proc.stdout:
        log.append(line)
        boundary = re.match(r"Running stage '([^']+)'", line)
        if boundary or line.startswith(("Stage '", "Ran experiment")):
            now = time.perf_counter()
            if current:
                walls[current] = walls.get(current, 0) + now - mark
            current = stage_group(boundary.group(1)) if boundary else None
            mark, sampler.stage = now, current
    rc = proc.wait()
    total = time.perf_counter() - started
    if current:
        walls[current] = walls.get(current, 0) + time.perf_counter() - mark
    sampler.done.set()
    sampler.join()
    if rc:
        sys.exit(f"{' '.join(cmd)} failed in {clone}:\n{''.join(log)[-3000:]}")
    time_v = timefile.read_text()
    max_rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_v).group(1))
    stages = {name: {"wall_s": round(walls[name], 1),
                     "rss_tree_mb": round(sampler.peaks.get(name, (0, 0))[0] / 2**20),
                     "rss_largest_mb": round(sampler.peaks.get(name, (0, 0))[1] / 2**20)} for name in walls}
    peaks = list(sampler.peaks.values())
    return {"command": "dvc exp run --temp " + " ".join(f"-S {s}" for s in overrides),
            "wall_s": round(total, 1), "dvc_overhead_s": round(total - sum(walls.values()), 1),
            "time_v_max_rss_mb": round(max_rss_kb / 1024),
            "rss_tree_mb": round(max(t for t, _ in peaks) / 2**20) if peaks else None,
            "stages": stages}


def git_show(clone: Path, ref: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=clone, capture_output=True, text=True,
                          check=True).stdout


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def run_scale(scale: float, sets: list | None = None) -> dict:
    """One scale: round(scale x demo.n_cases) cases, measured by `run_cases`."""
    return {"scale": scale, **run_cases(max(1, round(default_cases() * scale)), sets)}


def run_cases(n_cases: int, sets: list | None = None) -> dict:
    """Clone, `dvc exp run --temp` with n_cases, then the experiment's metrics and dvc.lock."""
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        row = {"n_cases": n_cases, **exp_run(clone, n_cases, sets or [])}
        ref = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=clone,
                             capture_output=True, text=True, check=True).stdout.split()[-1]
        cohort = json.loads(git_show(clone, ref, "metrics/cohort.json"))
        windows = json.loads(git_show(clone, ref, "metrics/windows.json"))
        lock = yaml.safe_load(git_show(clone, ref, "dvc.lock"))["stages"]
        params = yaml.safe_load(git_show(clone, ref, "params.yaml"))
        scored = json.loads(git_show(clone, ref, "metrics/evaluate/metrics.json"))
        row["auroc"] = {k: v["auroc"] for k, v in scored.items() if isinstance(v, dict) and "auroc" in v}
        for name, stage in lock.items():
            group = row["stages"].get(stage_group(name))
            if group is not None:
                group["outs_mb"] = round(group.get("outs_mb", 0) + sum(o.get("size", 0) for o in stage.get("outs", []))
                                         / 2**20, 1)
        row["dvc_cache_mb"] = round(du_mb(clone / ".dvc" / "cache"), 1)
    row.update(signal_hours=cohort["hours"], cases=cohort["cases"],
               windows={split: s["windows"] for split, s in windows.items()})
    row["outs_mb"] = round(sum(s.get("outs_mb", 0) for s in row["stages"].values()), 1)
    # the windows files' `signals` block, uncompressed (lib/data/windows_h5.py): n x channels x length x 4 bytes
    channels, length = len(params["data"]["tracks"]), params["windows"]["length"]
    signals_mb = sum(row["windows"].values()) * channels * length * 4 / 2**20
    row["signals_float32_mb"] = round(signals_mb, 1)
    row["outs_float16_mb"] = float16_outputs_mb(row, params)
    return row


def float16_outputs_mb(row: dict, params: dict) -> float:
    """The run's outputs with windows.dtype and embed.dtype float16: the windows files' `signals`
    block and the embeddings cache halve (the trend view, labels and the rest stay)."""
    saved = row["signals_float32_mb"] / 2 if params["windows"]["dtype"] == "float32" else 0.0
    if params.get("embed", {}).get("dtype", "float32") == "float32":
        saved += row["stages"].get("embed", {}).get("outs_mb", 0.0) / 2
    return round(row["outs_mb"] - saved, 1)


def slope(hours, values) -> float | None:
    """Log-log slope of values against signal hours (1 = linear, below = better than linear)."""
    pairs = [(h, v) for h, v in zip(hours, values) if h > 0 and v and v > 0]
    if len({h for h, _ in pairs}) < 2:
        return None
    x, y = np.log([h for h, _ in pairs]), np.log([v for _, v in pairs])
    return round(float(np.polyfit(x, y, 1)[0]), 2) + 0.0   # no -0.0


def project(rows: list, assumed: dict = ASSUMED, target: dict = FULL_VITALDB) -> dict:
    """Per stage: cost per signal hour at the largest scale, log-log slope, and the time at `target` hours
    on the measuring machine (linear from the largest scale, and the fitted power law; beside them the
    least-squares fixed + per-hour line over the scales, `affine_h`; the external cohort's stages, whose size
    does not follow the scale, as measured) and on a 16-core + 1 GPU
    machine (projected, not measured: `assumed`). RSS: the largest process's peak at the largest scale plus
    the least-squares growth per hour over the scales (never negative) times the hours still to go."""
    rows = sorted(rows, key=lambda r: r["signal_hours"])
    big, hours = rows[-1], [r["signal_hours"] for r in rows]
    ratio = target["hours"] / big["signal_hours"]
    cpu_factor = assumed["cores"] / 2 * assumed["cpu_efficiency"]
    out = {"target": target, "assumed": assumed, "from_hours": big["signal_hours"], "stages": {}}
    for name in big["stages"]:
        walls = [r["stages"].get(name, {}).get("wall_s") for r in rows]
        rss = [r["stages"].get(name, {}).get("rss_largest_mb") for r in rows]
        k = slope(hours, walls)
        wall = big["stages"][name]["wall_s"]
        linear = wall * ratio
        power = wall * ratio ** k if k is not None else linear
        here = max(linear, power)   # the more pessimistic of the two
        # fixed + per hour: the least-squares line through every scale (a stage's start-up counted once)
        per_hour, fixed = np.polyfit(hours, walls, 1) if len(set(hours)) > 1 else (wall / big["signal_hours"], 0.0)
        affine = max(fixed, 0.0) + max(per_hour, 0.0) * target["hours"]
        if name.startswith(FIXED_SIZE):   # the same cohort at every scale: projected as measured
            linear = power = affine = here = wall
        speedup = cpu_factor if name in CPU_STAGES else assumed["gpu_speedup"] if name in GPU_STAGES else 1
        growth = max(0.0, float(np.polyfit(hours, rss, 1)[0])) if len(set(hours)) > 1 else 0.0   # MB per hour
        out["stages"][name] = {
            "s_per_signal_hour": round(wall / big["signal_hours"], 3), "slope": k,
            "linear_h": round(linear / 3600, 2), "power_law_h": round(power / 3600, 2),
            "affine_h": round(affine / 3600, 2), "fixed_s": round(float(fixed), 1),
            "marginal_s_per_signal_hour": round(float(per_hour), 3),
            "this_machine_h": round(here / 3600, 2), "speedup_assumed": round(speedup, 1),
            "gpu_machine_h": round(here / speedup / 3600, 2), "rss_slope": slope(hours, rss),
            "rss_mb_per_1000h": round(growth * 1000),
            "rss_largest_mb": round(rss[-1] + growth * (target["hours"] - big["signal_hours"])),
        }
    st = out["stages"].values()
    out["total"] = {"this_machine_h": round(sum(s["this_machine_h"] for s in st), 1),
                    "affine_h": round(sum(s["affine_h"] for s in st), 1),
                    "gpu_machine_h": round(sum(s["gpu_machine_h"] for s in st), 1),
                    "slope": slope(hours, [r["wall_s"] for r in rows]),
                    "rss_largest_mb": max(s["rss_largest_mb"] for s in st)}
    per_hour = {key: big[key] / big["signal_hours"] for key in ("outs_mb", "outs_float16_mb", "dvc_cache_mb")}
    out["disk_gb"] = {key: round(v * target["hours"] / 1024, 1) for key, v in per_hour.items()}
    out["disk_slope"] = slope(hours, [r["outs_mb"] for r in rows])
    return out


def plot(rows: list, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["signal_hours"])
    hours = [r["signal_hours"] for r in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in rows[-1]["stages"]:
        ax_t.plot(hours, [r["stages"].get(name, {}).get("wall_s", math.nan) for r in rows], "o-", label=name)
        ax_m.plot(hours, [r["stages"].get(name, {}).get("rss_largest_mb", math.nan) for r in rows], "o-", label=name)
    ax_t.plot(hours, [r["wall_s"] for r in rows], "k^-", label="whole run")
    ax_t.plot(hours, [rows[0]["wall_s"] * h / hours[0] for h in hours], "k:", label="linear from smallest")
    ax_t.set(xscale="log", yscale="log", xlabel="signal hours", ylabel="wall time (s)", title="time per stage")
    ax_m.axhline(RSS_LIMIT_MB, color="red", ls=":", label="2 GB")
    ax_m.set(xscale="log", xlabel="signal hours", ylabel="peak RSS, largest process (MB)", title="memory",
             ylim=(0, None))
    ax_t.legend(fontsize=7)
    ax_m.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
