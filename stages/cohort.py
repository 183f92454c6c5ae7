"""Stage cohort: materialise the cases (demo simulation, local files or real VitalDB) and a manifest.

usage: python stages/cohort.py <out_dir> <metrics_json>
"""
import sys
from collections import Counter
from pathlib import Path

from lib.data import cohort
from lib.core import config as params
from lib.data import vital_io
from lib.data import vitaldb_source
from lib.core.atomic import atomic_dir, write_json
from lib.core.errors import PipelineError, run_stage

DATA_KEYS = ["source", "clinical_csv", "vital_dir", "cache_dir", "max_cases", "select", "download", "tracks",
             "workers"]
SELECT_KEYS = ["min_age", "ane_types", "aline_sites", "min_case_minutes", "seed"]
DOWNLOAD_KEYS = ["retries", "backoff_s"]
DEMO_KEYS = ["n_cases", "n_multi_case_subjects", "srate", "min_minutes", "max_minutes", "ioh_fraction", "seed"]
SOURCES = ["demo", "local", "vitaldb"]


def vitaldb_cases(clinical, data, aliases):
    """Select eligible cases offline, fetch them through the cache; (files, skipped, selection summary)."""
    params.require(data["select"], "data.select", SELECT_KEYS)
    params.require(data["download"], "data.download", DOWNLOAD_KEYS)
    eligible, excluded = vitaldb_source.select_cases(clinical, vitaldb_source.Criteria.from_params(data["select"]))
    chosen = vitaldb_source.sample_subjects(eligible, int(data["max_cases"]), int(data["select"]["seed"]))
    cache = vitaldb_source.VitalDBCache(data["cache_dir"], aliases, retries=int(data["download"]["retries"]),
                                        backoff_s=float(data["download"]["backoff_s"]))
    files, skipped = cache.fetch(chosen["caseid"])
    selection = {"table_cases": len(clinical), "excluded_by": excluded, "eligible": len(eligible),
                 "eligible_subjects": int(eligible["subjectid"].nunique()), "chosen": len(chosen)}
    return files, skipped, selection


def main(argv):
    out_dir, metrics_path = Path(argv[0]), argv[1]
    p = params.load("data", "demo")
    data, demo = p["data"], p["demo"]
    params.require(data, "data", DATA_KEYS)
    params.require(demo, "demo", DEMO_KEYS)
    if data["source"] not in SOURCES:
        raise PipelineError(f"params.yaml: data.source={data['source']!r}: expected one of {', '.join(SOURCES)}")
    aliases = vital_io.track_aliases(data["tracks"])
    # Your own recordings need only caseid and subjectid in their table; VitalDB's has them all.
    required = ["caseid", "subjectid"] if data["source"] == "local" else cohort.REQUIRED_CLINICAL_COLUMNS
    clinical = cohort.load_clinical(data["clinical_csv"], required)
    download_skips, selection = {}, None

    with atomic_dir(out_dir) as tmp:
        if data["source"] == "demo":
            clinical = cohort.generate_demo(tmp / "vital", clinical, demo["n_cases"], demo["n_multi_case_subjects"],
                                            demo["srate"], demo["min_minutes"], demo["max_minutes"],
                                            demo["ioh_fraction"], demo["seed"], data["workers"])
            files = vital_io.vital_files(tmp / "vital")
        elif data["source"] == "local":
            files = cohort.local_files(data["vital_dir"], clinical)
        else:
            files, download_skips, selection = vitaldb_cases(clinical, data, aliases)
        if not files:
            raise PipelineError(f"data.source={data['source']}: no recordings found (data.vital_dir="
                                f"{data['vital_dir']}: <caseid>.vital/.hea/.parquet, or a file column in the table)")
        manifest = cohort.build_manifest(clinical, files, aliases, data["workers"])
        if data["source"] == "demo":  # the files move with the directory
            manifest["path"] = [str(out_dir / "vital" / Path(f).name) for f in manifest["path"]]
        if manifest.empty:
            raise PipelineError(f"none of the {len(files)} recordings has a caseid in {data['clinical_csv']}")
        for caseid, (reason, message) in download_skips.items():
            print(f"skip case {caseid}: {message}", file=sys.stderr)
        for row in manifest[manifest["skip_reason"] != ""].itertuples():
            print(f"skip case {row.caseid}: {row.skip_message}", file=sys.stderr)
        manifest.drop(columns="skip_message").to_csv(tmp / "cases.csv", index=False)
        clinical[clinical["caseid"].isin(manifest["caseid"])].to_csv(tmp / "clinical.csv", index=False)

    usable = manifest[manifest["skip_reason"] == ""]
    skipped = Counter(manifest.loc[manifest["skip_reason"] != "", "skip_reason"])
    skipped.update(reason for reason, _ in download_skips.values())
    summary = {
        "source": data["source"], "cases": int(len(usable)), "subjects": int(usable["subjectid"].nunique()),
        "cases_with_hypotension": int(usable["has_hypotension"].sum()),
        "hours": round(float(usable["duration_s"].sum()) / 3600, 2),
        "skipped": dict(sorted(skipped.items())),
    }
    if selection:
        summary["selection"] = selection
    write_json(metrics_path, summary)


if __name__ == "__main__":
    run_stage(main)
