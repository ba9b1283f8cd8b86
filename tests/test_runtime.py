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


def test_import_leaves_numba_threading_alone_and_configure_picks_workqueue():
    code = ("import os; os.environ.pop('NUMBA_THREADING_LAYER', None)\n"
            "import numba, npplm, npplm.training\n"
            "print(numba.config.THREADING_LAYER)\n"
            "print(npplm.runtime.configure()['numba_threading_layer'])\n"
            "print(numba.config.THREADING_LAYER)")
    assert run(code) == ["default", "workqueue", "workqueue"]


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
