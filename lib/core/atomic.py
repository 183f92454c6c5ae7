"""Atomic outputs: write to a temporary sibling, then rename, so a crash never leaves a half file."""
import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

from lib.core.errors import PipelineError

_UMASK = os.umask(0)
os.umask(_UMASK)


def _prepare_parent(path: Path) -> None:
    """Create the parent directory, and remove temporaries a killed earlier run left for `path`
    (DVC runs one stage at a time, so no live writer owns them)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PipelineError(f"cannot create output directory {path.parent}: {err.strerror}") from err
    if not os.access(path.parent, os.W_OK):
        raise PipelineError(f"output directory {path.parent} is not writable")
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    _prepare_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the output normal permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path):
    """Yield an empty temporary directory that replaces the directory `path` on success."""
    path = Path(path)
    _prepare_parent(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
