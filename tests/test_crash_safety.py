"""SIGKILL at random points of `dvc repro` never leaves an output that `dvc status` trusts.

A DVC project is built around the tiny pipeline's outputs (`dvc commit`, no rerun); then the
windows and train stages are rerun with `dvc repro -f -s` and the whole process group is killed
at seeded random moments. After every kill, `dvc status` either reports the stage as changed,
or the outputs are complete and byte-identical to an uninterrupted run. The next `dvc repro`
then finishes the stage, and the stage's next write removes the temporaries the kills left.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import dvc, dvc_project

KILLS_PER_STAGE = 3
OUTPUTS = {"windows": ["data/windows"], "train": ["models/model.pt", "metrics/train"]}


def tree_bytes(project, outputs):
    """{relative file: bytes} of every file under the outputs (temporary files excluded)."""
    files = {}
    for out in outputs:
        root = project / out
        for path in ([root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())):
            files[str(path.relative_to(project))] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def project(tiny_pipeline, tmp_path_factory):
    return dvc_project(tiny_pipeline, tmp_path_factory.mktemp("dvc_project"))


def stage_status(project, stage):
    result = dvc(project, "status", "--json", stage)
    assert result.returncode == 0, result.stderr    # DVC itself survives the kill (no stale lock)
    return json.loads(result.stdout or "{}")


@pytest.mark.parametrize("stage", ["windows", "train"])
def test_sigkill_at_random_points_never_leaves_a_trusted_partial_output(project, stage):
    assert stage_status(project, stage) == {}
    started = time.time()
    rerun = dvc(project, "repro", "-f", "-s", stage)          # an uninterrupted run, the reference
    duration = time.time() - started
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    reference = tree_bytes(project, OUTPUTS[stage])

    rng = random.Random(f"crash-{stage}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for _ in range(KILLS_PER_STAGE):
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-f", "-s", stage], cwd=project, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.3, duration))
        os.killpg(proc.pid, signal.SIGKILL)                   # the stage and DVC, like a power cut
        proc.wait()
        status = stage_status(project, stage)
        if status:
            assert stage in status
        else:   # the kill came after the stage had finished: its outputs must be the whole thing
            assert tree_bytes(project, OUTPUTS[stage]) == reference

    assert dvc(project, "repro", stage).returncode == 0              # finishes what the kills left
    assert stage_status(project, stage) == {}
    final = dvc(project, "repro", "-f", "-s", stage)                 # a later write clears stale temporaries
    assert final.returncode == 0, final.stderr[-2000:]
    assert tree_bytes(project, OUTPUTS[stage]) == reference
    leftovers = [p.name for d in ["data", "models", "metrics"] for p in (project / d).iterdir()
                 if p.name.endswith(".tmp")]
    assert leftovers == []
