"""bench/RESULTS.md, whole, from the figures bench/run_all.py measured (bench/results/run_all.json).

usage: python bench/report.py [--results bench/results] [--out bench/RESULTS.md]
"""
import argparse
import json
import os
import re
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_WINDOWS_PER_S = 3000   # goal: embed and evaluate >= 3,000 windows/s on 2 cores
RSS_LIMIT_MB = 2048   # bench/scale.py's RSS_LIMIT_MB (not imported: report.py runs without bench/ on the path)
GLYPHS = {Fraction(1, 4): "¼", Fraction(1, 2): "½", Fraction(3, 4): "¾"}


def times(scale: float) -> str:
    """0.25 -> '¼×', 4.0 -> '4×', 0.05 -> '0.05×'."""
    frac = Fraction(scale).limit_denominator(100)
    return f"{GLYPHS.get(frac, f'{scale:g}')}×"


def n(value, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def default_sections(f: dict) -> list:
    if "repro" not in f:
        return ["## Default pipeline", "", "Not measured yet: `python bench/run_all.py --only default`.", ""]
    inf, repro = f["inference"], f["repro"]
    cohort = (f"demo cohort of {repro['cases']} cases ({repro['signal_hours']:,.0f} h of signal), "
              f"splits.fasttrack {str(repro['fasttrack']).lower()}" if "cases" in repro
              else "demo cohort (size not recorded in run_all.json: rerun `python bench/run_all.py`)")
    lines = [
        "## Full and no-op `dvc repro`",
        "",
        f"`dvc repro -f` in a fresh clone, empty DVC cache, params.yaml as committed ({cohort}): "
        f"**{repro['full_s']:.0f} s** for the whole pipeline; no-op `dvc repro` afterwards: "
        f"**{repro['noop_s']:.1f} s** (\"{repro['noop_output']}\").",
        "",
        "| stage | wall (s) |",
        "|---|---|",
        *[f"| {stage} | {seconds} |" for stage, seconds in repro["stages_s"].items()],
        "",
        "## TTM inference in `evaluate`",
        "",
        f"`predict` over the {inf['windows']:,} test windows exactly as `evaluate` runs it (checkpoint, "
        "HDF5 chunks of 512, backbone calls of 64 windows, 3 channels × 512 samples), before (eager PyTorch) "
        "and after (the frozen TorchScript backbone the stages use):",
        "",
        "| backbone | windows/s |",
        "|---|---|",
        f"| eager PyTorch (before) | {inf['eager_windows_per_s']:,} |",
        f"| TorchScript trace + freeze (after; what the stages use) | **{inf['frozen_windows_per_s']:,}** |",
        "",
        f"Goal ≥ {GOAL_WINDOWS_PER_S:,} windows/s: "
        f"{'met' if inf['frozen_windows_per_s'] >= GOAL_WINDOWS_PER_S else 'not met on this run'}. "
        f"The backbone costs {inf['gflop_per_window']} GFLOP per window (torch's FlopCounterMode); the CPU's "
        f"measured fp32 matmul rate is {inf['cpu_matmul_gflops']} GFLOP/s (2048² matmul), so inference reaches "
        f"**{100 * inf['share_of_cpu_flops']:.0f} %** of it "
        f"({inf['frozen_windows_per_s'] * inf['gflop_per_window']:.0f} GFLOP/s). TTM's mixers are many small "
        "matmuls plus layer norms and gates, which is why it stays well below a large matmul's rate.",
    ]
    if inf["frozen_windows_per_s"] < inf["eager_windows_per_s"]:
        lines += ["", "On this run the frozen backbone measured slower than eager (frozen is measured first, "
                  "right after `dvc repro` in the same clone); `tests/test_model.py` checks that both give the "
                  "same outputs, not their speed."]
    lines += [
        "",
        "## Train epoch time per mode (demo windows)",
        "",
        "The train stage's own timer over 2 epochs, halved:",
        "",
        "| mode | train windows per epoch | s per epoch (incl. val scoring) |",
        "|---|---|---|",
        *[f"| {mode} | {m['train_windows_per_epoch']} | {m['epoch_s']} |" for mode, m in f["epochs"].items()],
        "",
        "## Profile of the slowest stage",
        "",
        f"The slowest stage of the full run is **{f['profile']['stage']}**; `python bench/run_all.py` writes its "
        f"pyinstrument profile to `bench/results/profile_{f['profile']['stage']}.txt` (generated, not in git).",
        "",
    ]
    return lines


ENGINE_ROWS = {"eager": "eager PyTorch", "torchscript": "TorchScript trace + freeze (default)",
               "inductor": "`inference.engine=inductor` (torch.compile)",
               "torchscript_bf16": "TorchScript, `inference.bf16=true`",
               "inductor_bf16": "`inference.engine=inductor`, `inference.bf16=true`"}


def score_sections(results: Path) -> list:
    """`ttm-ioh score` on one recording, start-up included (bench/score_recording.py)."""
    path = results / "score_recording.json"
    if not path.exists():
        return []
    r = json.loads(path.read_text())
    return ["## Scoring one recording (`ttm-ioh score`)", "",
            f"`python bench/score_recording.py`: a simulated {r['minutes']:g}-min recording at {r['srate_hz']:g} Hz "
            f"({r['windows']:,} windows at the test split's stride), scored by the model and every baseline, CSV and "
            f"PNG written, in a fresh process each run on {r['cpus']} cores: **{r['median_wall_s']:.1f} s** median "
            f"wall, start-up included (runs: {', '.join(f'{w:.1f}' for w in r['wall_s'])} s).", ""]


def engine_sections(results: Path) -> list:
    """The engines table (bench/inference_engines.py) and the metric check of the fastest one."""
    path = results / "inference_engines.json"
    if not path.exists():
        return []
    e = json.loads(path.read_text())
    rates, diffs = e["windows_per_s"], e["max_abs_diff_vs_eager"]
    lines = [
        "## Inference engines (params.yaml `inference`)",
        "",
        f"`python bench/inference_engines.py` on {e['threads']} threads, torch {e['torch']}: the embed stage's "
        f"path over {e['windows']:,} val windows and evaluate's `predict` over {e['predict_windows']:,} (HDF5 "
        "reads on a prefetch thread), best of interleaved rounds on a 2-core CPU; max |difference| "
        "from eager float32 and the val AUROC from each engine's logits:",
        "",
        "| engine | embed windows/s | predict windows/s | max \\|diff\\| embeddings / logits | val AUROC |",
        "|---|---|---|---|---|",
    ]
    for key, label in ENGINE_ROWS.items():
        if key in diffs:
            lines.append(f"| {label} | {rates[f'{key} embed + prefetch']:,} | {rates[f'{key} predict + prefetch']:,} | "
                         f"{diffs[key]['embeddings']:.2g} / {diffs[key]['logits']:.2g} | {e['val_auroc'][key]} |")
    check = results / "inference_bf16_metrics.json"
    if check.exists():
        c = json.loads(check.read_text())
        rate = c["embed_stage_windows_per_s"]
        lines += [
            "",
            f"Whole pipeline with the fastest setting (`{c['command']}`) against the default: "
            f"**{len(c['metrics']) - len(c['changed_at_3_decimals'])} of {len(c['metrics'])}** reported metrics "
            f"unchanged to 3 decimals (largest change {c['max_abs_change']:.1e}); the embed stage printed "
            f"{rate['val']:,} windows/s on val ({rate['train (includes compile)']:,} on train, whose time includes "
            f"Inductor's compile). Goal ≥ {GOAL_WINDOWS_PER_S:,} windows/s on 2 cores: reached by the embed stage "
            "on val, within 10 % in the benchmark above; float32 engines stay ≈ 30 % below it. The default stays "
            "TorchScript float32 (bit-identical, and it needs neither a C++ compiler nor a bf16-capable CPU).",
        ]
    return lines + [""]


def commits(rows: list, default: str) -> str:
    """The commit of the scale runs, or per scale where a row records its own (a scale added later)."""
    if all(r.get("commit", default) == default for r in rows):
        return default
    return ", ".join(f"{r.get('commit', default)} ({times(r['scale'])})" for r in rows)


def memory_sections(results: Path) -> list:
    """Bytes per window of the steps that see every window (bench/memory_per_window.py)."""
    path = results / "memory_per_window.json"
    if not path.exists():
        return []
    m = json.loads(path.read_text())
    full = m["full_vitaldb_windows"]
    lines = ["## Memory per window: fm training and evaluate's statistics", "",
             "`python bench/memory_per_window.py`: each step in a fresh interpreter on synthetic windows at two "
             "sizes, peak RSS by getrusage. What grows between the sizes is what a larger cohort adds; libraries, "
             "the bootstrap's blocks and one batch do not grow. Projected to the full VitalDB selection's windows "
             f"(train {full['train']:,}, val {full['val']:,}, test {full['test']:,}, per signal hour as at 4×):", "",
             "| step | windows | peak RSS (MB) | bytes per window | windows at full VitalDB | peak RSS projected (MB) "
             "| ≤ 2 GB |",
             "|---|---|---|---|---|---|---|"]
    for step, r in m["steps"].items():
        small, large = r["runs"]
        verdict = "pass" if r["projected_full_mb"] <= RSS_LIMIT_MB else "**fail**"
        lines.append(f"| {step} | {small['windows']:,} / {large['windows']:,} | {small['peak_rss_mb']:,} / "
                     f"{large['peak_rss_mb']:,} | {r['bytes_per_window']:,} | {r['windows_at_full']:,} | "
                     f"{r['projected_full_mb']:,} | {verdict} |")
    return lines + [""]


STORAGE_VARIANTS = {"float16": "windows.dtype and embed.dtype float16", "embed16": "embed.dtype float16"}


def statistics_sections(results: Path, scale: dict | None) -> list:
    """evaluate's statistics before and after per-subject tables (bench/evaluate_statistics.py), and their
    share of the evaluate stage's wall time in the scale runs."""
    path = results / "evaluate_statistics.json"
    if not path.exists():
        return []
    e = json.loads(path.read_text())
    now, before = e["runs"]["now"], e["runs"].get("before", {})
    lines = ["## evaluate's statistics: per-subject tables", "",
             "`python bench/evaluate_statistics.py --before REV` at commit "
             f"{e['commit']}{' against ' + e['before_commit'] if before else ''}: everything evaluate does after "
             "inference (every level, subgroup, the backward analysis, the alarms with their val-chosen "
             "operating points, gray zone, MAP-matched AUROC, decision curve; 1,000 subject-bootstrap replicates; "
             "6 scorers) on the default demo's test windows tiled k times as k times the subjects, in a fresh "
             "process on 2 cores. *Bootstrap CIs*: the time inside the subject bootstrap (metrics.with_ci).", "",
             "| scale | windows | subjects | bootstrap CIs (s) | after inference (s) | ms per window | CPU (s) | "
             "peak RSS (MB) |", "|---|---|---|---|---|---|---|---|"]

    def pair(key, scale, digits=1):
        mine = now[scale][key]
        if scale in before:
            return f"{before[scale][key]:,.{digits}f} → **{mine:,.{digits}f}**"
        return f"**{mine:,.{digits}f}**"
    for k in sorted(now, key=float):
        r = now[k]
        lines.append(f"| {times(float(k))} | {r['windows']:,} | {r['subjects']:,} | {pair('bootstrap_ci_s', k)} | "
                     f"{pair('total_s', k)} | {pair('ms_per_window', k, 3)} | {pair('cpu_s', k)} | "
                     f"{pair('peak_rss_mb', k, 0)} |")
    lines.append("")
    rows = {r["scale"]: r for r in (scale or {}).get("rows", [])}
    if 4.0 in rows and "4" in now:
        wall = rows[4.0]["stages"]["evaluate"]["wall_s"]
        lines += [f"At 4× the evaluate stage took {wall:.0f} s in the scale run below: the bootstrap CIs are "
                  f"**{100 * now['4']['bootstrap_ci_s'] / wall:.0f} %** of it, everything after inference "
                  f"{100 * now['4']['total_s'] / wall:.0f} %.", ""]
    lines += ["Every statistic is a count matrix (replicates × subjects) times per-subject tables built once per "
              "scorer and level (lib/eval/metrics.py), so the bootstrap grows with subjects, not windows. Point "
              "estimates and the replicates of counts, Brier, ECE and errors are exact; AUROC and average "
              "precision use the tied-score groups while they fit 4,096 cells, a score grid beyond "
              "(tests/test_metrics.py holds every replicate within 1e-3 of the exact one). On the default demo "
              "the reported metrics are the same: point estimates bit-identical, CIs within 5e-4. What still "
              "grows with windows is per-window work done once: the tables' sums, calibration slopes and the "
              "alarm simulation of the operating-point search on val.", ""]
    return lines


def _now_and_before(results: Path, stem: str) -> tuple:
    now, before = results / f"{stem}.json", results / f"{stem}_before.json"
    return (json.loads(now.read_text()) if now.exists() else None,
            json.loads(before.read_text()) if before.exists() else None)


def _change(before, now, digits: int = 3) -> str:
    if before is None:
        return f"**{now:.{digits}f}**"
    return f"{before:.{digits}f} → **{now:.{digits}f}** ({before / now:.1f}×)" if now else f"{before:.{digits}f} → 0"


def _rate_section(results: Path, script: str, title: str, same: str, what, columns: list) -> tuple:
    """(now, before, the section's title, text and table header) of a per-signal-hour benchmark's JSON, now and
    at its before-commit (`what(now)`: the text; the last three columns in CPU s/h); (None, None, []) without it."""
    now, before = _now_and_before(results, script)
    if now is None:
        return None, None, []
    at = f" and at {before['commit']}{same}" if before else ""
    head = [*columns[:2], *(f"{c} (CPU s/h)" for c in columns[2:])]
    return now, before, [f"## {title}", "", f"`python bench/{script}.py` at commit {now['commit']}{at}: {what(now)}",
                         "", f"| {' | '.join(head)} |", "|" + "---|" * len(head)]


def windows_rate_sections(results: Path) -> list:
    """The windows stage's per-case work per signal hour (bench/windows_rate.py), now and before."""
    now, before, lines = _rate_section(
        results, "windows_rate", "The windows stage per signal hour", " (the same recordings)",
        lambda r: f"{r['cases_per_srate']} simulated demo cases ({r['minutes'][0]:g}-{r['minutes'][1]:g} min) per "
                  "sample rate, each windowed in one process as one worker of the stage does it (`process_case`, then "
                  "the HDF5 append), with the train/val rule and with the test split's overlapping rule; CPU seconds "
                  "per signal hour, medians over rounds. The stage runs windows.workers of these at once.",
        ["sample rate", "rule", "process_case", "HDF5 append", "both"])
    if now is None:
        return []
    for srate, r in now["srates"].items():
        b = (before or {}).get("srates", {}).get(srate)
        for rule in ("train", "test"):
            cells = []
            for step in ("process_case", "write"):
                cells.append(_change(b[rule][step]["cpu_s_per_signal_hour"] if b else None,
                                     r[rule][step]["cpu_s_per_signal_hour"]))
            both = sum(r[rule][step]["cpu_s_per_signal_hour"] for step in ("process_case", "write"))
            both_before = (sum(b[rule][step]["cpu_s_per_signal_hour"] for step in ("process_case", "write"))
                           if b else None)
            lines.append(f"| {float(srate):g} Hz | {rule} | {cells[0]} | {cells[1]} | {_change(both_before, both)} |")
    steps = list(now["srates"].values())[-1].get("cpu_s_per_signal_hour_by_step", {})
    if steps:
        top = ", ".join(f"{name.rsplit('.', 1)[-1]} {v:.3f}" for name, v in list(steps.items())[1:6])
        lines += ["", f"Where it goes now at {float(list(now['srates'])[-1]):g} Hz (CPU s/h, pyinstrument; "
                  f"`bench/results/profile_windows_rate_*.txt`): {top}."]
    return lines + [""]


def simulator_rate_sections(results: Path) -> list:
    """The demo simulator per signal hour (bench/simulator_rate.py), now and before."""
    now, before, lines = _rate_section(
        results, "simulator_rate", "The demo simulator per signal hour", "",
        lambda r: f"{r['cases_per_cohort']} cases per cohort simulated and written as one worker of the cohort "
                  "stage does it (`simulate_case`, then `write_vital`); CPU seconds per signal hour, medians over "
                  "rounds. The recordings' content is bit-identical; the files are gzip level 1 "
                  "(lib/data/vital_io.py GZIP_LEVEL), ~10 % larger than at level 6.",
        ["cohort", "sample rate", "simulate", "write", "both"])
    if now is None:
        return []
    for name, r in now["cohorts"].items():
        b = (before or {}).get("cohorts", {}).get(name)
        cells = [_change(b[step]["cpu_s_per_signal_hour"] if b else None, r[step]["cpu_s_per_signal_hour"])
                 for step in ("simulate", "write", "total")]
        lines.append(f"| {name} | {r['srate_hz']:g} Hz | {' | '.join(cells)} |")
    return lines + [""]


def storage_sections(results: Path) -> list:
    """float16 storage against the default float32 (bench/variant_metrics.py): outputs and metrics."""
    checks = {name: json.loads((results / f"{name}_metrics.json").read_text())
              for name in STORAGE_VARIANTS if (results / f"{name}_metrics.json").exists()}
    if not checks:
        return []
    lines = ["## Storage: float16 windows and embeddings", "",
             "`python bench/variant_metrics.py NAME -S ...` on the default demo (same test split): the outputs of "
             "the windows and embed stages (dvc.lock sizes) and the reported metrics (metrics/evaluate/metrics.json) "
             "against the default float32.", "",
             "| variant | windows outputs (MB) | embeddings (MB) | metrics unchanged at 3 decimals | largest change "
             "| changed at 3 decimals (default → variant) |",
             "|---|---|---|---|---|---|"]
    for name, c in checks.items():
        before, after = c["outs_mb"]["default"], c["outs_mb"][name]
        changed = "; ".join(f"{k} {c['metrics'][k]['default']:.4f} → {c['metrics'][k][name]:.4f}"
                            for k in c["changed_at_3_decimals"]) or "none"
        lines.append(f"| `{c['command'].split(' (')[0]}` ({STORAGE_VARIANTS[name]}) | {before['windows']:,.0f} → "
                     f"{after['windows']:,.0f} | {before['embed']:,.0f} → {after['embed']:,.0f} | "
                     f"{len(c['metrics']) - len(c['changed_at_3_decimals'])} of {len(c['metrics'])} | "
                     f"{c['max_abs_change']:.1e} | {changed} |")
    return lines + [""]


def filter_sections(results: Path) -> list:
    """The windows files' `signals`: dtype x HDF5 filter (bench/storage.py)."""
    path = results / "storage.json"
    if not path.exists():
        return []
    st = json.loads(path.read_text())
    return ["## Windows files: dtype and HDF5 filter", "",
            f"`python bench/storage.py` on {st['windows']:,} simulated demo windows (files in the page cache): "
            "MB of `signals` per 1,000 windows, write, sequential read (as inference reads) and random "
            "64-window batches (as training reads), windows/s. lib/data/windows_h5.py's SIGNAL_FILTER follows it.",
            "", "| dtype | filter | MB per 1,000 | write | sequential read | random batches |",
            "|---|---|---|---|---|---|",
            *[f"| {r['dtype']} | {r['filter']} | {r['mb_per_1000']:.2f} | {r['write_windows_s']:,.0f} | "
              f"{r['seq_windows_s']:,.0f} | {r['random_windows_s']:,.0f} |" for r in st["rows"]], ""]


def gpu_sections(results: Path, proj: dict | None, rows: list) -> list:
    """The whole pipeline measured on a GPU host (bench/gpu.py; gpu_pipeline_*.json: an earlier version of it)."""
    runs = sorted(results.glob("gpu_*.json"),
                  key=lambda p: (not p.name.startswith("gpu_pipeline_"), int(re.sub(r"\D", "", p.stem))))
    if not runs:
        return []
    g = json.loads(runs[-1].read_text())
    gpu = g["environment"]["torch"]
    hours, target = g["signal_hours"], (proj or {}).get("target", {"hours": 13123})["hours"]
    cpu_embed = rows[-1]["stages"]["embed"]["rss_largest_mb"]
    how = (f"`{g['command']}`, with " if "stage_runs" not in g else
           f"an earlier version of `python bench/gpu.py --cases {g['n_cases']}` that ran every stage's `cmd` from "
           "dvc.yaml in order without dvc, with ")
    lines = [
        f"### Measured on one {gpu.get('device', 'GPU')} GPU with {g['host']['cpus']} cores",
        "",
        f"`{runs[-1].relative_to(ROOT)}`: {how}"
        + ", ".join(f"`{k}={v}`" for k, v in g["overrides"].items())
        + f"; torch {gpu.get('version', '?')}. {g['cases']} cases, {hours:,.1f} h, windows "
        f"{g['windows']['train']:,} / {g['windows']['val']:,} / {g['windows']['test']:,}.",
        "",
        "| stage | wall (s) | CPU (s) | s per signal hour | largest process RSS (MB) | GPU memory (MB) |",
        "|---|---|---|---|---|---|",
        *[f"| {name} | {st['wall_s']:.1f} | {n(st.get('cpu_s'))} | {st['wall_s'] / hours:.3f} | "
          f"{st['rss_largest_mb']:,} | {st.get('gpu_mem_mb', 'n/a')} |" for name, st in g["stages"].items()],
        f"| **total** | **{g['stages_wall_s']:.0f}** | | **{g['s_per_signal_hour']:.2f}** | | |",
        "",
        (f"Embed on the GPU: {g['throughput']['embed']['val']['windows_per_s']:,} windows/s (val). "
         if "throughput" in g else "") + "Test AUROC: "
        + ", ".join(f"{k} {v['auroc']:.3f}" for k, v in g["evaluate"].items() if "auroc" in v)
        + " (CUDA kernels and bf16 training autocast: close to the CPU figures, not bit-identical).",
        "",
        f"Linear in signal hours from this one run, {target:,} h take "
        f"**{g['s_per_signal_hour'] * target / 3600:.1f} h** "
        "on this GPU host: an upper bound, since the 2-core runs scale better than linearly and this run's "
        "per-stage fixed costs (process start, CUDA init, imports: seconds per stage) are priced per hour here. "
        "Most of it is CPU work the GPU does not take: evaluate (bootstrap CIs, subgroups, report) and the "
        "cohort and windows stages.",
        "",
        f"Host memory: the CUDA runtime adds about {g['stages']['embed']['rss_largest_mb'] - cpu_embed:,} MB to "
        f"each process that touches the GPU (embed's largest process, against {cpu_embed:,} MB on the 2-core CPU, "
        "where embed's RSS does not grow with the cohort), so "
        f"evaluate's largest process reached {g['stages']['evaluate']['rss_largest_mb']:,} MB at this size: the "
        f"{RSS_LIMIT_MB:,}-MB limit is "
        + ("met on the CPU (table above), not with CUDA loaded."
           if rows[-1]["time_v_max_rss_mb"] <= RSS_LIMIT_MB
           else "not met with CUDA loaded, nor on the CPU at the largest scale (table above)."),
    ]
    if proj:
        lines += ["", f"The assumption-based 16-core + 1 GPU projection above says "
                      f"{proj['total']['gpu_machine_h']:.1f} h: it assumed a 10× speed-up for whole GPU stages, "
                      "which this run does not bear out for evaluate, train and baselines (CPU-bound or "
                      "launch-bound at this size)."]
    return lines + [""]


def scale_sections(s: dict, png: str, results: Path | None = None) -> list:
    rows, proj = sorted(s["rows"], key=lambda r: r["signal_hours"]), s["projection"]
    scales = [r["scale"] for r in rows]
    stages = list(rows[-1]["stages"])
    title = "/".join(times(x) for x in scales)
    lines = [
        f"## Scale: {title} the default demo",
        "",
        f"`python bench/run_all.py --only scale --scales {' '.join(f'{x:g}' for x in scales)}` at commit "
        f"{commits(rows, s['commit'])}: per scale, a fresh clone and "
        "`/usr/bin/time -v dvc exp run --temp -S demo.n_cases=N "
        f"-S splits.fasttrack=false` (N = scale × the default {s['default_cases']} cases; whole train and val, "
        "no fasttrack cap). Wall time per stage runs between dvc's \"Running stage\" lines (DVC's hashing and "
        "caching of the outputs included); RSS is sampled every 0.2 s over the whole process tree (dvc, the "
        "stage, its workers); outputs are the stage's `outs` in the experiment's dvc.lock.",
        "",
    ]
    if s.get("sets"):
        lines += [f"**Quick check, not representative**: extra overrides `{' '.join(s['sets'])}`.", ""]
    lines += [
        "| scale | cases | signal (h) | windows train / val / test | wall (s) | s per signal hour | "
        "peak RSS, process tree (MB) | largest process, `time -v` (MB) | ≤ 2 GB | outputs (MB) | "
        "outputs, windows.dtype and embed.dtype float16 (MB) | DVC cache (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w = r["windows"]
        lines.append(
            f"| {times(r['scale'])} | {r['cases']:,} | {r['signal_hours']:,.1f} | "
            f"{w.get('train', 0):,} / {w.get('val', 0):,} / {w.get('test', 0):,} | {r['wall_s']:,.0f} | "
            f"{r['wall_s'] / r['signal_hours']:.1f} | {n(r['rss_tree_mb'])} | {r['time_v_max_rss_mb']:,} | "
            f"{'pass' if r['time_v_max_rss_mb'] <= RSS_LIMIT_MB else '**fail**'} | {r['outs_mb']:,.0f} | "
            f"{r['outs_float16_mb']:,.0f} | {r['dvc_cache_mb']:,.0f} |")
    if all("matmul_gflops" in r for r in rows):
        rates = ", ".join(f"{times(r['scale'])} {before:.0f} / {after:.0f}"
                          for r in rows for before, after in [r["matmul_gflops"]])
        lines += ["", f"The CPU's float32 matmul rate (2048², torch on 2 threads) before / after each scale: {rates} "
                  "GFLOP/s. On a CPU shared with other work it moves between runs, and every stage's wall time "
                  "with it: compare runs at similar rates."]
    four = next((r for r in rows if r["scale"] == 4), None)
    check = four or rows[-1]
    verdict = "**pass**" if check["time_v_max_rss_mb"] <= RSS_LIMIT_MB else "**FAIL**"
    lines += [
        "",
        f"GNU `time -v` on `{check['command']}`: Maximum resident set size **{check['time_v_max_rss_mb']:,} MB** "
        f"(the largest process of the run) against the limit of 2 GB ({RSS_LIMIT_MB:,} MB): {verdict}."
        + ("" if four else f" (4× was not in this run; this is the largest scale measured, {times(check['scale'])}.)"),
        "",
        "Per stage: wall time (s), cost per signal hour (s/h), log-log slope of wall time against signal hours "
        "(1 = linear, below 1 = better than linear), peak RSS of the largest process and of the process tree (MB), "
        f"outputs at {times(rows[-1]['scale'])} (MB):",
        "",
        "| stage | " + " | ".join(f"wall {times(x)}" for x in scales) + " | "
        + " | ".join(f"s/h {times(x)}" for x in scales) + " | slope | "
        + " | ".join(f"largest / tree {times(x)}" for x in scales) + f" | outputs {times(rows[-1]['scale'])} |",
        "|---|" + "---|" * (3 * len(scales) + 2),
    ]
    for name in stages:
        cells = [r["stages"].get(name, {}) for r in rows]
        lines.append(
            f"| {name} | " + " | ".join(n(c.get("wall_s"), 1) for c in cells) + " | "
            + " | ".join(n(c["wall_s"] / r["signal_hours"], 2) if c else "n/a" for c, r in zip(cells, rows))
            + f" | {n(proj['stages'][name]['slope'], 2)} | "
            + " | ".join(f"{n(c.get('rss_largest_mb'))} / {n(c.get('rss_tree_mb'))}" for c in cells)
            + f" | {n(cells[-1].get('outs_mb'), 1)} |")
    total = proj["total"]
    linear = total["slope"] is not None and total["slope"] <= 1.05
    lines += [
        "| whole run | " + " | ".join(n(r["wall_s"], 1) for r in rows) + " | "
        + " | ".join(n(r["wall_s"] / r["signal_hours"], 2) for r in rows) + f" | {n(total['slope'], 2)} | "
        + " | ".join(f"{n(r['time_v_max_rss_mb'])} / {n(r['rss_tree_mb'])}" for r in rows)
        + f" | {n(rows[-1]['outs_mb'], 1)} |",
        "",
        f"Whole run: log-log slope **{n(total['slope'], 2)}** — "
        + ("linear or better" if linear else "worse than linear" if total["slope"] is not None else "one scale only")
        + f"; outputs' slope {n(proj['disk_slope'], 2)}. DVC's own time outside the stages "
        + ", ".join(f"{times(r['scale'])} {r['dvc_overhead_s']:.0f} s" for r in rows) + ".",
        "",
        f"![scale]({png})",
        "",
    ]
    lines += projection_sections(proj, rows, results)
    lines += gpu_sections(ROOT / "bench" / "results", proj, rows)
    return lines


def at_500_hz(proj: dict, results: Path | None) -> str:
    """The projection's windows stage priced at VitalDB's 500 Hz (bench/windows_rate.py's ratio of CPU per signal
    hour at 500 Hz to 100 Hz, train rule); empty without that benchmark."""
    path = None if results is None else results / "windows_rate.json"
    if path is None or not path.exists() or "windows" not in proj["stages"]:
        return ""
    rates = {float(k): sum(v["train"][step]["cpu_s_per_signal_hour"] for step in ("process_case", "write"))
             for k, v in json.loads(path.read_text())["srates"].items()}
    if not {100.0, 500.0} <= set(rates):
        return ""
    ratio = rates[500.0] / rates[100.0]
    windows = proj["stages"]["windows"]
    more = (ratio - 1) * windows["this_machine_h"]
    return (f"- At 500 Hz the windows stage's per-case work costs {ratio:.1f}× its 100 Hz cost per signal hour "
            f"(*The windows stage per signal hour*): priced at 500 Hz the stage takes "
            f"{windows['this_machine_h'] * ratio:.2f} h instead of {windows['this_machine_h']:.2f} h, the 2-core "
            f"total {proj['total']['this_machine_h'] + more:.1f} h (fixed + per hour: "
            f"{proj['total'].get('affine_h', 0) + (ratio - 1) * windows.get('affine_h', 0):.1f} h).")


def projection_sections(proj: dict, rows: list, results: Path | None = None) -> list:
    target, a = proj["target"], proj["assumed"]
    lines = [
        f"### Projection to the full VitalDB selection ({target['hours']:,} h, {target['cases']:,} cases)",
        "",
        f"From the largest measured scale ({proj['from_hours']:,.1f} h): per stage, the more pessimistic of "
        "linear (its cost per signal hour × the hours) and its fitted power law (log-log slope above). "
        "The 16-core + 1 GPU column is **projected, not measured** (the measured GPU run follows); it divides "
        "the 2-core "
        f"time by {a['cores'] / 2 * a['cpu_efficiency']:g} for the stages spread over worker processes "
        f"(cohort, windows: {a['cores']} workers instead of 2 at {a['cpu_efficiency']:.0%} efficiency) and by "
        f"{a['gpu_speedup']:g} for the stages that run TTM or the CNN (embed, train, calibrate, baselines, "
        "evaluate); the other stages are left as measured. Largest-process RSS: its peak at the largest scale plus "
        "its least-squares growth per signal hour over the scales (never negative) for the remaining hours; "
        "a growth fitted on small scales is mostly noise, which this extrapolation multiplies. The section "
        "*Memory per window* measures what does go on growing, per window. Beside the pessimistic figure, "
        "*fixed + per hour* is the least-squares line through every measured scale (a stage's start-up counted "
        "once, its cost per further signal hour for the rest). The external cohort's stages (external_*) score a "
        "cohort of its own size (external.demo), the same at every scale: they are projected as measured.",
        "",
        "| stage | s per signal hour | slope | linear, 2 cores (h) | power law, 2 cores (h) | "
        f"**2 cores (h)** | fixed + per hour, 2 cores (h) | assumed speed-up | "
        f"**{a['cores']} cores + 1 GPU, projected (h)** | "
        "largest process RSS growth (MB per 1,000 h) | largest process RSS, projected (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {name} | {p['s_per_signal_hour']} | {n(p['slope'], 2)} | {p['linear_h']:,.2f} | "
          f"{p['power_law_h']:,.2f} | {p['this_machine_h']:,.2f} | {n(p.get('affine_h'), 2)} | "
          f"{p['speedup_assumed']:g}× | {p['gpu_machine_h']:,.2f} | {p['rss_mb_per_1000h']:,} | "
          f"{p['rss_largest_mb']:,} |" for name, p in proj["stages"].items()],
        f"| **total** | | {n(proj['total']['slope'], 2)} | | | **{proj['total']['this_machine_h']:,.1f}** | "
        f"**{n(proj['total'].get('affine_h'), 1)}** | | **{proj['total']['gpu_machine_h']:,.1f}** | | "
        f"{proj['total']['rss_largest_mb']:,} |",
        "",
        f"Disk at {target['hours']:,} h (linear in signal hours): outputs **{proj['disk_gb']['outs_mb']:,.1f} GB** "
        f"with windows.dtype and embed.dtype float32, **{proj['disk_gb']['outs_float16_mb']:,.1f} GB** with both "
        "float16 (the windows files' `signals` block and the embeddings cache halve; trend view, labels and the "
        "rest stay), plus the DVC cache's copy "
        f"(**{proj['disk_gb']['dvc_cache_mb']:,.1f} GB** at float32 as measured; none with a link cache.type).",
        "",
        "Assumptions and limits of the projection:",
        "",
        f"- CPU efficiency {a['cpu_efficiency']:.0%}: independent cases over worker processes, assumed close to "
        "linear; not measured beyond 2 cores.",
        f"- GPU speed-up {a['gpu_speedup']:g}×: the CPU reaches tens of GFLOP/s on TTM (inference section); one "
        "datacentre GPU sustaining ≥ 0.5 TFLOP/s on TTM's small matmuls is ≥ 10× that. HDF5 reads, the "
        "bootstrap and the LR fits stay on the CPU, so the factor for whole stages is an assumption.",
        "- The demo is simulated at 100 Hz; real VitalDB waves are 500 Hz, so the windows stage reads and "
        "resamples 5× the samples per hour, and the cohort stage is a download (network-bound, "
        "data.download.workers), not a simulation: both are priced here at the demo's rate.",
        "- Stages that are small at every measured scale (splits, cv) are extrapolated all the same; a slope "
        "fitted over a narrow range of hours is noisy, hence the pessimistic choice per stage.",
        *filter(None, [at_500_hz(proj, results)]),
        "",
    ]
    return lines


def write_results(f: dict, path: Path, png: Path | None = None) -> None:
    png = png or path.parent / "results" / "scaling.png"
    lines = [
        "# Performance figures",
        "",
        "Written whole by `python bench/run_all.py` (one command; raw numbers in `bench/results/run_all.json`, "
        f"`--only SECTION` remeasures one) at commit {f['commit']} on a CPU with {f['cpu']}, no GPU, torch "
        f"on {f['torch_threads']} threads. Timings on a 2-core CPU shared with other work vary by about ±10 % "
        "between runs.",
        "",
        *default_sections(f),
        *engine_sections(png.parent),
        *score_sections(png.parent),
        *statistics_sections(png.parent, f.get("scale")),
        *windows_rate_sections(png.parent),
        *simulator_rate_sections(png.parent),
        *storage_sections(png.parent),
        *filter_sections(png.parent),
        *memory_sections(png.parent),
    ]
    if "scale" in f:
        lines += scale_sections(f["scale"], os.path.relpath(png, path.parent), png.parent)
    else:
        lines += ["## Scale", "", "Not measured yet: `python bench/run_all.py --only scale`.", ""]
    calibration = f.get("demo_calibration")
    if calibration is None and (png.parent / "demo_calibration.json").exists():
        calibration = json.loads((png.parent / "demo_calibration.json").read_text())
    if calibration:
        lines += ["## Demo simulator against published figures", "",
                  "`python bench/run_all.py --only calibration` (fast path: 1-Hz MAP only; the same check as "
                  "tests/test_demo_calibration.py):", "", calibration["markdown"], ""]
    path.write_text("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    write_results(json.loads((args.results / "run_all.json").read_text()), args.out, args.results / "scaling.png")


if __name__ == "__main__":
    main()
