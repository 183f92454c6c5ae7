"""Reading and writing recordings (`.vital`, WFDB, parquet) with the `vitaldb` package.

Every track is read at its own sample rate from the file's common time base (`dtstart`), so
tracks recorded at different rates stay aligned; resampling happens later, in `lib.signal.filters`.
"""
import datetime
import gzip
import zlib
from pathlib import Path

import numpy as np
import vitaldb
import wfdb

from lib.core.atomic import atomic_path
from lib.core.errors import CaseError, PipelineError
from lib.core.params import track_aliases
from lib.core.schema import NUMERIC_TRENDS


def write_vital(path, signals: dict, srate: float, dtstart: float, units: dict, numerics: dict | None = None) -> None:
    """Write wave tracks {name: samples} sharing one start time to a `.vital` file, atomically.

    `numerics` {name: (times_s, values)} adds numeric tracks (like a monitor's `Solar8000/ART_MBP`),
    one record per sample at `dtstart + times_s`; a numeric track without samples is left out.
    """
    vf = vitaldb.VitalFile()
    n = max(len(x) for x in signals.values())
    vf.dtstart, vf.dtend = dtstart, dtstart + n / srate
    for name, samples in signals.items():
        vf.add_track(name, [{"dt": dtstart, "val": np.asarray(samples, dtype=np.float32)}],
                     srate=srate, unit=units.get(name, ""))
    for name, (times_s, values) in (numerics or {}).items():
        recs = [{"dt": dtstart + float(t), "val": float(v)} for t, v in zip(times_s, values, strict=True)]
        vf.add_track(name, recs, unit=units.get(name, ""))   # srate 0: a numeric track (type 2)
    _save_vital_reproducibly(vf, path)


# Formats `vitaldb.VitalFile` reads by extension: VitalDB's own, WFDB records (MIMIC-style, the
# header names the record) and vitaldb's parquet export.
RECORDING_EXTENSIONS = (".vital", ".hea", ".parquet")
# A waveform sampled slower than this cannot resolve a heartbeat: most likely a numeric track.
MIN_WAVE_SRATE = 50.0
NUMERIC_TYPE = 2   # vitaldb Track.type of a numeric track (1 wave, 5 string)


def track_names(aliases: dict) -> list:
    """Every track name the aliases allow, in order (what a reader is asked to load)."""
    return [name for names in aliases.values() for name in names]


def is_track(dtname: str, name: str) -> bool:
    """A file's track `dtname` is `name`, matched whole or after the device ('ART' is 'SNUADC/ART',
    never 'SNUADC/ART_MBP' or a loose suffix)."""
    return dtname == name or dtname.endswith("/" + name)


def first_track(names, tracks):
    """The track of `tracks` (names in a file) that the first of the aliases `names` matches
    (`is_track`): the first alias present wins; None when none is."""
    return next((track for name in names for track in tracks if is_track(track, name)), None)


def _find_track(vf, names, numeric: bool = False):
    """The first of `names` the file has as a wave track (or, `numeric`, as a numeric track with samples);
    (None, None) when it has none of them."""
    dtname = first_track(names, [dtname for dtname, trk in vf.trks.items()
                                 if not numeric or (trk.type == NUMERIC_TYPE and trk.recs)])
    return (None, None) if dtname is None else (dtname, vf.trks[dtname])


def numeric_samples(vf, names) -> tuple | None:
    """The first of `names` the file has as a numeric track: (times_s float64, values float64), times in
    seconds from the file's start `vf.dtstart`, the time base of the wave samples (`read_channels`: sample i
    is at i / srate). None when the file has none of them: numeric tracks are optional."""
    _, trk = _find_track(vf, names, numeric=True)
    if trk is None:
        return None
    times = np.array([rec["dt"] for rec in trk.recs], dtype=np.float64) - vf.dtstart
    return times, np.array([rec["val"] for rec in trk.recs], dtype=np.float64)


def _open_wfdb(path: Path, names) -> "vitaldb.VitalFile":
    """A WFDB record as a VitalFile, its signals as wave tracks on the record's time base.

    vitaldb 1.7.2's own WFDB reader mangles local paths (it `lstrip`s the characters of
    'https://physionet.org/files/' from the directory, so '/tmp/...' loses its '/t'); this reads
    the record with `wfdb` and hands the samples to VitalFile the same way.
    """
    header = wfdb.rdheader(str(path.with_suffix("")))
    channels = [n for n in header.sig_name if any(is_track(n, a) for a in names)]
    record = wfdb.rdrecord(str(path.with_suffix("")), channel_names=channels or None, return_res=32)
    start = header.base_datetime.replace(tzinfo=datetime.UTC).timestamp() if header.base_datetime else 0.0
    vf = vitaldb.VitalFile()
    vf.dtstart, vf.dtend = start, start + record.sig_len / record.fs
    for i, name in enumerate(record.sig_name):
        vf.add_track(name, [{"dt": start, "val": record.p_signal[:, i].astype(np.float32)}],
                     srate=float(record.fs), unit=record.units[i])
    return vf


def check_complete(path: Path) -> None:
    """Raise CaseError when a `.vital` file's gzip stream is cut off or damaged.

    vitaldb reads a truncated file without complaint and returns the tracks up to the cut, so
    a cut-off download would pass as a shorter recording (or as one missing its last tracks).
    """
    if path.suffix != ".vital":
        return
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as err:
        raise CaseError(f"{path}: truncated or corrupt vital file ({type(err).__name__}: {err})",
                        "unreadable") from err


def read_channels(path, aliases: dict, verify: bool = False) -> dict:
    """Read one wave track per channel from a recording `vitaldb.VitalFile` can load.

    `aliases` is {channel: track name or [names, first match wins]}; keys of the optional numeric tracks
    (NUMERIC_TRENDS' values, e.g. map_numeric) are not channels and are ignored here (`read_recording`).
    Returns {channel: (samples float32, srate)}, each track at its own rate on the file's common time base.
    Raises CaseError naming the file when it is unreadable, a channel has none of its tracks, or a rate
    is unusable; `verify` first checks the whole file is there (`check_complete`).
    """
    return read_recording(path, aliases, verify)[0]


def read_recording(path, aliases: dict, verify: bool = False, optional=()) -> tuple:
    """`read_channels`' wave channels and the optional numeric tracks, from one read of the file:
    ({channel: (samples, srate)}, {numeric key: (times_s, values) or None}), numeric times on the wave
    samples' time base (`numeric_samples`). Only the numeric keys present in `aliases` are looked for.
    A channel in `optional` that has none of its tracks is left out of the first mapping instead of raising."""
    path = Path(path)
    if not path.is_file():
        raise CaseError(f"{path}: file not found", "file_missing")
    if verify:
        check_complete(path)
    aliases = track_aliases(aliases)
    numeric_keys = [key for key in aliases if key in NUMERIC_TRENDS.values()]
    wanted = track_names(aliases)
    try:
        vf = _open_wfdb(path, wanted) if path.suffix == ".hea" else vitaldb.VitalFile(str(path), wanted)
    except Exception as err:  # vitaldb raises bare gzip/struct/EOF/assert errors on damaged files
        raise CaseError(f"{path}: unreadable recording ({type(err).__name__}: {err})", "unreadable") from err
    if not vf.trks or vf.dtend <= vf.dtstart:
        raise CaseError(f"{path}: no samples (corrupt or truncated file)", "unreadable")
    out = {}
    for channel, names in aliases.items():
        if channel in numeric_keys:
            continue
        name, trk = _find_track(vf, names)
        if (trk is None or not trk.recs) and channel in optional:
            continue
        if trk is None or not trk.recs:
            raise CaseError(f"{path}: required {channel} track is missing (looked for {', '.join(names)}; "
                            "add the file's name to data.tracks)", "missing_track")
        if not trk.srate or not np.isfinite(trk.srate) or trk.srate < MIN_WAVE_SRATE:
            raise CaseError(f"{path}: track {name} has sample rate {trk.srate} Hz; a waveform needs at least "
                            f"{MIN_WAVE_SRATE:g} Hz (is it a numeric track?)", "bad_srate")
        samples = np.asarray(vf.get_track_samples(name, 1.0 / trk.srate), dtype=np.float32)
        out[channel] = (samples, float(trk.srate))
    return out, {key: numeric_samples(vf, aliases[key]) for key in numeric_keys}


def recording_dir(directory) -> Path:
    """`data.vital_dir` as a Path; one clear error when it is not a directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PipelineError(f"data.vital_dir={directory}: directory not found")
    return directory


def recording_files(directory) -> dict:
    """{file stem: path} of the recordings (RECORDING_EXTENSIONS) in a directory."""
    directory = recording_dir(directory)
    files = {}
    for path in sorted(directory.iterdir()):
        if path.suffix in RECORDING_EXTENSIONS and not path.name.startswith("."):
            if path.stem in files:
                raise PipelineError(f"data.vital_dir={directory}: {files[path.stem].name} and {path.name} "
                                    "are the same case; keep one")
            files[path.stem] = path
    return files


def vital_files(vital_dir) -> dict:
    """{caseid: path} for recordings named `<caseid>.<ext>` (VitalDB's naming)."""
    return {int(stem): path for stem, path in recording_files(vital_dir).items() if stem.isdigit()}


# Vital Recorder's display range of the added numeric tracks: a risk in percent.
RISK_DISPLAY_RANGE = (0.0, 100.0)


def _vital_copy_source(src, dst) -> Path:
    """`src` as a Path after checking it can be copied to `dst`: a `.vital` file that is not `dst`."""
    src, dst = Path(src), Path(dst)
    if src.suffix.lower() != ".vital":
        raise PipelineError(f"{src}: --write-vital needs a .vital recording (this is a {src.suffix or 'suffix-less'} "
                            "file); score it without --write-vital")
    if not src.is_file():
        raise PipelineError(f"{src}: file not found")
    if dst.resolve() == src.resolve() or (dst.exists() and dst.samefile(src)):
        raise PipelineError(f"{dst}: is the input recording {src}; choose another output so the recording is kept")
    return src


def _load_whole_vital(src: Path) -> "vitaldb.VitalFile":
    """Every track of a `.vital` file; PipelineError naming it when it is cut off or unreadable."""
    check_complete(src)
    try:
        vf = vitaldb.VitalFile(str(src))
    except Exception as err:  # vitaldb raises bare gzip/struct/EOF/assert errors on damaged files
        raise PipelineError(f"{src}: unreadable recording ({type(err).__name__}: {err})") from err
    # vitaldb prints and swallows some read errors, returning a file without tracks
    if not vf.trks or vf.dtend <= vf.dtstart:
        raise PipelineError(f"{src}: unreadable recording (no samples; corrupt or not a vital file)")
    return vf


def write_risk_tracks(src, dst, times_s, tracks: dict, unit: str = "%") -> None:
    """Copy the `.vital` recording `src` to `dst` with numeric tracks added, atomically.

    `tracks` is {track name ('DEVICE/NAME' or 'NAME'): values (n,)}, sampled at `times_s` (n,) seconds after
    the recording's start (`read_recording`'s time base: 0 is the file's dtstart). Non-finite values (and
    times) get no record; a track with none is left out. A track of that name already in `src` is replaced.
    Every other track is kept with its samples; the gzip header is fixed (`write_vital`), so the same inputs
    give the same bytes. Raises PipelineError for a non-`.vital` or unreadable `src` and for `dst` == `src`.
    """
    src = _vital_copy_source(src, dst)
    vf = _load_whole_vital(src)
    times_s = np.asarray(times_s, dtype=np.float64)
    for name, values in tracks.items():
        values = np.asarray(values, dtype=np.float64)
        if name.count("/") > 1:
            raise PipelineError(f"track name {name!r}: a vital track is 'DEVICE/NAME' (one '/' at most)")
        if values.shape != times_s.shape:
            raise ValueError(f"track {name}: {values.shape} values for {times_s.shape} times")
        _drop_track(vf, name)   # an earlier scoring's track must not survive a track without records
        keep = np.isfinite(values) & np.isfinite(times_s)
        if not keep.any():
            continue
        recs = [{"dt": vf.dtstart + t, "val": v} for t, v in zip(times_s[keep].tolist(), values[keep].tolist())]
        vf.add_track(name, recs, srate=0, unit=unit, mindisp=RISK_DISPLAY_RANGE[0], maxdisp=RISK_DISPLAY_RANGE[1])
        if vf.order:
            vf.order.append(name)   # a file with a display order shows only the tracks it lists
    _save_vital_reproducibly(vf, dst)


def _drop_track(vf, name: str) -> None:
    """Remove track `name` from a loaded VitalFile, if it has one."""
    vf.trks.pop(name, None)
    if name in vf.order:
        vf.order.remove(name)


# gzip level of the files written here: at level 1 a demo recording compresses ~8x faster than at 6 (the
# compression was 80 % of simulating and writing the demo cohort) and comes out ~10 % larger; the
# content, the samples the pipeline reads, is the same at any level.
GZIP_LEVEL = 1


def _save_vital_reproducibly(vf, path) -> None:
    """`vf.to_vital` to `path` atomically. vitaldb's gzip header holds the write time and the temp file's name:
    it is rewritten without them, so the same tracks give byte-identical files (and the same DVC hash)."""
    with atomic_path(path) as tmp:
        # level 0 here: the file is compressed once, below (the bytes are the same, in half the time)
        if not vf.to_vital(str(tmp), compresslevel=0):
            raise PipelineError(f"{path}: vitaldb could not write the file")
        tmp.write_bytes(gzip.compress(gzip.decompress(tmp.read_bytes()), compresslevel=GZIP_LEVEL, mtime=0))
