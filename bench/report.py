"""bench/RESULTS.md from the figures bench/run_all.py measured (bench/results/run_all.json)."""
import json
import sys
from pathlib import Path

GOAL_WINDOWS_PER_S = 2000


def cost(row: dict, what: str) -> float:
    """Seconds per unit of work at one scale: windows stage per signal hour, fm embed+train per window."""
    if what == "windows":
        return row["windows_s"] / row["signal_hours"]
    return (row["embed_s"] + row["train_s"]) / row["train_val_windows"]


def write_results(f: dict, path: Path) -> None:
    inf, repro = f["inference"], f["repro"]
    rows = f["scaling"]
    base = rows[0]
    lines = [
        "# Performance figures",
        "",
        f"Measured by `python bench/run_all.py` (one command; raw numbers in `bench/results/run_all.json`) "
        f"at commit {f['commit']} on the dev machine: {f['cpu']}, no GPU, torch on {f['torch_threads']} threads. "
        "Timings on a shared 2-core VM vary by about ±10 % between runs.",
        "",
        "## Full and no-op `dvc repro`",
        "",
        f"Fresh clone, empty DVC cache, demo cohort: **{repro['full_s']:.0f} s** for the whole pipeline; "
        f"no-op `dvc repro` afterwards: **{repro['noop_s']:.1f} s** (\"{repro['noop_output']}\").",
        "",
        "| stage | wall (s) |",
        "|---|---|",
        *[f"| {stage} | {seconds} |" for stage, seconds in repro["stages_s"].items()],
        "",
        "## TTM inference in `evaluate`",
        "",
        f"`predict` over the {inf['windows']:,} test windows exactly as `evaluate` runs it (checkpoint, "
        "HDF5 chunks of 512, backbone calls of 64 windows, 3 channels × 512 samples):",
        "",
        "| backbone | windows/s |",
        "|---|---|",
        f"| eager PyTorch | {inf['eager_windows_per_s']:,} |",
        f"| TorchScript trace + freeze (what the stages use) | **{inf['frozen_windows_per_s']:,}** |",
        "",
        f"Goal ≥ {GOAL_WINDOWS_PER_S:,} windows/s: "
        f"{'met' if inf['frozen_windows_per_s'] >= GOAL_WINDOWS_PER_S else 'not met on this run'}. "
        f"The backbone costs {inf['gflop_per_window']} GFLOP per window (torch's FlopCounterMode); the CPU's "
        f"measured fp32 matmul rate is {inf['cpu_matmul_gflops']} GFLOP/s (2048² matmul), so inference reaches "
        f"**{100 * inf['share_of_cpu_flops']:.0f} %** of it. TTM's mixers are many small matmuls plus "
        "layer norms and gates, which is why it stays well below a large matmul's rate.",
        "",
        "## Train epoch time per mode (demo windows)",
        "",
        "| mode | train windows per epoch | s per epoch (incl. val scoring) |",
        "|---|---|---|",
        *[f"| {mode} | {m['train_windows_per_epoch']} | {m['epoch_s']} |" for mode, m in f["epochs"].items()],
        "",
        "## Scaling with cohort size",
        "",
        "Demo cohort at 1×, 2×, 4× (48 cases per 1×, no fasttrack cap); wall time and peak RSS of the "
        "process tree (stage + workers).",
        "",
        "| scale | signal (h) | windows stage (s) | × real time | windows RSS (MB) | train+val windows | "
        "embed (s) | train fm (s) | fm RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['scale']}× | {r['signal_hours']} | {r['windows_s']} | {r['windows_x_real_time']:,} | "
          f"{r['windows_rss_mb']} | {r['train_val_windows']:,} | {r['embed_s']} | {r['train_s']} | "
          f"{max(r['embed_rss_mb'], r['train_rss_mb'])} |" for r in rows],
        "",
        "![scaling](results/scaling.png)",
        "",
        "Time per unit of work relative to 1× (1.00 = linear, below = better than linear):",
        "",
        "| scale | windows stage s per signal hour | fm training s per 1,000 windows |",
        "|---|---|---|",
        *[f"| {r['scale']}× | {cost(r, 'windows') / cost(base, 'windows'):.2f} | "
          f"{cost(r, 'fm') / cost(base, 'fm'):.2f} |" for r in rows],
        "",
        "## Profile of the slowest stage",
        "",
        f"The slowest stage of the full run is **{f['profile']['stage']}**; `python bench/run_all.py` writes its "
        f"pyinstrument profile to `bench/results/profile_{f['profile']['stage']}.txt` (generated, not in git).",
        "",
    ]
    kept = path.read_text().partition("## Demo simulator against published figures")[1:] if path.exists() else ()
    path.write_text("\n".join(lines) + ("\n" + "".join(kept) if kept and kept[0] else ""))


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    write_results(json.loads((root / "bench/results/run_all.json").read_text()), root / "bench/RESULTS.md")
    sys.exit(0)
