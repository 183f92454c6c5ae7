"""scripts/metrics_noise.py: `make pr-report` labels a metric change against the measured rerun noise."""
import json
import subprocess
import sys

from conftest import ROOT


def write(results, name, kind, metrics):
    (results / f"{name}_metrics.json").write_text(json.dumps({"kind": kind, "command": name, "metrics": metrics}))


def test_changes_are_labelled_against_the_largest_rerun_noise(tmp_path):
    write(tmp_path, "rerun-a", "rerun-noise", {"cnn.auroc": {"default": 0.902, "a": 0.904},
                                               "ttm.auroc": {"default": 0.89, "a": 0.89}})
    write(tmp_path, "rerun-b", "rerun-noise", {"cnn.auroc": {"default": 0.902, "b": 0.901}})
    write(tmp_path, "float16", "variant", {"map_lr.auroc": {"default": 0.91, "float16": 0.95}})   # not noise
    diff = {"metrics/evaluate/metrics.json": {
        "cnn.auroc": {"old": 0.902, "new": 0.9035, "diff": 0.0015},      # within the 0.002 a rerun moved it
        "ttm.auroc": {"old": 0.89, "new": 0.8901, "diff": 0.0001},       # reruns never moved it
        "map_lr.auroc": {"old": 0.91, "new": 0.92, "diff": 0.01},        # no rerun measured it
        "cnn.brier": {"old": 0.05, "new": None}}}
    done = subprocess.run([sys.executable, str(ROOT / "scripts/metrics_noise.py"), "--results", str(tmp_path)],
                          input=json.dumps(diff), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {line.split(" | ")[1]: line.split(" | ")[-1].rstrip(" |") for line in done.stdout.splitlines()
            if line.startswith("| metrics/")}
    assert rows["cnn.auroc"] == "within noise (reruns moved it up to 0.0020)"
    assert rows["ttm.auroc"] == "changed (reruns leave it bit-identical)"
    assert rows["map_lr.auroc"] == "changed (no rerun measured it)"
    assert rows["cnn.brier"] == "new or removed"
    assert "2 forced rerun(s)" in done.stdout


def test_no_change_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts/metrics_noise.py"), "--results", str(tmp_path)],
                          input=json.dumps({"metrics/evaluate/metrics.json": {}}), capture_output=True, text=True)
    assert done.stdout.strip() == "No metrics changed."
