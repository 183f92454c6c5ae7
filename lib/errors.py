"""One exception type for problems a user can meet, and the wrapper that turns it into one line."""
import sys


class PipelineError(Exception):
    """A problem with the input, the params or the environment, said in one line.

    The message names the file/case/parameter, what is wrong and, where possible, what to do.
    """


def run_stage(main, argv=None):
    """Run a stage's `main`; a PipelineError becomes one line on stderr and exit code 2."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


class CaseError(PipelineError):
    """A problem with one case: the stage skips it and counts `reason` in its metrics."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason
