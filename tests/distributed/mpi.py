"""Starting `mpiexec -n N` from a test: the MPICH wheel's mpiexec beside this Python, one
thread per rank (the CI machine has two cores), a time limit, and the output on failure."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def mpiexec():
    """The mpiexec of this environment's MPICH wheel; the test skips without mpi4py."""
    pytest.importorskip("mpi4py", reason="the [mpi] extra (mpi4py, mpich) is not installed")
    here = pathlib.Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.is_file() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec (pip install mpich)")
    return found


def run_ranks(args, n=2, timeout=240, check=True, env=None):
    """`mpiexec -n n python ARGS...` from the repository root; returns the CompletedProcess."""
    command = [mpiexec(), "-n", str(n), sys.executable, *map(str, args)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **ONE_THREAD, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result
