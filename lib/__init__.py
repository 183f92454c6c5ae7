"""The science behind the pipeline; each stage in `stages/` is a thin script over these packages.

Packages, bottom to top (a package imports only from those below it, tests/test_dvc_graph.py checks):

* `lib.core`   – one-line errors, atomic writes, process pool, typed configs, shared window schema;
* `lib.signal` – array science on one recording: filters, beat detection, quality gates, labels;
* `lib.data`   – recordings and datasets: .vital I/O, sources (demo, local, VitalDB), cohort,
                 splits, windowing, the windows HDF5 files;
* `lib.model`  – TTM backbone and head, the training loop, the baselines;
* `lib.eval`   – calibration, metrics with subject-bootstrap CIs, evaluation, the report.

`lib` never reads `params.yaml`; stages build `lib.core.params` sections (and `lib.core.config`
objects made of them) and pass them.

Importing `lib` pins the numeric kernels numpy, scipy and torch choose (lib.core.kernels), so it
comes first in every stage, before those libraries load: reruns on another machine are bit-identical.
"""
from lib.core import kernels

kernels.pin()
