import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

WEIGHTS = ROOT / "models" / "ttm-r2-512-96"
TRACKS = {"abp": "SNUADC/ART", "ppg": "SNUADC/PLETH", "ecg": "SNUADC/ECG_II"}


@pytest.fixture(scope="session")
def clinical():
    from lib.data.cohort import load_clinical
    return load_clinical(ROOT / "data" / "vitaldb" / "clinical_information.csv")


STAGES = ["cohort", "splits", "windows", "embed", "train", "calibrate", "baselines", "evaluate", "external_cohort",
          "external_windows", "external_evaluate"]


def tiny_params():
    """params.yaml for a 12-case demo cohort of 14-16 min recordings (a ~1 min pipeline)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["clinical_csv"] = str(ROOT / "data" / "vitaldb" / "clinical_information.csv")
    params["model"]["weights_dir"] = str(WEIGHTS)
    params["demo"].update(n_cases=12, n_multi_case_subjects=3, min_minutes=14, max_minutes=16,
                          ioh_fraction=0.5, seed=5)
    params["splits"].update(train=0.5, val=0.25, test=0.25, seed=0)
    params["train"].update(epochs=3)
    params["baselines"].update(cnn_epochs=2)
    params["evaluate"].update(bootstrap=200)
    params["external"]["clinical_csv"] = params["data"]["clinical_csv"]
    params["external"]["demo"].update(n_cases=6, min_minutes=14, max_minutes=16, seed=3)
    return params


def stage_command(name, dvc=None, params=None):
    """A stage's command from dvc.yaml, with this interpreter and absolute script paths, and its
    ${section.key} templates filled from `params` (default: the shipped params.yaml), as DVC fills them."""
    dvc = dvc or yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = params or yaml.safe_load((ROOT / "params.yaml").read_text())

    def value(match):
        node = params
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)
    cmd = re.sub(r"\$\{([\w.]+)\}", value, dvc["stages"][name]["cmd"])
    return cmd.replace("python stages/", f"{sys.executable} {ROOT}/stages/")


def run_stage(name, cwd):
    return subprocess.run(stage_command(name), shell=True, cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """Every stage of dvc.yaml run once, in order, on the tiny demo cohort; the work directory."""
    work = tmp_path_factory.mktemp("pipeline")
    (work / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    for name in STAGES:
        result = run_stage(name, work)
        assert result.returncode == 0, f"{name} failed:\n{result.stderr[-3000:]}"
    return work


def dvc(project, *args, **kw):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True,
                          text=True, **kw)


def dvc_project(tiny_pipeline, project):
    """`project`: a DVC project whose lock records the tiny pipeline's outputs up to train."""
    for name in ["stages", "lib"]:
        (project / name).symlink_to(ROOT / name)
    (project / "data" / "vitaldb").mkdir(parents=True)
    (project / "data" / "vitaldb" / "clinical_information.csv").symlink_to(
        ROOT / "data" / "vitaldb" / "clinical_information.csv")
    (project / "models").mkdir()
    shutil.copytree(ROOT / "models" / "ttm-r2-512-96", project / "models" / "ttm-r2-512-96")
    params = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())
    params["model"]["weights_dir"] = "models/ttm-r2-512-96"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    for out in ["data/cohort", "data/splits.json", "data/windows", "data/embeddings", "models/model.pt",
                "metrics/cohort.json", "metrics/splits.json", "metrics/windows.json", "metrics/windows_report",
                "metrics/train"]:
        src, dst = tiny_pipeline / out, project / out
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    assert dvc(project, "init", "--no-scm", "-q").returncode == 0
    committed = dvc(project, "commit", "-f", "-q", "cohort", "splits", "windows", "embed", "train")
    assert committed.returncode == 0, committed.stderr
    return project
