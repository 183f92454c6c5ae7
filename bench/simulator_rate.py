"""The demo simulator's cost per signal hour: the cohort stage's per-case work with data.source=demo, at the
demo's 100 Hz and at the simulated second hospital's 500 Hz (params.yaml demo and external.demo).

`--cases` cases per cohort are simulated and written as one worker of the cohort stage does it
(`lib.data.cohort._simulate_and_write`): `demo.simulate_case`, then `write_vital` (the demo: SNUADC names and
the monitor numerics; the second hospital: Philips names, no numerics). Durations are drawn in the cohort's
min_minutes..max_minutes, every other case has hypotension, patients vary in age and ASA class. The two
parts are timed apart, in this one process: CPU seconds (time.process_time) and wall seconds per signal
hour, medians over `--repeats` rounds. Before timing, one case's file is compared byte for byte with the
file `_simulate_and_write` writes, so the figures are the stage's work.

With profiling on (the default) one more pass per cohort runs under pyinstrument: the functions with most
time, inclusive and self, library functions included (zlib's compress is most of the writing), go into the
JSON; the whole tree to `bench/results/profile_simulator_rate_<srate>.txt` (not in git).

usage: python bench/simulator_rate.py [--cases 6] [--repeats 3] [--seed 7] [--no-profile]
                                      [--out bench/results/simulator_rate.json]
"""
import argparse
import filecmp
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lib  # noqa: E402,F401  (first: pins the numeric kernels, as the stage does)
from lib.core.params import Demo, ExternalDemo, read_params  # noqa: E402
from lib.data import cohort, demo  # noqa: E402
from lib.data.vital_io import write_vital  # noqa: E402

RESULTS = ROOT / "bench/results"


def cohort_jobs(folder: Path, cfg: Demo, n_cases: int, seed: int) -> list:
    """`_simulate_and_write`'s jobs (caseid, duration_s, has_ioh, patient, seed, path) for `n_cases` cases."""
    rng = np.random.default_rng(seed)
    jobs = []
    for i, case_seed in enumerate(np.random.SeedSequence(seed).spawn(n_cases)):
        duration_s = int(round(rng.uniform(cfg.min_minutes, cfg.max_minutes) * 60))
        patient = demo.Patient(age=float(rng.uniform(30, 85)), asa=float(rng.integers(1, 5)))
        jobs.append((1000 + i, duration_s, i % 2 == 0, patient, case_seed, folder / f"{1000 + i}.vital"))
    return jobs


def simulate(job, srate: float):
    _, duration_s, has_ioh, patient, seed, _ = job
    return demo.simulate_case(duration_s, srate, has_ioh, np.random.default_rng(seed), patient)


def write(job, case, srate: float, philips: bool) -> None:
    """The file `_simulate_and_write` writes for `job`."""
    caseid, path = job[0], job[5]
    dtstart = cohort.DEMO_EPOCH + caseid * 86400.0
    if philips:
        signals = {demo.PHILIPS_TRACKS[name]: samples for name, samples in case.signals.items()}
        write_vital(path, signals, srate, dtstart, demo.PHILIPS_UNITS)
    else:
        write_vital(path, case.signals, srate, dtstart, demo.UNITS, case.numerics)


def check_same_as_stage(job, srate: float, philips: bool, folder: Path) -> None:
    """Exit unless `simulate` + `write` give the bytes the stage's worker function writes."""
    write(job, simulate(job, srate), srate, philips)
    stage_job = (*job[:5], folder / "stage.vital")
    cohort._simulate_and_write(stage_job, srate, philips)
    if not filecmp.cmp(job[5], stage_job[5], shallow=False):
        sys.exit(f"{srate:g} Hz: the bench's file differs from lib.data.cohort._simulate_and_write's")


def time_round(jobs: list, srate: float, philips: bool) -> dict:
    """One round over the jobs: {'simulate'|'write': (cpu_s, wall_s)}."""
    totals = {"simulate": [0.0, 0.0], "write": [0.0, 0.0]}
    for job in jobs:
        cpu, wall = time.process_time(), time.perf_counter()
        case = simulate(job, srate)
        mid_cpu, mid_wall = time.process_time(), time.perf_counter()
        write(job, case, srate, philips)
        totals["simulate"][0] += mid_cpu - cpu
        totals["simulate"][1] += mid_wall - wall
        totals["write"][0] += time.process_time() - mid_cpu
        totals["write"][1] += time.perf_counter() - mid_wall
    totals["total"] = [totals["simulate"][i] + totals["write"][i] for i in (0, 1)]
    return totals


def per_hour(rounds: list, part: str, hours: float) -> dict:
    """Median CPU and wall seconds of `part` over the rounds, per signal hour, and each round's CPU seconds."""
    cpu = statistics.median(r[part][0] for r in rounds)
    wall = statistics.median(r[part][1] for r in rounds)
    return {"cpu_s_per_signal_hour": round(cpu / hours, 4), "wall_s_per_signal_hour": round(wall / hours, 4),
            "cpu_s_rounds": [round(r[part][0], 3) for r in rounds]}


def profile(jobs: list, srate: float, philips: bool, text_out: Path, top: int = 15) -> dict:
    """pyinstrument over one pass: the `top` functions by inclusive and by self time, as shares of the pass."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    for job in jobs:
        write(job, simulate(job, srate), srate, philips)
    profiler.stop()
    text_out.write_text(profiler.output_text(unicode=False, color=False, show_all=True))
    totals, selfs = {}, {}

    def walk(frame, on_stack):
        key = f"{frame.file_path_short}:{frame.class_name + '.' if frame.class_name else ''}{frame.function}"
        if key not in on_stack:   # a recursive call's time is already in its caller's
            totals[key] = totals.get(key, 0.0) + frame.time
        selfs[key] = selfs.get(key, 0.0) + frame.total_self_time   # its [self] leaves included
        for child in frame.children:
            if not child.is_synthetic:
                walk(child, on_stack | {key})

    root = profiler.last_session.root_frame()
    walk(root, frozenset())

    def ranked(times, keep=lambda key: True):
        best = sorted(((k, t) for k, t in times.items() if keep(k)), key=lambda kv: -kv[1])[:top]
        return [{"function": key, "share": round(t / root.time, 3)} for key, t in best]

    return {"inclusive": ranked(totals, lambda key: key.startswith(("lib/", "lib\\"))), "self": ranked(selfs)}


def cohorts(params) -> dict:
    """{name: (cohort config, philips names)}: the training demo and the second hospital."""
    external = ExternalDemo.from_mapping("external.demo", params["external"]["demo"])
    return {"demo": (Demo.from_params(params), False), "external_demo": (external, True)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6, help="simulated cases per cohort")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds over the cases (median reported)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--out", type=Path, default=RESULTS / "simulator_rate.json")
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    figures = {"cases_per_cohort": args.cases, "repeats": args.repeats, "workers": 1, "cpus": os.cpu_count(),
               "commit": commit, "cohorts": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cfg, philips) in cohorts(read_params(ROOT / "params.yaml")).items():
            jobs = cohort_jobs(Path(tmp), cfg, args.cases, args.seed)
            hours = sum(job[1] for job in jobs) / 3600
            check_same_as_stage(jobs[0], cfg.srate, philips, Path(tmp))   # also warms the imports up
            rounds = [time_round(jobs, cfg.srate, philips) for _ in range(args.repeats)]
            entry = {"srate_hz": cfg.srate, "minutes": [cfg.min_minutes, cfg.max_minutes],
                     "signal_hours": round(hours, 3), **{part: per_hour(rounds, part, hours)
                                                         for part in ("simulate", "write", "total")}}
            if args.profile:
                entry["profile"] = profile(jobs, cfg.srate, philips,
                                           RESULTS / f"profile_simulator_rate_{cfg.srate:g}.txt")
            figures["cohorts"][name] = entry
            print(json.dumps({f"{name} {cfg.srate:g} Hz": {part: entry[part]["cpu_s_per_signal_hour"]
                                                           for part in ("simulate", "write", "total")}}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
