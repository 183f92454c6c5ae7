"""The real VitalDB source: choose cases offline from the case table, download them into a cache.

Selection needs only `clinical_information.csv` (shipped): adults, general anaesthesia, an
arterial line at a chosen site (VitalDB's `aline1`), a minimum case length. Whole subjects are
drawn, so a subject's cases always travel together (the splits stage keeps them in one split).

Downloading goes through `vitaldb.VitalFile(caseid, tracks)` (api.vitaldb.net). Each case is
written atomically to `<cache_dir>/<caseid>.vital` and recorded in `<cache_dir>/progress.json`,
so an interrupted run resumes where it stopped and a complete cache needs no network at all.
Network errors are retried with exponential back-off; a case the server has without the
required tracks is a counted skip; a case that still cannot be fetched stops the run with one line.
"""
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import vitaldb
from tqdm import tqdm

from lib.core.atomic import atomic_path, write_json
from lib.core.config import Criteria, DataConfig
from lib.core.errors import CaseError, PipelineError
from lib.data.vital_io import read_channels, track_names

VITALDB_HOST = "api.vitaldb.net"
PROGRESS_FILE = "progress.json"
# Skips that are facts about the case on the server, so a rerun does not ask again.
PERMANENT_SKIPS = ("missing_track", "bad_srate")



def criteria_masks(clinical: pd.DataFrame, criteria: Criteria) -> dict:
    """{criterion: boolean mask of the cases meeting it}, in the order they are applied."""
    age = pd.to_numeric(clinical["age"], errors="coerce")
    aline = clinical["aline1"].fillna("").astype(str).str.strip().str.lower()
    if criteria.aline_sites:
        has_aline = np.logical_or.reduce([aline.str.contains(site.lower(), regex=False)
                                          for site in criteria.aline_sites])
    else:
        has_aline = aline != ""
    minutes = (pd.to_numeric(clinical["caseend"], errors="coerce")
               - pd.to_numeric(clinical["casestart"], errors="coerce")) / 60
    return {"age": (age >= criteria.min_age).to_numpy(),
            "anaesthesia": clinical["ane_type"].isin(criteria.ane_types).to_numpy(),
            "arterial_line": np.asarray(has_aline),
            "case_length": (minutes >= criteria.min_case_minutes).to_numpy()}


def select_cases(clinical: pd.DataFrame, criteria: Criteria) -> tuple:
    """(eligible rows sorted by caseid, {criterion: cases it excluded, applied in order})."""
    keep = np.ones(len(clinical), dtype=bool)
    excluded = {}
    for name, mask in criteria_masks(clinical, criteria).items():
        excluded[name] = int((keep & ~mask).sum())
        keep &= mask
    return clinical[keep].sort_values("caseid").reset_index(drop=True), excluded


def sample_subjects(rows: pd.DataFrame, max_cases: int, seed: int) -> pd.DataFrame:
    """Up to `max_cases` rows drawn as whole subjects in a seeded random order (0 = all)."""
    if max_cases <= 0 or len(rows) <= max_cases:
        return rows
    subjects = np.sort(rows["subjectid"].unique())
    order = np.random.default_rng(seed).permutation(subjects)
    sizes = rows["subjectid"].value_counts().reindex(order).to_numpy()
    chosen = order[np.cumsum(sizes) <= max_cases]
    return rows[rows["subjectid"].isin(chosen)].sort_values("caseid").reset_index(drop=True)


def open_vitaldb_case(caseid: int, track_names: list):
    """The case's tracks from api.vitaldb.net (the `vitaldb` package's open-data reader)."""
    return vitaldb.VitalFile(int(caseid), track_names)


class VitalDBCache:
    """Downloaded cases in `cache_dir`, with the progress of earlier runs."""

    def __init__(self, cache_dir, aliases: dict, loader=open_vitaldb_case, retries: int = 3,
                 backoff_s: float = 2.0, sleep=time.sleep):
        self.dir = Path(cache_dir)
        self.aliases, self.loader, self.retries, self.backoff_s, self.sleep = aliases, loader, retries, backoff_s, sleep
        self.progress_path = self.dir / PROGRESS_FILE
        try:
            self.progress = json.loads(self.progress_path.read_text()) if self.progress_path.is_file() else {}
        except json.JSONDecodeError:
            self.progress = {}   # a damaged log only costs re-checking the cached files

    def _record(self, caseid: int, entry: dict) -> None:
        self.progress[str(caseid)] = entry
        write_json(self.progress_path, self.progress)

    def _cached(self, caseid: int):
        """The cached file if it is complete (same size as when it was downloaded), else None."""
        entry, path = self.progress.get(str(caseid)), self.dir / f"{caseid}.vital"
        if entry and entry["status"] == "ok" and path.is_file() and path.stat().st_size == entry["bytes"]:
            return path
        return None

    def _download(self, caseid: int) -> Path:
        names = track_names(self.aliases)
        for attempt in range(self.retries + 1):
            try:
                vf = self.loader(caseid, names)
                break
            except Exception as err:   # urllib/socket/gzip errors: the server or the network
                if attempt == self.retries:
                    raise PipelineError(
                        f"case {caseid}: cannot download from {VITALDB_HOST} after {self.retries + 1} tries "
                        f"({type(err).__name__}: {err}); offline? {self.cached_count()} cases are cached in "
                        f"{self.dir}, rerun to resume, or use data.source=local") from err
                self.sleep(self.backoff_s * 2 ** attempt)
        path = self.dir / f"{caseid}.vital"
        with atomic_path(path) as tmp:
            if not vf.trks or not vf.to_vital(str(tmp)):
                raise CaseError(f"case {caseid}: {VITALDB_HOST} has none of the tracks "
                                f"{', '.join(names)}", "missing_track")
        return path

    def cached_count(self) -> int:
        return sum(1 for c in self.progress if self._cached(int(c)))

    def fetch(self, caseids) -> tuple:
        """({caseid: path} of usable cases, {caseid: (reason, message)} of skipped ones)."""
        files, skipped = {}, {}
        for caseid in tqdm(list(caseids), desc="download VitalDB cases", unit="case", disable=None):
            caseid = int(caseid)
            entry = self.progress.get(str(caseid))
            if entry and entry["status"] in PERMANENT_SKIPS:
                skipped[caseid] = (entry["status"], entry["message"])
                continue
            path = self._cached(caseid)
            try:
                if path is None:
                    path = self._download(caseid)
                    read_channels(path, self.aliases, verify=True)
                    self._record(caseid, {"status": "ok", "bytes": path.stat().st_size})
                files[caseid] = path
            except CaseError as err:
                if path is not None and path.exists():
                    path.unlink()
                self._record(caseid, {"status": err.reason, "message": str(err)})
                skipped[caseid] = (err.reason, str(err))
        return files, skipped


def fetch_selected(clinical: pd.DataFrame, cfg: DataConfig) -> tuple:
    """Select eligible cases offline, fetch them through the cache; (files, skipped, selection summary)."""
    eligible, excluded = select_cases(clinical, cfg.select)
    chosen = sample_subjects(eligible, cfg.max_cases, cfg.select.seed)
    cache = VitalDBCache(cfg.cache_dir, cfg.tracks, retries=cfg.retries, backoff_s=cfg.backoff_s)
    files, skipped = cache.fetch(chosen["caseid"])
    selection = {"table_cases": len(clinical), "excluded_by": excluded, "eligible": len(eligible),
                 "eligible_subjects": int(eligible["subjectid"].nunique()), "chosen": len(chosen)}
    return files, skipped, selection
