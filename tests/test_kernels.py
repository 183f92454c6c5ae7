"""lib.core.kernels: every stage runs numpy, OpenBLAS and torch on the AVX2 kernels, whatever wider
kernels the machine offers, so a forced rerun on another x86-64 machine gives the same bytes."""
import ast
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from lib.core import kernels

AVX2 = {"avx2", "fma"} <= kernels.cpu_flags()
RUNTIME = """
import json, lib, numpy, threadpoolctl, torch
blas = sorted({i["architecture"] for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas"})
print(json.dumps({"numpy_avx512": bool(numpy._core._multiarray_umath.__cpu_features__.get("AVX512F")),
                  "openblas": blas, "torch": torch.backends.cpu.get_cpu_capability(),
                  "env": {k: __import__("os").environ.get(k) for k in lib.core.kernels.PINS}}))
"""


def runtime(**env):
    clean = {k: v for k, v in os.environ.items() if k not in kernels.PINS and k != kernels.OPT_OUT}
    done = subprocess.run([sys.executable, "-c", RUNTIME], env={**clean, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not AVX2, reason="the pins apply to x86-64 CPUs with AVX2 and FMA")
def test_importing_lib_first_pins_every_library_to_the_avx2_kernels():
    seen = runtime()
    assert seen["env"] == kernels.PINS
    assert not seen["numpy_avx512"] and seen["openblas"] == ["Haswell"] and seen["torch"] == "AVX2"


@pytest.mark.skipif(not AVX2, reason="the pins apply to x86-64 CPUs with AVX2 and FMA")
def test_an_explicit_setting_wins_and_the_opt_out_pins_nothing():
    assert runtime(ATEN_CPU_CAPABILITY="default")["torch"] == "DEFAULT"
    native = runtime(TTM_IOH_NATIVE_KERNELS="1")
    assert all(value is None for value in native["env"].values())


def test_every_stage_imports_lib_before_any_other_module():
    """A stage that imported numpy or torch first would run the machine's own kernels."""
    late = []
    for script in sorted((ROOT / "stages").glob("*.py")):
        imports = [node for node in ast.parse(script.read_text()).body if isinstance(node, ast.Import | ast.ImportFrom)]
        first = imports[0]
        if not (isinstance(first, ast.Import) and first.names[0].name == "lib"):
            late.append(script.name)
    assert late == []
