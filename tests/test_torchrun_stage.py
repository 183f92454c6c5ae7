"""train.nproc_per_node through `dvc repro`: DVC's templating puts it in the train stage's command,
so changing it reruns train, and N > 1 trains under torchrun (here 2 gloo processes on CPU)."""
import json

import yaml
from conftest import dvc, dvc_project


def test_nproc_per_node_runs_the_train_stage_under_torchrun(tiny_pipeline, tmp_path):
    project = dvc_project(tiny_pipeline, tmp_path)
    assert json.loads(dvc(project, "status", "--json", "train").stdout or "{}") == {}

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["nproc_per_node"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    changed = json.loads(dvc(project, "status", "--json", "train").stdout)
    assert "changed command" in json.dumps(changed), changed   # the templated command, not only a param

    run = dvc(project, "repro", "-s", "train")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "train: 2 processes under torchrun" in run.stdout and "2 process(es) on cpu" in run.stdout
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert "--nproc-per-node 2 " in lock["stages"]["train"]["cmd"]
    summary = json.loads((project / "metrics/train/metrics.json").read_text())
    assert summary["epochs_run"] >= 1 and 0.0 <= summary["best_val_auroc"] <= 1.0
    assert json.loads(dvc(project, "status", "--json", "train").stdout or "{}") == {}
