"""Sharing pipeline outputs through a DVC remote, as docs/operations.md describes.

A tiny git + DVC project (built like dvc.yaml: a stage with only cached outputs, like embed, and
a dependent stage that also writes a `cache: false` metrics file kept in git, like train) runs in
a temporary directory and is pushed, with its run cache, to a local-directory remote. Fresh
`git clone`s then show that:
- a clone has no outputs until `dvc pull`; `dvc pull <stage>` fetches only that stage's, and
  `dvc repro --allow-missing` then runs nothing; `dvc repro --pull` downloads instead of running;
- after `dvc pull` the outputs are byte-identical, `dvc status` is clean, `dvc repro` runs nothing;
- `dvc repro --pull` restores a stage that a teammate already ran and pushed (`dvc push
  --run-cache`) with the same params instead of running it, but only a stage whose outputs are
  all cached (a `cache: false` file is never on the remote); `dvc pull --run-cache` followed by
  a plain `dvc repro` does not (the entries come, the outputs they name do not);
- the remote's credentials file (`dvc remote modify --local`) stays out of git.
Every stage run appends its name to the file named by $RUNLOG, so "ran nothing" is observed,
not inferred from DVC's messages alone.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

_BIN = Path(sys.executable).parent
DVC = [str(_BIN / "dvc")] if (_BIN / "dvc").exists() else [sys.executable, "-m", "dvc"]

MAKE = """\
import os, pathlib, yaml
n = yaml.safe_load(open("params.yaml"))["make"]["n"]
out = pathlib.Path("out")
out.mkdir()
(out / "data.bin").write_bytes(bytes(range(256)) * 64 * n)
(out / "note.txt").write_text(f"n={n}\\n")
open(os.environ["RUNLOG"], "a").write("make\\n")
"""

USE = """\
import hashlib, json, os, pathlib
digest = hashlib.sha256(pathlib.Path("out/data.bin").read_bytes()).hexdigest()
pathlib.Path("result.txt").write_text(digest + "\\n")
pathlib.Path("metrics").mkdir(exist_ok=True)
pathlib.Path("metrics/use.json").write_text(json.dumps({"sha256": digest}))
open(os.environ["RUNLOG"], "a").write("use\\n")
"""

# make's outputs are all cached (like embed's); use also writes a `cache: false` file, as train
# and evaluate do: a teammate's run-cache entry for such a stage names a file no remote holds.
PIPELINE = {"stages": {
    "make": {"cmd": "python make.py", "deps": ["make.py"], "params": ["make.n"], "outs": ["out"]},
    "use": {"cmd": "python use.py", "deps": ["use.py", "out"], "outs": ["result.txt"],
            "metrics": [{"metrics/use.json": {"cache": False}}]},
}}
CACHED = ["out", "result.txt"]    # what dvc push/pull moves; metrics/*.json travel in git


def env(runlog):
    return {**os.environ, "PATH": f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RUNLOG": str(runlog),
            "DVC_NO_ANALYTICS": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def sh(cwd, *args, runlog, check=True):
    """Runs git or dvc in cwd; the completed process (stdout and stderr together)."""
    cmd = DVC + list(args[1:]) if args[0] == "dvc" else list(args)
    result = subprocess.run(cmd, cwd=cwd, env=env(runlog), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=120)
    if check:
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}"
    return result


def runs(runlog):
    return runlog.read_text().split() if runlog.exists() else []


def tree_bytes(project, paths=CACHED):
    """{relative file: bytes} of every file under paths; a missing path gives no entries."""
    files = {}
    for name in paths:
        root = project / name
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            files[path.relative_to(project).as_posix()] = path.read_bytes()
    return files


def set_n(project, n):
    (project / "params.yaml").write_text(yaml.safe_dump({"make": {"n": n}}))


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The original project (run with n=2, then n=1, committed at n=1), pushed with its run cache."""
    base = tmp_path_factory.mktemp("dvc_remote")
    origin, remote, runlog = base / "origin", base / "remote", base / "origin.runlog"
    origin.mkdir()
    sh(origin, "git", "init", "-q", runlog=runlog)
    sh(origin, "dvc", "init", "-q", runlog=runlog)
    sh(origin, "dvc", "config", "core.analytics", "false", runlog=runlog)
    (origin / "make.py").write_text(MAKE)
    (origin / "use.py").write_text(USE)
    (origin / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))

    sh(origin, "dvc", "remote", "add", "-d", "team", str(remote), runlog=runlog)
    sh(origin, "dvc", "remote", "modify", "--local", "team", "jobs", "2", runlog=runlog)  # a "secret"

    set_n(origin, 2)                                             # an earlier experiment, pushed after its run
    sh(origin, "dvc", "repro", runlog=runlog)
    outputs_n2 = tree_bytes(origin, [*CACHED, "metrics"])
    sh(origin, "dvc", "push", "--run-cache", runlog=runlog)
    set_n(origin, 1)                                             # the committed state
    sh(origin, "dvc", "repro", runlog=runlog)
    assert runs(runlog) == ["make", "use", "make", "use"]
    sh(origin, "git", "add", "-A", runlog=runlog)
    sh(origin, "git", "commit", "-q", "-m", "pipeline run at n=1", runlog=runlog)
    sh(origin, "dvc", "push", "--run-cache", runlog=runlog)
    assert (remote / "runs").is_dir(), "dvc push --run-cache wrote no run cache to the remote"
    return {"origin": origin, "base": base, "outputs_n1": tree_bytes(origin), "outputs_n2": outputs_n2}


def clone(team, name):
    """A teammate's fresh git clone of the project, and the file its stage runs are logged to."""
    project, runlog = team["base"] / name, team["base"] / f"{name}.runlog"
    sh(team["base"], "git", "clone", "-q", str(team["origin"]), str(project), runlog=runlog)
    return project, runlog


def test_credentials_stay_out_of_git(team):
    origin = team["origin"]
    runlog = team["base"] / "origin.runlog"
    assert "jobs" in (origin / ".dvc" / "config.local").read_text()
    assert "jobs" not in (origin / ".dvc" / "config").read_text()
    tracked = sh(origin, "git", "ls-files", runlog=runlog).stdout.split()
    assert ".dvc/config" in tracked and ".dvc/config.local" not in tracked
    assert sh(origin, "git", "check-ignore", "-q", ".dvc/config.local", runlog=runlog, check=False).returncode == 0


def test_a_clone_has_no_outputs_until_pulled(team):
    project, runlog = clone(team, "fresh")
    assert tree_bytes(project) == {}                             # git carries no DVC-cached output
    assert (project / "metrics" / "use.json").is_file()          # a cache: false output is in git
    status = sh(project, "dvc", "status", runlog=runlog).stdout
    assert "up to date" not in status and "deleted" in status, status

    sh(project, "dvc", "pull", "use", runlog=runlog)             # one stage's outputs, not its inputs
    assert tree_bytes(project) == tree_bytes(team["origin"], ["result.txt"])
    repro = sh(project, "dvc", "repro", "--allow-missing", runlog=runlog).stdout    # skips what is absent
    assert not (project / "out").exists()
    assert runs(runlog) == [], repro


def test_repro_pull_on_a_fresh_clone_downloads_instead_of_running(team):
    project, runlog = clone(team, "repro_pull_fresh")
    repro = sh(project, "dvc", "repro", "--pull", runlog=runlog).stdout
    assert runs(runlog) == [], repro
    assert tree_bytes(project) == team["outputs_n1"]


def test_pull_gives_identical_outputs_and_repro_runs_nothing(team):
    project, runlog = clone(team, "teammate")
    sh(project, "dvc", "pull", runlog=runlog)
    assert tree_bytes(project) == team["outputs_n1"]
    assert "Data and pipelines are up to date." in sh(project, "dvc", "status", runlog=runlog).stdout

    repro = sh(project, "dvc", "repro", runlog=runlog).stdout
    assert runs(runlog) == [], repro
    assert "Running stage" not in repro and "Stage 'make' didn't change" in repro, repro
    assert sh(project, "git", "status", "--porcelain", runlog=runlog).stdout == ""   # dvc.lock unchanged


def test_repro_pull_restores_a_teammates_earlier_run(team):
    project, runlog = clone(team, "repro_pull")
    sh(project, "dvc", "pull", runlog=runlog)
    set_n(project, 2)                                            # params the origin already ran and pushed
    repro = sh(project, "dvc", "repro", "--pull", runlog=runlog).stdout    # fetches the run cache itself
    assert "Stage 'make' is cached - skipping run" in repro, repro
    # use has a run-cache entry too, but its metrics file was never pushed (cache: false), so it runs
    assert runs(runlog) == ["use"], repro
    assert tree_bytes(project, [*CACHED, "metrics"]) == team["outputs_n2"]

    # `dvc pull --run-cache` brings the entries but not the outputs they name: plain repro still runs
    project, runlog = clone(team, "pull_run_cache")
    sh(project, "dvc", "pull", "--run-cache", runlog=runlog)
    assert any((project / ".dvc" / "cache" / "runs").rglob("*"))
    set_n(project, 2)
    sh(project, "dvc", "repro", runlog=runlog)
    assert runs(runlog) == ["make", "use"]
    assert tree_bytes(project, [*CACHED, "metrics"]) == team["outputs_n2"]
