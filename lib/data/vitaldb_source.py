"""The real VitalDB source: choose cases offline from the case table, download them into a cache.

Selection needs only `clinical_information.csv` (shipped): adults, general anaesthesia, an
arterial line at a chosen site (VitalDB's `aline1`), a minimum case length. Whole subjects are
drawn, so a subject's cases always travel together (the splits stage keeps them in one split).

Downloading goes through `vitaldb.VitalFile(caseid, tracks)` (api.vitaldb.net). Each case is
written atomically to `<cache_dir>/<caseid>.vital` and recorded in `<cache_dir>/progress.json`,
so an interrupted run resumes where it stopped and a complete cache needs no network at all.
`data.download.workers` cases are downloaded at once (threads); the results do not depend on it.
Network errors are retried with exponential back-off; a case the server has without the
required tracks is a counted skip; a case that still cannot be fetched stops the run with one line.
"""
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import vitaldb
from tqdm import tqdm

from lib.core.atomic import atomic_path, write_json
from lib.core.errors import CaseError, PipelineError
from lib.core.params import Data, Select
from lib.data.vital_io import read_channels, track_names

VITALDB_HOST = "api.vitaldb.net"
PROGRESS_FILE = "progress.json"
# Seconds and bytes per downloaded case: not in progress.json, whose content must not depend on timing.
TIMINGS_FILE = "timings.json"
# Skips that are facts about the case on the server, so a rerun does not ask again.
PERMANENT_SKIPS = ("missing_track", "bad_srate")



def criteria_masks(clinical: pd.DataFrame, criteria: Select) -> dict:
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


def select_cases(clinical: pd.DataFrame, criteria: Select) -> tuple:
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


def write_reproducibly(vf, tmp: Path, name: str) -> bool:
    """`vf.to_vital` into the file `tmp`, with the same bytes for the same case on every run.

    vitaldb's gzip header holds the write time and the written file's name (here a random
    temporary): the file is written as `name` in a staging folder beside `tmp` (which a later
    atomic write of the case removes if a kill leaves it), and the time stamp is zeroed in place.
    """
    staging = tmp.with_name(tmp.name.removesuffix(".tmp") + "-staging.tmp")
    staging.mkdir()
    try:
        out = staging / name
        if not vf.to_vital(str(out)):
            return False
        with open(out, "r+b") as f:
            f.seek(4)             # gzip header: magic (2), method, flags, then MTIME (4 bytes)
            f.write(bytes(4))
        os.replace(out, tmp)
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _Unreachable(Exception):
    """A case the server could not be reached for after every retry (raised in a download thread)."""

    def __init__(self, caseid: int, tries: int, err: Exception):
        super().__init__(caseid, tries, err)
        self.caseid, self.tries, self.err = caseid, tries, err


class VitalDBCache:
    """Downloaded cases in `cache_dir`, with the progress of earlier runs.

    Cases are downloaded on `workers` threads, not processes: the work is waiting on the network,
    and `vitaldb.VitalFile(caseid, ...)` is safe to run concurrently (each call opens its own
    `urllib.request.urlopen` stream and gzip reader and fills only its own instance; the module
    globals it has, `dftrks`/`dfci`, belong to helpers this code does not call). Only the main
    thread touches `self.progress`, `progress.json` and the timings, one finished case at a time,
    so the cache and progress.json are the same for any number of workers, and a kill at any
    point loses at most the cases in flight.
    """

    def __init__(self, cache_dir, aliases: dict, loader=open_vitaldb_case, retries: int = 3,
                 backoff_s: float = 2.0, sleep=time.sleep, workers: int = 1):
        self.dir = Path(cache_dir)
        self.aliases, self.loader, self.retries, self.backoff_s, self.sleep = aliases, loader, retries, backoff_s, sleep
        self.workers = max(1, int(workers))
        self.progress_path, self.timings_path = self.dir / PROGRESS_FILE, self.dir / TIMINGS_FILE
        self.progress = self._load(self.progress_path)   # a damaged log only costs re-checking the files
        self.timings = self._load(self.timings_path)

    @staticmethod
    def _load(path: Path) -> dict:
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}

    def _record(self, caseid: int, entry: dict, seconds: float) -> None:
        """Log one finished case (main thread only): progress.json, then its timing."""
        self.progress[str(caseid)] = entry
        write_json(self.progress_path, self.progress)
        self.timings[str(caseid)] = {"seconds": round(seconds, 3), "bytes": entry.get("bytes", 0)}
        write_json(self.timings_path, self.timings)

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
                    raise _Unreachable(caseid, self.retries + 1, err) from err
                self.sleep(self.backoff_s * 2 ** attempt)
        path = self.dir / f"{caseid}.vital"
        with atomic_path(path) as tmp:
            if not vf.trks or not write_reproducibly(vf, tmp, path.name):
                raise CaseError(f"case {caseid}: {VITALDB_HOST} has none of the tracks "
                                f"{', '.join(names)}", "missing_track")
        return path

    def _fetch_case(self, caseid: int) -> tuple:
        """(progress entry, seconds) for one case: download and verify it (runs in a download thread)."""
        start, path = time.perf_counter(), None
        try:
            path = self._download(caseid)
            read_channels(path, self.aliases, verify=True)
            entry = {"status": "ok", "bytes": path.stat().st_size}
        except CaseError as err:
            if path is not None and path.exists():
                path.unlink()
            entry = {"status": err.reason, "message": str(err)}
        return entry, time.perf_counter() - start

    def _unreachable_error(self, err: _Unreachable) -> PipelineError:
        return PipelineError(
            f"case {err.caseid}: cannot download from {VITALDB_HOST} after {err.tries} tries "
            f"({type(err.err).__name__}: {err.err}); offline? {self.cached_count()} cases are cached in "
            f"{self.dir}, rerun to resume, or use data.source=local")

    def cached_count(self) -> int:
        return sum(1 for c in self.progress if self._cached(int(c)))

    def _download_all(self, todo: list, progress_bar) -> dict:
        """{caseid: seconds} of the cases of `todo` downloaded on `self.workers` threads.

        At most `workers` cases are in flight. The first case that fails for good stops new
        submissions (those not yet started never are); the ones in flight finish and are logged,
        then the failure of the earliest such case in `todo` order is raised.
        """
        seconds, failed = {}, {}
        queue, running = iter(enumerate(todo)), {}
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="vitaldb-download")
        try:
            while True:
                if not failed:
                    running.update((pool.submit(self._fetch_case, caseid), (index, caseid))
                                   for index, caseid in islice(queue, self.workers - len(running)))
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: running[f][0]):
                    index, caseid = running.pop(future)
                    try:
                        entry, seconds[caseid] = future.result()
                    except BaseException as err:   # incl. a KeyboardInterrupt raised in the thread
                        failed[index] = err
                        continue
                    self._record(caseid, entry, seconds[caseid])
                    progress_bar.update()
        finally:   # a Ctrl-C here: the cases in flight finish, and the finished ones are logged
            pool.shutdown(wait=True, cancel_futures=True)
            for future, (_, caseid) in running.items():
                if not future.cancelled() and future.exception() is None:
                    entry, seconds[caseid] = future.result()
                    self._record(caseid, entry, seconds[caseid])
        if failed:
            err = failed[min(failed)]
            if isinstance(err, _Unreachable):
                raise self._unreachable_error(err) from err.err
            raise err
        return seconds

    def fetch(self, caseids) -> tuple:
        """({caseid: path} of usable cases, {caseid: (reason, message)} of skipped ones), in the
        order of `caseids` whatever the number of workers; one summary line on stderr."""
        start = time.perf_counter()
        caseids = list(dict.fromkeys(int(c) for c in caseids))
        todo = [c for c in caseids if not (self.progress.get(str(c), {}).get("status") in PERMANENT_SKIPS
                                          or self._cached(c))]
        with tqdm(total=len(caseids), initial=len(caseids) - len(todo), desc="download VitalDB cases",
                  unit="case", disable=None) as progress_bar:
            seconds = self._download_all(todo, progress_bar)
        files, skipped = {}, {}
        for caseid in caseids:
            entry = self.progress[str(caseid)]
            if entry["status"] == "ok":
                files[caseid] = self.dir / f"{caseid}.vital"
            else:
                skipped[caseid] = (entry["status"], entry["message"])
        fetched = [c for c in seconds if c in files]
        megabytes = sum(self.progress[str(c)]["bytes"] for c in fetched) / 1e6
        median = f"{statistics.median(seconds.values()):.2f} s/case" if seconds else "- s/case"
        print(f"download: {len(fetched)} cases fetched, {len(files) - len(fetched)} cached, {len(skipped)} skipped "
              f"in {time.perf_counter() - start:.1f} s (median {median}, {megabytes:.1f} MB, "
              f"workers={self.workers}; per case in {self.timings_path})", file=sys.stderr)
        return files, skipped


def fetch_selected(clinical: pd.DataFrame, cfg: Data) -> tuple:
    """Select eligible cases offline, fetch them through the cache; (files, skipped, selection summary)."""
    eligible, excluded = select_cases(clinical, cfg.select)
    chosen = sample_subjects(eligible, cfg.max_cases, cfg.select.seed)
    cache = VitalDBCache(cfg.cache_dir, cfg.tracks, retries=cfg.download.retries,
                         backoff_s=cfg.download.backoff_s, workers=cfg.download.workers)
    files, skipped = cache.fetch(chosen["caseid"])
    selection = {"table_cases": len(clinical), "excluded_by": excluded, "eligible": len(eligible),
                 "eligible_subjects": int(eligible["subjectid"].nunique()), "chosen": len(chosen)}
    return files, skipped, selection
