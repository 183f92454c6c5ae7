"""Stage cohort: materialise the cases (demo simulation, local files or real VitalDB) and a manifest.

It is the first stage, so it also validates every section of params.yaml: a typo anywhere stops
the run here, not in the stage that reads the key an hour later.

usage: python stages/cohort.py <out_dir> <metrics_json>
"""
import lib  # noqa: F401  # isort: skip  (first: pins the numeric kernels before numpy/torch load)
import sys
from pathlib import Path
from typing import NamedTuple

from lib.core.atomic import atomic_dir, write_json
from lib.core.errors import run_stage
from lib.core.params import Data, Demo, read_params, validate
from lib.data import cohort


class Config(NamedTuple):
    data: Data
    demo: Demo


def config(params) -> Config:
    return Config(Data.from_params(params), Demo.from_params(params))


def main(argv):
    out_dir, metrics_path = Path(argv[0]), argv[1]
    params = read_params()
    validate(params)
    cfg = config(params)
    with atomic_dir(out_dir) as tmp:
        manifest, clinical, download_skips, selection = cohort.materialise(tmp, out_dir, cfg.data, cfg.demo)
        for caseid, (_, message) in download_skips.items():
            print(f"skip case {caseid}: {message}", file=sys.stderr)
        for row in manifest[manifest["skip_reason"] != ""].itertuples():
            print(f"skip case {row.caseid}: {row.skip_message}", file=sys.stderr)
        manifest.drop(columns="skip_message").to_csv(tmp / "cases.csv", index=False)
        clinical.to_csv(tmp / "clinical.csv", index=False)
    write_json(metrics_path, cohort.summary(manifest, download_skips, cfg.data.source, selection))


if __name__ == "__main__":
    run_stage(main)
