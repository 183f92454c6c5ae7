"""One exception type for problems a user can meet, and the wrapper that turns it into one line."""
import errno
import os
import re
import sys
import traceback
from dataclasses import dataclass

# OSErrors a stage cannot recover from, said in words a user acts on.
DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}


class PipelineError(Exception):
    """A problem with the input, the params or the environment, said in one line.

    The message names the file/case/parameter, what is wrong and, where possible, what to do.
    """


@dataclass(frozen=True)
class CaseSkip:
    """A case that gives no window: the counted reason and the one line printed for it."""

    reason: str
    message: str


class CaseError(PipelineError):
    """A problem with one case: the stage skips it and counts `reason` in its metrics."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def os_error_line(err: OSError) -> str:
    """An OSError (disk full, permission, missing directory) as one line naming the file.

    HDF5's errors are several lines with the file inside ("filename = '...'"); they are reduced
    to the file and the system's words for the errno.
    """
    text = str(err.strerror or err)
    named = re.search(r"filename = '([^']+)'", text)
    where = err.filename or (named.group(1) if named else "an output file")
    words = os.strerror(err.errno) if err.errno else text.splitlines()[0]
    if err.errno in DISK_FULL:
        return f"cannot write {where}: {words} (disk full or file-size limit); free space and rerun"
    if err.errno in NO_PERMISSION:
        return f"cannot write {where}: {words}; choose a writable output directory"
    return f"{where}: {words}"


def _one_line_warning(exc_type, exc_value, _traceback=None) -> None:
    """Errors raised while objects are freed (h5py flushing a file on a full disk) as one line.

    Cython prints them through sys.excepthook, Python through sys.unraisablehook; a stage's own
    uncaught exceptions never get here (run_stage prints those with their traceback)."""
    text = str(exc_value).splitlines()
    print(f"warning: ignored during cleanup: {exc_type.__name__}: {text[0] if text else ''}", file=sys.stderr)


def _stop(line: str, code: int = 2) -> None:
    """Print the error and exit at once. The outputs' temporary files are already removed;
    skipping interpreter teardown keeps a library in a failed state (HDF5 after a failed write)
    from crashing on the way out."""
    print(line, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_stage(main, argv=None):
    """Run a stage's `main`; a PipelineError or an OSError becomes one line on stderr and exit 2,
    any other exception (a bug) its traceback and exit 1.

    Outputs are written atomically (lib.core.atomic), so a stage that stops here leaves none behind.
    """
    sys.excepthook = _one_line_warning
    sys.unraisablehook = lambda hook: _one_line_warning(hook.exc_type, hook.exc_value)
    try:
        main(sys.argv[1:] if argv is None else argv)
    except PipelineError as err:
        _stop(f"error: {err}")
    except OSError as err:
        _stop(f"error: {os_error_line(err)}")
    except Exception:   # a bug: the full traceback, exit 1
        _stop(traceback.format_exc().rstrip(), code=1)
