"""Stage cohort: materialise the cases (demo simulation, local files or real VitalDB) and a manifest.

usage: python stages/cohort.py <out_dir> <metrics_json>
"""
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib import cohort, params, vital_io  # noqa: E402
from lib.atomic import atomic_dir, write_json  # noqa: E402
from lib.errors import PipelineError, run_stage  # noqa: E402

DATA_KEYS = ["source", "clinical_csv", "vital_dir", "cache_dir", "max_cases", "tracks", "workers"]
DEMO_KEYS = ["n_cases", "n_multi_case_subjects", "srate", "min_minutes", "max_minutes", "ioh_fraction", "seed"]


def main(argv):
    out_dir, metrics_path = Path(argv[0]), argv[1]
    p = params.load("data", "demo")
    data, demo = p["data"], p["demo"]
    params.require(data, "data", DATA_KEYS)
    params.require(demo, "demo", DEMO_KEYS)
    tracks = data["tracks"]
    clinical = cohort.load_clinical(data["clinical_csv"])

    with atomic_dir(out_dir) as tmp:
        if data["source"] == "demo":
            clinical = cohort.generate_demo(tmp / "vital", clinical, demo["n_cases"], demo["n_multi_case_subjects"],
                                            demo["srate"], demo["min_minutes"], demo["max_minutes"],
                                            demo["ioh_fraction"], demo["seed"], data["workers"])
            files = vital_io.vital_files(tmp / "vital")
        elif data["source"] == "local":
            files = vital_io.vital_files(data["vital_dir"])
        elif data["source"] == "vitaldb":
            selected = cohort.eligible_cases(clinical)
            available = vital_io.find_vitaldb_cases(list(tracks.values()))
            caseids = sorted(set(selected["caseid"]) & available)[: data["max_cases"]]
            files = {c: vital_io.download_vitaldb_case(c, list(tracks.values()), data["cache_dir"]) for c in caseids}
        else:
            raise PipelineError(f"data.source={data['source']!r}: use demo, local or vitaldb")
        if not files:
            raise PipelineError(f"data.source={data['source']}: no <caseid>.vital files found")
        manifest = cohort.build_manifest(clinical, files, tracks["abp"], data["workers"])
        if data["source"] == "demo":  # the files move with the directory
            manifest["path"] = [str(out_dir / "vital" / Path(f).name) for f in manifest["path"]]
        if manifest.empty:
            raise PipelineError(f"none of the {len(files)} .vital files has a caseid in {data['clinical_csv']}")
        manifest.to_csv(tmp / "cases.csv", index=False)
        clinical[clinical["caseid"].isin(manifest["caseid"])].to_csv(tmp / "clinical.csv", index=False)

    usable = manifest[manifest["skip_reason"] == ""]
    write_json(metrics_path, {
        "source": data["source"], "cases": int(len(usable)), "subjects": int(usable["subjectid"].nunique()),
        "cases_with_hypotension": int(usable["has_hypotension"].sum()),
        "hours": round(float(usable["duration_s"].sum()) / 3600, 2),
        "skipped": dict(Counter(manifest.loc[manifest["skip_reason"] != "", "skip_reason"])),
    })


if __name__ == "__main__":
    run_stage(main)
