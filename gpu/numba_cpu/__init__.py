"""Numba-compiled hot paths, each beside the readable reference it must equal.

A kernel here is never the only definition of an op: the primitive in `autograd` or
`npplm.layers` holds the reference formula, and one visible dispatch line there calls the
kernel where it applies (large float32 NumPy arrays). tests/gpu/ compares every kernel
with its reference.

Threads: `npplm.runtime.configure()` chooses Numba's thread pool before the first kernel
runs (the CLI and the Trainer call it). Why the pool matters is explained there.

Vector width, the one setting made on import. On Intel cores with AVX-512, LLVM (which
compiles Numba's kernels) keeps to 256-bit registers unless told otherwise: its
"prefer-256-bit" tuning for those CPUs dates from Skylake-X, whose clock dropped under
512-bit instructions. These kernels are loops that LLVM vectorises lane by lane, and for
the quantised products, which unpack each byte with several instructions, half the
instructions is most of the time: the 30 blocks of SmolLM2-135M (gpu/numba_cpu/decoding.py)
took 8.8 instead of 14.2 ms a token (2-core Intel Xeon VM with AVX-512, 2026-12-06).
Numba reads the features once, when its code generator is built, which is when the first
kernel is defined (a decorator runs), so it cannot wait for `configure()`. Importing this
package therefore sets Numba's NUMBA_CPU_FEATURES to the host's features plus
"-prefer-256-bit" on a CPU with AVX-512, unless the user set NUMBA_CPU_FEATURES or
NUMBA_CPU_NAME, or Numba compiled something first (then nothing changes). Other Numba code
in the process gets the wider vectors too; compiled kernels are cached per feature set.
"""

import os

import numba
from numba.core import registry
from numba.core.codegen import get_host_cpu_features

WIDE = "-prefer-256-bit"


def prefer_wide_vectors():
    """Let LLVM use 512-bit vectors on an AVX-512 CPU (see above); True if it applied."""
    if "NUMBA_CPU_FEATURES" in os.environ or "NUMBA_CPU_NAME" in os.environ:
        return False
    if "_toplevel_target_context" in vars(registry.cpu_target):  # the code generator exists
        return False
    features = get_host_cpu_features()
    if "+avx512f" not in features.split(","):
        return False
    numba.config.CPU_FEATURES = f"{features},{WIDE}"
    return True


def wide_vectors():
    """Whether the kernels compile with 512-bit vectors (set on import, or by the user)."""
    return WIDE in str(numba.config.CPU_FEATURES or "")


prefer_wide_vectors()
