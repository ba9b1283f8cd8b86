"""Process settings that make training fast, applied only when asked: `configure()`.

Importing `autograd` or `npplm` changes nothing in the process. The command line and the
Trainer call `configure()` before they start; a library user who trains in their own loop
can call it too (once, early: the Numba setting must come before the first kernel runs).
The benchmarks call it, and the README's figures are measured with it.

1. Keep freed array memory inside the process (glibc's malloc), as PyTorch's allocator
   does. By default glibc serves every allocation above a threshold (at most 32 MB) with a
   fresh `mmap` and gives it back to the OS on `free`. A training step allocates and frees
   the same large temporaries over and over (activations, gradients, an embedding table's
   gradient of V x C), so every step would fault all of those pages in again, zero-filled
   by the kernel. In a virtual machine a page fault is expensive: on the 2-core CI machine
   the gradient of BERT's 30522 x 768 word embeddings took 360 ms to build this way and
   14 ms from reused memory, and a whole BERT-base training step went from about 6.5 s to
   5.0 s. `keep_freed_memory()` raises the mmap threshold to 1 GiB and the trim threshold
   to its maximum, so freed blocks are reused instead. The cost: the process keeps its
   high-water mark of memory until it exits. NPPLM_KEEP_MEMORY=0 leaves malloc alone;
   elsewhere than Linux/glibc it does nothing.

2. Numba's thread pool. A training step alternates the Numba kernels (gpu/numba_cpu/) with
   OpenBLAS's GEMMs, and each pool's idle threads may busy-wait for a while after their
   work is done, on the cores the other pool needs next. Numba's default pool on Linux is
   OpenMP (libgomp), whose idle threads spin 300,000 rounds by default (GOMP_SPINCOUNT);
   its "workqueue" pool sleeps at once, but waking it costs milliseconds on a VM: a
   parallel loop of 64 equal 0.15 ms tasks took 7.8 ms on workqueue and 4.9 ms on OpenMP
   (10.1 ms on one thread; 2-core Intel VM, 2026-12-06), and the GPT-2 training step of
   benchmarks/side_by_side_training.py 1252 ms against 1163-1185 ms on OpenMP with
   GOMP_SPINCOUNT between 1,000 and 30,000 (1314 ms with libgomp's default spin, which
   takes the core from the GEMM that follows). `configure()` therefore chooses OpenMP and
   a spin of 10,000 rounds (tens of microseconds), unless NUMBA_THREADING_LAYER or
   GOMP_SPINCOUNT say otherwise. libgomp reads GOMP_SPINCOUNT when it loads, which
   happens at the first parallel kernel, so this must come first; once a parallel kernel
   has run, the pool is fixed for the process, and the setting is left as it is.

2b. Decoding with quantised weights (npplm.quantization) runs some 200 short Numba kernels
   a token (7 products a layer, each tens of microseconds) with no BLAS call between
   them: SmolLM2-135M Q4_1 decoded 12 tokens/s on the sleeping workqueue pool and 35 on
   the spinning OpenMP one (2-core Intel VM, 2026-12-06). `use_spinning_thread_pool()`,
   which the CLI and the server call once they have loaded a quantised model, before its
   first kernel, keeps OpenMP with libgomp's own spin.

3. OpenBLAS's idle threads spin too, for 2^28 CPU cycles (about 0.1 s) after each GEMM,
   on the core that the Numba kernel or the NumPy work after the GEMM needs. On the 2-core
   VMs the attention forward went from 7 ms to 14 ms when it came right after a GEMM.
   OpenBLAS reads how long to spin, OPENBLAS_THREAD_TIMEOUT (2^n cycles, n in 4..30),
   from the environment when it loads, and it loads with NumPy, before any of our code
   runs. `short_blas_wait()` changes it later, through three functions the library exports
   (NumPy's bundled scipy-openblas and a system OpenBLAS export them alike): it sets the
   variable, calls `openblas_read_env()` to read it again, and calls
   `blas_thread_shutdown_()`, which stops the worker threads so that the next GEMM starts
   them with the new wait. That is the same shutdown OpenBLAS performs before a fork.
   With n = 4 a worker sleeps as soon as its work is done. The cost is a wake-up, tens of
   microseconds, at the start of each GEMM, which is nothing next to a training step's
   GEMMs of milliseconds. `configure()` applies it unless the user has already set
   OPENBLAS_THREAD_TIMEOUT. `long_blas_wait()` restores OpenBLAS's default for decoding
   (`use_spinning_thread_pool`, 2b), which runs many tiny products back to back.

4. Vector width: 512-bit vectors in Numba's kernels on CPUs with AVX-512. This one is set
   when the kernels' package is imported (gpu/numba_cpu/__init__.py says why and how),
   because Numba fixes its code generator's features when the first kernel is defined;
   `configure()` reports it.
"""

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3

_applied = None  # what configure() did, once it has run


def keep_freed_memory():
    """Tune glibc malloc to reuse freed memory; returns True if it applied."""
    if not sys.platform.startswith("linux") or os.environ.get("NPPLM_KEEP_MEMORY") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the running process's C library
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def release_freed_memory():
    """Give the heap's free pages back to the OS (glibc's malloc_trim), after a burst of
    temporaries such as a model's loading: RSS then counts what the process holds, not
    what it once held. Returns True if it applied (Linux/glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):  # not glibc
        return False


SPIN = "10000"  # GOMP_SPINCOUNT for training: idle OpenMP threads sleep after ~10^4 rounds
_spin_set = False  # configure() set GOMP_SPINCOUNT (not the user)


def _pool_started():
    from numba.np.ufunc import parallel

    return getattr(parallel, "_is_initialized", False)  # a parallel kernel has run


def use_spinning_thread_pool():
    """Choose Numba's OpenMP pool with libgomp's own spin, unless a kernel has already fixed
    the pool or NUMBA_THREADING_LAYER says otherwise; returns the layer in effect (2b).
    OpenBLAS's workers go back to their default wait as well (3)."""
    import numba

    global _spin_set
    long_blas_wait()
    if not _pool_started():
        if _spin_set:  # our short spin, not the user's: libgomp's default for decoding
            os.environ.pop("GOMP_SPINCOUNT", None)
            _spin_set = False
        if "NUMBA_THREADING_LAYER" not in os.environ:
            numba.config.THREADING_LAYER = "omp"
    return numba.config.THREADING_LAYER


def use_training_thread_pool():
    """Choose Numba's OpenMP pool with a short spin (2), unless a kernel has already fixed
    the pool, or NUMBA_THREADING_LAYER / GOMP_SPINCOUNT say otherwise; returns the layer."""
    import numba

    global _spin_set
    if not _pool_started():
        if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
            os.environ["GOMP_SPINCOUNT"] = SPIN
            _spin_set = True
        if "NUMBA_THREADING_LAYER" not in os.environ:
            numba.config.THREADING_LAYER = "omp"
    return numba.config.THREADING_LAYER


BLAS_WAIT = "OPENBLAS_THREAD_TIMEOUT"
SHORT_BLAS_WAIT = "4"  # 2^4 cycles: sleep at once (OpenBLAS's smallest)
_blas_wait_default = None  # the user's OPENBLAS_THREAD_TIMEOUT (or None), before we set it


def openblas():
    """The OpenBLAS library NumPy loaded (a ctypes handle), or None: another BLAS (MKL,
    Accelerate), or an OpenBLAS without the functions `set_blas_wait` needs."""
    import numpy  # noqa: F401  (NumPy loads its BLAS)

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()
                     and ".so" in line}
    except OSError:  # not Linux
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if all(hasattr(lib, f) for f in ("openblas_read_env", "blas_thread_shutdown_",
                                         "openblas_thread_timeout")):
            return lib
    return None


def set_blas_wait(n):
    """Make OpenBLAS's idle threads spin 2^n cycles after a GEMM (n a string, "4".."30";
    None: OpenBLAS's default, 2^28), now, in a running process (3). Returns the n that
    OpenBLAS reports afterwards (0: its default), or None where it cannot be set. Call it
    between GEMMs, from the thread that runs them."""
    lib = openblas()
    if lib is None:
        return None
    if n is None:
        os.environ.pop(BLAS_WAIT, None)
    else:
        os.environ[BLAS_WAIT] = n
    lib.openblas_read_env()  # reads OPENBLAS_THREAD_TIMEOUT (and its other variables) again
    lib.blas_thread_shutdown_()  # the workers stop; the next GEMM starts them anew
    return int(lib.openblas_thread_timeout())


def short_blas_wait():
    """OpenBLAS's workers sleep as soon as a GEMM ends (3), unless the user set
    OPENBLAS_THREAD_TIMEOUT themselves. Returns the wait in effect (see set_blas_wait)."""
    global _blas_wait_default
    if _blas_wait_default is None:
        _blas_wait_default = os.environ.get(BLAS_WAIT, "")
    if _blas_wait_default:  # the user's choice stands
        return int(_blas_wait_default)
    return set_blas_wait(SHORT_BLAS_WAIT)


def long_blas_wait():
    """OpenBLAS's own wait again (or the user's), if short_blas_wait changed it."""
    if _blas_wait_default is None or _blas_wait_default:
        return None  # never shortened, or the user's value stands
    if os.environ.get(BLAS_WAIT) != SHORT_BLAS_WAIT:
        return None
    return set_blas_wait(None)


def configure():
    """Apply the four settings (once; later calls return the first result).

    Returns {"keep_freed_memory": bool, "numba_threading_layer": str, "blas_wait": the
    OPENBLAS_THREAD_TIMEOUT exponent in effect (0: OpenBLAS's default), or None where it
    cannot be set, "wide_vectors": bool}.
    """
    from gpu import numba_cpu  # sets the vector width on import (4): reported here

    global _applied
    if _applied is None:
        _applied = {"keep_freed_memory": keep_freed_memory(),
                    "numba_threading_layer": use_training_thread_pool(),
                    "blas_wait": short_blas_wait(),
                    "wide_vectors": numba_cpu.wide_vectors()}
    return dict(_applied)
