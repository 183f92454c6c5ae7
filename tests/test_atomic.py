import pytest

from lib.core.atomic import atomic_dir, atomic_path, write_json
from lib.core.errors import PipelineError


def test_atomic_path_leaves_nothing_when_the_writer_crashes(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_the_old_file_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"auroc": 0.7})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{")
        raise RuntimeError("crash")
    assert target.read_text().strip().startswith("{\n")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_dir_replaces_whole_directory_on_success_only(tmp_path):
    target = tmp_path / "windows"
    with atomic_dir(target) as tmp:
        (tmp / "train.h5").write_text("x")
    assert (target / "train.h5").exists()
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "val.h5").write_text("x")
        raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["train.h5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["windows"]


def test_unwritable_output_directory_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PipelineError, match="cannot create output directory"):
        write_json(blocker / "sub" / "m.json", {})
