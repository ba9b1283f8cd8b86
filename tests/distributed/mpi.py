"""Starting `mpiexec -n N` from a test: the MPICH wheel's mpiexec beside this Python, one
thread per rank (the CI machine has two cores), a time limit, and the output on failure."""

import os
import pathlib
import subprocess
import sys

import pytest

from npplm.distributed.launch import find_mpiexec

ROOT = pathlib.Path(__file__).resolve().parents[2]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def mpiexec():
    """The mpiexec `npplm train --nproc` would use; the test skips without the [mpi] extra."""
    pytest.importorskip("mpi4py", reason="the [mpi] extra (mpi4py, mpich) is not installed")
    try:
        return find_mpiexec()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def run_ranks(args, n=2, timeout=240, check=True, env=None):
    """`mpiexec -n n python ARGS...` from the repository root; returns the CompletedProcess."""
    command = [mpiexec(), "-n", str(n), sys.executable, *map(str, args)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **ONE_THREAD, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result
