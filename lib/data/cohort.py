"""The cohort: which cases exist, where their files are, and a per-case summary from the signal.

The manifest (`cases.csv`) has one row per case: caseid, subjectid, path, duration_s,
has_hypotension (MAP < 65 mmHg for >= 1 min anywhere in the recording, derived from the ABP
waveform by `lib.signal.labels`), and `skip_reason` for cases that cannot be used.
"""
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.errors import CaseError, PipelineError
from lib.core.parallel import parallel_map
from lib.core.params import Data, Demo, ExternalDemo, Select
from lib.core.schema import NUMERIC_TRENDS
from lib.data import demo, vital_io, vitaldb_source
from lib.data.vital_io import read_channels, write_vital
from lib.signal import filters, labels

REQUIRED_CLINICAL_COLUMNS = ["caseid", "subjectid", "age", "sex", "height", "weight", "bmi", "asa",
                             "department", "optype", "casestart", "caseend", "anestart", "aneend",
                             "opstart", "opend", "ane_type", "aline1"]
# Demo cases: adults under general anaesthesia with an arterial line at any site.
DEMO_CRITERIA = Select(aline_sites=(), min_case_minutes=0)
DEMO_EPOCH = 4102444800.0  # 2100-01-01 UTC: VitalDB's open data shifts dates the same way


def load_clinical(path, required=REQUIRED_CLINICAL_COLUMNS) -> pd.DataFrame:
    """Read a clinical table in VitalDB's schema; a missing file or column is one clear error.

    Columns of REQUIRED_CLINICAL_COLUMNS beyond `required` are added empty when absent (a table
    for your own recordings needs only caseid and subjectid; subgroups are then 'unknown').
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"clinical table {path} not found")
    try:
        table = pd.read_csv(path)
    except Exception as err:
        raise PipelineError(f"clinical table {path}: unreadable CSV ({err})") from err
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise PipelineError(f"clinical table {path}: missing column(s) {', '.join(missing)} "
                            "(VitalDB's case-table schema is required)")
    if table["caseid"].duplicated().any():
        raise PipelineError(f"clinical table {path}: duplicate caseid values")
    for column in REQUIRED_CLINICAL_COLUMNS:
        if column not in table.columns:
            table[column] = np.nan
    return table


def _simulate_and_write(job, srate, philips=False) -> dict:
    """Simulate and write one case; returns its manifest summary, from the ABP samples as written."""
    caseid, duration_s, has_ioh, patient, seed, path = job
    case = demo.simulate_case(duration_s, srate, has_ioh, np.random.default_rng(seed), patient)
    dtstart = DEMO_EPOCH + caseid * 86400.0
    if philips:   # the second hospital: its monitor's names for the same waves, and no numeric tracks
        signals = {demo.PHILIPS_TRACKS[name]: samples for name, samples in case.signals.items()}
        write_vital(path, signals, srate, dtstart, demo.PHILIPS_UNITS)
    else:
        write_vital(path, case.signals, srate, dtstart, demo.UNITS, case.numerics)
    # The file holds these samples as float32 (write_vital) and every track whole: reading it back
    # would give the same ABP, so its summary is taken here instead (tests/test_demo_cohort.py).
    return summarise_abp(np.asarray(case.signals[demo.ABP], dtype=np.float32), srate)


def _simulate_cohort(out_dir, cases: pd.DataFrame, cfg: Demo, workers: int, philips: bool = False) -> tuple:
    """Simulate the chosen real case rows (seeded by `cfg.seed`), write `<caseid>.vital` files and return
    the rows with the simulated case times and {caseid: manifest summary} (shared by the demo and the
    second hospital)."""
    rng = np.random.default_rng(cfg.seed)
    durations = np.round(rng.uniform(cfg.min_minutes, cfg.max_minutes, len(cases)) * 60).astype(int)
    ioh = demo.choose_ioh_cases(cases, cfg.ioh_fraction, cfg.seed + 1)
    case_seeds = np.random.SeedSequence(cfg.seed).spawn(len(cases))
    patients = [demo.Patient.from_row(row) for _, row in cases.iterrows()]   # baselines from the real row
    jobs = [(int(c), int(d), bool(h), p, s, Path(out_dir) / f"{int(c)}.vital")
            for c, d, h, p, s in zip(cases["caseid"], durations, ioh, patients, case_seeds, strict=True)]
    summaries = parallel_map(partial(_simulate_and_write, srate=cfg.srate, philips=philips), jobs, workers,
                             "simulate second-hospital cases" if philips else "simulate demo cases")
    return demo.demo_clinical_rows(cases, durations), {job[0]: summary for job, summary in zip(jobs, summaries)}


def generate_demo(out_dir, clinical: pd.DataFrame, cfg: Demo, workers: int) -> tuple:
    """Write the simulated demo cohort (`<caseid>.vital` files); returns its clinical rows and
    {caseid: manifest summary} (`summarise_case`'s, taken from the samples written)."""
    eligible, _ = vitaldb_source.select_cases(clinical, DEMO_CRITERIA)
    cases = demo.select_demo_cases(eligible, cfg.n_cases, cfg.n_multi_case_subjects, cfg.seed)
    return _simulate_cohort(out_dir, cases, cfg, workers)


def generate_second_hospital(out_dir, clinical: pd.DataFrame, cfg: ExternalDemo, exclude_subjects,
                             workers: int) -> tuple:
    """Write the simulated second hospital (`<caseid>.vital` files); returns its clinical rows and
    summaries (as generate_demo's).

    The external cohort's default: real case rows as the demo's (`DEMO_CRITERIA`), simulated by the same
    simulator, with a documented shift from the training demo: another seed (`cfg.seed`), older and sicker
    patients (age >= cfg.min_age, ASA >= cfg.min_asa, a larger `ioh_fraction`: more hypotension), 500-Hz
    waves (`cfg.srate`) under Philips IntelliVue track names (PHILIPS_TRACKS in lib/data/demo.py) and no monitor numeric
    tracks. No subject of `exclude_subjects` (the training cohort's) is drawn; one case per subject unless
    `cfg.n_multi_case_subjects` asks for multi-case subjects.
    """
    eligible, _ = vitaldb_source.select_cases(clinical, DEMO_CRITERIA)
    pool = demo.second_hospital_rows(eligible, cfg.min_age, cfg.min_asa, exclude_subjects,
                                     one_case_per_subject=cfg.n_multi_case_subjects == 0)
    if pool["subjectid"].nunique() < cfg.n_cases:
        raise PipelineError(f"external.demo.n_cases={cfg.n_cases}: only {pool['subjectid'].nunique()} subjects are "
                            f"eligible with external.demo.min_age={cfg.min_age:g} and "
                            f"external.demo.min_asa={cfg.min_asa}, outside the training cohort")
    cases = demo.select_demo_cases(pool, cfg.n_cases, cfg.n_multi_case_subjects, cfg.seed)
    return _simulate_cohort(out_dir, cases, cfg, workers, philips=True)


def summarise_case(path, track_aliases: dict, fs: int = 125) -> dict:
    """Duration and whether the case has hypotension, from its ABP waveform; or its skip reason
    (unreadable or truncated file, a channel's track missing, unusable sample rate)."""
    try:
        return summarise_abp(*read_channels(path, track_aliases, verify=True)["abp"], fs)
    except CaseError as err:
        return {"duration_s": 0.0, "has_hypotension": False, "skip_reason": err.reason,
                "skip_message": str(err)}


def _reads_as_simulated(aliases: dict, philips: bool) -> bool:
    """Whether `read_channels` with these track aliases reads each simulated wave track as its own
    channel (so a simulated case's summary is the one reading its file would give)."""
    written = {"abp": demo.ABP, "ppg": demo.PPG, "ecg": demo.ECG}
    if philips:
        written = {channel: demo.PHILIPS_TRACKS[name] for channel, name in written.items()}
    in_file = [*written.values(), *(() if philips else (demo.MAP_NUMERIC, demo.HR_NUMERIC))]
    return all(vital_io.first_track(names, in_file) == written.get(channel)
               for channel, names in vital_io.track_aliases(aliases).items() if channel not in NUMERIC_TRENDS.values())


def summarise_abp(samples: np.ndarray, srate: float, fs: int = 125) -> dict:
    """A readable case's manifest summary from its ABP samples: duration and whether it has hypotension."""
    abp, invalid = filters.resample_to(samples, srate, fs)
    map_1hz = labels.map_per_second(abp, invalid, fs)
    return {"duration_s": round(len(samples) / srate, 2),
            "has_hypotension": labels.has_hypotension(map_1hz), "skip_reason": "", "skip_message": ""}


def build_manifest(clinical: pd.DataFrame, files: dict, track_aliases: dict, workers: int,
                   known: dict | None = None) -> pd.DataFrame:
    """Manifest rows for every clinical case that has a file; cases without one are dropped.
    `known` {caseid: summary}: cases summarised already (the simulator's); the others are read."""
    known = known or {}
    rows = clinical[clinical["caseid"].isin(list(files))].sort_values("caseid")
    paths = [str(files[c]) for c in rows["caseid"]]
    unknown = [path for caseid, path in zip(rows["caseid"], paths) if int(caseid) not in known]
    read = iter(parallel_map(partial(summarise_case, track_aliases=track_aliases), unknown, workers,
                             "summarise cases") if unknown else [])
    summaries = [known[int(c)] if int(c) in known else next(read) for c in rows["caseid"]]
    manifest = pd.DataFrame({"caseid": rows["caseid"].astype(int).to_numpy(),
                             "subjectid": rows["subjectid"].astype(int).to_numpy(), "path": paths})
    summary = pd.DataFrame(summaries)
    for column in ["duration_s", "has_hypotension", "skip_reason", "skip_message"]:
        manifest[column] = summary[column].to_numpy()
    return manifest


def local_files(vital_dir, clinical: pd.DataFrame) -> dict:
    """{caseid: path} of the recordings in `vital_dir` (data.source=local).

    A `file` column in the clinical table names each case's recording (relative to `vital_dir`;
    e.g. WFDB `3000003_0001.hea`); otherwise recordings are matched by name, `<caseid>.<ext>`.
    """
    if "file" not in clinical.columns:
        return vital_io.vital_files(vital_dir)
    vital_dir = vital_io.recording_dir(vital_dir)
    named = clinical.dropna(subset=["file"])
    return {int(c): vital_dir / str(f) for c, f in zip(named["caseid"], named["file"])}


def materialise(out_dir: Path, final_dir: Path, cfg: Data, demo_cfg: Demo, exclude_subjects=frozenset(),
                section: str = "data") -> tuple:
    """The cohort's recordings and manifest, written into `out_dir` (which becomes `final_dir`).

    Returns (manifest, clinical rows of the manifest's cases, download skips {caseid: (reason,
    message)}, VitalDB selection summary or None). Your own recordings (source=local) need only
    caseid and subjectid in their table; the table written is normalised to VitalDB's columns.
    `exclude_subjects`: subjectids never drawn (an external cohort leaves out the training cohort's);
    `demo_cfg` an `ExternalDemo` simulates the second hospital instead of the training demo; `section`
    names the params section in messages (data, external).
    """
    required = ["caseid", "subjectid"] if cfg.source == "local" else REQUIRED_CLINICAL_COLUMNS
    clinical = load_clinical(cfg.clinical_csv, required)
    clinical = clinical[~clinical["subjectid"].isin(list(exclude_subjects))]
    download_skips, selection, simulated = {}, None, None
    if cfg.source == "demo":
        if isinstance(demo_cfg, ExternalDemo):   # exclude_subjects are already out of the table
            clinical, simulated = generate_second_hospital(out_dir / "vital", clinical, demo_cfg, (), cfg.workers)
        else:
            clinical, simulated = generate_demo(out_dir / "vital", clinical, demo_cfg, cfg.workers)
        files = vital_io.vital_files(out_dir / "vital")
    elif cfg.source == "local":
        files = local_files(cfg.vital_dir, clinical)
    else:
        files, download_skips, selection = vitaldb_source.fetch_selected(clinical, cfg)
    if not files:
        raise PipelineError(f"{section}.source={cfg.source}: no recordings found ({section}.vital_dir={cfg.vital_dir}: "
                            "<caseid>.vital/.hea/.parquet, or a file column in the table)")
    if simulated and not _reads_as_simulated(cfg.tracks, isinstance(demo_cfg, ExternalDemo)):
        simulated = None   # the files are read as data.tracks says, whatever the simulator named its tracks
    manifest = build_manifest(clinical, files, cfg.tracks, cfg.workers, known=simulated)
    if cfg.source == "demo":  # the files move with the directory
        manifest["path"] = [str(final_dir / "vital" / Path(f).name) for f in manifest["path"]]
    if manifest.empty:
        raise PipelineError(f"none of the {len(files)} recordings has a caseid in {cfg.clinical_csv}")
    # The normalised table later stages read (evaluate's subgroups); `source` says where the signals came from.
    rows = clinical[clinical["caseid"].isin(manifest["caseid"])].assign(source=cfg.source)
    return manifest, rows, download_skips, selection


def summary(manifest: pd.DataFrame, download_skips: dict, source: str, selection) -> dict:
    """The cohort stage's metrics: usable cases, subjects, hours, skips by reason."""
    usable = manifest[manifest["skip_reason"] == ""]
    skipped = Counter(manifest.loc[manifest["skip_reason"] != "", "skip_reason"])
    skipped.update(reason for reason, _ in download_skips.values())
    out = {"source": source, "cases": int(len(usable)), "subjects": int(usable["subjectid"].nunique()),
           "cases_with_hypotension": int(usable["has_hypotension"].sum()),
           "hours": round(float(usable["duration_s"].sum()) / 3600, 2), "skipped": dict(sorted(skipped.items()))}
    if selection:
        out["selection"] = selection
    return out
