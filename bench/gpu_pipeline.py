"""The whole DVC pipeline once, without DVC, on a lent GPU machine (bench/gpu_pipeline.sh runs it there).

The device machine has no dvc and no network, so this reads dvc.yaml and runs every stage's `cmd`
itself, in dependency order, from the repository root (PYTHONPATH = the root first, so `lib` is the
checkout's own), with params.yaml overridden for the run:

    demo.n_cases=N  splits.fasttrack=false  data.workers=W  windows.workers=W  data.download.workers=W

(edited in place, a YAML load / set / dump of those keys, restored at the end unless --keep-params;
meant for a throwaway copy: the device's, or a `git clone`; it refuses a checkout with a DVC cache).
Like `dvc repro`, it runs every stage of dvc.yaml, the cross-validation stages too (cv_fold@0..4 and
cv only record `enabled: false` under the default cv.enabled, a few seconds each; --skip-cv drops
them). Each stage's outputs are deleted first, so a stale output of an earlier run is never read.

Measured per stage, with bench/scale.py's own helpers (TreeSampler: peak RSS of the stage's process
tree and of its largest process, sampled every 0.2 s; stage_group; du_mb): wall time, CPU seconds
of the stage's processes, peak RSS, the size of its outs/metrics/plots, and on a GPU the device's
peak memory in use and mean utilisation (NVML). Per run: cases and signal hours (metrics/cohort.json),
windows per split (metrics/windows.json), the throughputs the stages print (embed windows/s per split,
train seconds), each scorer's test AUROC (metrics/evaluate/metrics.json), and the committed CPU
reference (metrics as in git, bench/results/run_all.json) with the deltas where its params match.

usage: python bench/gpu_pipeline.py [--n-cases 220] [--out DIR] [--workers 16] [--fasttrack false|keep]
                                    [--skip-cv] [--stages NAME ...] [--set KEY=VALUE ...] [--deadline-s S]
       python bench/gpu_pipeline.py --check [--require-cuda]     # imports, versions, TTM forward; JSON
       python bench/gpu_pipeline.py --write-dvc-stub DIR         # the `dvc` stand-in dvclive imports

Writes DIR/gpu_pipeline_<N>.json (after every stage, so a failure or a kill keeps what completed),
DIR/stages_<N>.log (every stage's output), DIR/evaluate_metrics_<N>.json and DIR/report_<N>.md, and
prints a table last. Exit 0 when every stage ran, 1 when one failed or the deadline stopped it, 3 when
the environment check failed.
"""
import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import scale  # noqa: E402  (TreeSampler, stage_group, du_mb: measured exactly as the scale benchmark does)

# What `--check` imports. name -> distribution (for its version)
MODULES = {"torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers",
           "huggingface_hub": "huggingface_hub", "safetensors": "safetensors", "datasets": "datasets",
           "tsfm_public": "granite-tsfm", "dvclive": "dvclive", "dvc": None, "vitaldb": "vitaldb",
           "wfdb": "wfdb", "neurokit2": "neurokit2", "pywt": "PyWavelets", "peft": "peft",
           "accelerate": "accelerate", "numpy": "numpy", "pandas": "pandas", "scipy": "scipy",
           "sklearn": "scikit-learn", "h5py": "h5py", "pyarrow": "pyarrow", "matplotlib": "matplotlib",
           "yaml": "PyYAML", "psutil": "psutil", "tqdm": "tqdm", "joblib": "joblib"}
# transformers 4.57 checks these at import; granite-tsfm 0.3.1 needs transformers < 5
MUST_MATCH = {"transformers": "4.57.6", "granite-tsfm": "0.3.1", "tokenizers": "0.22.2",
              "huggingface_hub": "0.36.2", "dvclive": "3.49.1"}
EMBED_LINE = re.compile(r"embed (\w+): ([\d,]+) windows, ([\d,]+) windows/s")
TRAIN_LINE = re.compile(r"train: ([\d.]+) s, best epoch")

# ---------------------------------------------------------------------------------------------
# the dvc stand-in: dvclive 3.49 imports dvc at the top of dvclive/live.py (dvc.exceptions,
# dvc.utils.studio) and opens a dvc Repo in Live(); these modules make it see "no DVC repository",
# exactly what it sees outside one (its files are the same: dvcyaml=False, save_dvc_exp=False).
DVC_STUB = {
    "dvc/__init__.py": '"""Stand-in for dvc (bench/gpu_pipeline.py): what dvclive imports; no repository."""\n'
                       '__version__ = "0+gpu-pipeline-stub"\n',
    "dvc/exceptions.py": "class DvcException(Exception):\n    pass\n\n\n"
                         "class NotDvcRepoError(DvcException):\n    pass\n\n\n"
                         "class InvalidArgumentError(ValueError, DvcException):\n    pass\n",
    "dvc/utils/__init__.py": "",
    "dvc/utils/studio.py": "def get_repo_url(repo):\n    return None\n\n\n"
                           "def get_subrepo_relpath(repo):\n    return ''\n",
    "dvc/repo/__init__.py": "from dvc.exceptions import NotDvcRepoError\n\n\n"
                            "class Repo:\n"
                            "    def __init__(self, *args, **kwargs):\n"
                            "        raise NotDvcRepoError('dvc is not installed here (stand-in)')\n\n"
                            "    @classmethod\n"
                            "    def init(cls, *args, **kwargs):\n"
                            "        raise NotDvcRepoError('dvc is not installed here (stand-in)')\n",
    "dvc/repo/experiments/__init__.py": "",
    "dvc/repo/experiments/refs.py": "class ExpRefInfo:\n"
                                    "    def __init__(self, baseline_sha=None, name=None):\n"
                                    "        self.baseline_sha, self.name = baseline_sha, name\n",
    "dvc/repo/experiments/utils.py": "import uuid\n\n\n"
                                     "def check_ref_format(scm, ref):\n    return None\n\n\n"
                                     "def gen_random_name():\n    return 'gpu-' + uuid.uuid4().hex[:8]\n\n\n"
                                     "def get_random_exp_name(scm, baseline_rev):\n    return gen_random_name()\n",
    "dvc/scm.py": "from dvc.exceptions import DvcException\n\n\n"
                  "class SCMError(DvcException):\n    pass\n\n\n"
                  "class NoSCM:\n    pass\n\n\n"
                  "def Git(*args, **kwargs):\n"
                  "    from scmrepo.exceptions import SCMError as GitSCMError\n"
                  "    raise GitSCMError('no git here (dvc stand-in)')\n",
    "scmrepo/__init__.py": "",
    "scmrepo/exceptions.py": "class SCMError(Exception):\n    pass\n",
}


def write_dvc_stub(target: Path) -> None:
    for rel, text in DVC_STUB.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# ---------------------------------------------------------------------------------------------
# --check: the environment, in its own process (the orchestrator never imports torch)
def check(require_cuda: bool) -> int:
    import importlib
    import importlib.metadata as md
    import importlib.util
    import traceback

    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    out, failures = {"python": sys.version.split()[0], "executable": sys.executable, "modules": {}}, []
    for name, dist in MODULES.items():
        try:
            mod = importlib.import_module(name)
            version, dist_version = getattr(mod, "__version__", None), None   # the module's own first
            if dist:
                with contextlib.suppress(md.PackageNotFoundError):
                    dist_version = md.version(dist)
            out["modules"][name] = {"version": str(version or dist_version), "file": str(getattr(mod, "__file__", ""))}
            if version and dist_version and str(version) != dist_version:   # pywt 1.9.0 says 1.8.0
                out["modules"][name]["dist_version"] = dist_version
        except Exception as err:   # noqa: BLE001 - every failure is reported, then the check fails
            out["modules"][name] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            if name not in ("accelerate",):
                failures.append(f"import {name}: {type(err).__name__}: {str(err)[:300]}")
    for dist, want in MUST_MATCH.items():
        try:
            have = md.version(dist)
        except md.PackageNotFoundError:
            have = None
        if have != want:
            failures.append(f"{dist} {have} found first on sys.path, {want} needed (is /tmp/site first on PYTHONPATH?)")
    out["dvc_is_stub"] = "stub" in out["modules"].get("dvc", {}).get("version", "")
    # every stage script, imported as tests/test_dvc_graph.py does (top-level imports only)
    spec_all = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    scripts = sorted({m.group(1) for st in spec_all.values()
                      for m in [re.search(r"(stages/\S+\.py)", (st.get("do") or st)["cmd"])] if m})
    for script in scripts:
        try:
            spec = importlib.util.spec_from_file_location(f"_stage_{Path(script).stem}", ROOT / script)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        except Exception as err:   # noqa: BLE001
            failures.append(f"import {script}: {type(err).__name__}: {str(err)[:300]}")
    out["stage_scripts"] = scripts
    try:
        import torch

        cuda = torch.cuda.is_available()
        out["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
                        "threads": torch.get_num_threads()}
        if cuda:
            props = torch.cuda.get_device_properties(0)
            out["torch"].update(device=props.name, capability=f"{props.major}.{props.minor}",
                                memory_gb=round(props.total_memory / 2**30, 1),
                                bf16=torch.cuda.is_bf16_supported())
        elif require_cuda:
            failures.append("torch.cuda.is_available() is False: no GPU for the benchmark")
        from lib.model import ttm

        model = ttm.load_ttm(ROOT / "models" / "ttm-r2-512-96")
        dev = torch.device("cuda" if cuda else "cpu")
        with torch.no_grad():
            y = model.to(dev).eval()(past_values=torch.randn(4, 512, 3, device=dev))
        out["ttm_forward"] = list(y.prediction_outputs.shape)
    except Exception:   # noqa: BLE001
        failures.append("torch / TTM: " + traceback.format_exc().strip().splitlines()[-1][:400])
    out["failures"] = failures
    print(json.dumps(out))
    return 3 if failures else 0


# ---------------------------------------------------------------------------------------------
# the pipeline, from dvc.yaml
def load_stages(params: dict) -> list:
    """[(name, group, argv-string, [output paths], [dep paths])] in dvc.yaml order, foreach expanded."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = []
    for name, st in spec.items():
        if "foreach" in st:
            items = st["foreach"]
            if isinstance(items, str):   # ${cv.folds}
                node = params
                for key in items.strip("${} ").split("."):
                    node = node[key]
                items = node
            for item in items:
                do = yaml.safe_load(yaml.safe_dump(st["do"]).replace("${item}", str(item)))
                out.append((f"{name}@{item}", name, do))
        else:
            out.append((name, name, st))
    stages = []
    for name, group, st in out:
        outs = [next(iter(o)) if isinstance(o, dict) else o
                for key in ("outs", "metrics", "plots") for o in st.get(key, [])]
        stages.append({"name": name, "group": group, "cmd": " ".join(str(st["cmd"]).split()),
                       "outs": outs, "deps": [str(d) for d in st.get("deps", [])]})
    return toposort(stages)


def toposort(stages: list) -> list:
    """Dependency order (a dep at, inside or above another stage's output), dvc.yaml order among equals."""
    def under(a, b):
        return a == b or a.startswith(b.rstrip("/") + "/")

    producers = {s["name"]: {p["name"] for p in stages if p is not s for d in s["deps"] for o in p["outs"]
                             if under(d, o) or under(o, d)} for s in stages}
    done, order = set(), []
    while len(order) < len(stages):
        ready = [s for s in stages if s["name"] not in done and producers[s["name"]] <= done]
        if not ready:
            raise SystemExit(f"dvc.yaml: a cycle among {[s['name'] for s in stages if s['name'] not in done]}")
        order.append(ready[0])
        done.add(ready[0]["name"])
    return order


def set_key(params: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = params
    for key in path:
        node = node[key]
    if last not in node:
        raise SystemExit(f"params.yaml has no key {dotted}")
    node[last] = value


def path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return round(scale.du_mb(path) * 2**20) if path.is_dir() else 0


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def headline(metrics) -> dict | None:
    if not isinstance(metrics, dict):
        return None
    out = {name: {k: v for k, v in m.items() if k in ("auroc", "auroc_ci_low", "auroc_ci_high", "auprc",
                                                       "brier", "ece", "auroc_backward")}
           for name, m in metrics.items() if isinstance(m, dict) and "auroc" in m}
    if "test" in metrics:
        out["test"] = metrics["test"]
    return out


class GpuSampler(threading.Thread):
    """Device memory in use (MB, all processes) and utilisation (%) every 0.2 s through NVML; per stage."""

    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        import pynvml

        pynvml.nvmlInit()
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        self.every, self.stage, self.stats, self.done = every, None, {}, threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                mem = self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**20
                util = self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
            except Exception:   # noqa: BLE001 - a failed read is skipped
                time.sleep(self.every)
                continue
            s = self.stats.setdefault(self.stage, {"mem_mb": 0.0, "util_sum": 0.0, "n": 0})
            s["mem_mb"], s["util_sum"], s["n"] = max(s["mem_mb"], mem), s["util_sum"] + util, s["n"] + 1
            time.sleep(self.every)

    def summary(self, stage) -> dict:
        s = self.stats.get(stage)
        if not s or not s["n"]:
            return {}
        return {"gpu_mem_mb": round(s["mem_mb"]), "gpu_util_mean": round(s["util_sum"] / s["n"], 1)}


def run_stage(stage: dict, env: dict, log, deadline: float | None, gpu) -> dict:
    """One stage's command: wall, CPU s, RSS (scale.TreeSampler), GPU; its output appended to `log`."""
    argv = shlex.split(stage["cmd"])
    if re.fullmatch(r"python[0-9.]*", argv[0]):
        argv[0] = sys.executable
    log.write(f"\n===== {stage['name']}: {' '.join(argv)}\n")
    log.flush()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)
    sampler = scale.TreeSampler(proc.pid)
    sampler.stage = stage["name"]
    sampler.start()
    if gpu:
        gpu.stage = stage["name"]
    lines, killed = [], False

    def watchdog():
        nonlocal killed
        while proc.poll() is None:
            if deadline is not None and time.perf_counter() > deadline:
                killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return
            time.sleep(0.5)

    guard = threading.Thread(target=watchdog, daemon=True)
    guard.start()
    for line in proc.stdout:
        lines.append(line)
        log.write(line)
    rc = proc.wait()
    wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    if gpu:
        gpu.stage = None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    log.flush()
    tree, one = sampler.peaks.get(stage["name"], (0, 0))
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    row = {"wall_s": round(wall, 2), "rc": rc, "cpu_s": round(cpu_s, 1),
           "rss_tree_mb": round(tree / 2**20), "rss_largest_mb": round(one / 2**20),
           "outs_bytes": sum(path_bytes(ROOT / o) for o in stage["outs"]),
           **(gpu.summary(stage["name"]) if gpu else {})}
    text = "".join(lines)
    embed = {m.group(1): {"windows": int(m.group(2).replace(",", "")),
                          "windows_per_s": int(m.group(3).replace(",", ""))} for m in EMBED_LINE.finditer(text)}
    if embed:
        row["embed"] = embed
    if m := TRAIN_LINE.search(text):
        row["train_loop_s"] = float(m.group(1))
    if rc:
        row["error_tail"] = "".join(lines[-40:])[-4000:]
        row["killed_by_deadline"] = killed
    return row


def group_rows(runs: dict, stages: list) -> dict:
    """Per dvc.yaml stage (cv_fold@0..4 -> cv_fold, like scale.stage_group): walls and outs summed, peaks max."""
    groups = {}
    for st in stages:
        r = runs.get(st["name"])
        if r is None:
            continue
        g = groups.setdefault(scale.stage_group(st["name"]), {"wall_s": 0.0, "cpu_s": 0.0, "rss_tree_mb": 0,
                                                              "rss_largest_mb": 0, "outs_mb": 0.0, "runs": 0})
        g["wall_s"] = round(g["wall_s"] + r["wall_s"], 2)
        g["cpu_s"] = round(g["cpu_s"] + r["cpu_s"], 1)
        g["outs_mb"] = round(g["outs_mb"] + r["outs_bytes"] / 2**20, 2)
        g["runs"] += 1
        for key in ("rss_tree_mb", "rss_largest_mb", "gpu_mem_mb"):
            if key in r:
                g[key] = max(g.get(key, 0), r[key])
        if "gpu_util_mean" in r:
            g["gpu_util_mean"] = r["gpu_util_mean"] if g["runs"] == 1 else round(
                (g.get("gpu_util_mean", 0) * (g["runs"] - 1) + r["gpu_util_mean"]) / g["runs"], 1)
        if r["rc"]:
            g["rc"] = r["rc"]
    return groups


def reference(original: dict, n_cases: int, fasttrack: bool, extra_sets: list) -> dict:
    """The CPU figures the repository holds for comparison, read before the run overwrites metrics/."""
    ref = {"committed_metrics": {"params": {"demo.n_cases": original["demo"]["n_cases"],
                                            "splits.fasttrack": original["splits"]["fasttrack"]},
                                 "evaluate": headline(read_json(ROOT / "metrics/evaluate/metrics.json")),
                                 "cohort": read_json(ROOT / "metrics/cohort.json")}}
    ref["committed_metrics"]["comparable"] = (not extra_sets and n_cases == original["demo"]["n_cases"]
                                              and fasttrack == bool(original["splits"]["fasttrack"]))
    bench = read_json(ROOT / "bench/results/run_all.json") or {}
    repro = bench.get("repro") or {}
    if repro:
        ref["cpu_repro"] = {"what": f"dvc repro -f, {bench.get('cpu')}, commit {bench.get('commit')}, "
                                    f"{repro.get('cases')} cases, fasttrack {repro.get('fasttrack')}",
                            "wall_s": repro.get("full_s"), "stages_s": repro.get("stages_s"),
                            "comparable": (not extra_sets and repro.get("cases") == n_cases
                                           and bool(repro.get("fasttrack")) == fasttrack)}
    for row in (bench.get("scale") or {}).get("rows", []):
        if row.get("n_cases") == n_cases:   # the scale runs are all fasttrack=false
            ref["cpu_scale_row"] = {"what": f"{row.get('command')} ({bench.get('cpu')}, dvc overhead included)",
                                    "wall_s": row.get("wall_s"),
                                    "stages_s": {k: v.get("wall_s") for k, v in row.get("stages", {}).items()},
                                    "windows": row.get("windows"), "signal_hours": row.get("signal_hours"),
                                    "comparable": not fasttrack and not extra_sets}
    return ref


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-cases", type=int, default=220)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench/results"))
    ap.add_argument("--workers", type=int, default=16, help="data.workers, windows.workers, data.download.workers")
    ap.add_argument("--fasttrack", choices=("false", "keep"), default="false",
                    help="false: splits.fasttrack=false (whole train/val); keep: params.yaml's value")
    ap.add_argument("--skip-cv", action="store_true", help="leave out cv_fold@k and cv (dvc repro runs them)")
    ap.add_argument("--stages", nargs="*", help="only these stages (names or groups), in dependency order")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="more params overrides (YAML values), e.g. train.epochs=2; makes the run not comparable")
    ap.add_argument("--deadline-s", type=float, default=0, help="stop (kill) the running stage after this many s")
    ap.add_argument("--keep-params", action="store_true", help="leave the edited params.yaml in place")
    ap.add_argument("--force", action="store_true", help="run even in a checkout with a DVC cache")
    ap.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--require-cuda", action="store_true", help="the environment check fails without a GPU")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--write-dvc-stub", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BASE_JSON", "NEW_JSON"),
                    help="per-stage speed-up and AUROC difference of two result JSONs (e.g. a CPU run of this "
                         "script with the same overrides, then the GPU run); runs nothing")
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.write_dvc_stub:
        write_dvc_stub(args.write_dvc_stub)
        return 0
    if args.check:
        return check(args.require_cuda)

    t0 = time.perf_counter()
    deadline = t0 + args.deadline_s if args.deadline_s > 0 else None
    if (ROOT / ".dvc" / "cache").is_dir() and any((ROOT / ".dvc" / "cache").iterdir()) and not args.force:
        sys.exit(f"{ROOT} has a DVC cache: this is a working checkout; this script overwrites data/, models/, "
                 "metrics/ and edits params.yaml. Run it in a throwaway copy (git clone) or pass --force.")
    args.out.mkdir(parents=True, exist_ok=True)
    n = args.n_cases
    json_path, log_path = args.out / f"gpu_pipeline_{n}.json", args.out / f"stages_{n}.log"

    params_path = ROOT / "params.yaml"
    original_text = params_path.read_text()
    original = yaml.safe_load(original_text)
    overrides = {"demo.n_cases": n, "data.workers": args.workers, "windows.workers": args.workers,
                 "data.download.workers": args.workers}
    if args.fasttrack == "false":
        overrides["splits.fasttrack"] = False
    for item in args.sets:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    fasttrack = bool(overrides.get("splits.fasttrack", original["splits"]["fasttrack"]))
    result = {"benchmark": "gpu_pipeline", "n_cases": n, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": "python bench/gpu_pipeline.py " + " ".join(sys.argv[1:]), "overrides": overrides,
              "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "node": platform.node()},
              "reference": reference(original, n, fasttrack, args.sets), "complete": False, "json": str(json_path)}

    def save():
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        json_path.write_text(json.dumps(result, indent=1) + "\n")

    env = {**scale.ENV, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if not args.skip_check:
        print("== environment check (imports, versions, TTM forward)", flush=True)
        chk = subprocess.run([sys.executable, __file__, "--check", *(["--require-cuda"] if args.require_cuda else [])],
                             cwd=ROOT, env=env, capture_output=True, text=True)
        try:
            result["environment"] = json.loads(chk.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            result["environment"] = {"failures": ["--check printed no JSON"], "stderr": chk.stderr[-3000:]}
        failures = result["environment"].get("failures", [])
        env_t = result["environment"].get("torch", {})
        print(f"python {result['environment'].get('python')}  torch {env_t.get('version')} (CUDA {env_t.get('cuda')}, "
              f"available {env_t.get('cuda_available')}, {env_t.get('device', 'no GPU')})  transformers "
              f"{result['environment'].get('modules', {}).get('transformers', {}).get('version')}  dvc stub "
              f"{result['environment'].get('dvc_is_stub')}", flush=True)
        if failures or chk.returncode:
            print("ENVIRONMENT CHECK FAILED:\n  " + "\n  ".join(failures or [chk.stderr[-3000:]]), flush=True)
            save()
            return 3

    edited = yaml.safe_load(original_text)
    for key, value in overrides.items():
        set_key(edited, key, value)
    stages = load_stages(edited)
    if args.skip_cv:
        stages = [s for s in stages if s["group"] not in ("cv_fold", "cv")]
    if args.stages:
        stages = [s for s in stages if s["name"] in args.stages or s["group"] in args.stages]
    result["stage_order"] = [s["name"] for s in stages]

    gpu = None
    try:
        gpu = GpuSampler()
        gpu.start()
    except Exception:   # noqa: BLE001 - no NVML / no GPU: no GPU figures
        gpu = None

    params_path.write_text(yaml.safe_dump(edited, sort_keys=False))
    assert all(_get(yaml.safe_load(params_path.read_text()), k) == v for k, v in overrides.items())
    runs, failed = {}, None
    try:
        for st in stages:   # no stale output is ever read: each stage's outputs go first
            for o in st["outs"]:
                p = ROOT / o
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        for p in (ROOT / "models").glob("*.resume"):
            p.unlink()
        print(f"== {len(stages)} stages, n_cases {n}, workers {args.workers}, fasttrack {fasttrack}"
              + (f", deadline {args.deadline_s:.0f} s" if deadline else ""), flush=True)
        with open(log_path, "w") as log:
            for st in stages:
                print(f"-- {st['name']} ...", end=" ", flush=True)
                row = run_stage(st, env, log, deadline, gpu)
                runs[st["name"]] = row
                print(f"{row['wall_s']:.1f} s, rc {row['rc']}, RSS tree {row['rss_tree_mb']} MB"
                      + (f", GPU {row['gpu_mem_mb']} MB {row['gpu_util_mean']} %" if "gpu_mem_mb" in row else "")
                      + "".join(f"; embed {k} {v['windows_per_s']:,} windows/s"
                                for k, v in row.get("embed", {}).items()),
                      flush=True)
                result["stage_runs"], result["stages"] = runs, group_rows(runs, stages)
                save()
                if row["rc"]:
                    failed = st["name"]
                    why = "killed at the deadline" if row.get("killed_by_deadline") else f"exit {row['rc']}"
                    print(f"STAGE {failed} FAILED ({why}); last lines:\n{row['error_tail']}", flush=True)
                    break
    finally:
        if not args.keep_params:
            params_path.write_text(original_text)
        if gpu:
            gpu.done.set()

    result["failed_stage"] = failed
    result["complete"] = failed is None and len(runs) == len(stages)
    try:
        summarise(result, runs, args.out, n)
    except Exception as err:   # noqa: BLE001 - the measurements above are kept whatever goes wrong here
        result["summary_error"] = f"{type(err).__name__}: {err}"
        print(f"summary failed: {result['summary_error']}", flush=True)
    save()
    table(result)
    return 0 if result["complete"] else 1


def summarise(result: dict, runs: dict, out: Path, n: int) -> None:
    """Per-run figures from the stages' metrics files, the throughputs, the AUROCs and their CPU deltas."""
    cohort = read_json(ROOT / "metrics/cohort.json") if "cohort" in runs and not runs["cohort"]["rc"] else None
    windows = read_json(ROOT / "metrics/windows.json") if "windows" in runs and not runs["windows"]["rc"] else None
    if cohort:
        result.update(cases=cohort.get("cases"), signal_hours=cohort.get("hours"))
    if windows:
        result["windows"] = {split: s["windows"] for split, s in windows.items()
                             if isinstance(s, dict) and "windows" in s}
    groups = result.get("stages", {})
    result["stages_wall_s"] = round(sum(g["wall_s"] for g in groups.values()), 1)
    result["outs_mb"] = round(sum(g["outs_mb"] for g in groups.values()), 1)
    if result.get("signal_hours") and result["complete"]:   # a partial run has no cost per hour
        result["s_per_signal_hour"] = round(result["stages_wall_s"] / result["signal_hours"], 3)
    thr = {}
    if "embed" in runs:
        thr["embed"] = runs["embed"].get("embed")
        if result.get("windows"):
            embedded = result["windows"].get("train", 0) + result["windows"].get("val", 0)
            thr["embed_stage_windows_per_s"] = round(embedded / runs["embed"]["wall_s"])
    if "train" in runs and "train_loop_s" in runs["train"]:
        thr["train_loop_s"] = runs["train"]["train_loop_s"]
    if "evaluate" in runs and result.get("windows"):
        thr["evaluate_stage_test_windows_per_s"] = round(result["windows"].get("test", 0) / runs["evaluate"]["wall_s"])
    thr["note"] = ("embed windows/s per split and train loop s are what the stages print; evaluate prints no "
                   "predict rate, so only the stage-level rate (test windows / stage wall) is given")
    result["throughput"] = thr
    if "evaluate" in runs and not runs["evaluate"]["rc"]:
        metrics = read_json(ROOT / "metrics/evaluate/metrics.json")
        result["evaluate"] = headline(metrics)
        if metrics is not None:
            shutil.copy(ROOT / "metrics/evaluate/metrics.json", out / f"evaluate_metrics_{n}.json")
        if (ROOT / "metrics/report.md").is_file():
            shutil.copy(ROOT / "metrics/report.md", out / f"report_{n}.md")
        ref = result["reference"]["committed_metrics"]
        if ref["comparable"] and ref["evaluate"] and result["evaluate"]:
            result["auroc_delta_vs_committed_cpu"] = {
                k: round(v["auroc"] - ref["evaluate"][k]["auroc"], 4) for k, v in result["evaluate"].items()
                if k in ref["evaluate"] and isinstance(v, dict) and v.get("auroc") is not None
                and ref["evaluate"][k].get("auroc") is not None}


def compare(base_path: Path, new_path: Path) -> int:
    base, new = json.loads(base_path.read_text()), json.loads(new_path.read_text())
    differ = {k for k in set(base["overrides"]) | set(new["overrides"])
              if base["overrides"].get(k) != new["overrides"].get(k) and not k.endswith("workers")}
    print(f"{base_path.name} ({base['host']['cpus']} CPUs, "
          f"{base.get('environment', {}).get('torch', {}).get('device', 'no GPU')}) -> {new_path.name} "
          f"({new['host']['cpus']} CPUs, {new.get('environment', {}).get('torch', {}).get('device', 'no GPU')})"
          + (f"; overrides differ: {sorted(differ)}" if differ else ""))
    print(f"{'stage':<10} {'base s':>8} {'new s':>8} {'speed-up':>8}")
    for name, g in new.get("stages", {}).items():
        b, w = base.get("stages", {}).get(name, {}).get("wall_s"), g["wall_s"]
        speedup = f"{b / w:.1f}x" if b and w else "-"
        print(f"{name:<10} {b if b is not None else '-':>8} {w:>8} {speedup:>8}")
    tb, tn = base.get("stages_wall_s"), new.get("stages_wall_s")
    speedup = f"{tb / tn:.1f}x" if tb and tn else "-"
    print(f"{'total':<10} {tb:>8} {tn:>8} {speedup:>8}")
    for k, v in (new.get("evaluate") or {}).items():
        b = (base.get("evaluate") or {}).get(k, {})
        if isinstance(v, dict) and v.get("auroc") is not None and b.get("auroc") is not None:
            print(f"AUROC {k:<14} {b['auroc']:.4f} -> {v['auroc']:.4f} ({v['auroc'] - b['auroc']:+.4f})")
    return 0


def _get(params: dict, dotted: str):
    node = params
    for key in dotted.split("."):
        node = node[key]
    return node


def table(result: dict) -> None:
    env = result.get("environment", {})
    tinfo = env.get("torch", {})
    print(f"\n== gpu_pipeline: {result['n_cases']} cases, {result.get('signal_hours')} h of signal, windows "
          f"{result.get('windows')}; {tinfo.get('device', 'no GPU')}, torch {tinfo.get('version')}, "
          f"{result['host']['cpus']} CPUs")
    ref = result["reference"]
    cpu = next((r for r in (ref.get("cpu_scale_row"), ref.get("cpu_repro")) if r and r.get("comparable")), None)
    head = (f"{'stage':<10} {'wall s':>8} {'cpu s':>8} {'RSS tree':>9} {'largest':>8} {'GPU MB':>7} {'GPU %':>6} "
            f"{'outs MB':>8}")
    print(head + (f" {'CPU ref s':>9} {'speed-up':>8}" if cpu else ""))
    for name, g in result.get("stages", {}).items():
        line = (f"{name:<10} {g['wall_s']:>8.1f} {g['cpu_s']:>8.1f} {g['rss_tree_mb']:>9} {g['rss_largest_mb']:>8} "
                f"{g.get('gpu_mem_mb', '-'):>7} {g.get('gpu_util_mean', '-'):>6} {g['outs_mb']:>8.1f}")
        if cpu:
            c = (cpu.get("stages_s") or {}).get(name)
            if c is None and name == "cv_fold":
                c = sum(v for k, v in (cpu.get("stages_s") or {}).items() if k.startswith("cv_fold")) or None
            speedup = f"{c / g['wall_s']:.1f}x" if c else "-"
            line += f" {c if c is not None else '-':>9} {speedup:>8}"
        print(line + (f"  FAILED rc {g['rc']}" if g.get("rc") else ""))
    print(f"{'total':<10} {result.get('stages_wall_s', 0):>8.1f}   (whole script {result.get('wall_s')} s, "
          f"outs {result.get('outs_mb')} MB)" + (f"; CPU ref {cpu['wall_s']} s: {cpu['what']}" if cpu else ""))
    if result.get("s_per_signal_hour") is not None:
        print(f"s per signal hour: {result['s_per_signal_hour']}")
    thr = result.get("throughput", {})
    if thr.get("embed"):
        print("embed: " + ", ".join(f"{k} {v['windows']:,} windows at {v['windows_per_s']:,}/s"
                                    for k, v in thr["embed"].items()))
    if result.get("evaluate"):
        delta = result.get("auroc_delta_vs_committed_cpu") or {}
        print("test AUROC: " + ", ".join(
            f"{k} " + ("n/a" if v.get("auroc") is None else f"{v['auroc']:.4f}")
            + (f" ({delta[k]:+.4f} vs CPU)" if k in delta else "")
            for k, v in result["evaluate"].items() if isinstance(v, dict) and "auroc" in v))
        if not delta:
            print("(no committed CPU metrics for these params: compare with a CPU run of the same overrides)")
    print(("COMPLETE" if result["complete"] else f"INCOMPLETE: failed at {result.get('failed_stage')}")
          + f"; {result['json']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
