"""`ttm-ioh`: the command line of a trained workspace (installed by `pip install -e .`).

    ttm-ioh score RECORDING... [--models models] [--out scores] [--write-vital DIR] [--stride N]

scores each recording (`.vital`, WFDB `.hea`, `.parquet`) with the trained model and every baseline
(lib/score.py) and writes, per recording, `<name>.csv` (a row per window: time, current MAP, masked
channels, each scorer's calibrated risk and alarms), `<name>.png` (the timeline) and, with --write-vital,
a copy of the `.vital` file with the model's risk as the numeric track TTM/IOH_RISK. Exit status 1 when
any recording could not be scored (each one line on stderr; the others are still scored), 2 when the model
cannot be loaded.
"""
import argparse
import gc
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from itertools import islice

from lib.core.errors import CaseError, PipelineError
from lib.core.params import Alarm

DEFAULT_ALARM = Alarm()   # evaluate.alarm as params.yaml ships it


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="ttm-ioh", description="TTM r2 intraoperative hypotension model: use it.")
    commands = top.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score recordings with the trained model and every baseline",
                                description=__doc__.split("\n\n")[1].strip().split("\n")[0])
    score.add_argument("recordings", nargs="+", help=".vital, WFDB .hea or .parquet files")
    score.add_argument("--models", default="models", help="the workspace's models/ (model.pt, calibrator.json, "
                       "baselines/) [%(default)s]")
    score.add_argument("--out", default="scores", help="where <name>.csv and <name>.png go [%(default)s]")
    score.add_argument("--write-vital", metavar="DIR", help="also write <name>.vital with the risk track here")
    score.add_argument("--stride", type=int, help="samples between window starts (default: half a window, the "
                       "test split's at evaluate.overlap 0.5)")
    score.add_argument("--device", default="cpu", help="cpu | cuda | auto [%(default)s]")
    defaults = DEFAULT_ALARM
    score.add_argument("--hold-s", type=float, default=defaults.hold_s, help="evaluate.alarm.hold_s [%(default)g]")
    score.add_argument("--refractory-s", type=float, default=defaults.refractory_s,
                       help="evaluate.alarm.refractory_s [%(default)g]")
    score.add_argument("--map-alarm-mmhg", type=float, default=defaults.map_alarm_mmhg,
                       help="the plain MAP alarm's level [%(default)g]")
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.stride is not None and args.stride < 1:
        print("ttm-ioh score: --stride must be >= 1", file=sys.stderr)
        return 2
    alarm = Alarm(hold_s=args.hold_s, refractory_s=args.refractory_s, map_alarm_mmhg=args.map_alarm_mmhg)
    try:
        failed = score_files(args.recordings, args.models, args.out, args.write_vital, args.stride, args.device, alarm)
    except PipelineError as err:
        print(f"ttm-ioh score: {err}", file=sys.stderr)
        return 2
    if failed:
        print(f"ttm-ioh score: {failed} of {len(args.recordings)} recordings could not be scored", file=sys.stderr)
    # Everything is written: spare the interpreter's last collection over torch's and transformers' objects
    # (about a second at exit, more than the scoring of a short recording).
    gc.freeze()
    return 1 if failed else 0


def score_files(paths, models_dir="models", out_dir="scores", vital_dir=None, stride: int | None = None,
                device: str = "cpu", alarm: Alarm = DEFAULT_ALARM) -> int:
    """Score every recording in `paths` and write its outputs (lib/score.py); a recording that cannot be scored
    is one line on stderr and the others are still scored. Returns how many failed.

    Recordings are windowed in two worker processes, started before the model's libraries are imported, while
    the model loads and earlier recordings are scored: on 2 cores a recording costs about the larger of the
    two, not their sum."""
    from lib.data.recording_windows import window_file

    paths = [str(p) for p in paths]
    failed = 0
    with ProcessPoolExecutor(max_workers=max(1, min(2, len(paths)))) as pool:
        queued = iter(paths)
        pending = deque((path, pool.submit(window_file, path, models_dir, stride)) for path in islice(queued, 2))
        from lib.score import MODEL, load_bundle, score_recording, write_outputs  # meanwhile: torch, the model

        bundle = load_bundle(models_dir, device, stride=stride)
        while pending:
            path, future = pending.popleft()
            pending.extend((p, pool.submit(window_file, p, models_dir, stride)) for p in islice(queued, 1))
            try:
                scores = score_recording(path, bundle, alarm, future.result())
                written = write_outputs(scores, out_dir, vital_dir)
            except (CaseError, PipelineError) as err:
                print(f"ttm-ioh score: {err}", file=sys.stderr)
                failed += 1
                continue
            except Exception as err:   # a bug or a file no reader foresaw: one line, and the next file
                print(f"ttm-ioh score: {path}: {type(err).__name__}: {err}", file=sys.stderr)
                failed += 1
                continue
            for name, why in scores.not_scored.items():
                print(f"ttm-ioh score: {path}: {scores.names[name]} not scored ({why}: it reads "
                      f"{', '.join(c.upper() for c in bundle.measured_on(name))})", file=sys.stderr)
            n, n_alarms = len(scores.frame), len(scores.alarm_times[MODEL])
            print(f"{path}: {n} windows scored, {n_alarms} model alarm{'s' if n_alarms != 1 else ''}; "
                  f"wrote {', '.join(str(p) for p in written)}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
