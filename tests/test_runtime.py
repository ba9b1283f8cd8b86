"""npplm.runtime: importing npplm changes nothing in the process; configure() does, once.

Each case runs in a fresh interpreter, since both settings are process-wide.
"""

import os
import subprocess
import sys

import pytest

# Resident memory before and after freeing a 256 MB array: glibc gives a block that large
# back to the OS at once (it was mmap'ed), unless configure() raised the mmap threshold.
FREE_TEST = """
import numpy as np
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
a = np.ones(32 * 2**20)  # 256 MB of float64
a[::512] = 2.0  # touch every page
before = rss()
del a
print((before - rss()) // 2**20)
"""


def run(code, **env):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()


def test_import_leaves_numba_threading_alone_and_configure_picks_omp_with_a_short_spin():
    code = ("import os\n"
            "for k in ('NUMBA_THREADING_LAYER', 'GOMP_SPINCOUNT', 'OMP_WAIT_POLICY'):\n"
            "    os.environ.pop(k, None)\n"
            "import numba, npplm, npplm.training\n"
            "print(numba.config.THREADING_LAYER, os.environ.get('GOMP_SPINCOUNT'))\n"
            "print(npplm.runtime.configure()['numba_threading_layer'])\n"
            "print(numba.config.THREADING_LAYER, os.environ.get('GOMP_SPINCOUNT'))\n"
            "print(npplm.runtime.use_spinning_thread_pool(), os.environ.get('GOMP_SPINCOUNT'))")
    assert run(code) == ["default None", "omp", "omp 10000", "omp None"]
    # the user's spin stands, and so does it for decoding
    code = ("import os, npplm; npplm.runtime.configure()\n"
            "npplm.runtime.use_spinning_thread_pool(); print(os.environ['GOMP_SPINCOUNT'])")
    assert run(code, GOMP_SPINCOUNT="77") == ["77"]


def test_the_pool_is_left_alone_once_a_parallel_kernel_has_run():
    code = ("import os\n"
            "for k in ('NUMBA_THREADING_LAYER', 'GOMP_SPINCOUNT', 'OMP_WAIT_POLICY'):\n"
            "    os.environ.pop(k, None)\n"
            "import numpy as np, numba\n"
            "numba.config.THREADING_LAYER = 'workqueue'\n"
            "@numba.njit(parallel=True)\n"
            "def f(x):\n"
            "    for i in numba.prange(x.size):\n"
            "        x[i] += 1\n"
            "f(np.zeros(10))\n"
            "import npplm\n"
            "print(npplm.runtime.configure()['numba_threading_layer'], "
            "os.environ.get('GOMP_SPINCOUNT'))")
    assert run(code) == ["workqueue None"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_import_leaves_malloc_alone_and_configure_keeps_freed_memory():
    returned = int(run("import npplm, npplm.training" + FREE_TEST)[0])
    assert returned > 200  # MB back to the OS: import npplm did not touch malloc
    kept = run("import npplm; print(npplm.runtime.configure()['keep_freed_memory'])"
               + FREE_TEST)
    assert kept[0] == "True" and int(kept[1]) < 50  # freed memory stays for reuse
    off = run("import npplm; print(npplm.runtime.configure()['keep_freed_memory'])"
              + FREE_TEST, NPPLM_KEEP_MEMORY="0")
    assert off[0] == "False" and int(off[1]) > 200


def test_configure_is_applied_once():
    code = ("import npplm\n"
            "a = npplm.runtime.configure(); b = npplm.runtime.configure()\n"
            "print(a == b)")
    assert run(code) == ["True"]


# CPU time the process spends while its main thread sleeps 50 ms right after a GEMM: an
# OpenBLAS worker still spinning burns about that much, a sleeping one nothing.
SPIN_TEST = """
import time
import numpy as np
a = np.ones((512, 512), np.float32)
used = []
for _ in range(3):
    a @ a
    t = time.process_time()
    time.sleep(0.05)
    used.append(time.process_time() - t)
print(round(min(used) * 1000))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2,
                    reason="OpenBLAS's worker threads, found through /proc/self/maps")
def test_configure_makes_openblas_workers_sleep_after_a_gemm_unless_the_user_chose():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}

    def run_clean(code, **extra):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=300, env={**env, **extra})
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()

    spinning = int(run_clean("import npplm" + SPIN_TEST)[0])
    assert spinning > 20  # ms: import npplm left OpenBLAS's 0.1 s spin alone
    wait, slept = run_clean("import npplm; print(npplm.runtime.configure()['blas_wait'])"
                            + SPIN_TEST)
    assert wait == "4" and int(slept) < 10
    # The user's own OPENBLAS_THREAD_TIMEOUT stands.
    assert run_clean("import npplm; print(npplm.runtime.configure()['blas_wait'])",
                     OPENBLAS_THREAD_TIMEOUT="10") == ["10"]
    # Quantised decoding's spinning pool puts OpenBLAS's default wait back.
    back = run_clean("import npplm; npplm.runtime.configure()\n"
                     "npplm.runtime.use_spinning_thread_pool()" + SPIN_TEST)
    assert int(back[0]) > 20


WIDTH_TEST = """
import re
import numba, numpy as np
from numba.core.codegen import get_host_cpu_features
import npplm
from gpu import numba_cpu
from npplm.quantization.linear import PackedWeight, matmul
q = np.ones((64, 64), np.int8); s = np.ones((64, 2), np.float32)
matmul(np.ones((1, 64), np.float32), PackedWeight.pack("Q4_1", q, s, s, 32))  # compiles
asm = "".join(numba_cpu.quantized.int4_tile.inspect_asm().values())
fma512 = any(line.split()[:1] and line.split()[0].startswith("vfmadd") and "zmm" in line
             for line in asm.splitlines())  # a multiply-add on 16 float32 lanes
print("+avx512f" in get_host_cpu_features().split(","), npplm.runtime.configure()["wide_vectors"],
      fma512)
"""


def test_the_kernels_compile_with_512_bit_vectors_where_the_cpu_has_them(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_FEATURES",
                                                            "NUMBA_CPU_NAME")}

    def compiled(**extra):  # afresh, in an empty cache: a cached kernel has no assembly
        cache = tmp_path / f"cache{len(extra)}"
        out = subprocess.run([sys.executable, "-c", WIDTH_TEST], capture_output=True,
                             text=True, timeout=300,
                             env={**env, "NUMBA_CACHE_DIR": str(cache), **extra})
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    has_avx512, wide, zmm = compiled()
    assert wide == has_avx512 and zmm == has_avx512  # set on import, used by the kernels
    # The user's NUMBA_CPU_FEATURES stands (here: the host's own, with LLVM's tuning for
    # the CPU, which on Intel's AVX-512 cores keeps to 256-bit vectors).
    features = subprocess.run(
        [sys.executable, "-c", "from numba.core.codegen import get_host_cpu_features as f; "
         "print(f())"], capture_output=True, text=True, timeout=300, env=env).stdout.strip()
    assert compiled(NUMBA_CPU_FEATURES=features)[1] == "False"
