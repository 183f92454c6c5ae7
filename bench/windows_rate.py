"""The windows stage's per-case work per signal hour, at the demo's 100 Hz and VitalDB's 500 Hz.

`--cases` demo cases per sample rate are simulated once (`lib.data.demo.simulate_case`, written as the
cohort stage writes them: `.vital` files with the monitor numerics, durations drawn like params.yaml's
demo.min_minutes..max_minutes, every other case with hypotension, faults and gaps as the simulator makes
them) into a temp folder. Each case is then windowed in this process (workers=1, as one worker of the
stage does it): `process_case` with the train/val windows rule (params.yaml windows) and with the test
split's overlapping rule (evaluate.overlap), and its kept windows appended to an HDF5 file with the
stage's `WindowWriter`. CPU seconds (time.process_time) and wall seconds per signal hour are the
medians over `--repeats` rounds; a first, untimed case warms the imports up.

With profiling on (the default), two more passes per sample rate (train rule): one with each step of
`process_case` (STEPS) timed in CPU seconds per signal hour, and one under pyinstrument (wall clock): each
project function's share of it goes into the JSON, the whole tree to
`bench/results/profile_windows_rate_<srate>.txt` (not in git). `--cases-dir` keeps the recordings, so that
another checkout (e.g. a `git worktree` of an older commit) can be timed on the very same files.

usage: python bench/windows_rate.py [--cases 6] [--srates 100 500] [--repeats 2] [--cases-dir DIR] [--no-profile]
                                    [--out bench/results/windows_rate.json]
"""
import argparse
import importlib
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
from lib.core.params import Data, Demo, Evaluate, Trend, Windows, read_params  # noqa: E402
from lib.core.schema import CHANNELS  # noqa: E402
from lib.data import demo  # noqa: E402
from lib.data.vital_io import write_vital  # noqa: E402
from lib.data.windowing import file_attrs, process_case  # noqa: E402
from lib.data.windows_h5 import WindowWriter, window_blocks, window_columns  # noqa: E402

RESULTS = ROOT / "bench/results"
DTSTART = 4102444800.0   # the demo's epoch (lib.data.cohort.DEMO_EPOCH)


def simulate_cases(folder: Path, srate: float, n_cases: int, minutes: tuple, seed: int) -> list:
    """[(path, duration_s)] of `n_cases` simulated demo recordings at `srate` Hz, written into `folder`; a case
    already there (from an earlier run with the same --cases-dir and seed) is reused, so that two versions
    of the code can be timed on the same recordings."""
    rng = np.random.default_rng(seed)
    cases = []
    for i, seq in enumerate(np.random.SeedSequence(seed).spawn(n_cases)):
        duration_s = int(round(rng.uniform(*minutes) * 60))
        patient = demo.Patient(age=float(rng.uniform(30, 85)), asa=float(rng.integers(1, 5)))
        path = folder / f"{int(srate)}_{seed}_{i}_{duration_s}.vital"
        if not path.is_file():
            case = demo.simulate_case(duration_s, srate, i % 2 == 0, np.random.default_rng(seq), patient)
            write_vital(path, case.signals, srate, DTSTART + i * 86400.0, demo.UNITS, case.numerics)
        cases.append((path, duration_s))
    return cases


def time_cases(cases: list, rules: dict, trend: Trend, tracks: dict, folder: Path) -> dict:
    """One round: {rule: {'process_case'|'write': (cpu_s, wall_s), 'windows': kept, 'windows_total': cut}}."""
    out = {}
    for name, spec in rules.items():
        cpu = wall = write_cpu = write_wall = 0.0
        kept = cut = 0
        attrs = {**file_attrs(spec, trend, tracks), "split": name}
        with WindowWriter(folder / f"{name}.h5", CHANNELS, spec.length, window_columns(spec), attrs,
                          window_blocks(trend), spec.dtype) as writer:
            for caseid, (path, _) in enumerate(cases):
                started_cpu, started_wall = time.process_time(), time.perf_counter()
                result = process_case(path, tracks, spec, trend)
                cpu += time.process_time() - started_cpu
                wall += time.perf_counter() - started_wall
                ids = {key: np.full(result.kept, caseid, dtype=np.int32) for key in ("caseid", "subjectid")}
                started_cpu, started_wall = time.process_time(), time.perf_counter()
                writer.append({**result.arrays, **ids})
                write_cpu += time.process_time() - started_cpu
                write_wall += time.perf_counter() - started_wall
                kept, cut = kept + result.kept, cut + result.n_windows
        out[name] = {"process_case": (cpu, wall), "write": (write_cpu, write_wall), "windows": kept,
                     "windows_total": cut}
    return out


def per_hour(rounds: list, rule: str, part: str, hours: float) -> dict:
    """Median CPU and wall seconds of `part` over the rounds, in total and per signal hour."""
    cpu = statistics.median(r[rule][part][0] for r in rounds)
    wall = statistics.median(r[rule][part][1] for r in rounds)
    return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "cpu_s_per_signal_hour": round(cpu / hours, 4),
            "wall_s_per_signal_hour": round(wall / hours, 4),
            "cpu_s_rounds": [round(r[rule][part][0], 3) for r in rounds]}


# The steps of process_case timed one by one for the CPU breakdown: {module: functions it looks up at call time}.
# A step that calls another (e.g. _filtered_channels -> resample_to) includes it.
STEPS = {
    "lib.data.windowing": ("read_recording", "_filtered_channels", "_past_only_map_trace", "trend_view"),
    "lib.signal.filters": ("resample_to", "lowpass_abp", "bandpass_ppg", "bandpass_ecg", "dilate"),
    "lib.signal.beats": ("ecg_r_peaks", "ppg_systolic_peaks", "past_abp_pressures", "past_heart_rate", "bsqi"),
    "lib.signal.quality": ("gate_checks",),
    "lib.signal.labels": ("map_per_second", "ioh_events", "hypotension_labels", "past_map_slope"),
}


def step_breakdown(cases: list, spec: Windows, trend: Trend, tracks: dict, hours: float) -> dict:
    """CPU seconds per signal hour of each of STEPS over one pass of `process_case`, and of the whole."""
    spent = {}

    def timed_step(name, fn):
        def step(*args, **kwargs):
            started = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - started
        return step

    originals = [(importlib.import_module(module), name) for module, names in STEPS.items() for name in names]
    originals = [(module, name, getattr(module, name)) for module, name in originals]
    started = time.process_time()
    try:
        for module, name, fn in originals:
            setattr(module, name, timed_step(f"{module.__name__}.{name}", fn))
        for path, _ in cases:
            process_case(path, tracks, spec, trend)
    finally:
        for module, name, fn in originals:
            setattr(module, name, fn)
    total = {"process_case": round((time.process_time() - started) / hours, 4)}
    return {**total, **{name: round(t / hours, 4) for name, t in sorted(spent.items(), key=lambda kv: -kv[1])}}


def profile_tree(cases: list, spec: Windows, trend: Trend, tracks: dict, text_out: Path, top: int = 20) -> list:
    """pyinstrument (wall clock) over one pass of `process_case`, the tree written to `text_out`: the `top`
    project functions by their share of the pass (inclusive; a recursive call counted once)."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    for path, _ in cases:
        process_case(path, tracks, spec, trend)
    profiler.stop()
    text_out.write_text(profiler.output_text(unicode=False, color=False, show_all=True))
    totals = {}

    def walk(frame, on_stack):
        key = f"{frame.file_path_short}:{frame.function}"
        if key not in on_stack:
            totals[key] = totals.get(key, 0.0) + frame.time
        for child in frame.children:
            walk(child, on_stack | {key})

    root = profiler.last_session.root_frame()
    walk(root, frozenset())
    project = sorted(((key, t) for key, t in totals.items() if key.startswith(("lib/", "lib\\"))),
                     key=lambda kv: -kv[1])
    return [{"function": key, "share": round(t / root.time, 3)} for key, t in project[:top]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6, help="simulated cases per sample rate")
    parser.add_argument("--srates", type=float, nargs="+", default=[100.0, 500.0])
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds over the cases (median reported)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cases-dir", type=Path, help="keep the simulated recordings here (reused when present)")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--out", type=Path, default=RESULTS / "windows_rate.json")
    args = parser.parse_args(argv)
    params = read_params(ROOT / "params.yaml")
    spec = Windows.from_params(params)
    rules = {"train": spec, "test": spec.for_test(Evaluate.pick(params, "overlap"))}
    step_s, context = Trend.pick(params, "step_s", "context")
    trend, tracks = Trend(step_s=step_s, context=context), Data.pick(params, "tracks")
    minutes = Demo.pick(params, "min_minutes", "max_minutes")
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    figures = {"cases_per_srate": args.cases, "repeats": args.repeats, "minutes": list(minutes),
               "fs": spec.fs, "strides": {name: rule.stride for name, rule in rules.items()}, "workers": 1,
               "cpus": os.cpu_count(), "commit": commit, "srates": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.cases_dir:
            args.cases_dir.mkdir(parents=True, exist_ok=True)
        for srate in args.srates:
            cases = simulate_cases(args.cases_dir or Path(tmp), srate, args.cases, minutes, args.seed)
            hours = sum(duration for _, duration in cases) / 3600
            process_case(cases[0][0], tracks, spec, trend)   # warm-up: imports, caches
            rounds = [time_cases(cases, rules, trend, tracks, Path(tmp)) for _ in range(args.repeats)]
            entry = {"signal_hours": round(hours, 3)}
            for name in rules:
                entry[name] = {"windows": rounds[0][name]["windows"], "windows_total": rounds[0][name]["windows_total"],
                               "process_case": per_hour(rounds, name, "process_case", hours),
                               "write": per_hour(rounds, name, "write", hours)}
            if args.profile:
                entry["cpu_s_per_signal_hour_by_step"] = step_breakdown(cases, spec, trend, tracks, hours)
                entry["profile"] = profile_tree(cases, spec, trend, tracks,
                                                RESULTS / f"profile_windows_rate_{int(srate)}.txt")
            figures["srates"][f"{srate:g}"] = entry
            print(json.dumps({f"{srate:g} Hz": {name: entry[name]["process_case"] for name in rules}}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
