"""Reading and writing `.vital` files with the `vitaldb` package, and the real VitalDB source.

Every track is read at its own sample rate from the file's common time base (`dtstart`), so
tracks recorded at different rates stay aligned; resampling happens later, in `lib.signals`.
"""
import gzip
import os
from pathlib import Path

import numpy as np
import vitaldb

from lib.atomic import atomic_path
from lib.errors import CaseError, PipelineError

VITALDB_HOST = "api.vitaldb.net"


def write_vital(path, signals: dict, srate: float, dtstart: float, units: dict) -> None:
    """Write wave tracks {name: samples} sharing one start time to a `.vital` file, atomically."""
    vf = vitaldb.VitalFile()
    n = max(len(x) for x in signals.values())
    vf.dtstart, vf.dtend = dtstart, dtstart + n / srate
    for name, samples in signals.items():
        vf.add_track(name, [{"dt": dtstart, "val": np.asarray(samples, dtype=np.float32)}],
                     srate=srate, unit=units.get(name, ""))
    with atomic_path(path) as tmp:
        if not vf.to_vital(str(tmp), compresslevel=6):
            raise PipelineError(f"{path}: vitaldb could not write the file")
        # vitaldb's gzip header holds the write time and the temp file's name: rewrite it without
        # them, so the same cohort gives byte-identical files (and the same DVC hash) every run.
        tmp.write_bytes(gzip.compress(gzip.decompress(tmp.read_bytes()), compresslevel=6, mtime=0))


def read_tracks(path, track_names) -> dict:
    """Read wave tracks from a `.vital` (or other vitaldb-readable) file.

    Returns {name: (samples float32, srate)}. Raises PipelineError naming the file when it is
    unreadable, a track is missing, or a track has no valid sample rate.
    """
    path = Path(path)
    if not path.is_file():
        raise CaseError(f"{path}: file not found", "file_missing")
    try:
        vf = vitaldb.VitalFile(str(path), list(track_names))
    except Exception as err:  # vitaldb raises bare gzip/struct/EOF errors on damaged files
        raise CaseError(f"{path}: unreadable vital file ({type(err).__name__}: {err})", "unreadable") from err
    if vf.dtend <= vf.dtstart:
        raise CaseError(f"{path}: no samples (corrupt or truncated vital file)", "unreadable")
    out = {}
    for name in track_names:
        trk = vf.find_track(name)
        if trk is None or not trk.recs:
            raise CaseError(f"{path}: required track {name} is missing", "missing_track")
        if not trk.srate or trk.srate <= 0 or not np.isfinite(trk.srate):
            raise CaseError(f"{path}: track {name} has an invalid sample rate ({trk.srate})", "bad_srate")
        samples = np.asarray(vf.get_track_samples(name, 1.0 / trk.srate), dtype=np.float32)
        out[name] = (samples, float(trk.srate))
    return out


def vital_files(vital_dir) -> dict:
    """{caseid: path} for `<caseid>.vital` files in a directory (VitalDB's naming)."""
    vital_dir = Path(vital_dir)
    if not vital_dir.is_dir():
        raise PipelineError(f"data.vital_dir={vital_dir}: directory not found")
    files = {}
    for path in sorted(vital_dir.glob("*.vital")):
        if path.stem.isdigit():
            files[int(path.stem)] = path
    return files


def find_vitaldb_cases(track_names) -> set:
    """Case ids on the VitalDB server that have all `track_names` (needs the network)."""
    try:
        return set(vitaldb.find_cases(list(track_names)))
    except Exception as err:
        raise PipelineError(
            f"data.source=vitaldb: cannot reach {VITALDB_HOST} to list cases with tracks "
            f"{', '.join(track_names)} ({type(err).__name__}); work offline with data.source=local "
            "and a directory of downloaded .vital files") from err


def download_vitaldb_case(caseid: int, track_names, cache_dir, loader=vitaldb.VitalFile) -> Path:
    """Return `<cache_dir>/<caseid>.vital`, downloading it through `vitaldb` only when not cached.

    A cached file that no longer reads is downloaded again. The download is written atomically,
    so an interrupted run leaves no half file in the cache.
    """
    path = Path(cache_dir) / f"{caseid}.vital"
    if path.is_file():
        try:
            read_tracks(path, track_names)
            return path
        except PipelineError:
            os.unlink(path)
    try:
        vf = loader(int(caseid), list(track_names))
    except Exception as err:
        raise PipelineError(f"case {caseid}: download from {VITALDB_HOST} failed "
                            f"({type(err).__name__}: {err})") from err
    with atomic_path(path) as tmp:
        vf.to_vital(str(tmp))
    return path
