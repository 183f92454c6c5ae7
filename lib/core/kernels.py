"""One set of numeric kernels on every x86-64 machine with AVX2, so a rerun elsewhere is bit-identical.

numpy, OpenBLAS (numpy's and scipy's), torch's ATen, MKL and oneDNN each pick their SIMD kernels at
run time from the CPU they find. Kernels of another width or vendor path sum in another order and
round transcendental functions differently, so the same code gives other last bits on another
kind of machine: the embeddings, the trained weights and the CNN change, every hash downstream with
them, and `dvc metrics diff` shows changes nobody made (docs/operations.md, "Bit-identical reruns",
has what each kernel choice changes, measured).

`pin()` sets each library's documented switch to the AVX2 kernels before the library loads; every
x86-64 CPU of the last decade has them. On an Intel AVX2 machine that changes nothing. MKL runs
another code path on AMD CPUs by default, so there the pin moves torch's matmul results in the
last bits, once, to the Intel machine's. Importing `lib` calls it, so every stage imports `lib`
first. An environment variable set by the user is kept; `TTM_IOH_NATIVE_KERNELS=1` turns the pins
off (e.g. for `inference.bf16`, whose fast path needs AVX-512 or AMX). Elsewhere (ARM, x86 without
AVX2) nothing is pinned: reruns are bit-identical on the same kind of CPU.
"""
import os
import platform

PINS = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",   # numpy: no AVX-512 loops (SVML, sorting)
    "OPENBLAS_CORETYPE": "Haswell",      # numpy's and scipy's OpenBLAS: the AVX2 kernels and block sizes
    "ATEN_CPU_CAPABILITY": "avx2",       # torch's vectorised CPU kernels (layer norm, GELU, softmax, ...)
    "MKL_CBWR": "AVX2",                  # torch's MKL (matmul): conditional numerical reproducibility
    "ONEDNN_MAX_CPU_ISA": "AVX2",         # torch's oneDNN (convolutions, some GELU paths)
}
OPT_OUT = "TTM_IOH_NATIVE_KERNELS"


def cpu_flags() -> set:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pin() -> dict:
    """Set the pins this machine can take (see the module's docstring); returns those now in effect."""
    if os.environ.get(OPT_OUT) == "1" or platform.machine().lower() not in ("x86_64", "amd64") \
            or not {"avx2", "fma"} <= cpu_flags():
        return {}
    for name, value in PINS.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in PINS}
